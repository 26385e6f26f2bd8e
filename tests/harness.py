"""Shared layer checks on public API, in the spirit of keras-hub's
`run_layer_test`, `run_serialization_test` and `run_model_saving_test`.

`run_layer_test` takes a factory for our layer (or for a `keras.layers.RNN`
around one of our cells) and, where there is one, a factory for the Keras
built-in twin. It checks the config round trip, an eager and a symbolic
call (Functional model, `predict`), one `fit` step and a `.keras` round
trip; with a twin, the outputs and the weights after the fit step must
equal the twin's given the same starting weights.
"""

import copy
import json

import keras
import numpy as np

ATOL = 1e-5


def random_weights(layer, seed=0, scale=0.5):
    """Gives `layer` random normal weights (biases included) and returns them.

    Initializers leave the biases at zero and would hide a bias that is
    added in the wrong place; random values leave nothing at a special
    value.
    """
    rng = np.random.default_rng(seed)
    values = [
        (scale * rng.standard_normal(w.shape)).astype(w.dtype)
        for w in layer.get_weights()
    ]
    layer.set_weights(values)
    return values


def split_gates_output(layer, outputs):
    """`(outputs without the gate dict, gate dict or None)`."""
    if getattr(layer, "return_gates", False):
        *rest, gates = outputs
        assert isinstance(gates, dict), type(gates)
        return (rest[0] if len(rest) == 1 else tuple(rest)), gates
    return outputs, None


def to_numpy(value):
    if hasattr(value, "detach"):
        # A torch tensor, which may require grad or be bfloat16: Keras'
        # conversion handles both.
        return np.asarray(keras.ops.convert_to_numpy(value.detach()))
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy())
    return np.asarray(keras.ops.convert_to_numpy(value))


def flat_numpy(structure):
    return [to_numpy(t) for t in keras.tree.flatten(structure)]


def assert_all_close(actual, expected, atol=ATOL, rtol=ATOL, what=""):
    actual, expected = flat_numpy(actual), flat_numpy(expected)
    assert len(actual) == len(expected), (what, len(actual), len(expected))
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == e.shape, (what, index, a.shape, e.shape)
        np.testing.assert_allclose(
            a.astype("float64"),
            e.astype("float64"),
            atol=atol,
            rtol=rtol,
            err_msg=f"{what} [output {index}]",
        )


def as_json(config):
    """A config as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(config))


def reset_states(*layers):
    for layer in layers:
        if getattr(layer, "stateful", False):
            layer.reset_state()


def gradients(loss_fn, variables=(), tensors=()):
    """d loss_fn(*tensors) / d (variables, tensors) on Keras' backend.

    `loss_fn` computes a scalar from the input `tensors` and any Keras
    variables it reads; the gradients come back in the order
    `[*variables, *tensors]`, by the backend's own autodiff: a
    `tf.GradientTape`, `jax.grad` with the variables' values substituted
    through a `keras.StatelessScope`, or `torch.autograd.grad`. An input
    the loss does not depend on gets zeros.
    """
    variables, tensors = list(variables), list(tensors)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(t) for t in tensors]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            loss = loss_fn(*tensors)
        return tape.gradient(
            loss,
            variables + tensors,
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )

    def pure(values, tensors):
        mapping = list(zip(variables, values, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            return loss_fn(*tensors)

    values = [keras.ops.convert_to_tensor(v) for v in variables]
    tensors = [keras.ops.convert_to_tensor(t) for t in tensors]
    if backend == "jax":
        import jax

        grads = jax.grad(pure, argnums=(0, 1))(values, tensors)
        return [*grads[0], *grads[1]]
    assert backend == "torch", backend
    import torch

    inputs = [t.detach().clone().requires_grad_(True) for t in values + tensors]
    loss = pure(inputs[: len(values)], inputs[len(values) :])
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [
        torch.zeros_like(t) if g is None else g
        for t, g in zip(inputs, grads, strict=True)
    ]


def call(layer, inputs, mask, **kwargs):
    """`layer(inputs, mask=mask, **kwargs)`, the mask left out when None.

    A `keras.layers.RNN` (a built-in, or Keras' RNN around a cell) run
    backwards, unrolled and masked fails on Keras' PyTorch backend: its
    `rnn()` hands a tuple to `torch.flip`, whatever the cell (Keras' own
    included). There the layer runs its loop instead (`unroll=False`),
    which computes the same function.
    """
    implicit = getattr(inputs, "_keras_mask", None)
    masked = mask is not None or implicit is not None
    if (
        keras.backend.backend() == "torch"
        and isinstance(layer, keras.layers.RNN)
        and layer.go_backwards
        and layer.unroll
        and masked
    ):
        layer.unroll = False
        try:
            return call(layer, inputs, mask, **kwargs)
        finally:
            layer.unroll = True
    if mask is not None:
        kwargs["mask"] = mask
    return layer(inputs, **kwargs)


def in_graph(forward):
    """`forward` in a `tf.function`; a graph is TensorFlow's, so on any
    other backend the calling test is skipped."""
    import pytest

    if keras.backend.backend() != "tensorflow":
        pytest.skip("a tf.function graph is TensorFlow's")
    import tensorflow as tf

    return tf.function(forward)


def _first(outputs):
    return keras.tree.flatten(outputs)[0]


def _fit_one_step(layer, x, y, stateful):
    inputs = keras.Input(
        shape=x.shape[1:], batch_size=x.shape[0] if stateful else None
    )
    model = keras.Model(inputs, _first(layer(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    reset_states(layer)
    history = model.fit(
        x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0
    )
    return history.history["loss"][0], layer.get_weights()


def run_config_test(layer):
    """`get_config` / `from_config` and the JSON serialization round trip."""
    config = layer.get_config()
    # Keras' RNN.from_config pops keys from the dict it is given.
    clone = type(layer).from_config(copy.deepcopy(config))
    assert clone.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(serialized))
    )
    assert type(restored) is type(layer)
    assert restored.get_config() == config


def run_builtin_config_test(our_class, builtin_layer):
    """Our layer accepts a built-in layer's config and keeps its values."""
    builtin_config = builtin_layer.get_config()
    ours = our_class.from_config(copy.deepcopy(builtin_config))
    ours_config = ours.get_config()
    for key, value in builtin_config.items():
        assert key in ours_config, key
        assert ours_config[key] == value, (key, ours_config[key], value)
    return ours


def run_layer_test(
    layer_factory,
    input_data,
    tmp_path,
    reference_factory=None,
    run_fit=True,
    run_saving=True,
    atol=ATOL,
):
    """Runs the shared layer checks; returns the eager outputs of our layer.

    Args:
        layer_factory: `() -> layer`, a fresh unbuilt layer on every call.
        input_data: float32 array `(batch, timesteps, features)`.
        tmp_path: pytest's `tmp_path`, for the `.keras` file.
        reference_factory: `() -> layer`, the Keras built-in twin (with
            `use_cudnn=False`), or None.
    """
    x = np.asarray(input_data, "float32")
    layer = layer_factory()
    stateful = getattr(layer, "stateful", False)
    run_config_test(layer)

    # Eager call; with a twin, the twin's weights are random and copied.
    eager = layer(x)
    reference = None
    if reference_factory is not None:
        reference = reference_factory()
        reference(x)
        layer.set_weights(random_weights(reference, seed=1))
        reset_states(layer, reference)
        eager = layer(x)
        expected = reference(x)
        outputs, _ = split_gates_output(layer, eager)
        assert_all_close(outputs, expected, atol=atol, what="eager vs twin")
    else:
        random_weights(layer, seed=1)
        reset_states(layer)
        eager = layer(x)
    for value in flat_numpy(eager):
        assert np.all(np.isfinite(value))

    # Symbolic call: same structure and shapes, same values in a model.
    inputs = keras.Input(
        shape=x.shape[1:], batch_size=x.shape[0] if stateful else None
    )
    symbolic = layer(inputs)
    keras.tree.assert_same_structure(symbolic, eager)
    for sym, value in zip(
        keras.tree.flatten(symbolic), keras.tree.flatten(eager), strict=True
    ):
        assert tuple(sym.shape)[1:] == tuple(value.shape)[1:]
        assert sym.shape[0] in (None, value.shape[0])
    model = keras.Model(inputs, symbolic)
    reset_states(layer)
    assert_all_close(model(x), eager, atol=1e-6, what="functional")
    reset_states(layer)
    predicted = model.predict(x, batch_size=len(x), verbose=0)
    assert_all_close(predicted, eager, atol=atol, what="predict (graph)")

    if run_saving:
        path = tmp_path / "model.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        loaded_layer = [
            lay for lay in loaded.layers if type(lay) is type(layer)
        ]
        assert len(loaded_layer) == 1
        assert as_json(loaded_layer[0].get_config()) == as_json(
            layer.get_config()
        )
        reset_states(layer, loaded_layer[0])
        assert_all_close(
            loaded(x), model(x), atol=1e-6, what=".keras round trip"
        )

    if run_fit:
        reset_states(layer)
        target = (
            np.random.default_rng(2)
            .standard_normal(_first(eager).shape)
            .astype("float32")
        )
        before = layer.get_weights()
        trainable_before = [w.numpy() for w in layer.trainable_weights]
        loss, after = _fit_one_step(layer, x, target, stateful)
        assert np.isfinite(loss)
        for old, new in zip(
            trainable_before, layer.trainable_weights, strict=True
        ):
            assert not np.allclose(old, new.numpy()), new.path
        if reference is not None:
            reference.set_weights(before)
            ref_loss, ref_after = _fit_one_step(reference, x, target, stateful)
            np.testing.assert_allclose(loss, ref_loss, rtol=atol)
            assert_all_close(after, ref_after, atol=atol, what="fit step")
    return eager
