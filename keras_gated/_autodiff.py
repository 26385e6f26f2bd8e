"""Gradients on every Keras backend, for the measurements.

`keras_gated.gradients` and `keras_gated.decomposition` differentiate a
loss with respect to zero tensors they add inside a forward pass (the
probes), whose shapes are known only once the pass reaches the probed
layer. `gradients` runs such a pass on Keras' backend, with the backend's
own autodiff:

- TensorFlow: a `tf.GradientTape` watching each probe as it is made;
- JAX: `jax.eval_shape` of the pass finds the probes' shapes, then
  `jax.value_and_grad` differentiates the pass with the probes (and the
  values of the variables asked for, through a `keras.StatelessScope`) as
  its arguments; what the pass records comes back as concrete arrays;
- PyTorch: `torch.autograd.grad`, each probe made with `requires_grad`.

TensorFlow, JAX and PyTorch are imported on first use.
"""

import contextlib

import keras
from keras import ops

# The variables of the active stateless JAX passes, innermost last.
_PASSES = []


class Sources:
    """The tensors a pass is differentiated with respect to, by key.

    A pass asks for each one with `source(key, shape, dtype)`: a zero
    tensor (or the value given for the key in `initial`), watched for the
    gradient. A key asked for again replaces the earlier tensor (a
    TensorFlow pass traced twice keeps the last graph's).
    """

    def __init__(self, initial=None, given=None, watch=None):
        self._initial = initial or {}
        self._given = given
        self._watch = watch
        self.values = {}

    def source(self, key, shape, dtype):
        if self._given is not None:
            value = self._given[key]
        elif key in self._initial:
            value = ops.convert_to_tensor(self._initial[key], dtype)
        else:
            value = ops.zeros(shape, dtype)
        if self._watch is not None:
            value = self._watch(value)
        self.values[key] = value
        return value


def gradients(forward, variables=(), initial=None, reads=()):
    """Runs `forward` and differentiates its loss.

    Args:
        forward: A function `(sources) -> (loss, aux)` of a `Sources`:
            the pass, whose scalar `loss` is differentiated with respect
            to every tensor it made with `sources.source` and to
            `variables`; `aux` is any structure of tensors (and None) the
            pass returns beside it.
        variables: Keras variables read by the pass.
        initial: Optional `{key: value}`, the values of those sources that
            do not start at zero.
        reads: Other variables the pass reads, not differentiated. On JAX
            the pass runs in a `keras.StatelessScope`, where Keras reads
            some (the regularized weights, for the model's losses) only
            from the scope: pass the model's variables.

    Returns:
        `(aux, source_gradients, variable_gradients)`: `aux` as the pass
        returned it (concrete arrays on JAX), `{key: gradient}` and a list
        in the order of `variables`; zeros where the loss does not depend
        on a tensor.
    """
    backend = keras.backend.backend()
    run = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}.get(backend)
    if run is None:
        raise ValueError(
            "keras_gated measures gradients on the tensorflow, jax and torch "
            f"backends. Received: KERAS_BACKEND={backend!r}"
        )
    return run(forward, list(variables), initial, list(reads))


def _tensorflow(forward, variables, initial, reads):
    import tensorflow as tf

    with tf.GradientTape() as tape:

        def watch(value):
            tape.watch(value)
            return value

        sources = Sources(initial, watch=watch)
        loss, aux = forward(sources)
    # The TensorFlow variables themselves: a Keras variable's dtype is a
    # string, of which `tape.gradient` cannot make zeros.
    values = [v.value for v in variables]
    source_grads, variable_grads = tape.gradient(
        loss,
        (sources.values, values),
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return aux, source_grads, list(variable_grads)


def _jax(forward, variables, initial, reads):
    import jax

    read = [(v, v.value) for v in reads]

    def shapes():
        with _mapped(read):
            sources = Sources(initial)
            forward(sources)
        return sources.values

    initial = initial or {}
    given = {
        key: initial[key] if key in initial else ops.zeros(s.shape, s.dtype)
        for key, s in jax.eval_shape(shapes).items()
    }

    def pure(given, values):
        with _mapped(read + list(zip(variables, values, strict=True))):
            loss, aux = forward(Sources(given=given))
        return loss, aux

    values = [v.value for v in variables]
    grad = jax.value_and_grad(pure, argnums=(0, 1), has_aux=True)
    (_, aux), (source_grads, variable_grads) = grad(given, values)
    return aux, source_grads, list(variable_grads)


def stateless(function, variables):
    """`function` as a pure function of the variables' values, for
    `jax.jit`: `(values, *args) -> function(*args)` with `variables` read
    as `values` (in their order) and nothing assigned. Measurements
    inside it see the values too."""

    def pure(values, *args):
        with _mapped(list(zip(variables, values, strict=True))):
            return function(*args)

    return pure


@contextlib.contextmanager
def _mapped(mapping):
    """A `keras.StatelessScope` mapping the `(variable, value)` pairs,
    and every variable of the enclosing stateless pass to the value it
    holds there now (a Keras scope does not see its parent's)."""
    current = {}
    if _PASSES:
        current = {id(v): (v, v.value) for v in _PASSES[-1]}
    current.update({id(v): (v, value) for v, value in mapping})
    _PASSES.append([v for v, _ in current.values()])
    try:
        with keras.StatelessScope(state_mapping=list(current.values())):
            yield
    finally:
        _PASSES.pop()


def _torch(forward, variables, initial, reads):
    import torch

    sources = Sources(
        initial, watch=lambda value: value.detach().requires_grad_(True)
    )
    loss, aux = forward(sources)
    keys = list(sources.values)
    inputs = [sources.values[k] for k in keys] + [v.value for v in variables]
    if not loss.requires_grad:
        # A loss that depends on none of them (a constant).
        grads = [None] * len(inputs)
    else:
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [
        torch.zeros_like(t) if g is None else g
        for t, g in zip(inputs, grads, strict=True)
    ]
    return aux, dict(zip(keys, grads[: len(keys)])), grads[len(keys) :]
