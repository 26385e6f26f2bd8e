"""Sequences inside the compiled loops: stores, reads and sums over time.

The forward loop writes what the layer returns straight into batch-major
`(batch, timesteps, units)` buffers, updated in place under XLA, and what
only the weight gradients read (large matmuls over all steps) into
time-major TensorArrays. In `portable` graphs (no XLA) every store is a
TensorArray. The helpers here read and write either kind by step, and sum
the products that make up the weights' gradients.
"""

import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla as tf_xla

from keras_gated._tf.compile import is_portable


def unstack(tensor):
    """A TensorArray holding `tensor`'s slices along its first axis."""
    return tf.TensorArray(
        tensor.dtype, size=tf.shape(tensor)[0], element_shape=tensor.shape[1:]
    ).unstack(tensor)


def optional_unstack(tensor):
    return None if tensor is None else unstack(tensor)


def sequence_array(template, size):
    """An empty TensorArray of `size` elements shaped like `template`."""
    return tf.TensorArray(
        template.dtype, size=size, element_shape=template.shape
    )


def read(array, t):
    """Step t of a TensorArray (None stays None)."""
    return None if array is None else array.read(t)


def plus(value, extra):
    """`value + extra`, or `value` where `extra` is None."""
    return value if extra is None else value + extra


def add(total, value):
    """`total + value`, or `value` where `total` is None."""
    return value if total is None else total + value


def keep_at(mask_array, t):
    """The `(batch, 1)` mask of step t (None without a mask)."""
    return None if mask_array is None else mask_array.read(t)[:, None]


def where(keep, new, old):
    """`new` where `keep`, else `old` (`new` without a mask)."""
    return new if keep is None else tf.where(keep, new, old)


def connected(gradient):
    """None for an upstream gradient that is known to be zero.

    TensorFlow hands a custom gradient zeros for the outputs the loss does
    not use (often the gates): constants where the shape is static, a
    `ZerosLike` op where it is not (a dynamic batch size, as in Keras'
    `fit`). Skipping them saves a (timesteps, batch, units) tensor and a
    read and an add per step and output.
    """
    if gradient is None:
        return None
    if not tf.executing_eagerly() and gradient.op.type == "ZerosLike":
        return None
    value = tf.get_static_value(gradient)
    if value is not None and not np.any(value):
        return None
    return gradient


def loop(body, timesteps, loop_vars, reverse=False, static=None, first=0):
    """Steps t = first, ..., first + timesteps - 1 (backwards with
    `reverse`) of `body(t, *loop_vars)`; returns the final loop_vars.
    `static`, the static number of steps, lets XLA compile the loop."""
    first = tf.convert_to_tensor(first, tf.int32)
    start = first + timesteps - 1 if reverse else first
    return tf.while_loop(
        (lambda t, *_: t >= first)
        if reverse
        else (lambda t, *_: t < first + timesteps),
        body,
        (start,) + tuple(loop_vars),
        maximum_iterations=static,
    )[1:]


def _buffer(template, timesteps, static_timesteps):
    """A zero batch-major `(batch, timesteps, units)` buffer."""
    shape = tf.stack([tf.shape(template)[0], timesteps, tf.shape(template)[1]])
    buffer = tf.zeros(shape, template.dtype)
    buffer.set_shape([template.shape[0], static_timesteps, template.shape[1]])
    return buffer


class Parts(tuple):
    """A per-step value given as its consecutive column blocks, `(batch,
    width)` each: a batch-major store writes each block in place as soon
    as it is computed, without joining them first."""


def joined(value):
    """A value's columns in one tensor (`Parts` joined)."""
    if isinstance(value, Parts):
        return value[0] if len(value) == 1 else tf.concat(value, axis=1)
    return value


def _put(buffer, t, value):
    """`buffer[:, t] = value`, in place under XLA, a block at a time for
    `Parts` (a TensorArray, written time-major, in `portable` graphs)."""
    if isinstance(buffer, tf.TensorArray):
        return buffer.write(t, joined(value))
    start = 0
    for part in value if isinstance(value, Parts) else [value]:
        buffer = tf_xla.dynamic_update_slice(
            buffer, part[:, None, :], tf.stack([0, t, start])
        )
        start += part.shape[-1]
    return buffer


def at(buffer, t, columns=None):
    """`buffer[:, t]` of a batch-major buffer, step t of a time-major
    TensorArray (None stays None); `columns`, a slice, reads only those
    (see `at_time`)."""
    if buffer is None:
        return None
    if isinstance(buffer, tf.TensorArray):
        return _columns(buffer.read(t), columns)
    if is_portable():
        return _columns(tf.gather(buffer, t, axis=1), columns)
    return _read(buffer, t, columns, time_axis=1)


def at_time(sequence, t, columns=None):
    """`sequence[t]` of a time-major `(timesteps, batch, units)` tensor,
    a slice read in place under XLA (`tf.gather` in `portable` graphs).
    `columns`, a slice: only those, read by the same dynamic slice (a
    slice of the step's read, fused into the arithmetic that used it,
    made XLA's CPU loops several times slower: README, "Performance")."""
    if is_portable():
        return _columns(tf.gather(sequence, t), columns)
    return _read(sequence, t, columns, time_axis=0)


def _columns(value, columns):
    return value if columns is None else value[:, columns]


def _read(sequence, t, columns, time_axis):
    """Step t (along `time_axis`, 0 or 1) of a 3-D sequence, `(batch,
    columns)`, by one dynamic slice."""
    shape = tf.shape(sequence)
    batch = shape[1 - time_axis]
    start, width = 0, shape[2]
    if columns is not None:
        start, width = columns.start, columns.stop - columns.start
    begin = [t, 0, start] if time_axis == 0 else [0, t, start]
    size = [1, batch, width] if time_axis == 0 else [batch, 1, width]
    step = tf_xla.dynamic_slice(sequence, tf.stack(begin), tf.stack(size))
    return tf.reshape(step, tf.stack([batch, width]))


def before(buffer, t, initial, read=at, columns=None):
    """`buffer[:, t - 1]` (`read(buffer, t - 1, columns)`), `initial` at
    t = 0 (no shifted copy is made)."""
    return tf.where(
        t > 0,
        read(buffer, tf.maximum(t - 1, 0), columns),
        _columns(initial, columns),
    )


def recorder(template, inputs, batch_major, time_major, widths=None):
    """Empty stores for the forward loop: batch-major buffers and
    time-major TensorArrays, keyed by name, each step shaped like
    `template` (a time-major one `(batch, widths[name])` where `widths`
    names it)."""
    timesteps = tf.shape(inputs)[0]
    if is_portable():
        buffers = {n: sequence_array(template, timesteps) for n in batch_major}
    else:
        static = inputs.shape[0]
        buffers = {n: _buffer(template, timesteps, static) for n in batch_major}
    widths = widths or {}
    arrays = {
        n: tf.TensorArray(
            template.dtype,
            size=timesteps,
            element_shape=[template.shape[0], widths.get(n, template.shape[1])],
        )
        for n in time_major
    }
    return buffers, arrays


def record(stores, t, values, keep, carried):
    """Writes step t of every stored sequence (a tensor or `Parts`);
    values not named in `carried` (the gates) are zero at masked
    steps."""
    batch_major, time_major = stores

    def masked(name, value):
        if name in carried:
            return value
        if isinstance(value, Parts):
            return Parts(zero_where_masked(keep, v) for v in value)
        return zero_where_masked(keep, value)

    values = {name: masked(name, value) for name, value in values.items()}
    return (
        {n: _put(s, t, values[n]) for n, s in batch_major.items()},
        {n: ta.write(t, joined(values[n])) for n, ta in time_major.items()},
    )


def stacked(stores):
    """The stores as tensors: batch-major, and time-major."""
    batch_major, time_major = stores
    batch_major = {
        n: tf.transpose(s.stack(), (1, 0, 2))
        if isinstance(s, tf.TensorArray)
        else s
        for n, s in batch_major.items()
    }
    return batch_major, {n: ta.stack() for n, ta in time_major.items()}


def matmul_over_time(a, b):
    """sum_t a_t^T b_t for (T, B, m) and (T, B, n), accumulated in float32."""
    a32 = tf.reshape(tf.cast(a, tf.float32), (-1, a.shape[-1]))
    b32 = tf.reshape(tf.cast(b, tf.float32), (-1, b.shape[-1]))
    return tf.matmul(a32, b32, transpose_a=True)


def initial_term(initial, d_sequence):
    """initial^T d_0, the t = 0 term of a kernel gradient, in float32."""
    return tf.matmul(
        tf.cast(initial, tf.float32),
        tf.cast(d_sequence[0], tf.float32),
        transpose_a=True,
    )


def starts(first):
    """Whether a stretch's `first` step is the sequence's first: `first`
    is the int 0 there and an int32 scalar tensor elsewhere (one trace of
    the shares' computation serves every later stretch)."""
    return isinstance(first, int) and first == 0


def window(sequence, start, length, axis=0):
    """`length` steps of `sequence` from `start` along `axis` (a slice
    read in place under XLA where `start` is a tensor)."""
    if isinstance(start, int):
        index = [slice(None)] * axis + [slice(start, start + length)]
        return sequence[tuple(index)]
    rank = sequence.shape.rank
    begin = tf.stack([start if a == axis else 0 for a in range(rank)])
    dynamic = tf.shape(sequence)
    size = tf.stack([length if a == axis else dynamic[a] for a in range(rank)])
    if is_portable():
        part = tf.slice(sequence, begin, size)
    else:
        # A dynamic slice: tf.slice would make XLA compile once per start.
        part = tf_xla.dynamic_slice(sequence, begin, size)
    shape = sequence.shape.as_list()
    shape[axis] = length
    part.set_shape(shape)
    return part


def matmul_shifted(initial, sequence, d_sequence, first=0):
    """sum_t s_{t-1}^T d_t over the steps t = first, first + 1, ... that
    `d_sequence` holds, s_{-1} being `initial`, from the whole time-major
    `sequence` (no shifted copy is made). `first`: see `starts`."""
    length = d_sequence.shape[0]
    if not starts(first):
        return matmul_over_time(window(sequence, first - 1, length), d_sequence)
    previous = sequence[:-1] if length is None else sequence[: length - 1]
    return initial_term(initial, d_sequence) + matmul_over_time(
        previous, d_sequence[1:]
    )


def sum_over_steps(d_sequence):
    """sum_t sum_b d_t, a bias' gradient, summed in float32."""
    return tf.reduce_sum(tf.cast(d_sequence, tf.float32), axis=(0, 1))


def segments(timesteps, count=16, shortest=4):
    """The `(first, length)` of up to `count` consecutive stretches of
    time of at least `shortest` steps (but one), the last first, which
    the backward pass takes one after the other: the gradient of the
    projected inputs, `(timesteps, batch, n)`, is held a few stretches at
    a time, and a stretch's weight gradients are taken while the next
    one's loop runs (they are summed over stretches). At most two
    lengths, so the backward loop and the weight gradients compile at
    most twice. One stretch `(0, None)` where the length is not static."""
    if timesteps is None:
        return [(0, None)]
    length = max(shortest, -(-timesteps // count))
    stretches = []
    end = timesteps
    while end > 0:
        first = max(0, end - length)
        stretches.append((first, end - first))
        end = first
    return stretches


def concat_over_time(parts):
    """Stretches given last first, joined in time order."""
    return parts[0] if len(parts) == 1 else tf.concat(parts[::-1], axis=0)


def zero_where_masked(keep, value):
    """`value`, zero at masked steps."""
    return where(keep, value, tf.zeros_like(value))
