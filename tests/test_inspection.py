"""Tests for keras_gated.inspection: layer discovery, gate twins, gates.

Gates are checked against a NumPy implementation of the published
equations run on the weights of the (mostly built-in) layers, so the
reference shares no code with the package.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import to_numpy

import keras_gated
from keras_gated import inspection

pytestmark = pytest.mark.backends


def assert_allclose(actual, expected, **kwargs):
    """NumPy's check on any backend's tensors (PyTorch's may need grad)."""
    np.testing.assert_allclose(to_numpy(actual), to_numpy(expected), **kwargs)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_lstm_gates(x, kernel, recurrent_kernel, bias, mask=None):
    """Gates of a Keras LSTM (gate order i, f, c, o), processing order."""
    batch, timesteps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units))
    c = np.zeros((batch, units))
    names = ("input", "forget", "candidate", "output", "cell")
    gates = {name: np.zeros((batch, timesteps, units)) for name in names}
    for t in range(timesteps):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        keep = np.ones((batch, 1)) if mask is None else mask[:, t, None]
        c = np.where(keep, c_new, c)
        h = np.where(keep, h_new, h)
        for name, value in zip(names, (i, f, g, o), strict=False):
            gates[name][:, t] = value * keep
        gates["cell"][:, t] = c
    return gates


def numpy_gru_gates(x, kernel, recurrent_kernel, bias):
    """Gates of a Keras GRU with reset_after=True (order z, r, h)."""
    batch, timesteps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = np.zeros((batch, units))
    gates = {n: [] for n in ("update", "reset", "candidate")}
    for t in range(timesteps):
        xz, xr, xh = np.split(x[:, t] @ kernel + bias[0], 3, axis=-1)
        hz, hr, hh = np.split(h @ recurrent_kernel + bias[1], 3, axis=-1)
        z = sigmoid(xz + hz)
        r = sigmoid(xr + hr)
        n = np.tanh(xh + r * hh)
        h = z * h + (1 - z) * n
        for name, value in zip(gates, (z, r, n), strict=True):
            gates[name].append(value)
    return {name: np.stack(v, axis=1) for name, v in gates.items()}


def numpy_simple_rnn_pre_activations(
    x, kernel, recurrent_kernel, bias, mask=None
):
    """z_t = x_t W + h_{t-1} U + b of a Keras SimpleRNN (h_t = tanh(z_t)),
    processing order; a masked step keeps h and has z = 0."""
    batch, timesteps, _ = x.shape
    h = np.zeros((batch, recurrent_kernel.shape[0]))
    pre_activations = []
    for t in range(timesteps):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        keep = np.ones((batch, 1)) if mask is None else mask[:, t, None]
        h = np.where(keep, np.tanh(z), h)
        pre_activations.append(z * keep)
    return np.stack(pre_activations, axis=1)


def random_bias(layer, seed=0):
    """Gives a built layer's bias random values, so errors in it show."""
    rng = np.random.default_rng(seed)
    weights = layer.get_weights()
    weights[-1] = rng.normal(size=weights[-1].shape).astype("float32")
    layer.set_weights(weights)


def test_recurrent_layers_order_names_and_nesting():
    inner = keras.Sequential(
        [
            keras.Input((6, 8)),
            keras.layers.SimpleRNN(3, return_sequences=True, name="simple"),
        ],
        name="inner",
    )
    shared = keras_gated.GRU(2, return_sequences=True, name="shared")
    inputs = keras.Input((6, 4))
    h = keras.layers.Bidirectional(
        keras.layers.LSTM(4, return_sequences=True), name="bidi"
    )(inputs)
    h = inner(h)
    h = keras.layers.RNN(
        keras.layers.GRUCell(2), return_sequences=True, name="rnn"
    )(h)
    h = shared(shared(h))
    outputs = keras.layers.Dense(1)(keras_gated.LSTM(2, name="ours")(h))
    model = keras.Model(inputs, outputs)

    found = keras_gated.recurrent_layers(model)

    assert [name for name, _ in found] == [
        "bidi/forward",
        "bidi/backward",
        "inner/simple",
        "rnn",
        "shared",
        "ours",
    ]
    bidi = model.get_layer("bidi")
    assert found[0][1] is bidi.forward_layer
    assert found[1][1] is bidi.backward_layer
    assert found[2][1] is inner.get_layer("simple")


def test_recurrent_layers_rejects_a_non_model():
    with pytest.raises(ValueError, match="model must be a keras.Model"):
        keras_gated.recurrent_layers(keras.layers.LSTM(2))


@pytest.mark.parametrize(
    "layer",
    [
        keras.layers.LSTM(3, go_backwards=True, return_sequences=True),
        keras.layers.GRU(3, return_sequences=True),
        keras.layers.GRU(3, reset_after=False, return_sequences=True),
        keras.layers.SimpleRNN(3, go_backwards=True, return_sequences=True),
        keras_gated.LSTM(3, return_sequences=True),
        keras_gated.GRU(3, go_backwards=True, return_sequences=True),
        keras_gated.SimpleRNN(3, return_sequences=True),
    ],
    ids=[
        "lstm_backwards",
        "gru",
        "gru_reset_before",
        "simple_rnn_backwards",
        "ours_lstm",
        "ours_gru",
        "ours_simple_rnn",
    ],
)
def test_gate_twin_computes_what_the_layer_computes(layer):
    x = np.random.default_rng(1).normal(size=(2, 5, 4)).astype("float32")
    outputs = layer(x)
    random_bias(layer)
    outputs = layer(x)

    twin = keras_gated.gate_twin(layer)

    (twin_class,) = [
        ours
        for ours, builtin in inspection.TWIN_CLASSES
        if isinstance(layer, (ours, builtin))
    ]
    assert type(twin) is twin_class
    assert twin.return_gates and twin.go_backwards == layer.go_backwards
    twin_outputs, gates = twin(x)
    assert_allclose(twin_outputs, outputs, atol=1e-6)
    assert list(gates) == list(twin.sequence_names)
    assert all(value.shape == (2, 5, 3) for value in gates.values())


@pytest.mark.parametrize(
    "ours, builtin, expected",
    [
        (keras_gated.LSTM, keras.layers.LSTM, keras_gated.LSTM_GATES),
        (keras_gated.GRU, keras.layers.GRU, keras_gated.GRU_GATES),
        (
            keras_gated.SimpleRNN,
            keras.layers.SimpleRNN,
            keras_gated.SIMPLE_RNN_GATES,
        ),
    ],
    ids=["lstm", "gru", "simple_rnn"],
)
def test_gate_names_of_ours_and_builtins_are_the_cells(ours, builtin, expected):
    layer = ours(2)
    assert (ours, builtin) in inspection.TWIN_CLASSES
    assert inspection.gate_names(layer) == tuple(layer.cell.gate_names)
    assert (
        inspection.gate_names(builtin(2)) == expected == layer.cell.gate_names
    )
    assert inspection.has_gates(layer) and inspection.has_gates(builtin(2))
    assert inspection.is_recurrent(layer)


def test_layers_without_a_twin_have_no_gate_names():
    layer = keras.layers.RNN(keras.layers.SimpleRNNCell(2))
    assert inspection.is_recurrent(layer)
    assert not inspection.has_gates(layer)
    assert inspection.gate_names(layer) == ()
    assert inspection.gate_names(keras.layers.Dense(2)) == ()


def test_gate_twin_rejects_other_and_unbuilt_layers():
    with pytest.raises(
        ValueError,
        match=r"layer must be a keras.layers.LSTM, .*keras.layers.SimpleRNN, "
        r"keras_gated.LSTM, .*keras_gated.SimpleRNN.*Received: "
        r"layer=.* of type RNN",
    ):
        keras_gated.gate_twin(keras.layers.RNN(keras.layers.SimpleRNNCell(2)))
    with pytest.raises(ValueError, match="layer must be built"):
        keras_gated.gate_twin(keras.layers.LSTM(2))
    with pytest.raises(ValueError, match="layer must be built"):
        keras_gated.gate_twin(keras.layers.SimpleRNN(2))


def test_gate_outputs_of_a_builtin_lstm_match_numpy_with_masking():
    x = np.random.default_rng(2).normal(size=(3, 6, 2)).astype("float32")
    x[0, 4:] = 0.0
    model = keras.Sequential(
        [
            keras.Input((6, 2)),
            keras.layers.Masking(0.0),
            keras.layers.LSTM(4, name="lstm"),
        ]
    )
    lstm = model.get_layer("lstm")
    random_bias(lstm)
    mask = np.any(x != 0.0, axis=-1)

    gates, masks = keras_gated.gate_outputs(model, x, return_masks=True)

    expected = numpy_lstm_gates(x, *lstm.get_weights(), mask=mask)
    assert set(gates) == {f"lstm/{name}" for name in expected}
    for name, value in expected.items():
        assert_allclose(gates[f"lstm/{name}"], value, atol=1e-5)
    np.testing.assert_array_equal(masks["lstm"], mask)


def test_gate_outputs_of_backward_layers_are_in_input_order():
    x = np.random.default_rng(3).normal(size=(2, 7, 3)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((7, 3)),
            keras.layers.Bidirectional(
                keras.layers.LSTM(4, return_sequences=True), name="bidi"
            ),
            keras.layers.GRU(2, go_backwards=True, name="gru"),
        ]
    )
    bidi = model.get_layer("bidi")
    random_bias(bidi.forward_layer, seed=1)
    random_bias(bidi.backward_layer, seed=2)
    gru = model.get_layer("gru")

    gates = keras_gated.gate_outputs(model, x)

    forward = numpy_lstm_gates(x, *bidi.forward_layer.get_weights())
    backward = numpy_lstm_gates(x[:, ::-1], *bidi.backward_layer.get_weights())
    h = keras.ops.convert_to_numpy(bidi(x))
    gru_gates = numpy_gru_gates(h[:, ::-1], *gru.get_weights())
    for name in ("forget", "cell"):
        assert_allclose(gates[f"bidi/forward/{name}"], forward[name], atol=1e-5)
        assert_allclose(
            gates[f"bidi/backward/{name}"], backward[name][:, ::-1], atol=1e-5
        )
    assert_allclose(
        gates["gru/update"], gru_gates["update"][:, ::-1], atol=1e-5
    )


def test_gate_outputs_sees_the_inputs_inside_nested_models():
    x = np.random.default_rng(4).normal(size=(2, 5, 3)).astype("float32")
    inner = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.Dense(6, activation="tanh"),
            keras_gated.LSTM(2, name="deep"),
        ],
        name="inner",
    )
    inputs = keras.Input((5, 3))
    model = keras.Model(inputs, keras.layers.Dense(1)(inner(inputs * 2.0)))

    gates = keras_gated.gate_outputs(model, x)

    deep = inner.get_layer("deep")
    seen = keras.ops.convert_to_numpy(inner.layers[0](x * 2.0))
    expected = numpy_lstm_gates(seen, *deep.get_weights())
    assert_allclose(gates["inner/deep/output"], expected["output"], atol=1e-5)


@pytest.mark.tensorflow_only
def test_gate_outputs_traces_in_tf_function_and_follows_weights():
    model = keras.Sequential(
        [keras.Input((4, 2)), keras.layers.GRU(3, name="gru")]
    )
    x = np.random.default_rng(5).normal(size=(2, 4, 2)).astype("float32")
    traced = tf.function(lambda x: keras_gated.gate_outputs(model, x))

    first = traced(tf.constant(x))["gru/reset"].numpy()
    tracing_count = traced.experimental_get_tracing_count()
    random_bias(model.get_layer("gru"), seed=9)
    second = traced(tf.constant(x))["gru/reset"].numpy()

    gru = model.get_layer("gru")
    expected = numpy_gru_gates(x, *gru.get_weights())["reset"]
    assert_allclose(second, expected, atol=1e-5)
    assert not np.allclose(first, second)
    assert traced.experimental_get_tracing_count() == tracing_count


def test_gate_outputs_of_a_stateful_layer_start_from_its_states():
    lstm = keras.layers.LSTM(3, stateful=True, name="lstm")
    model = keras.Sequential([keras.Input((4, 2), batch_size=2), lstm])
    x = np.random.default_rng(6).normal(size=(2, 4, 2)).astype("float32")
    model(x)
    h, c = (state.numpy() for state in lstm.states)

    gates = keras_gated.gate_outputs(model, x)

    kernel, recurrent_kernel, bias = lstm.get_weights()
    z = x[:, 0] @ kernel + h @ recurrent_kernel + bias
    forget = sigmoid(np.split(z, 4, axis=-1)[1])
    assert_allclose(gates["lstm/forget"][:, 0], forget, atol=1e-5)


def test_inspect_gates_returns_nested_numpy_dicts():
    model = keras.Sequential(
        [
            keras.Input((5, 2)),
            keras.layers.Bidirectional(keras.layers.GRU(3), name="bidi"),
            keras.layers.Dense(1),
        ]
    )
    x = np.zeros((4, 5, 2), "float32")

    gates = keras_gated.inspect_gates(model, x)

    assert list(gates) == ["bidi/forward", "bidi/backward"]
    assert sorted(gates["bidi/forward"]) == sorted(keras_gated.GRU_SEQUENCES)
    value = gates["bidi/backward"]["update"]
    assert isinstance(value, np.ndarray) and value.shape == (4, 5, 3)


def test_inspect_gates_ignores_recurrent_layers_without_gates():
    model = keras.Sequential(
        [keras.Input((5, 2)), keras.layers.RNN(keras.layers.SimpleRNNCell(3))]
    )
    assert keras_gated.inspect_gates(model, np.zeros((1, 5, 2))) == {}


def test_simple_rnn_pre_activations_match_numpy_with_masking():
    x = np.random.default_rng(8).normal(size=(3, 6, 2)).astype("float32")
    x[0, 4:] = 0.0
    x[2, 1:] = 0.0
    model = keras.Sequential(
        [
            keras.Input((6, 2)),
            keras.layers.Masking(0.0),
            keras.layers.SimpleRNN(4, return_sequences=True, name="simple"),
            keras_gated.SimpleRNN(3, name="ours"),
        ]
    )
    simple, ours = model.get_layer("simple"), model.get_layer("ours")
    random_bias(simple, seed=1)
    random_bias(ours, seed=2)
    mask = np.any(x != 0.0, axis=-1)

    gates = keras_gated.inspect_gates(model, x)

    expected = numpy_simple_rnn_pre_activations(
        x, *simple.get_weights(), mask=mask
    )
    assert {name: sorted(g) for name, g in gates.items()} == {
        "simple": ["pre_activation"],
        "ours": ["pre_activation"],
    }
    assert_allclose(gates["simple"]["pre_activation"], expected, atol=1e-5)
    h = keras.ops.convert_to_numpy(simple(x, mask=mask))
    assert_allclose(
        gates["ours"]["pre_activation"],
        numpy_simple_rnn_pre_activations(h, *ours.get_weights(), mask=mask),
        atol=1e-5,
    )
    assert np.all(gates["ours"]["pre_activation"][2, 1:] == 0.0)


def test_simple_rnn_pre_activations_backwards_and_bidirectional():
    x = np.random.default_rng(9).normal(size=(2, 7, 3)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((7, 3)),
            keras.layers.Bidirectional(
                keras.layers.SimpleRNN(4, return_sequences=True), name="bidi"
            ),
            keras.layers.SimpleRNN(2, go_backwards=True, name="back"),
        ]
    )
    bidi, back = model.get_layer("bidi"), model.get_layer("back")
    random_bias(bidi.forward_layer, seed=3)
    random_bias(bidi.backward_layer, seed=4)
    random_bias(back, seed=5)

    gates = keras_gated.inspect_gates(model, x)

    forward = numpy_simple_rnn_pre_activations(
        x, *bidi.forward_layer.get_weights()
    )
    backward = numpy_simple_rnn_pre_activations(
        x[:, ::-1], *bidi.backward_layer.get_weights()
    )
    h = keras.ops.convert_to_numpy(bidi(x))
    last = numpy_simple_rnn_pre_activations(h[:, ::-1], *back.get_weights())
    assert list(gates) == ["bidi/forward", "bidi/backward", "back"]
    assert_allclose(gates["bidi/forward"]["pre_activation"], forward, atol=1e-5)
    # Input time order: the backward halves' gates are flipped back.
    assert_allclose(
        gates["bidi/backward"]["pre_activation"], backward[:, ::-1], atol=1e-5
    )
    assert_allclose(gates["back"]["pre_activation"], last[:, ::-1], atol=1e-5)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.lstm = keras.layers.LSTM(3, name="lstm")

    def call(self, x):
        return self.lstm(x)


def test_inspect_gates_of_an_unbuilt_subclassed_model():
    model = Subclassed()
    x = np.random.default_rng(7).normal(size=(2, 4, 2)).astype("float32")

    gates = keras_gated.inspect_gates(model, x)

    expected = numpy_lstm_gates(x, *model.lstm.get_weights())
    assert_allclose(gates["lstm"]["input"], expected["input"], atol=1e-5)


def small_gated_model():
    return keras.Sequential(
        [
            keras.Input((5, 2)),
            keras.layers.LSTM(3, return_sequences=True, name="lstm"),
            keras.layers.Dense(1),
        ]
    )


GOOD_X = np.zeros((4, 5, 2), "float32")

BAD_INPUTS = [
    (None, r"x must be the model's inputs.*Received: x=None"),
    ("abc", r"x must hold numbers or booleans"),
    (np.array([["a"]]), r"x must hold numbers or booleans"),
    ([{1, 2}], r"x must hold numbers or booleans.*dtype object"),
    ([GOOD_X, GOOD_X], r"one array per input .* 1 .*Received: 2 arrays"),
    (np.zeros((4, 2)), r"match the input shapes .*shape \(4, 2\) in x"),
    (np.zeros((4, 5, 3)), r"match the input shapes .*shape \(4, 5, 3\) in x"),
    (np.zeros((0, 5, 2)), r"x must not be empty.*shape \(0, 5, 2\)"),
    (np.zeros((4, 0, 2)), r"x must not be empty.*shape \(4, 0, 2\)"),
]


@pytest.mark.parametrize("x, message", BAD_INPUTS)
def test_inspect_gates_rejects_bad_inputs_naming_x(x, message):
    with pytest.raises(ValueError, match=message):
        keras_gated.inspect_gates(small_gated_model(), x)


@pytest.mark.parametrize("x, message", BAD_INPUTS)
def test_gate_outputs_rejects_bad_inputs_naming_inputs(x, message):
    message = message.replace("x must", "inputs must").replace(
        "in x", "in inputs"
    )
    message = message.replace("Received: x=", "Received: inputs=")
    with pytest.raises(ValueError, match=message):
        keras_gated.gate_outputs(small_gated_model(), x)


@pytest.mark.parametrize(
    "mask, message",
    [
        ("x", r"mask must be None or a boolean \(batch, timesteps\)"),
        (np.ones((4, 5, 1), bool), r"mask must be None or a boolean"),
        (np.ones((4, 3), bool), r"\(batch, timesteps\) = \(4, 5\).*\(4, 3\)"),
        (np.ones((2, 5), bool), r"\(batch, timesteps\) = \(4, 5\).*\(2, 5\)"),
    ],
)
def test_bad_masks_are_refused_before_the_model_runs(mask, message):
    with pytest.raises(ValueError, match=message):
        keras_gated.inspect_gates(small_gated_model(), GOOD_X, mask=mask)


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_return_masks_must_be_a_bool(value):
    with pytest.raises(
        ValueError, match=rf"return_masks must be True or False.*{value!r}"
    ):
        keras_gated.gate_outputs(
            small_gated_model(), GOOD_X, return_masks=value
        )


@pytest.mark.parametrize(
    "function", [keras_gated.inspect_gates, keras_gated.gate_outputs]
)
def test_gate_functions_reject_a_non_model(function):
    layer = keras.layers.LSTM(2)
    with pytest.raises(
        ValueError, match=r"model must be a keras.Model.*of type LSTM \(a layer"
    ):
        function(layer, GOOD_X)
    with pytest.raises(ValueError, match=r"model=None of type NoneType"):
        function(None, GOOD_X)


def test_accepted_inputs_still_give_keras_outputs():
    """What the checks let through: another length, integer arrays, an
    unbuilt subclassed model; gates as the model computes them."""
    model = small_gated_model()
    rng = np.random.default_rng(3)
    for x in (rng.random((2, 8, 2)), rng.integers(0, 3, (2, 5, 2))):
        gates = keras_gated.inspect_gates(model, x)
        lstm = model.get_layer("lstm")
        expected = numpy_lstm_gates(
            np.asarray(x, "float32"), *lstm.get_weights()
        )
        for name, value in expected.items():
            assert_allclose(gates["lstm"][name], value, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("layer", [None, "lstm", keras.layers.Dense(2)])
def test_gate_twin_names_what_it_received(layer):
    with pytest.raises(
        ValueError,
        match=rf"Received: layer={layer!r} of type {type(layer).__name__}$",
    ):
        keras_gated.gate_twin(layer)


def test_gate_twin_of_a_bidirectional_points_at_its_halves():
    bidi = keras.layers.Bidirectional(keras.layers.LSTM(2))
    bidi.build((None, 4, 3))
    with pytest.raises(ValueError, match=r"pass layer.forward_layer"):
        keras_gated.gate_twin(bidi)
    twin = keras_gated.gate_twin(bidi.forward_layer)
    assert isinstance(twin, keras_gated.LSTM)
