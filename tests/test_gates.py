"""keras_gated.gates: gate names, their order, and the split helpers.

The order is checked twice: against hand-written blocks, and against
Keras' own layers (whose weights our layers load unchanged).
"""

import keras
import numpy as np
import pytest
from harness import to_numpy

import keras_gated
from keras_gated import gates

pytestmark = pytest.mark.backends


def test_gate_names_and_order():
    assert gates.LSTM_GATES == ("input", "forget", "candidate", "output")
    assert gates.LSTM_SEQUENCES == (
        "input",
        "forget",
        "candidate",
        "output",
        "cell",
    )
    assert gates.GRU_GATES == ("update", "reset", "candidate")
    assert gates.GRU_SEQUENCES == ("update", "reset", "candidate")
    assert keras_gated.LSTM_GATES is gates.LSTM_GATES
    assert keras_gated.GRU_GATES is gates.GRU_GATES


@pytest.mark.parametrize(
    "names, expected",
    [
        (
            gates.LSTM_GATES,
            {
                "input": [[0, 1, 2], [12, 13, 14]],
                "forget": [[3, 4, 5], [15, 16, 17]],
                "candidate": [[6, 7, 8], [18, 19, 20]],
                "output": [[9, 10, 11], [21, 22, 23]],
            },
        ),
        (
            gates.GRU_GATES,
            {
                "update": [[0, 1, 2, 3], [12, 13, 14, 15]],
                "reset": [[4, 5, 6, 7], [16, 17, 18, 19]],
                "candidate": [[8, 9, 10, 11], [20, 21, 22, 23]],
            },
        ),
    ],
    ids=["lstm", "gru"],
)
def test_split_gates_and_gate_block_hand_values(names, expected):
    packed = np.arange(24, dtype="float32").reshape(2, 12)
    blocks = gates.split_gates(packed, names)
    assert list(blocks) == list(names)
    for name in names:
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(blocks[name]), expected[name]
        )
        np.testing.assert_array_equal(
            np.asarray(gates.gate_block(packed, names, name)), expected[name]
        )


def test_split_gates_keeps_leading_axes():
    # (timesteps, batch, 4 * units): the layers split whole sequences.
    packed = np.arange(2 * 3 * 8, dtype="float32").reshape(2, 3, 8)
    blocks = gates.split_gates(packed, gates.LSTM_GATES)
    for index, name in enumerate(gates.LSTM_GATES):
        value = keras.ops.convert_to_numpy(blocks[name])
        assert value.shape == (2, 3, 2)
        np.testing.assert_array_equal(
            value, packed[..., 2 * index : 2 * index + 2]
        )


def test_lstm_order_matches_keras_forget_bias():
    # Keras' unit_forget_bias puts ones in the forget block of the bias
    # and zeros elsewhere: our "forget" block must be exactly that one.
    builtin = keras.layers.LSTM(3, unit_forget_bias=True)
    builtin.build((1, 2, 4))
    bias = builtin.get_weights()[2]
    for name in gates.LSTM_GATES:
        block = gates.gate_block(bias, gates.LSTM_GATES, name)
        np.testing.assert_array_equal(block, 1.0 if name == "forget" else 0.0)


@pytest.mark.parametrize(
    "block, expected",
    # Zero kernels, h0 = 1, one step, a bias of 1 in one block only:
    #   update block:    z = sigmoid(1), n = tanh(0) = 0  ->  h = sigmoid(1)
    #   reset block:     z = 1/2, n = tanh(0) = 0         ->  h = 1/2
    #   candidate block: z = 1/2, n = tanh(1)             ->  h = (1+tanh(1))/2
    [
        ("update", 1 / (1 + np.exp(-1.0))),
        ("reset", 0.5),
        ("candidate", (1 + np.tanh(1.0)) / 2),
    ],
)
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_order_matches_keras(block, expected, reset_after):
    builtin = keras.layers.GRU(2, reset_after=reset_after, use_cudnn=False)
    builtin.build((1, 1, 3))
    kernel, recurrent, bias = builtin.get_weights()
    bias = np.zeros_like(bias)
    columns = gates.gate_block(np.arange(6), gates.GRU_GATES, block)
    if reset_after:
        bias[0, columns] = 1.0
    else:
        bias[columns] = 1.0
    builtin.set_weights([np.zeros_like(kernel), np.zeros_like(recurrent), bias])
    output = builtin(
        np.ones((1, 1, 3), "float32"),
        initial_state=[np.ones((1, 2), "float32")],
    )
    np.testing.assert_allclose(to_numpy(output), expected, atol=1e-6)
