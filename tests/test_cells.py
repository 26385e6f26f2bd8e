"""keras_gated.LSTMCell / GRUCell: one step, inside Keras' own loops.

The reference is Keras' `LSTMCell` / `GRUCell` with the same weights, run
by `keras.layers.RNN` / `StackedRNNCells` or stepped by hand; our sequence
layers must equal our cells stepped by hand.
"""

import keras
import numpy as np
import pytest
from harness import assert_all_close
from harness import call
from harness import in_graph
from harness import random_weights
from harness import run_layer_test
from harness import to_numpy

import keras_gated

pytestmark = pytest.mark.backends

BATCH, TIMESTEPS, FEATURES, UNITS = 3, 6, 4, 5
INPUT_SHAPE = (BATCH, TIMESTEPS, FEATURES)

# Our cell, Keras' cell, our sequence layer, and the shared arguments.
CELLS = {
    "lstm": (keras_gated.LSTMCell, keras.layers.LSTMCell, keras_gated.LSTM, {}),
    "gru": (
        keras_gated.GRUCell,
        keras.layers.GRUCell,
        keras_gated.GRU,
        {"reset_after": True},
    ),
    "gru_reset_before": (
        keras_gated.GRUCell,
        keras.layers.GRUCell,
        keras_gated.GRU,
        {"reset_after": False},
    ),
}
MASK = np.array(
    [[0, 0, 1, 1, 1, 1], [1, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=bool
)


def inputs(seed=0):
    return (
        np.random.default_rng(seed)
        .standard_normal(INPUT_SHAPE)
        .astype("float32")
    )


def rnn_twins(cells_for, cell_kwargs=None, **rnn_kwargs):
    """`keras.layers.RNN` around Keras' cells and around ours, same weights.

    `cells_for(library)` returns the cell (or list of cells) to wrap, built
    from `library`, a dict of cell classes: ours or Keras'.
    """
    ours_library = {name: spec[0] for name, spec in CELLS.items()}
    keras_library = {name: spec[1] for name, spec in CELLS.items()}
    reference = keras.layers.RNN(cells_for(keras_library), **rnn_kwargs)
    ours = keras.layers.RNN(cells_for(ours_library), **rnn_kwargs)
    reference.build(INPUT_SHAPE)
    ours.build(INPUT_SHAPE)
    ours.set_weights(random_weights(reference))
    return reference, ours


def single(cell, **kwargs):
    def cells_for(library):
        return library[cell](UNITS, **CELLS[cell][3], **kwargs)

    return cells_for


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fw", "bw"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_in_rnn_matches_keras_cell(cell, go_backwards, masked, unroll):
    reference, ours = rnn_twins(
        single(cell),
        return_sequences=True,
        return_state=True,
        go_backwards=go_backwards,
        unroll=unroll,
    )
    x, mask = inputs(), MASK if masked else None
    assert_all_close(call(ours, x, mask), call(reference, x, mask))


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize(
    "stack", [("lstm", "gru"), ("gru_reset_before", "lstm")], ids="-".join
)
def test_stacked_cells_match_keras(stack, masked, unroll):
    def cells_for(library):
        return keras.layers.StackedRNNCells(
            [
                library[name](UNITS + i, **CELLS[name][3])
                for i, name in enumerate(stack)
            ]
        )

    reference, ours = rnn_twins(
        cells_for, return_sequences=True, return_state=True, unroll=unroll
    )
    x, mask = inputs(), MASK if masked else None
    assert_all_close(call(ours, x, mask), call(reference, x, mask))


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_stepped_by_hand_equals_layer(cell):
    ours_cell_class, keras_cell_class, layer_class, kwargs = CELLS[cell]
    ours_cell = ours_cell_class(UNITS, **kwargs)
    keras_cell = keras_cell_class(UNITS, **kwargs)
    layer = layer_class(
        UNITS,
        return_sequences=True,
        return_state=True,
        return_gates=True,
        **kwargs,
    )
    ours_cell.build((BATCH, FEATURES))
    keras_cell.build((BATCH, FEATURES))
    layer.build(INPUT_SHAPE)
    weights = random_weights(keras_cell)
    ours_cell.set_weights(weights)
    layer.set_weights(weights)
    x = inputs()
    states = ours_cell.get_initial_state(batch_size=BATCH)
    keras_states = keras_cell.get_initial_state(batch_size=BATCH)
    step_states = list(states)
    outputs, keras_outputs, step_gates = [], [], []
    for t in range(TIMESTEPS):
        h, states = ours_cell(x[:, t], states)
        keras_h, keras_states = keras_cell(x[:, t], keras_states)
        step_h, step_states, gates = ours_cell.step(
            ours_cell.project_inputs(x[:, t]), step_states
        )
        outputs.append(h)
        keras_outputs.append(keras_h)
        step_gates.append(gates)
        assert_all_close(step_h, h, atol=1e-6, what=f"step vs call, t={t}")
    assert_all_close(outputs, keras_outputs, what="our cell vs Keras' cell")
    sequence, *final_states, layer_gates = layer(x)
    by_hand = np.stack([to_numpy(h) for h in outputs], axis=1)
    assert_all_close(sequence, by_hand, what="cell by hand vs layer")
    keras_final = (
        keras_states if isinstance(keras_states, list) else [keras_states]
    )
    assert_all_close(final_states, keras_final, what="final states")
    for name in step_gates[0]:
        by_hand = np.stack([to_numpy(g[name]) for g in step_gates], axis=1)
        assert_all_close(layer_gates[name], by_hand, what=f"gate {name}")


@pytest.mark.parametrize("run", ["eager", "graph"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_dropout_in_rnn_training_twice(cell, run):
    reference, ours = rnn_twins(
        single(cell, dropout=0.3, recurrent_dropout=0.3, seed=21),
        return_sequences=True,
    )
    x = inputs()

    def runner(layer):
        def forward(values):
            return layer(values, mask=MASK, training=True)

        return in_graph(forward) if run == "graph" else forward

    run_reference, run_ours = runner(reference), runner(ours)
    results = []
    for attempt in range(2):
        expected = run_reference(x)
        results.append(run_ours(x))
        assert_all_close(results[-1], expected, what=f"call {attempt}")
    # Fresh masks on every call.
    assert not np.allclose(to_numpy(results[0]), to_numpy(results[1]))


def test_stacked_cells_dropout_in_rnn_training():
    def cells_for(library):
        return keras.layers.StackedRNNCells(
            [
                library["lstm"](UNITS, dropout=0.3, seed=1),
                library["gru"](UNITS, recurrent_dropout=0.3, seed=2),
            ]
        )

    reference, ours = rnn_twins(cells_for, return_sequences=True)
    x = inputs()
    for attempt in range(2):
        expected = reference(x, training=True)
        assert_all_close(ours(x, training=True), expected, what=str(attempt))


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_dropout_fit_matches_keras(cell):
    # Two epochs of fit (a compiled graph called repeatedly) with dropout.
    y = np.random.default_rng(1).standard_normal((BATCH, 1)).astype("float32")
    trained = []
    weights = None
    for library in (1, 0):
        cell_class = CELLS[cell][library]
        model = keras.Sequential(
            [
                keras.Input((TIMESTEPS, FEATURES)),
                keras.layers.RNN(
                    cell_class(
                        UNITS,
                        dropout=0.3,
                        recurrent_dropout=0.2,
                        seed=4,
                        **CELLS[cell][3],
                    )
                ),
                keras.layers.Dense(1),
            ]
        )
        if weights is None:
            weights = random_weights(model, scale=0.3)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.3), loss="mse")
        # Unshuffled: a shuffled batch would meet the masks in another
        # order (on JAX and PyTorch the shuffle does not repeat per model).
        model.fit(
            inputs(), y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0
        )
        trained.append(model.get_weights())
    assert_all_close(trained[1], trained[0], what="weights after fit")


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_weights_and_config_match_keras(cell):
    ours_class, keras_class, _, kwargs = CELLS[cell]
    arguments = dict(
        kwargs,
        activation="relu",
        use_bias=True,
        kernel_regularizer="l2",
        recurrent_constraint="non_neg",
        dropout=0.25,
        recurrent_dropout=0.5,
        seed=3,
    )
    reference = keras_class(UNITS, **arguments)
    ours = ours_class.from_config(reference.get_config())
    config = ours.get_config()
    for key, value in reference.get_config().items():
        assert config[key] == value, key
    assert ours_class.from_config(config).get_config() == config
    reference.build((BATCH, FEATURES))
    ours.build((BATCH, FEATURES))
    assert [w.path.split("/")[-1] for w in ours.weights] == [
        w.path.split("/")[-1] for w in reference.weights
    ]
    assert [tuple(w.shape) for w in ours.weights] == [
        tuple(w.shape) for w in reference.weights
    ]
    assert ours.state_size == reference.state_size
    ours_initial = ours.get_initial_state(batch_size=BATCH)
    reference_initial = reference.get_initial_state(batch_size=BATCH)
    assert_all_close(ours_initial, reference_initial, atol=0)


def test_lstm_cell_unit_forget_bias_initializer():
    # Hand values: ones in the forget block, the bias initializer elsewhere.
    cell = keras_gated.LSTMCell(2, bias_initializer="ones")
    cell.build((1, 3))
    np.testing.assert_array_equal(to_numpy(cell.bias), [1, 1, 1, 1, 1, 1, 1, 1])
    cell = keras_gated.LSTMCell(
        2, bias_initializer=keras.initializers.Constant(3.0)
    )
    cell.build((1, 3))
    np.testing.assert_array_equal(to_numpy(cell.bias), [3, 3, 1, 1, 3, 3, 3, 3])
    cell = keras_gated.LSTMCell(2, unit_forget_bias=False)
    cell.build((1, 3))
    np.testing.assert_array_equal(to_numpy(cell.bias), np.zeros(8))


CELL_HARNESS_CASES = {
    "lstm": ("lstm", {}),
    "gru_state": ("gru", {"return_state": True}),
    "gru_reset_before_backwards": ("gru_reset_before", {"go_backwards": True}),
}


@pytest.mark.parametrize("case", list(CELL_HARNESS_CASES))
def test_cell_harness(case, tmp_path):
    cell, rnn_kwargs = CELL_HARNESS_CASES[case]
    ours_class, keras_class, _, kwargs = CELLS[cell]
    run_layer_test(
        lambda: keras.layers.RNN(
            ours_class(UNITS, **kwargs), return_sequences=True, **rnn_kwargs
        ),
        inputs(),
        tmp_path,
        reference_factory=lambda: keras.layers.RNN(
            keras_class(UNITS, **kwargs), return_sequences=True, **rnn_kwargs
        ),
    )
