"""Tests for keras_gated.gradients.timestep_gradients.

Every norm is compared with an independent gradient, taken by the
backend's own autodiff (`harness.gradients`): with respect to an input, or
through an LSTM, GRU or SimpleRNN unrolled by hand in `keras.ops` from the
published equations with zero perturbations added to the states.
"""

import keras
import numpy as np
import pytest
from harness import gradients
from harness import to_numpy
from keras import ops

import keras_gated

pytestmark = pytest.mark.backends


def norms(gradient):
    """L2 norm over the batch and feature axes, per timestep."""
    return np.sqrt(np.sum(np.square(to_numpy(gradient)), axis=(0, 2)))


def tensors(*values):
    return [ops.convert_to_tensor(value) for value in values]


def normal(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def unrolled_lstm(x, kernel, recurrent_kernel, bias, eps_h, eps_c):
    """LSTM by hand, perturbing c_t before h_t is computed from it, and h_t."""
    kernel, recurrent_kernel, bias = tensors(kernel, recurrent_kernel, bias)
    batch, timesteps, _ = x.shape
    units = recurrent_kernel.shape[0]
    h = ops.zeros((batch, units))
    c = ops.zeros((batch, units))
    outputs = []
    for t in range(timesteps):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        i, f, g, o = ops.split(z, 4, axis=-1)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g) + eps_c[:, t]
        h = ops.sigmoid(o) * ops.tanh(c) + eps_h[:, t]
        outputs.append(h)
    return ops.stack(outputs, axis=1)


def unrolled_gru(x, kernel, recurrent_kernel, bias, eps_h):
    """GRU (reset_after=True) by hand, perturbing h_t."""
    kernel, recurrent_kernel, bias = tensors(kernel, recurrent_kernel, bias)
    batch, timesteps, _ = x.shape
    h = ops.zeros((batch, recurrent_kernel.shape[0]))
    outputs = []
    for t in range(timesteps):
        xz, xr, xh = ops.split(x[:, t] @ kernel + bias[0], 3, axis=-1)
        hz, hr, hh = ops.split(h @ recurrent_kernel + bias[1], 3, axis=-1)
        z = ops.sigmoid(xz + hz)
        r = ops.sigmoid(xr + hr)
        h = z * h + (1 - z) * ops.tanh(xh + r * hh) + eps_h[:, t]
        outputs.append(h)
    return ops.stack(outputs, axis=1)


def unrolled_simple_rnn(x, kernel, recurrent_kernel, bias, eps_h):
    """SimpleRNN by hand, h_t = tanh(x_t W + h_{t-1} U + b), perturbing h_t."""
    kernel, recurrent_kernel, bias = tensors(kernel, recurrent_kernel, bias)
    batch, timesteps, _ = x.shape
    h = ops.zeros((batch, recurrent_kernel.shape[0]))
    outputs = []
    for t in range(timesteps):
        h = ops.tanh(x[:, t] @ kernel + h @ recurrent_kernel + bias)
        h = h + eps_h[:, t]
        outputs.append(h)
    return ops.stack(outputs, axis=1)


def sequence_model(layer, timesteps=6, features=3):
    model = keras.Sequential(
        [
            keras.Input((timesteps, features)),
            layer,
            keras.layers.Dense(2, name="head"),
        ]
    )
    model.compile(loss="mse")
    return model


def head_loss(model, hidden, y):
    """The mse of `hidden` through the Dense head, by hand from its
    weights."""
    kernel, bias = tensors(*model.get_layer("head").get_weights())
    (y,) = tensors(y)
    return ops.mean(ops.square(hidden @ kernel + bias - y))


def reference_state_gradients(model, x, y, unrolled, state_names):
    """dL/dx, dL/dh, dL/dc by hand for `sequence_model(return_sequences)`."""
    rnn = model.layers[0]
    batch, timesteps, _ = x.shape
    eps = [ops.zeros((batch, timesteps, rnn.units)) for _ in state_names]

    def loss(x, *eps):
        return head_loss(model, unrolled(x, *rnn.get_weights(), *eps), y)

    grads = gradients(loss, (), [x, *eps])
    names = ("inputs", *state_names)
    return {name: norms(value) for name, value in zip(names, grads)}


def test_lstm_input_and_hidden_gradients_match_an_unrolled_reference():
    model = sequence_model(keras_gated.LSTM(4, return_sequences=True))
    x, y = normal((5, 6, 3)), normal((5, 6, 2), seed=1)

    result = keras_gated.timestep_gradients(model, x, y)

    expected = reference_state_gradients(
        model, x, y, unrolled_lstm, ("hidden", "cell")
    )
    assert list(result) == ["lstm"] or len(result) == 1
    (layer_result,) = result.values()
    assert {"cell", "hidden", "inputs"} <= set(layer_result)
    for name in ("inputs", "hidden"):
        assert layer_result[name].shape == (6,)
        np.testing.assert_allclose(
            layer_result[name], expected[name], rtol=1e-4
        )


def test_lstm_cell_gradient_is_the_total_derivative():
    # dL/dc_t includes the path c_t -> h_t = o_t * tanh(c_t) of step t
    # itself, not only the paths through the later steps; at the last step
    # that path is all there is.
    model = sequence_model(keras_gated.LSTM(4, return_sequences=True))
    x, y = normal((5, 6, 3)), normal((5, 6, 2), seed=1)

    (layer_result,) = keras_gated.timestep_gradients(model, x, y).values()

    expected = reference_state_gradients(
        model, x, y, unrolled_lstm, ("hidden", "cell")
    )
    assert expected["cell"][-1] > 0
    np.testing.assert_allclose(
        layer_result["cell"], expected["cell"], rtol=1e-4
    )


def test_gru_hidden_gradient_matches_an_unrolled_reference():
    model = sequence_model(keras_gated.GRU(4, return_sequences=True))
    x, y = normal((5, 6, 3)), normal((5, 6, 2), seed=1)

    (layer_result,) = keras_gated.timestep_gradients(model, x, y).values()

    expected = reference_state_gradients(model, x, y, unrolled_gru, ("hidden",))
    assert {"hidden", "inputs"} <= set(layer_result)
    assert "cell" not in layer_result
    for name in ("inputs", "hidden"):
        np.testing.assert_allclose(
            layer_result[name], expected[name], rtol=1e-4
        )


def test_simple_rnn_hidden_gradient_matches_an_unrolled_reference():
    model = sequence_model(keras_gated.SimpleRNN(4, return_sequences=True))
    rnn = model.layers[0]
    kernel, recurrent_kernel, bias = rnn.get_weights()
    bias = np.random.default_rng(2).normal(size=bias.shape).astype("float32")
    rnn.set_weights([kernel, recurrent_kernel, bias])
    x, y = normal((5, 6, 3)), normal((5, 6, 2), seed=1)

    (layer_result,) = keras_gated.timestep_gradients(model, x, y).values()

    expected = reference_state_gradients(
        model, x, y, unrolled_simple_rnn, ("hidden",)
    )
    assert {"hidden", "inputs"} <= set(layer_result)
    assert "cell" not in layer_result
    for name in ("inputs", "hidden"):
        np.testing.assert_allclose(
            layer_result[name], expected[name], rtol=1e-4
        )


@pytest.mark.parametrize(
    "layer, expected",
    [
        (keras_gated.LSTM(2), ("hidden", "cell")),
        (keras_gated.GRU(2), ("hidden",)),
        (keras_gated.SimpleRNN(2), ("hidden",)),
        (keras.layers.LSTM(2), ()),
        (keras.layers.GRU(2), ()),
        (keras.layers.SimpleRNN(2), ()),
    ],
    ids=[
        "lstm",
        "gru",
        "simple_rnn",
        "builtin_lstm",
        "builtin_gru",
        "builtin_simple_rnn",
    ],
)
def test_state_quantities_are_our_layers_state_names(layer, expected):
    assert keras_gated.gradients.state_quantities(layer) == expected
    assert set(expected) <= set(keras_gated.gradients.QUANTITIES)


def test_hidden_gradient_of_a_backwards_layer_is_in_input_order():
    layer = keras_gated.LSTM(4, go_backwards=True, return_sequences=True)
    model = sequence_model(layer)
    x, y = normal((5, 6, 3)), normal((5, 6, 2), seed=1)

    (layer_result,) = keras_gated.timestep_gradients(model, x, y).values()

    # The layer processes x reversed and returns its outputs in processing
    # order: h at processing step s belongs to input timestep T - 1 - s.
    (x_reversed,) = tensors(np.ascontiguousarray(x[:, ::-1]))

    def loss(eps):
        hidden = unrolled_lstm(
            x_reversed,
            *layer.get_weights(),
            ops.flip(eps, axis=1),
            ops.zeros((5, 6, 4)),
        )
        return head_loss(model, hidden, y)

    (gradient,) = gradients(loss, (), [ops.zeros((5, 6, 4))])
    expected = norms(gradient)
    np.testing.assert_allclose(layer_result["hidden"], expected, rtol=1e-4)
    assert not np.allclose(layer_result["hidden"], expected[::-1])


@pytest.mark.parametrize(
    "layer_class",
    [keras.layers.SimpleRNN, keras.layers.LSTM, keras.layers.GRU],
)
def test_input_gradients_of_builtin_layers_after_other_layers(layer_class):
    # The layer sees Dense(x), not x: the reference watches Dense(x).
    model = keras.Sequential(
        [
            keras.Input((7, 3)),
            keras.layers.Dense(5, activation="tanh", name="embed"),
            layer_class(4, name="rnn"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(loss="mse")
    x, y = normal((6, 7, 3)), normal((6, 1), seed=1)

    result = keras_gated.timestep_gradients(model, x, y)

    seen = model.get_layer("embed")(x)
    (y_true,) = tensors(y)

    def loss(seen):
        prediction = model.get_layer("head")(model.get_layer("rnn")(seen))
        return ops.mean(ops.square(prediction - y_true))

    expected = norms(gradients(loss, (), [seen])[0])
    assert list(result) == ["rnn"] and "hidden" in result["rnn"]
    np.testing.assert_allclose(result["rnn"]["inputs"], expected, rtol=1e-4)


def test_input_gradients_of_both_bidirectional_halves():
    bidi = keras.layers.Bidirectional(keras.layers.GRU(3), name="bidi")
    model = keras.Sequential(
        [keras.Input((5, 2)), bidi, keras.layers.Dense(1, name="head")]
    )
    model.compile(loss="mse")
    x, y = normal((4, 5, 2)), normal((4, 1), seed=1)

    result = keras_gated.timestep_gradients(model, x, y)

    (y_true,) = tensors(y)

    def loss(x_forward, x_backward):
        features = ops.concatenate(
            [bidi.forward_layer(x_forward), bidi.backward_layer(x_backward)],
            axis=-1,
        )
        prediction = model.get_layer("head")(features)
        return ops.mean(ops.square(prediction - y_true))

    forward, backward = gradients(loss, (), [x, x])
    assert list(result) == ["bidi/forward", "bidi/backward"]
    np.testing.assert_allclose(
        result["bidi/forward"]["inputs"], norms(forward), rtol=1e-4
    )
    np.testing.assert_allclose(
        result["bidi/backward"]["inputs"], norms(backward), rtol=1e-4
    )
    # Input order: the backward half's last input step is its first step.
    assert np.argmax(result["bidi/backward"]["inputs"]) == 0


def test_masked_steps_have_zero_input_gradients_and_sample_weights_count():
    model = keras.Sequential(
        [
            keras.Input((6, 2)),
            keras.layers.Masking(0.0),
            keras_gated.LSTM(3, name="lstm"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(loss="mse")
    x, y = normal((4, 6, 2)), normal((4, 1), seed=1)
    x[:, 4:] = 0.0
    weights = np.array([1.0, 0.0, 2.0, 0.5], "float32")

    result = keras_gated.timestep_gradients(model, x, y, sample_weight=weights)

    y_true, sample_weight = tensors(y, weights)

    def loss(x):
        per_sample = ops.mean(ops.square(model(x) - y_true), axis=-1)
        return ops.sum(sample_weight * per_sample) / 4.0

    expected = norms(gradients(loss, (), [x])[0])
    np.testing.assert_allclose(result["lstm"]["inputs"], expected, rtol=1e-4)
    np.testing.assert_array_equal(result["lstm"]["inputs"][4:], 0.0)


def test_layers_argument_selects_and_names_nested_layers():
    inner = keras.Sequential(
        [keras.Input((5, 4)), keras.layers.SimpleRNN(2, name="deep")],
        name="inner",
    )
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.GRU(4, return_sequences=True, name="gru"),
            inner,
        ]
    )
    model.compile(loss="mse")
    x, y = normal((2, 5, 3)), normal((2, 2), seed=1)

    assert list(keras_gated.timestep_gradients(model, x, y)) == [
        "gru",
        "inner/deep",
    ]
    result = keras_gated.timestep_gradients(model, x, y, layers=["inner/deep"])
    assert list(result) == ["inner/deep"]
    with pytest.raises(ValueError, match=r"Received: layers=\['deep'\]"):
        keras_gated.timestep_gradients(model, x, y, layers=["deep"])


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.gru = keras_gated.GRU(3, name="gru")
        self.head = keras.layers.Dense(1)

    def call(self, x):
        return self.head(self.gru(x))


def test_an_unbuilt_subclassed_model():
    # Keras first calls the layers of an unbuilt subclassed model in a
    # scratch graph; the probes must not leak from there.
    model = Subclassed()
    model.compile(loss="mse")
    x, y = normal((2, 5, 3)), normal((2, 1), seed=1)

    result = keras_gated.timestep_gradients(model, x, y)

    (y_true,) = tensors(y)

    def loss(x):
        return ops.mean(ops.square(model(x) - y_true))

    expected = norms(gradients(loss, (), [x])[0])
    np.testing.assert_allclose(result["gru"]["inputs"], expected, rtol=1e-4)


def test_clear_errors_for_models_it_cannot_probe():
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    dense.compile(loss="mse")
    with pytest.raises(ValueError, match="must contain a recurrent layer"):
        keras_gated.timestep_gradients(dense, np.zeros((1, 3)), np.zeros(1))
    rnn = keras.Sequential([keras.Input((3, 1)), keras.layers.GRU(1)])
    with pytest.raises(ValueError, match="must be compiled with a loss"):
        keras_gated.timestep_gradients(rnn, np.zeros((1, 3, 1)), np.zeros(1))


def test_metrics_and_stateful_states_are_left_as_they_were():
    lstm = keras_gated.LSTM(3, stateful=True, name="lstm")
    model = keras.Sequential(
        [keras.Input((4, 2), batch_size=2), lstm, keras.layers.Dense(1)]
    )
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    x, y = normal((2, 4, 2)), normal((2, 1), seed=1)
    model.fit(x, y, epochs=1, verbose=0)
    before = [v.numpy() for m in model.metrics for v in m.variables]
    states = [s.numpy() for s in lstm.states]

    keras_gated.timestep_gradients(model, x, y)

    after = [v.numpy() for m in model.metrics for v in m.variables]
    for value, expected in zip(
        after + [s.numpy() for s in lstm.states], before + states, strict=True
    ):
        np.testing.assert_array_equal(value, expected)


def test_nonfinite_gradients_give_nonfinite_norms_without_raising():
    model = sequence_model(keras.layers.SimpleRNN(3, return_sequences=True))
    weights = model.layers[0].get_weights()
    weights[0][0, 0] = np.nan
    model.layers[0].set_weights(weights)

    result = keras_gated.timestep_gradients(
        model, normal((2, 6, 3)), normal((2, 6, 2))
    )

    assert not np.all(np.isfinite(result["simple_rnn"]["inputs"]))


def test_simple_rnn_input_gradient_decays_orders_of_magnitude_faster():
    # The vanishing gradient, at initialisation. With standard-normal
    # inputs of 16 features at T = 100 the SimpleRNN's tanh units saturate
    # and ||dL/dx_t|| falls ~20 orders of magnitude from t = T-1 to t = 0,
    # the LSTM's ~10 (its forget gates start near sigmoid(1) = 0.73). With
    # one small input feature the orthogonally initialised SimpleRNN hardly
    # saturates and decays less than the LSTM: the setting matters.
    x = normal((32, 100, 16))
    y = normal((32, 1), seed=1)
    decay = {}
    for name, layer_class in [
        ("simple", keras.layers.SimpleRNN),
        ("lstm", keras_gated.LSTM),
    ]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((100, 16)),
                layer_class(16, name=name),
                keras.layers.Dense(1),
            ]
        )
        model.compile(loss="mse")
        inputs = keras_gated.timestep_gradients(model, x, y)[name]["inputs"]
        decay[name] = np.log10(inputs[0] / inputs[-1])

    assert decay["lstm"] < -3
    assert decay["simple"] < decay["lstm"] - 5


def bad_batch_cases():
    x, y = normal((4, 6, 3)), normal((4, 2), seed=1)
    return [
        ({"x": None, "y": y}, r"x must hold the model's inputs.*x=None"),
        ({"x": np.array([["a"]]), "y": y}, "x must hold the model's inputs"),
        (
            {"x": x[:, :, :2], "y": y},
            r"x must fit .*\(None, 6, 3\).*\(4, 6, 2\)",
        ),
        ({"x": x[:, :, :, None], "y": y}, "x must fit the model's inputs"),
        ({"x": x, "y": y[:3]}, r"one batch.*y of shapes \(3, 2\)"),
        ({"x": x[:0], "y": y[:0]}, "at least one sample"),
        (
            {"x": x, "y": y, "sample_weight": np.ones(5)},
            r"sample_weight of shape \(5,\)",
        ),
        ({"x": x, "y": y, "training": "yes"}, "training must be True or False"),
    ]


@pytest.mark.parametrize("arguments, message", bad_batch_cases())
@pytest.mark.parametrize(
    "function",
    [
        keras_gated.timestep_gradients,
        keras_gated.weight_contributions,
        keras_gated.check_weight_contributions,
    ],
)
def test_bad_batches_are_named_before_the_model_runs(
    function, arguments, message
):
    model = sequence_model(keras_gated.GRU(4))
    with pytest.raises(ValueError, match=message):
        function(model, **arguments)


def test_the_logger_names_a_probe_whose_targets_do_not_fit(tmp_path):
    model = sequence_model(keras_gated.GRU(4))
    x, y = normal((4, 6, 3)), normal((4, 2), seed=1)
    logger = keras_gated.TimestepGradientLogger(tmp_path, (x, y[:2]))
    with pytest.raises(ValueError, match=r"probe must be one batch"):
        model.fit(x, y, epochs=1, callbacks=[logger], verbose=0)
    assert int(model.optimizer.iterations) == 0
