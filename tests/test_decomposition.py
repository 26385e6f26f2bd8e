"""Tests for the per-timestep decomposition of the gradient.

The references are independent of the package's probes:

- the recurrence unrolled by hand from the published equations, in which
  every step has its own copy of the weights (the shared weight plus a
  zero tensor of its own), so that autodiff gives each copy's gradient
  directly, and zero perturbations of the states after each step, whose
  Jacobians come a row at a time from the gradient of one unit of the
  final state;
- the backend's autodiff (`harness.gradients`) on the model's own loss for
  the weight gradients that the contributions must sum to;
- a NumPy product of the forget gates that `return_gates=True` returns.
"""

import keras
import numpy as np
import pytest
from harness import gradients
from harness import to_numpy
from keras import ops

import keras_gated

pytestmark = pytest.mark.backends

T, FEATURES, UNITS, BATCH = 6, 3, 4, 5


def normal(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def batch(seed=0, masked=False):
    x = normal((BATCH, T, FEATURES), seed)
    if masked:
        x[0, -2:] = 0.0  # padding at the end
        x[1, :3] = 0.0  # padding at the start
        x[2, 2] = 0.0  # a hole
    return x, normal((BATCH, 1), seed + 1)


def lstm_step(x_t, h, c, w, u, b):
    i, f, g, o = ops.split(x_t @ w + h @ u + b, 4, axis=-1)
    c_new = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
    return ops.sigmoid(o) * ops.tanh(c_new), c_new


def gru_step(x_t, h, c, w, u, b, reset_after):
    if reset_after:
        xz, xr, xh = ops.split(x_t @ w + b[0], 3, axis=-1)
        hz, hr, hh = ops.split(h @ u + b[1], 3, axis=-1)
        z, r = ops.sigmoid(xz + hz), ops.sigmoid(xr + hr)
        candidate = ops.tanh(xh + r * hh)
    else:
        xz, xr, xh = ops.split(x_t @ w + b, 3, axis=-1)
        hz, hr = ops.split(h @ u[:, : 2 * UNITS], 2, axis=-1)
        z, r = ops.sigmoid(xz + hz), ops.sigmoid(xr + hr)
        candidate = ops.tanh(xh + (r * h) @ u[:, 2 * UNITS :])
    return z * h + (1 - z) * candidate, c


def simple_step(x_t, h, c, w, u, b):
    return ops.tanh(x_t @ w + h @ u + b), c


def unrolled(step, x, weights, copies, eps_h, eps_c, go_backwards):
    """The layer's final hidden state, by hand: step t uses the weights
    plus `copies[k][t]`, and adds `eps_h[:, t]` to h_t and `eps_c[:, t]`
    to c_t after both are computed. Keras' masking: a sample whose input
    is all zero at t keeps its states."""
    h = ops.zeros((x.shape[0], UNITS))
    c = ops.zeros((x.shape[0], UNITS))
    order = range(T - 1, -1, -1) if go_backwards else range(T)
    for t in order:
        own = [w + d[t] for w, d in zip(weights, copies)]
        h_new, c_new = step(x[:, t], h, c, *own)
        keep = ops.any(ops.not_equal(x[:, t], 0), axis=-1, keepdims=True)
        h = ops.where(keep, h_new, h) + eps_h[:, t]
        c = ops.where(keep, c_new, c) + eps_c[:, t]
    return h, c


CASES = {
    "LSTM": (keras_gated.LSTM, keras.layers.LSTM, lstm_step, {}),
    "GRU": (
        keras_gated.GRU,
        keras.layers.GRU,
        lambda *a: gru_step(*a, True),
        {},
    ),
    "GRU-reset-before": (
        keras_gated.GRU,
        keras.layers.GRU,
        lambda *a: gru_step(*a, False),
        {"reset_after": False},
    ),
    "SimpleRNN": (
        keras_gated.SimpleRNN,
        keras.layers.SimpleRNN,
        simple_step,
        {},
    ),
}


def model_with(layer_class, go_backwards=False, **kwargs):
    model = keras.Sequential(
        [
            keras.Input((T, FEATURES)),
            keras.layers.Masking(0.0),
            layer_class(UNITS, go_backwards=go_backwards, name="rnn", **kwargs),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(loss="mse")
    bias = model.get_layer("rnn").cell.bias
    # A non-zero bias, so that its gradient is not trivially the others'.
    bias.assign(normal(bias.shape, seed=9) * 0.3)
    return model


def reference(model, step, x, y, go_backwards):
    """Per-step weight gradients and the per-sample blocks of the state
    Jacobians (`jacobian_blocks`) of the unrolled model."""
    head = model.get_layer("head")
    weights = [
        ops.convert_to_tensor(w)
        for w in model.get_layer("rnn").cell.get_weights()
    ]
    zeros = [ops.zeros((T,) + tuple(w.shape)) for w in weights]
    zeros += [ops.zeros((BATCH, T, UNITS)), ops.zeros((BATCH, T, UNITS))]
    x, y = ops.convert_to_tensor(x), ops.convert_to_tensor(y)

    def final_states(*tensors):
        *copies, eps_h, eps_c = tensors
        return unrolled(step, x, weights, copies, eps_h, eps_c, go_backwards)

    def loss(*tensors):
        return ops.mean(ops.square(head(final_states(*tensors)[0]) - y))

    per_step = gradients(loss, (), zeros)[: len(weights)]
    jacobian_h = jacobian_blocks(final_states, zeros, 0)
    jacobian_c = jacobian_blocks(final_states, zeros, 1)
    return [to_numpy(g) for g in per_step], jacobian_h, jacobian_c


def jacobian_blocks(final_states, zeros, position):
    """`[b, i, t, j] = d s_T[b, i] / d s_t[b, j]` for s = h (`position`
    0) or c (1), whose perturbations end `zeros`, a row i at a time. The
    samples do not interact, so the gradient of unit i of s_T summed over
    the batch holds row i of every sample's own block."""
    rows = []
    for unit in range(UNITS):

        def final_unit(*tensors, unit=unit):
            return ops.sum(final_states(*tensors)[position][:, unit])

        gradient = gradients(final_unit, (), zeros)[len(zeros) - 2 + position]
        rows.append(to_numpy(gradient))
    return np.stack(rows, axis=1)


def per_sample(blocks):
    """(batch, T) Frobenius norms of the per-sample Jacobian blocks
    `[b, i, t, j]`."""
    return np.sqrt(np.sum(np.square(blocks), axis=(1, 3)))


@pytest.mark.parametrize("builtin", [False, True], ids=["ours", "keras"])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_per_step_contributions_and_jacobians_match_an_unrolled_model(
    case, go_backwards, builtin
):
    ours, keras_class, step, kwargs = CASES[case]
    model = model_with(
        keras_class if builtin else ours, go_backwards=go_backwards, **kwargs
    )
    x, y = batch(masked=True)
    per_step, jacobian_h, jacobian_c = reference(
        model, step, x, y, go_backwards
    )
    parts = keras_gated.weight_contributions(model, x, y)["rnn"]
    for name, expected in zip(("kernel", "recurrent_kernel", "bias"), per_step):
        np.testing.assert_allclose(parts[name], expected, atol=2e-6, rtol=1e-4)
    # Steps masked in every sequence are none here; a step masked in one
    # sequence contributes nothing from it: sample 0's last two steps.
    norms = keras_gated.timestep_gradients(
        model, x, y, jacobians=True, jacobian_samples=BATCH
    )["rnn"]
    for name, expected in zip(("kernel", "recurrent_kernel", "bias"), per_step):
        frobenius = np.sqrt(np.sum(np.square(expected).reshape(T, -1), axis=1))
        np.testing.assert_allclose(norms[name], frobenius, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(
        norms["jacobian_hidden"],
        per_sample(jacobian_h).mean(axis=0),
        rtol=1e-4,
        atol=1e-6,
    )
    if case == "LSTM":
        np.testing.assert_allclose(
            norms["jacobian_cell"],
            per_sample(jacobian_c).mean(axis=0),
            rtol=1e-4,
            atol=1e-6,
        )
    spectral = np.linalg.norm(
        jacobian_h.transpose(0, 2, 1, 3), ord=2, axis=(2, 3)
    )
    np.testing.assert_allclose(
        norms["jacobian_hidden_spectral"],
        spectral.mean(axis=0),
        rtol=1e-4,
        atol=1e-6,
    )


def test_a_step_masked_in_every_sequence_contributes_zero():
    model = model_with(keras_gated.LSTM)
    x, y = batch()
    x[:, 2] = 0.0
    norms = keras_gated.timestep_gradients(model, x, y)["rnn"]
    for name in ("kernel", "recurrent_kernel", "bias"):
        assert norms[name][2] == 0.0
        # (h_{-1} = 0 multiplies the recurrent kernel at t = 0.)
        first = 1 if name == "recurrent_kernel" else 0
        assert np.all(np.delete(norms[name], 2)[first:] > 0)


def original_gradients(model, x, y, layer):
    """The gradients of the model's loss for `layer`'s weights, as NumPy."""

    def loss():
        return model.compute_loss(x=x, y=y, y_pred=model(x))

    return [to_numpy(g) for g in gradients(loss, layer.cell.trainable_weights)]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("builtin", [False, True], ids=["ours", "keras"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_contributions_sum_to_the_gradient_fit_applies(case, builtin, masked):
    ours, keras_class, _, kwargs = CASES[case]
    model = model_with(keras_class if builtin else ours, **kwargs)
    x, y = batch(seed=3, masked=masked)
    layer = model.get_layer("rnn")
    parts = keras_gated.weight_contributions(model, x, y)["rnn"]
    expected = original_gradients(model, x, y, layer)
    for (name, matrices), gradient in zip(parts.items(), expected):
        assert matrices.shape == (T,) + tuple(gradient.shape), name
        np.testing.assert_allclose(
            matrices.sum(axis=0), gradient, rtol=1e-5, atol=1e-6
        )
    errors = keras_gated.check_weight_contributions(model, x, y)["rnn"]
    assert set(errors) == {"kernel", "recurrent_kernel", "bias"}
    assert max(errors.values()) < 1e-5


@pytest.mark.parametrize("layer_class", [keras.layers.LSTM, keras_gated.GRU])
def test_contributions_of_both_bidirectional_halves(layer_class):
    model = keras.Sequential(
        [
            keras.Input((T, FEATURES)),
            keras.layers.Masking(0.0),
            keras.layers.Bidirectional(layer_class(UNITS), name="bidi"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(loss="mse")
    x, y = batch(seed=4, masked=True)
    parts = keras_gated.weight_contributions(model, x, y)
    bidi = model.get_layer("bidi")
    for half, layer in (
        ("forward", bidi.forward_layer),
        ("backward", bidi.backward_layer),
    ):
        expected = original_gradients(model, x, y, layer)
        for matrices, gradient in zip(parts[f"bidi/{half}"].values(), expected):
            np.testing.assert_allclose(
                matrices.sum(axis=0), gradient, rtol=1e-5, atol=1e-6
            )
    # Each half's first step multiplies U by h = 0: the forward half's at
    # t = 0, the backward half's at t = T - 1 (the input's time order).
    norms = keras_gated.timestep_gradients(model, x, y)
    assert norms["bidi/forward"]["recurrent_kernel"][0] == 0.0
    assert norms["bidi/backward"]["recurrent_kernel"][-1] == 0.0
    assert norms["bidi/backward"]["recurrent_kernel"][0] > 0.0


def test_the_first_steps_recurrent_contribution_is_zero_from_a_zero_state():
    # h_{t-1} = 0 at the first step processed: the recurrent kernel's copy
    # there has no effect, and its gradient is zero (a check on indexing).
    model = model_with(keras_gated.SimpleRNN, go_backwards=True)
    x, y = batch(seed=5)
    norms = keras_gated.timestep_gradients(model, x, y)["rnn"]
    assert norms["recurrent_kernel"][-1] == 0.0
    assert np.all(norms["recurrent_kernel"][:-1] > 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dropout": 0.3, "seed": 1},
        {"dropout": 0.3, "implementation": 1, "seed": 1},
        {"recurrent_dropout": 0.3, "seed": 1},
        {"kernel_regularizer": "l2", "recurrent_regularizer": "l1"},
    ],
    ids=["dropout", "dropout-per-gate", "recurrent-dropout", "regularized"],
)
@pytest.mark.parametrize("layer_class", [keras_gated.LSTM, keras_gated.GRU])
def test_contributions_sum_exactly_with_dropout_and_regularizers(
    layer_class, kwargs
):
    kwargs = dict(kwargs)
    if layer_class is keras_gated.GRU:
        kwargs["reset_after"] = False
    model = model_with(layer_class, **kwargs)
    x, y = batch(seed=6)
    errors = keras_gated.check_weight_contributions(model, x, y, training=True)
    assert max(errors["rnn"].values()) < 1e-5
    if "kernel_regularizer" in kwargs:
        layer = model.get_layer("rnn")
        parts = keras_gated.weight_contributions(model, x, y)["rnn"]
        expected = original_gradients(model, x, y, layer)
        # The bias has no regularizer (and TensorFlow's tape makes no
        # zeros for a Keras variable the loss does not read).
        cell = layer.cell
        penalty = gradients(
            lambda: sum(layer.losses), [cell.kernel, cell.recurrent_kernel]
        )
        extras = [to_numpy(g) for g in penalty] + [0.0]
        for matrices, gradient, extra in zip(parts.values(), expected, extras):
            np.testing.assert_allclose(
                matrices.sum(axis=0) + extra, gradient, rtol=1e-5, atol=1e-6
            )


def test_a_layer_called_twice_sums_the_contributions_of_both_calls():
    shared = keras_gated.GRU(UNITS, name="rnn")
    first = keras.Input((T, FEATURES))
    second = keras.Input((T, FEATURES))
    output = keras.layers.Dense(1)(
        keras.layers.Concatenate()([shared(first), shared(second)])
    )
    model = keras.Model([first, second], output)
    model.compile(loss="mse")
    x, y = batch(seed=7)
    inputs = [x, x[::-1] * 0.5]
    parts = keras_gated.weight_contributions(model, inputs, y)["rnn"]
    expected = original_gradients(model, inputs, y, shared)
    for matrices, gradient in zip(parts.values(), expected):
        np.testing.assert_allclose(
            matrices.sum(axis=0), gradient, rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("builtin", [False, True], ids=["ours", "keras"])
def test_retention_is_the_product_of_the_later_forget_gates(
    builtin, go_backwards
):
    layer_class = keras.layers.LSTM if builtin else keras_gated.LSTM
    model = model_with(layer_class, go_backwards=go_backwards)
    x, y = batch(seed=8, masked=True)
    norms = keras_gated.timestep_gradients(model, x, y)["rnn"]
    gates = keras_gated.inspect_gates(model, x)["rnn"]
    forget = gates["forget"].astype("float64")  # input time order
    valid = np.any(x != 0, axis=-1)
    forget = np.where(valid[..., None], forget, 1.0)
    kept = np.ones_like(forget)
    for t in range(T):
        later = range(t) if go_backwards else range(t + 1, T)
        for j in later:
            kept[:, t] *= forget[:, j]
    np.testing.assert_allclose(
        norms["retention"], kept.mean(axis=(0, 2)), rtol=1e-5
    )
    per_unit = kept.mean(axis=0)
    np.testing.assert_allclose(
        norms["retention_max"], per_unit.max(axis=-1), rtol=1e-5
    )
    for key, q in (("retention_q50", 0.5), ("retention_q90", 0.9)):
        np.testing.assert_allclose(
            norms[key], np.quantile(per_unit, q, axis=-1), rtol=1e-5
        )
    last = 0 if go_backwards else T - 1
    assert norms["retention"][last] == 1.0


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_builtin_layer_is_measured_as_its_twin_with_its_weights(case):
    ours, keras_class, _, kwargs = CASES[case]
    builtin = model_with(keras_class, **kwargs)
    twin = model_with(ours, **kwargs)
    twin.set_weights(builtin.get_weights())
    x, y = batch(seed=10, masked=True)
    expected = keras_gated.timestep_gradients(twin, x, y, jacobians=True)
    result = keras_gated.timestep_gradients(builtin, x, y, jacobians=True)
    assert sorted(result["rnn"]) == sorted(expected["rnn"])
    for key, values in expected["rnn"].items():
        np.testing.assert_allclose(
            result["rnn"][key], values, rtol=1e-4, atol=1e-7, err_msg=key
        )


def test_quantities_per_layer_kind():
    model = keras.Sequential(
        [
            keras.Input((T, FEATURES)),
            keras.layers.SimpleRNN(UNITS, return_sequences=True, name="a"),
            keras.layers.RNN(
                keras.layers.GRUCell(UNITS), return_sequences=True, name="b"
            ),
            keras_gated.LSTM(UNITS, use_bias=False, name="c"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(loss="mse")
    x, y = batch()
    norms = keras_gated.timestep_gradients(model, x, y)
    assert sorted(norms["a"]) == sorted(
        ["inputs", "hidden", "kernel", "recurrent_kernel", "bias"]
    )
    assert sorted(norms["b"]) == ["inputs"]
    assert sorted(norms["c"]) == sorted(
        ["inputs", "hidden", "cell", "kernel", "recurrent_kernel"]
        + ["retention", "retention_q50", "retention_q90", "retention_max"]
    )
    for layer_norms in norms.values():
        for values in layer_norms.values():
            assert values.shape == (T,)
    assert set(norms["c"]) <= set(keras_gated.gradients.QUANTITIES)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"jacobians": "yes"}, "jacobians must be True or False"),
        ({"jacobian_samples": 0}, "jacobian_samples must be a positive"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    model = model_with(keras_gated.LSTM)
    x, y = batch()
    with pytest.raises(ValueError, match=message):
        keras_gated.timestep_gradients(model, x, y, **kwargs)


def test_long_sequences_are_measured_a_chunk_of_steps_at_a_time(monkeypatch):
    # The per-step matrices of a long sequence are never held at once: the
    # norms computed a few steps at a time equal those of all steps at once.
    model = model_with(keras_gated.GRU)
    x, y = batch(seed=11)
    whole = keras_gated.timestep_gradients(model, x, y)["rnn"]
    monkeypatch.setattr(
        keras_gated.decomposition, "_CHUNK_ELEMENTS", FEATURES * 3 * UNITS * 4
    )
    chunked = keras_gated.timestep_gradients(model, x, y)["rnn"]
    for name in ("kernel", "recurrent_kernel"):
        np.testing.assert_allclose(chunked[name], whole[name], rtol=1e-6)
