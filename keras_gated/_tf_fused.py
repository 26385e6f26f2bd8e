"""TensorFlow fast path: the standard LSTM and GRU recurrences, compiled
by XLA, with an analytic backward pass through time.

Applies when the gates use `sigmoid` and the candidate `tanh` (Keras'
defaults) and no recurrent dropout is active; `keras_gated.layers` falls
back to the generic loop otherwise. Weights come in as tensors, like
Keras' `backend.lstm`. These equations repeat those of `keras_gated.cells`
for speed; tests hold the two paths equal.

- The forward and backward loops are `tf.function(jit_compile=True)`, so
  XLA compiles them even inside a graph that is not compiled (Keras'
  default on a CPU): one native loop instead of a TensorFlow op dispatch
  per op and step. sigmoid is computed as 0.5 * tanh(x / 2) + 0.5, one
  tanh pass over all four LSTM gates, because XLA's CPU sigmoid was
  several times slower.
- The forward loop writes the sequences the layer returns straight into
  batch-major `(batch, timesteps, units)` buffers (no transposes), plus,
  where a gradient may be taken (a tape is active), what the backward
  pass reads. With no tape it stores only what is returned; a gradient
  asked for later through the same trace runs the forward pass again.
- The backward loop costs one small matmul per step (dz_t @ U^T); the
  weights' gradients are large TensorFlow matmuls after it. It runs in
  up to four stretches of time (`_segments`), last first, each stretch's
  share of the weight and input gradients taken before the next one
  runs, so the gradient of the projected inputs, `(timesteps, batch, n)`,
  is held a stretch at a time. Upstream gradients that TensorFlow hands
  over as zeros (outputs the loss does not use) are skipped.
- Memory: the LSTM's h_{t-1} = o * tanh(c) for the kernel gradient is
  recomputed in slices of time (without a mask or probes) instead of
  stored; the GRU recomputes U_h h_{t-1} + b_h per step, and stores one
  gradient of the projected inputs plus that of U_h h + b_h instead of
  two full ones.

Inputs are time-major `(timesteps, batch, features)`, projected by an
`input_kernel` W inside the forward loop, a step at a time (x_t W joins
the step's recurrent matmul: `_pre_activation`), or already projected
`(timesteps, batch, n)` without one (input dropout); the op returns the
gradients of the inputs and of W. The input bias b (None without one) is
added at each step too. A `(timesteps, batch, n)` projection or bias sum
ahead of the loop is a temporary that glibc maps afresh on every call
once over 32 MB, and faulting its pages in cost more than the projection
itself: 28 ms of 69 at batch 64, T=200, 128 units under XLA, 80 of 250
at batch 32, T=5000, 64 units. `mask` is None or boolean
`(timesteps, batch)`; `perturbations` maps state names to
`(timesteps, batch, units)` tensors added to the state after each step
(their gradient is dL/ds_t).
"""

import contextlib
import contextvars
import inspect

import keras
import numpy as np
import tensorflow as tf
from tensorflow.compiler.tf2xla.python import xla as tf_xla


def supports(cell, recurrent_mask):
    """Whether the fast path computes exactly what `cell.step` computes."""
    return (
        recurrent_mask is None
        and cell.recurrent_activation is keras.activations.sigmoid
        and cell.activation is keras.activations.tanh
    )


def unstack(tensor):
    """A TensorArray holding `tensor`'s slices along its first axis."""
    return tf.TensorArray(
        tensor.dtype, size=tf.shape(tensor)[0], element_shape=tensor.shape[1:]
    ).unstack(tensor)


def sequence_array(template, size):
    """An empty TensorArray of `size` elements shaped like `template`."""
    return tf.TensorArray(
        template.dtype, size=size, element_shape=template.shape
    )


def _arrays(count, template, size):
    return tuple(sequence_array(template, size) for _ in range(count))


def _initial_term(initial, d_sequence):
    """initial^T d_0, the t = 0 term of a kernel gradient, in float32."""
    return tf.matmul(
        tf.cast(initial, tf.float32),
        tf.cast(d_sequence[0], tf.float32),
        transpose_a=True,
    )


def _matmul_shifted(initial, sequence, d_sequence, first=0):
    """sum_t s_{t-1}^T d_t over the steps t = first, first + 1, ... that
    `d_sequence` holds, s_{-1} being `initial`, from the whole time-major
    `sequence` (no shifted copy is made)."""
    length = d_sequence.shape[0]
    if first > 0:
        return _matmul_over_time(
            sequence[first - 1 : first - 1 + length], d_sequence
        )
    previous = sequence[:-1] if length is None else sequence[: length - 1]
    return _initial_term(initial, d_sequence) + _matmul_over_time(
        previous, d_sequence[1:]
    )


def _segments(timesteps, count=4):
    """The `(first, length)` of up to `count` consecutive stretches of
    time, the last first, which the backward passes take one at a time:
    the gradient of the projected inputs, `(timesteps, batch, n)`, is
    then held a stretch at a time (the weights' gradients are summed over
    stretches). At most two lengths, so at most two XLA compiles. One
    stretch `(0, None)` where the length is not static."""
    if timesteps is None:
        return [(0, None)]
    length = -(-timesteps // count)
    stretches = []
    end = timesteps
    while end > 0:
        first = max(0, end - length)
        stretches.append((first, end - first))
        end = first
    return stretches


def _input_gradients(inputs, input_kernel, d_projected, first, length):
    """For the stretch of steps `first` on that `d_projected` holds: the
    gradient of `inputs` there and the stretch's share of
    `input_kernel`'s, in float32 (None where the inputs came projected:
    the gradient of the inputs is then `d_projected`)."""
    if input_kernel is None:
        return d_projected, None
    if length is not None:
        inputs = inputs[first : first + length]
    d_inputs = tf.tensordot(d_projected, tf.transpose(input_kernel), axes=1)
    return d_inputs, _matmul_over_time(inputs, d_projected)


def _concat_over_time(parts):
    """Stretches given last first, joined in time order."""
    return parts[0] if len(parts) == 1 else tf.concat(parts[::-1], axis=0)


def _add(total, value):
    return value if total is None else total + value


def _by_stretches(timesteps, stretch, states):
    """The backward pass a stretch of time at a time (`_segments`), last
    first. `stretch(first, length, states)` runs one and returns the
    gradients of the states before it, of its inputs and probes, and its
    shares of the weights' gradients (a dict; None where a weight is
    absent). Each stretch waits until the previous one's are taken, so
    one stretch's gradient of the projected inputs is held at a time.

    Returns the gradients of the initial states, of the inputs and of the
    weights (summed over stretches), and of the probes.
    """
    d_weights, d_inputs, d_probes, done = {}, [], [], []
    for first, length in _segments(timesteps):
        with tf.control_dependencies(done):
            states, d_x, parts, probes = stretch(first, length, states)
        d_weights = {
            name: _add(d_weights.get(name), part)
            for name, part in parts.items()
            if part is not None
        }
        d_inputs.append(d_x)
        d_probes.append(probes)
        done = [d_x, *d_weights.values()]
    d_probes = [_concat_over_time(list(parts)) for parts in zip(*d_probes)]
    return states, _concat_over_time(d_inputs), d_weights, d_probes


def _present(**tensors):
    """The tensors that are not None, in order."""
    return {name: t for name, t in tensors.items() if t is not None}


def _sum_over_steps(d_sequence, dtype):
    """sum_t sum_b d_t, a bias' gradient, summed in float32."""
    total = tf.reduce_sum(tf.cast(d_sequence, tf.float32), axis=(0, 1))
    return tf.cast(total, dtype)


def _matmul_over_time(a, b):
    """sum_t a_t^T b_t for (T, B, m) and (T, B, n), accumulated in float32."""
    a32 = tf.reshape(tf.cast(a, tf.float32), (-1, a.shape[-1]))
    b32 = tf.reshape(tf.cast(b, tf.float32), (-1, b.shape[-1]))
    return tf.matmul(a32, b32, transpose_a=True)


def _read(ta, t):
    return None if ta is None else ta.read(t)


def _plus(value, extra):
    return value if extra is None else value + extra


def _optional_unstack(tensor):
    return None if tensor is None else unstack(tensor)


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


def _loop(
    body, timesteps, loop_vars, reverse=False, static_timesteps=None, first=0
):
    """Steps t = first, ..., first + timesteps - 1 (backwards with
    `reverse`)."""
    first = tf.convert_to_tensor(first, tf.int32)
    start = first + timesteps - 1 if reverse else first
    return tf.while_loop(
        (lambda t, *_: t >= first)
        if reverse
        else (lambda t, *_: t < first + timesteps),
        body,
        (start,) + tuple(loop_vars),
        maximum_iterations=static_timesteps,
    )[1:]


def _keep(mask_ta, t):
    return None if mask_ta is None else mask_ta.read(t)[:, None]


def _where(keep, new, old):
    return new if keep is None else tf.where(keep, new, old)


LSTM_SEQUENCES = ("hidden", "cell", "input", "forget", "candidate", "output")
GRU_SEQUENCES = ("hidden", "update", "reset", "candidate")
# What the backward passes read, by layout: batch-major `(batch, T, units)`
# buffers, which are also what the layer returns (no transposes), and
# time-major sequences for the kernel gradient's matmuls over all steps.
# `lstm` and `gru` drop what they can recompute: the LSTM's "hidden"
# (o * tanh(c)) without a mask or probes, the GRU's "rh" (r_t * h_{t-1})
# with reset_after, where the kernel gradient does not need it.
_LSTM_BACKWARD = (
    ("cell", "input", "forget", "candidate", "output"),
    ("hidden",),
)
_GRU_BACKWARD = (("update", "reset", "candidate"), ("hidden", "rh"))
_STATES = ("hidden", "cell", "rh")


def _compiled(function):
    """`function` as a `tf.function` that XLA compiles on its own.

    Inside a graph that is not compiled (Keras' default on a CPU), the loop
    then runs as native code instead of one TensorFlow op dispatch per op
    and step; inside a compiled graph it is inlined like any function.
    XLA compiles once per input shape. The caller owns the gradient
    (`tf.custom_gradient`), so the tape is cut at the call: TensorFlow
    must not differentiate the compiled loop itself.
    """
    compiled = tf.function(function, jit_compile=True, autograph=False)
    # Eager calls: one trace per layer configuration, with a dynamic batch
    # size and length (XLA still compiles once per concrete shape). Calling
    # the polymorphic function instead would trace it anew for every new
    # shape, and set off TensorFlow's retracing warning, which names these
    # private functions, after a few. In a graph the shapes stay static.
    # The weights ("kernel") keep their shapes: the loops' state shapes
    # follow from them.
    relaxed = {}
    parameters = list(inspect.signature(function).parameters)

    def call(*args):
        if _PORTABLE.get():
            return function(*args)
        args = tf.nest.map_structure(_stop, args)
        if not tf.executing_eagerly():
            return compiled(*args)
        specs = [
            tf.TensorSpec(arg.shape, arg.dtype)
            if name == "kernel"
            else tf.nest.map_structure(_relaxed_spec, arg)
            for name, arg in zip(parameters, args)
        ]
        key = repr(specs)
        if key not in relaxed:
            relaxed[key] = compiled.get_concrete_function(*specs)
        return relaxed[key](*args)

    return call


# Set by `portable()`: graphs without XLA, for export.
_PORTABLE = contextvars.ContextVar("keras_gated_portable", default=False)


@contextlib.contextmanager
def portable():
    """Within: the fast path builds plain TensorFlow graphs (no XLA-compiled
    loops, no XLA-only ops), as a SavedModel for TF Serving, TFLite or a
    TensorFlow without XLA needs. Slower; the results are the same."""
    token = _PORTABLE.set(True)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


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


def _stop(value):
    return tf.stop_gradient(value) if tf.is_tensor(value) else value


def _recording():
    """Whether a gradient of what is computed now may be asked for: a tape
    (or forward accumulator) is active. Without one, the forward pass
    stores only the sequences the layer returns."""
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - a TensorFlow without it
        return True
    return record.could_possibly_record()


def _layouts(names, wanted, backward, record_all, always=()):
    """`(batch_major, time_major)` names to record: the wanted ones, those
    the backward pass reads where a gradient may be taken, and `always`."""
    batch_major, time_major = backward
    keep = (
        set(wanted) | set(always) | (set(batch_major) if record_all else set())
    )
    return (
        tuple(n for n in names if n in keep),
        tuple(time_major) if record_all else (),
    )


def _backward_sequences(record_all, names, stored, record_again):
    """What the backward pass reads, by name: what the forward pass stored
    where it recorded for a gradient; otherwise (it stored only what the
    layer returns) the `(batch_major, time_major)` dicts of
    `record_again()`, a recording rerun of the forward pass."""
    if record_all:
        return dict(zip(names, stored))
    batch_major, time_major = record_again()
    return {**batch_major, **time_major}


def _buffer(template, timesteps, static_timesteps):
    """A zero batch-major `(batch, timesteps, units)` buffer."""
    shape = tf.stack([tf.shape(template)[0], timesteps, tf.shape(template)[1]])
    buffer = tf.zeros(shape, template.dtype)
    buffer.set_shape([template.shape[0], static_timesteps, template.shape[1]])
    return buffer


def _put(buffer, t, value):
    """`buffer[:, t] = value`, in place under XLA (a TensorArray, written
    time-major, in `portable` graphs)."""
    if isinstance(buffer, tf.TensorArray):
        return buffer.write(t, value)
    return tf_xla.dynamic_update_slice(
        buffer, value[:, None, :], tf.stack([0, t, 0])
    )


def _at(buffer, t):
    """`buffer[:, t]` of a batch-major buffer, step t of a time-major
    TensorArray (None stays None)."""
    if buffer is None:
        return None
    if isinstance(buffer, tf.TensorArray):
        return buffer.read(t)
    if _PORTABLE.get():
        return tf.gather(buffer, t, axis=1)
    size = tf.stack([tf.shape(buffer)[0], 1, tf.shape(buffer)[2]])
    step = tf_xla.dynamic_slice(buffer, tf.stack([0, t, 0]), size)
    return tf.reshape(step, tf.shape(step)[::2])


def _before(buffer, t, initial):
    """`buffer[:, t - 1]`, `initial` at t = 0 (no shifted copy is made)."""
    return tf.where(t > 0, _at(buffer, tf.maximum(t - 1, 0)), initial)


def _recorder(template, inputs, batch_major, time_major):
    """Empty stores for the forward loop: batch-major buffers and
    time-major TensorArrays, keyed by name."""
    timesteps = tf.shape(inputs)[0]
    if _PORTABLE.get():
        return (
            {n: sequence_array(template, timesteps) for n in batch_major},
            {n: sequence_array(template, timesteps) for n in time_major},
        )
    return (
        {n: _buffer(template, timesteps, inputs.shape[0]) for n in batch_major},
        {n: sequence_array(template, timesteps) for n in time_major},
    )


def _record(stores, t, values, keep):
    """Writes step t of every stored sequence; gates (not states) are zero
    at masked steps."""
    batch_major, time_major = stores
    values = {
        name: value
        if name in _STATES
        else _where(keep, value, tf.zeros_like(value))
        for name, value in values.items()
    }
    return (
        {n: _put(s, t, values[n]) for n, s in batch_major.items()},
        {n: ta.write(t, values[n]) for n, ta in time_major.items()},
    )


def _stacked(stores):
    batch_major, time_major = stores
    batch_major = {
        n: tf.transpose(s.stack(), (1, 0, 2))
        if isinstance(s, tf.TensorArray)
        else s
        for n, s in batch_major.items()
    }
    return batch_major, {n: ta.stack() for n, ta in time_major.items()}


def _lstm_gate_constants(units, dtype):
    """Per-column `(scale, shift)` so that `scale * tanh(scale * z) + shift`
    is sigmoid on the i, f, o blocks (scale 1/2, shift 1/2) and tanh on
    the candidate block (scale 1, shift 0): all four in one tanh pass,
    which XLA's CPU backend evaluates several times faster than sigmoid."""
    half = tf.fill([units], tf.constant(0.5, dtype))
    zero = tf.zeros([units], dtype)
    scale = tf.concat([half, half, half + half, half], axis=0)
    shift = tf.concat([half, half, zero, half], axis=0)
    return scale, shift


def _pre_activation(input_kernel, kernel, columns=slice(None)):
    """`step(x_t, h) = (x_t W)[:, columns] + h U`, the inputs projected
    inside the loop by one matmul of `[x_t, h]` by `[W[:, columns]; U]`
    per step; `x_t[:, columns] + h U` where the inputs come projected
    (`input_kernel` None).

    Projecting all steps ahead of the loop made a `(timesteps, batch, n)`
    temporary, paged in afresh on every call once over glibc's 32 MB mmap
    threshold: 40 000 page faults, about 80 ms of the LSTM's 250 at batch
    32, T=5000, 64 units. In the loop, the one matmul was also faster
    than two (x_t W and h U) at every benchmark size."""
    if input_kernel is None:
        return lambda x, h: x[:, columns] + tf.matmul(h, kernel)
    joint = tf.concat([input_kernel[:, columns], kernel], axis=0)
    return lambda x, h: tf.matmul(tf.concat([x, h], axis=1), joint)


def _sigmoid(x):
    """sigmoid(x) = (1 + tanh(x / 2)) / 2, as in `_lstm_gate_constants`."""
    return 0.5 * tf.tanh(0.5 * x) + 0.5


def _lstm_forward(
    inputs,
    h0,
    c0,
    input_kernel,
    kernel,
    bias,
    mask,
    probe_h,
    probe_c,
    batch_major,
    time_major,
):
    timesteps = tf.shape(inputs)[0]
    scale, shift = _lstm_gate_constants(h0.shape[-1], h0.dtype)
    pre_activation = _pre_activation(input_kernel, kernel)
    x_ta = unstack(inputs)
    mask_ta = _optional_unstack(mask)
    probe_h = _optional_unstack(probe_h)
    probe_c = _optional_unstack(probe_c)

    def body(t, h, c, stores):
        z = _plus(pre_activation(x_ta.read(t), h), bias)
        i, f, g, o = tf.split(scale * tf.tanh(scale * z) + shift, 4, axis=1)
        # Probes enter where the cell computes the states: c_t before
        # h_t = o_t * tanh(c_t); at a masked step, the carried states.
        offset_c, offset_h = _read(probe_c, t), _read(probe_h, t)
        c_new = _plus(f * c + i * g, offset_c)
        h_new = _plus(o * tf.tanh(c_new), offset_h)
        keep = _keep(mask_ta, t)
        c_new = _where(keep, c_new, _plus(c, offset_c))
        h_new = _where(keep, h_new, _plus(h, offset_h))
        values = dict(zip(LSTM_SEQUENCES, (h_new, c_new, i, f, g, o)))
        return t + 1, h_new, c_new, _record(stores, t, values, keep)

    h_last, c_last, stores = _loop(
        body,
        timesteps,
        (h0, c0, _recorder(h0, inputs, batch_major, time_major)),
        static_timesteps=inputs.shape[0],
    )
    return (h_last, c_last) + _stacked(stores)


def _lstm_backward(
    h0,
    c0,
    kernel,
    mask,
    sequences,
    upstream,
    dh_last,
    dc_last,
    probe_names,
    first,
    length,
):
    """The steps `first` to `first + length - 1` (to the last step with
    `length` None), backwards. `sequences`: the batch-major gates and
    cell state; `upstream`: the batch-major gradients of the returned
    sequences (None where zero). Returns that stretch's dz, the state
    gradients before it, and its probe gradients."""
    i_seq, f_seq, g_seq, o_seq, c_seq = (
        sequences[n] for n in ("input", "forget", "candidate", "output", "cell")
    )
    timesteps = tf.shape(c_seq)[1] if length is None else length
    up = [upstream.get(n) for n in LSTM_SEQUENCES]
    dz_ta = sequence_array(tf.concat([h0] * 4, axis=1), timesteps)
    dprobe_tas = _arrays(len(probe_names), h0, timesteps)
    kernel_t = tf.transpose(kernel)
    mask_ta = _optional_unstack(mask)

    def back(t, dh, dc, dz_ta, dprobe_tas):
        dh = _plus(dh, _at(up[0], t))
        dc = _plus(dc, _at(up[1], t))
        i, f, g, o, c_t = (
            _at(s, t) for s in (i_seq, f_seq, g_seq, o_seq, c_seq)
        )
        c_prev = _before(c_seq, t, c0)
        keep = _keep(mask_ta, t)
        tc = tf.tanh(c_t)
        do = _plus(dh * tc, _at(up[5], t))
        # dL/dc_t in total: onwards through c, and into h_t.
        dct = dc + dh * o * (1 - tc * tc)
        totals = {"hidden": dh, "cell": _where(keep, dct, dc)}
        dprobe_tas = tuple(
            ta.write(t - first, totals[n])
            for ta, n in zip(dprobe_tas, probe_names)
        )
        di = _plus(dct * g, _at(up[2], t))
        df = _plus(dct * c_prev, _at(up[3], t))
        dg = _plus(dct * i, _at(up[4], t))
        dz = tf.concat(
            [
                di * i * (1 - i),
                df * f * (1 - f),
                dg * (1 - g * g),
                do * o * (1 - o),
            ],
            axis=1,
        )
        dz = _where(keep, dz, tf.zeros_like(dz))
        dh_prev = _where(keep, tf.matmul(dz, kernel_t), dh)
        dc_prev = _where(keep, dct * f, dc)
        return t - 1, dh_prev, dc_prev, dz_ta.write(t - first, dz), dprobe_tas

    dh0, dc0, dz_ta, dprobe_tas = _loop(
        back,
        timesteps,
        (dh_last, dc_last, dz_ta, dprobe_tas),
        reverse=True,
        static_timesteps=c_seq.shape[1] if length is None else length,
        first=first,
    )
    return [dz_ta.stack(), dh0, dc0] + [ta.stack() for ta in dprobe_tas]


def _lstm_kernel_gradient(h0, o_seq, c_seq, dz, first, chunks=4):
    """sum_t h_{t-1}^T dz_t (h_{-1} = h0) over the steps `first` on that
    `dz` holds, for an unmasked LSTM of static length, with
    h_t = o_t * tanh(c_t) recomputed from the batch-major gates in at
    most `chunks` slices of time (at least 32 steps each): never a copy
    of the whole stretch."""
    length = dz.shape[0]
    step = max(32, -(-length // chunks))
    total = _initial_term(h0, dz) if first == 0 else None
    for start in range(1 if first == 0 else 0, length, step):
        end = min(start + step, length)
        # One slice after the other, so that only one is held at a time.
        with tf.control_dependencies([] if total is None else [total]):
            before = slice(first + start - 1, first + end - 1)
            o = tf.cast(o_seq[:, before], tf.float32)
            c = tf.cast(c_seq[:, before], tf.float32)
            h = tf.transpose(o * tf.tanh(c), (1, 0, 2))
            total = _add(total, _matmul_over_time(h, dz[start:end]))
    return total


_lstm_forward_compiled = _compiled(_lstm_forward)
_lstm_backward_compiled = _compiled(_lstm_backward)


def lstm(
    inputs,
    h0,
    c0,
    recurrent_kernel,
    input_kernel=None,
    input_bias=None,
    mask=None,
    perturbations=None,
    wanted=LSTM_SEQUENCES,
):
    """The LSTM recurrence.

    `inputs` are projected by `input_kernel` (where given; otherwise they
    come projected) and `input_bias` is added at each step. `wanted` names
    the sequences the caller needs. Where a gradient may be taken, what
    the backward pass needs is recorded too; otherwise only the wanted
    ones, and a gradient asked for later still comes out right (the
    forward pass is run again, recording).

    Returns:
        `(final_states, sequences)`: `[h_T, c_T]` and a dict holding (at
        least) the wanted `LSTM_SEQUENCES` as batch-major
        `(batch, timesteps, units)` tensors (gates are zero at masked
        steps).
    """
    perturbations = perturbations or {}
    names = tuple(n for n in ("hidden", "cell") if n in perturbations)
    record_all = bool(names) or _recording()
    # h_{t-1} for the kernel gradient: recomputed from o and c after the
    # backward loop (one sequence less to hold), except where a mask or a
    # probe makes h differ from o * tanh(c), or the length is not static.
    backward = _LSTM_BACKWARD
    if mask is None and not names and inputs.shape[0] is not None:
        backward = (_LSTM_BACKWARD[0], ())
    batch_major, time_major = _layouts(
        LSTM_SEQUENCES, wanted, backward, record_all
    )
    weights = _present(input_kernel=input_kernel, input_bias=input_bias)

    @tf.custom_gradient
    def recurrence(inputs, h0, c0, kernel, *rest):
        weight = dict(zip(weights, rest))
        probe = dict(zip(names, rest[len(weights) :]))
        input_kernel = weight.get("input_kernel")

        def forward(probe_h, probe_c, batch_major, time_major):
            return _lstm_forward_compiled(
                inputs,
                h0,
                c0,
                input_kernel,
                kernel,
                weight.get("input_bias"),
                mask,
                probe_h,
                probe_c,
                batch_major,
                time_major,
            )

        h_last, c_last, returned, kept = forward(
            probe.get("hidden"), probe.get("cell"), batch_major, time_major
        )
        returned = [returned[n] for n in batch_major]
        kept = [kept[n] for n in time_major]

        def grad(dh_last, dc_last, *d_outputs):
            sequences = _backward_sequences(
                record_all,
                batch_major + time_major,
                returned + kept,
                lambda: forward(None, None, *backward)[2:],
            )
            upstream = {n: connected(d) for n, d in zip(batch_major, d_outputs)}

            def stretch(first, length, states):
                dz, dh, dc, *d_probes = _lstm_backward_compiled(
                    h0,
                    c0,
                    kernel,
                    mask,
                    {n: sequences[n] for n in _LSTM_BACKWARD[0]},
                    upstream,
                    *states,
                    names,
                    tf.constant(first),
                    length,
                )
                if backward[1]:
                    d_kernel = _matmul_shifted(
                        h0, sequences["hidden"], dz, first
                    )
                else:
                    d_kernel = _lstm_kernel_gradient(
                        h0, sequences["output"], sequences["cell"], dz, first
                    )
                d_x, d_input_kernel = _input_gradients(
                    inputs, input_kernel, dz, first, length
                )
                parts = {"kernel": d_kernel, "input_kernel": d_input_kernel}
                if "input_bias" in weights:
                    parts["input_bias"] = _sum_over_steps(dz, tf.float32)
                return (dh, dc), d_x, parts, d_probes

            (dh0, dc0), d_inputs, d_weight, d_probes = _by_stretches(
                inputs.shape[0], stretch, (dh_last, dc_last)
            )
            result = [
                d_inputs,
                dh0,
                dc0,
                tf.cast(d_weight["kernel"], kernel.dtype),
            ]
            result += [tf.cast(d_weight[n], weight[n].dtype) for n in weights]
            return result + d_probes

        return [h_last, c_last] + returned + kept, grad

    probes = [tf.convert_to_tensor(perturbations[n], h0.dtype) for n in names]
    # A variable read inside would make TF ask for variable gradients:
    # pass the weights in as tensors.
    kernel = tf.identity(recurrent_kernel)
    extra = [tf.identity(w) for w in weights.values()]
    outputs = recurrence(inputs, h0, c0, kernel, *extra, *probes)
    return list(outputs[:2]), dict(zip(batch_major, outputs[2:]))


def _gru_forward(
    inputs,
    h0,
    input_kernel,
    kernel,
    input_bias,
    bias,
    mask,
    probe_h,
    reset_after,
    batch_major,
    time_major,
):
    timesteps = tf.shape(inputs)[0]
    units = h0.shape[-1]
    x_ta = unstack(inputs)
    mask_ta = _optional_unstack(mask)
    probe_h = _optional_unstack(probe_h)
    if not reset_after:
        # Both recurrent matmuls take their share of x_t W.
        zr_of = _pre_activation(
            input_kernel, kernel[:, : 2 * units], slice(None, 2 * units)
        )
        h_of = _pre_activation(
            input_kernel, kernel[:, 2 * units :], slice(2 * units, None)
        )
        bias_zr, bias_h = None, None
        if input_bias is not None:
            bias_zr, bias_h = tf.split(input_bias, [2 * units, units])

    def body(t, h, stores):
        x = x_ta.read(t)
        if reset_after:
            # Two matmuls per step, x_t W and h U: as fast as the
            # built-in; one of [x_t, h] by a block matrix with zeros was
            # 10% slower.
            if input_kernel is not None:
                x = tf.matmul(x, input_kernel)
            xzr, xh = tf.split(_plus(x, input_bias), [2 * units, units], 1)
            rzr, rh = tf.split(
                _plus(tf.matmul(h, kernel), bias), [2 * units, units], axis=1
            )
            z, r = tf.split(_sigmoid(xzr + rzr), 2, axis=1)
            n = tf.tanh(xh + r * rh)
        else:
            z, r = tf.split(_sigmoid(_plus(zr_of(x, h), bias_zr)), 2, axis=1)
            rh = r * h
            n = tf.tanh(_plus(h_of(x, rh), bias_h))
        offset_h = _read(probe_h, t)
        h_new = _plus(z * h + (1 - z) * n, offset_h)
        keep = _keep(mask_ta, t)
        h_new = _where(keep, h_new, _plus(h, offset_h))
        values = dict(zip(GRU_SEQUENCES + ("rh",), (h_new, z, r, n, rh)))
        return t + 1, h_new, _record(stores, t, values, keep)

    h_last, stores = _loop(
        body,
        timesteps,
        (h0, _recorder(h0, inputs, batch_major, time_major)),
        static_timesteps=inputs.shape[0],
    )
    if "update" in stores[0] and not _PORTABLE.get():
        # An update-gate store that nothing reads would be removed under
        # an enclosing XLA compile: reading its last step (adding it times
        # zero: h_last is unchanged, the gate is finite) keeps it.
        last = _at(stores[0]["update"], timesteps - 1)
        h_last = h_last + tf.zeros_like(h_last) * last
    return (h_last,) + _stacked(stores)


def _gru_backward(
    h0,
    kernel,
    bias,
    mask,
    sequences,
    upstream,
    dh_last,
    probe_names,
    reset_after,
    first,
    length,
):
    """The steps `first` to `first + length - 1` (to the last step with
    `length` None), backwards. `sequences`: the batch-major gates and the
    time-major "hidden" (with reset_after, U_h h_{t-1} + b_h is recomputed
    per step: one small matmul instead of a stored sequence); `upstream`:
    the batch-major gradients of the returned sequences (None where zero).

    Returns `[dx, d_rh, dh, *d_probes]` for the stretch: dx the gradient of
    the projected inputs, `(length, batch, 3 * units)`; with reset_after,
    d_rh the gradient of U_h h_{t-1} + b_h, `(length, batch, units)` (the
    recurrent pre-activations' gradient is dx with its last block replaced
    by d_rh), else None; dh the gradient of the state before the stretch.
    """
    z_seq, r_seq, n_seq = (
        sequences[n] for n in ("update", "reset", "candidate")
    )
    h_ta = unstack(sequences["hidden"])
    timesteps = tf.shape(z_seq)[1] if length is None else length
    units = h0.shape[-1]
    up = [upstream.get(n) for n in GRU_SEQUENCES]
    dx_ta = sequence_array(tf.concat([h0] * 3, axis=1), timesteps)
    # Loop variables cannot be None: an empty tuple without reset_after.
    drh_ta = sequence_array(h0, timesteps) if reset_after else ()
    dprobe_tas = _arrays(len(probe_names), h0, timesteps)
    kernel_t = tf.transpose(kernel)
    kernel_zr_t = tf.transpose(kernel[:, : 2 * units])
    kernel_h = kernel[:, 2 * units :]
    kernel_h_t = tf.transpose(kernel_h)
    bias_h = None if bias is None else bias[2 * units :]
    mask_ta = _optional_unstack(mask)

    def back(t, dh, dx_ta, drh_ta, dprobe_tas):
        dh = _plus(dh, _at(up[0], t))
        dprobe_tas = tuple(ta.write(t - first, dh) for ta in dprobe_tas)
        z, r, n = (_at(s, t) for s in (z_seq, r_seq, n_seq))
        h_prev = _before(h_ta, t, h0)
        dz = _plus(dh * (h_prev - n), _at(up[1], t))
        dn = _plus(dh * (1 - z), _at(up[3], t))
        dh_prev = dh * z
        dan = dn * (1 - n * n)
        if reset_after:
            rh = _plus(tf.matmul(h_prev, kernel_h), bias_h)
            dr = _plus(dan * rh, _at(up[2], t))
            drh = dan * r
        else:
            d_rh = tf.matmul(dan, kernel_h_t)
            dr = _plus(d_rh * h_prev, _at(up[2], t))
            dh_prev = dh_prev + d_rh * r
        daz = dz * z * (1 - z)
        dar = dr * r * (1 - r)
        dx = tf.concat([daz, dar, dan], axis=1)
        if reset_after:
            rec_back = tf.matmul(tf.concat([daz, dar, drh], 1), kernel_t)
        else:
            rec_back = tf.matmul(tf.concat([daz, dar], 1), kernel_zr_t)
        keep = _keep(mask_ta, t)
        dx = _where(keep, dx, tf.zeros_like(dx))
        dh_prev = _where(keep, dh_prev + rec_back, dh)
        if reset_after:
            drh = _where(keep, drh, tf.zeros_like(drh))
            drh_ta = drh_ta.write(t - first, drh)
        dx_ta = dx_ta.write(t - first, dx)
        return t - 1, dh_prev, dx_ta, drh_ta, dprobe_tas

    dh0, dx_ta, drh_ta, dprobe_tas = _loop(
        back,
        timesteps,
        (dh_last, dx_ta, drh_ta, dprobe_tas),
        reverse=True,
        static_timesteps=z_seq.shape[1] if length is None else length,
        first=first,
    )
    d_rh = drh_ta.stack() if reset_after else None
    d_probes = [ta.stack() for ta in dprobe_tas]
    return [dx_ta.stack(), d_rh, dh0] + d_probes


def _gru_weight_gradients(
    h0, sequences, dx, d_rh, d_input_bias, reset_after, first
):
    """A stretch's share of the recurrent kernel's and bias' gradients
    (the steps `first` on that `dx` holds), large matmuls and sums run by
    TensorFlow (faster than XLA's CPU dot here). Each matmul takes a whole
    stretch, computing a block it does not need rather than copying a
    slice. `d_input_bias` is the sum of `dx` over the stretch, which the
    recurrent bias' z and r blocks share."""
    units = h0.shape[-1]
    by_h = _matmul_shifted(h0, sequences["hidden"], dx, first)
    if reset_after:
        last = _matmul_shifted(h0, sequences["hidden"], d_rh, first)
        d_bias = tf.concat(
            [d_input_bias[: 2 * units], _sum_over_steps(d_rh, tf.float32)],
            axis=0,
        )
    else:
        rh = sequences["rh"]
        if dx.shape[0] is not None:
            rh = rh[first : first + dx.shape[0]]
        last = _matmul_over_time(rh, dx)[:, 2 * units :]
        d_bias = None
    return tf.concat([by_h[:, : 2 * units], last], axis=1), d_bias


_gru_forward_compiled = _compiled(_gru_forward)
_gru_backward_compiled = _compiled(_gru_backward)


def gru(
    inputs,
    h0,
    recurrent_kernel,
    input_kernel=None,
    input_bias=None,
    recurrent_bias=None,
    reset_after=True,
    mask=None,
    perturbations=None,
    wanted=GRU_SEQUENCES,
):
    """The GRU recurrence, both `reset_after` settings.

    `inputs`, `input_kernel` and `input_bias` (the bias, its first row
    with `reset_after=True`) as in `lstm`; `recurrent_bias` is the second
    row with `reset_after=True` (None otherwise, or without bias).
    `wanted` as in `lstm`.

    Returns:
        `(final_states, sequences)`: `[h_T]` and a dict holding (at least)
        the wanted `GRU_SEQUENCES` as batch-major `(batch, timesteps,
        units)` tensors.
    """
    perturbations = perturbations or {}
    names = tuple(n for n in ("hidden",) if n in perturbations)
    weights = _present(
        input_kernel=input_kernel,
        input_bias=input_bias,
        recurrent_bias=recurrent_bias,
    )
    record_all = bool(names) or _recording()
    backward = _GRU_BACKWARD
    if reset_after:  # U_h h_{t-1} + b_h is recomputed in the backward loop
        backward = (_GRU_BACKWARD[0], ("hidden",))
    # With the inputs projected ahead of the loop (input dropout) and no
    # stored sequence, XLA's CPU backend fused the whole step into one
    # loop that ran 2x slower; a store of the update gate, kept alive
    # (`_gru_forward`), prevents it. With the projection in the loop the
    # step stays fast without.
    always = ("update",) if input_kernel is None else ()
    batch_major, time_major = _layouts(
        GRU_SEQUENCES, wanted, backward, record_all, always
    )

    @tf.custom_gradient
    def recurrence(inputs, h0, kernel, *rest):
        weight = dict(zip(weights, rest))
        probe = dict(zip(names, rest[len(weights) :]))
        input_kernel = weight.get("input_kernel")
        recurrent_bias = weight.get("recurrent_bias")

        def forward(probe_h, batch_major, time_major):
            return _gru_forward_compiled(
                inputs,
                h0,
                input_kernel,
                kernel,
                weight.get("input_bias"),
                recurrent_bias,
                mask,
                probe_h,
                reset_after,
                batch_major,
                time_major,
            )

        h_last, returned, kept = forward(
            probe.get("hidden"), batch_major, time_major
        )
        returned = [returned[n] for n in batch_major]
        kept = [kept[n] for n in time_major]

        def grad(dh_last, *d_outputs):
            sequences = _backward_sequences(
                record_all,
                batch_major + time_major,
                returned + kept,
                lambda: forward(None, *backward)[1:],
            )
            upstream = {n: connected(d) for n, d in zip(batch_major, d_outputs)}

            def stretch(first, length, dh):
                dx, d_rh, dh, *d_probes = _gru_backward_compiled(
                    h0,
                    kernel,
                    recurrent_bias,
                    mask,
                    {n: sequences[n] for n in backward[0] + ("hidden",)},
                    upstream,
                    dh,
                    names,
                    reset_after,
                    tf.constant(first),
                    length,
                )
                d_input_bias = _sum_over_steps(dx, tf.float32)
                d_kernel, d_recurrent_bias = _gru_weight_gradients(
                    h0, sequences, dx, d_rh, d_input_bias, reset_after, first
                )
                d_x, d_input_kernel = _input_gradients(
                    inputs, input_kernel, dx, first, length
                )
                parts = {
                    "kernel": d_kernel,
                    "input_kernel": d_input_kernel,
                    "input_bias": d_input_bias,
                    "recurrent_bias": d_recurrent_bias,
                }
                return dh, d_x, parts, d_probes

            dh0, d_inputs, d_weight, d_probes = _by_stretches(
                inputs.shape[0], stretch, dh_last
            )
            result = [
                d_inputs,
                dh0,
                tf.cast(d_weight["kernel"], kernel.dtype),
            ]
            result += [tf.cast(d_weight[n], weight[n].dtype) for n in weights]
            return result + d_probes

        return [h_last] + returned + kept, grad

    extra = [tf.identity(w) for w in weights.values()]
    probes = [tf.convert_to_tensor(perturbations[n], h0.dtype) for n in names]
    kernel = tf.identity(recurrent_kernel)
    outputs = recurrence(inputs, h0, kernel, *extra, *probes)
    return [outputs[0]], dict(zip(batch_major, outputs[1:]))
