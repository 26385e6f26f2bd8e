"""How the fast path's loops are compiled, and when they record.

- `compiled(function)`: the loop as a `tf.function` that XLA compiles on
  its own, also inside a graph that is not compiled (Keras' default on a
  CPU): one native loop instead of a TensorFlow op dispatch per op and
  step.
- `portable()`: within it, plain TensorFlow graphs instead (no XLA), as a
  SavedModel for TF Serving, LiteRT or a TensorFlow without XLA needs.
- `recording()`: whether a gradient of what is computed now may be asked
  for; without a tape the forward pass stores only what is returned.
"""

import contextlib
import contextvars

import tensorflow as tf

# Set by `portable()`.
_PORTABLE = contextvars.ContextVar("keras_gated_portable", default=False)


@contextlib.contextmanager
def portable():
    """Within: the fast path builds plain TensorFlow graphs (no XLA-compiled
    loops, no XLA-only ops), as a SavedModel for TF Serving, LiteRT or a
    TensorFlow without XLA needs. Slower; the results are the same."""
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def is_portable():
    return _PORTABLE.get()


def recording():
    """Whether a gradient of what is computed now may be asked for: a tape
    (or forward accumulator) is active. Without one, the forward pass
    stores only the sequences the layer returns."""
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - a TensorFlow without it
        return True
    return record.could_possibly_record()


def _relaxed_spec(value):
    """A tensor's spec with its batch and time dimensions dynamic: all but
    the last (features) of a sequence or state, all of the boolean
    `(timesteps, batch)` mask."""
    if not tf.is_tensor(value):
        return value
    rank = value.shape.rank
    if value.dtype == tf.bool:
        return tf.TensorSpec([None] * rank, value.dtype)
    shape = [None] * (rank - 1) + [value.shape[-1]] if rank else []
    return tf.TensorSpec(shape, value.dtype)


def _static_spec(value):
    return (
        tf.TensorSpec(value.shape, value.dtype)
        if tf.is_tensor(value)
        else value
    )


def _stop(value):
    return tf.stop_gradient(value) if tf.is_tensor(value) else value


def compiled(function, static=("weights",)):
    """`function` as a `tf.function` that XLA compiles on its own.

    Its arguments named in `static` keep their static shapes (the loops'
    shapes follow from the weights'); all others are sequences, states or
    masks.
    XLA compiles once per input shape. The caller owns the gradient
    (`tf.custom_gradient`), so the tape is cut at the call: TensorFlow
    must not differentiate the compiled loop itself.
    """
    jit = tf.function(function, jit_compile=True, autograph=False)
    # Eager calls: one trace per layer configuration, with a dynamic batch
    # size and length (XLA still compiles once per concrete shape). Calling
    # the polymorphic function instead would trace it anew for every new
    # shape, and set off TensorFlow's retracing warning, which names these
    # private functions, after a few. In a graph the shapes stay static.
    concrete = {}

    def call(**kwargs):
        if _PORTABLE.get():
            return function(**kwargs)
        kwargs = tf.nest.map_structure(_stop, kwargs)
        if not tf.executing_eagerly():
            return jit(**kwargs)
        specs = {
            name: tf.nest.map_structure(
                _static_spec if name in static else _relaxed_spec, value
            )
            for name, value in kwargs.items()
        }
        key = repr(specs)
        if key not in concrete:
            concrete[key] = jit.get_concrete_function(**specs)
        return concrete[key](**kwargs)

    return call
