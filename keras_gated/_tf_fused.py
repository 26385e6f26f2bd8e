"""TensorFlow fast path: the standard LSTM and GRU recurrences with an
analytic backward pass through time.

Applies when the gates use `sigmoid` and the candidate `tanh` (Keras'
defaults) and no recurrent dropout is active; `keras_gated.layers` falls
back to the generic loop otherwise. Weights come in as tensors, like
Keras' `backend.lstm`. The forward loop records what the backward pass
needs (states and gate activations, which are also what `return_gates`
returns); the backward loop then costs one small matmul per step
(dz_t @ U^T), and the recurrent-kernel gradient is one large matmul over
all steps after it. These equations repeat those of `keras_gated.cells`
for speed; tests hold the two paths equal.

All tensors are time-major: `(timesteps, batch, ...)`. `mask` is None or
boolean `(timesteps, batch)`; `perturbations` maps state names to
`(timesteps, batch, units)` tensors added to the state after each step
(their gradient is dL/ds_t).
"""

import keras
import numpy as np
import tensorflow as tf


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


def _previous(ta, t, initial):
    """Step t - 1 of a sequence held in `ta`, `initial` before step 0
    (no shifted copy of the sequence is made)."""
    return tf.where(t > 0, ta.read(tf.maximum(t - 1, 0)), initial)


def _matmul_after_initial(initial, sequence, d_sequence):
    """`_matmul_over_time` of the shifted sequence (initial, s_0, ...,
    s_{T-2}) with `d_sequence`, without building the shifted copy."""
    first = tf.matmul(
        tf.cast(initial, tf.float32),
        tf.cast(d_sequence[0], tf.float32),
        transpose_a=True,
    )
    return first + _matmul_over_time(sequence[:-1], d_sequence[1:])


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


def _loop(body, timesteps, loop_vars, reverse=False, static_timesteps=None):
    start = timesteps - 1 if reverse else tf.constant(0)
    return tf.while_loop(
        (lambda t, *_: t >= 0) if reverse else (lambda t, *_: t < timesteps),
        body,
        (start,) + tuple(loop_vars),
        maximum_iterations=static_timesteps,
    )[1:]


def _keep(mask_ta, t):
    return None if mask_ta is None else mask_ta.read(t)[:, None]


def _where(keep, new, old):
    return new if keep is None else tf.where(keep, new, old)


LSTM_SEQUENCES = ("hidden", "cell", "input", "forget", "candidate", "output")


# Whether the fast path's loops run compiled by XLA (see `_compiled`).
# Tests switch it off to compare with the same loops run by TensorFlow.
JIT_LOOPS = True


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

    def call(*args):
        if not JIT_LOOPS:
            return function(*args)
        return compiled(*tf.nest.map_structure(_stop, args))

    return call


def _stop(value):
    return tf.stop_gradient(value) if tf.is_tensor(value) else value


def _sigmoid(x):
    """sigmoid(x) = (1 + tanh(x / 2)) / 2: one tanh, which XLA's CPU
    backend evaluates several times faster than its sigmoid."""
    return 0.5 * tf.tanh(0.5 * x) + 0.5


def _lstm_gate_constants(units, dtype):
    """Per-column `(scale, shift)` so that `scale * tanh(scale * z) + shift`
    is sigmoid on the i, f, o blocks (scale 1/2, shift 1/2) and tanh on
    the candidate block (scale 1, shift 0): all four in one tanh pass."""
    half = tf.fill([units], tf.constant(0.5, dtype))
    zero = tf.zeros([units], dtype)
    scale = tf.concat([half, half, half + half, half], axis=0)
    shift = tf.concat([half, half, zero, half], axis=0)
    return scale, shift


def _write(tas, t, values, record, keep):
    """Writes step t of the `record`ed sequences; gates (not states) are
    zero at masked steps."""
    written = []
    for ta, name in zip(tas, record):
        value = values[name]
        if name not in _STATES:
            value = _where(keep, value, tf.zeros_like(value))
        written.append(ta.write(t, value))
    return tuple(written)


_STATES = ("hidden", "cell", "rh")


def _recording():
    """Whether a gradient of what is computed now may be asked for: a tape
    (or forward accumulator) is active. Without one, the forward pass
    stores only the sequences the layer returns."""
    try:
        from tensorflow.python.eager import record
    except ImportError:  # pragma: no cover - a TensorFlow without it
        return True
    return record.could_possibly_record()


def _lstm_forward(projected, h0, c0, kernel, mask, probe_h, probe_c, record):
    timesteps = tf.shape(projected)[0]
    scale, shift = _lstm_gate_constants(h0.shape[-1], h0.dtype)
    x_ta = unstack(projected)
    mask_ta = _optional_unstack(mask)
    probe_h = _optional_unstack(probe_h)
    probe_c = _optional_unstack(probe_c)

    def body(t, h, c, tas):
        z = x_ta.read(t) + tf.matmul(h, kernel)
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
        return t + 1, h_new, c_new, _write(tas, t, values, record, keep)

    h_last, c_last, tas = _loop(
        body,
        timesteps,
        (h0, c0, _arrays(len(record), h0, timesteps)),
        static_timesteps=projected.shape[0],
    )
    return (h_last, c_last) + tuple(ta.stack() for ta in tas)


def _lstm_backward(
    h0, c0, kernel, mask, sequences, dh_last, dc_last, upstream, probe_names
):
    h_seq, c_seq, i_seq, f_seq, g_seq, o_seq = sequences
    timesteps = tf.shape(h_seq)[0]
    reads = [unstack(s) for s in (i_seq, f_seq, g_seq, o_seq, c_seq)]
    upstream = [_optional_unstack(d) for d in upstream]
    dz_ta = sequence_array(tf.concat([h0] * 4, axis=1), timesteps)
    dprobe_tas = _arrays(len(probe_names), h0, timesteps)
    kernel_t = tf.transpose(kernel)
    mask_ta = _optional_unstack(mask)

    def back(t, dh, dc, dz_ta, dprobe_tas):
        dh = _plus(dh, _read(upstream[0], t))
        dc = _plus(dc, _read(upstream[1], t))
        i, f, g, o, c_t = (r.read(t) for r in reads)
        c_prev = _previous(reads[4], t, c0)
        keep = _keep(mask_ta, t)
        tc = tf.tanh(c_t)
        do = _plus(dh * tc, _read(upstream[5], t))
        # dL/dc_t in total: onwards through c, and into h_t.
        dct = dc + dh * o * (1 - tc * tc)
        totals = {"hidden": dh, "cell": _where(keep, dct, dc)}
        dprobe_tas = tuple(
            ta.write(t, totals[n]) for ta, n in zip(dprobe_tas, probe_names)
        )
        di = _plus(dct * g, _read(upstream[2], t))
        df = _plus(dct * c_prev, _read(upstream[3], t))
        dg = _plus(dct * i, _read(upstream[4], t))
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
        return t - 1, dh_prev, dc_prev, dz_ta.write(t, dz), dprobe_tas

    dh0, dc0, dz_ta, dprobe_tas = _loop(
        back,
        timesteps,
        (dh_last, dc_last, dz_ta, dprobe_tas),
        reverse=True,
        static_timesteps=h_seq.shape[0],
    )
    return [dz_ta.stack(), dh0, dc0] + [ta.stack() for ta in dprobe_tas]


_lstm_forward_compiled = _compiled(_lstm_forward)
_lstm_backward_compiled = _compiled(_lstm_backward)


def lstm(
    projected,
    h0,
    c0,
    recurrent_kernel,
    mask=None,
    perturbations=None,
    wanted=LSTM_SEQUENCES,
):
    """The LSTM recurrence.

    `wanted` names the sequences the caller needs. Where a gradient may be
    taken, all are recorded (the backward pass needs them); otherwise only
    the wanted ones, and a gradient asked for later still comes out right
    (the forward pass is run again, recording).

    Returns:
        `(final_states, sequences)`: `[h_T, c_T]` and a dict holding (at
        least) the wanted `LSTM_SEQUENCES` as `(timesteps, batch, units)`
        tensors (gates are zero at masked steps).
    """
    perturbations = perturbations or {}
    names = tuple(n for n in ("hidden", "cell") if n in perturbations)
    record_all = bool(names) or _recording()
    record = tuple(
        n for n in LSTM_SEQUENCES if record_all or n in tuple(wanted)
    )

    @tf.custom_gradient
    def recurrence(projected, h0, c0, kernel, *probes):
        probe = dict(zip(names, probes))
        outputs = _lstm_forward_compiled(
            projected,
            h0,
            c0,
            kernel,
            mask,
            probe.get("hidden"),
            probe.get("cell"),
            record,
        )

        def grad(dh_last, dc_last, *d_recorded):
            sequences = outputs[2:]
            if not record_all:
                sequences = _lstm_forward_compiled(
                    projected, h0, c0, kernel, mask, None, None, LSTM_SEQUENCES
                )[2:]
            upstream = dict(zip(record, d_recorded))
            dz, dh0, dc0, *d_probes = _lstm_backward_compiled(
                h0,
                c0,
                kernel,
                mask,
                sequences,
                dh_last,
                dc_last,
                [connected(upstream.get(n)) for n in LSTM_SEQUENCES],
                names,
            )
            d_kernel = _matmul_after_initial(h0, sequences[0], dz)
            return [dz, dh0, dc0, tf.cast(d_kernel, kernel.dtype)] + d_probes

        return outputs, grad

    probes = [tf.convert_to_tensor(perturbations[n], h0.dtype) for n in names]
    # A variable read inside would make TF ask for variable gradients:
    # pass the weights in as tensors.
    kernel = tf.identity(recurrent_kernel)
    outputs = recurrence(projected, h0, c0, kernel, *probes)
    return list(outputs[:2]), dict(zip(record, outputs[2:]))


GRU_SEQUENCES = ("hidden", "update", "reset", "candidate")
# What the backward pass needs: the sequences and r_t * h_{t-1}.
_GRU_RECORDED = GRU_SEQUENCES + ("rh",)


def _gru_forward(
    projected, h0, kernel, bias, mask, probe_h, reset_after, record
):
    timesteps = tf.shape(projected)[0]
    units = h0.shape[-1]
    x_ta = unstack(projected)
    mask_ta = _optional_unstack(mask)
    probe_h = _optional_unstack(probe_h)
    kernel_zr, kernel_h = kernel[:, : 2 * units], kernel[:, 2 * units :]

    def body(t, h, tas):
        xzr, xh = tf.split(x_ta.read(t), [2 * units, units], axis=1)
        if reset_after:
            rzr, rh = tf.split(
                _plus(tf.matmul(h, kernel), bias), [2 * units, units], axis=1
            )
        else:
            rzr = tf.matmul(h, kernel_zr)
        z, r = tf.split(_sigmoid(xzr + rzr), 2, axis=1)
        if reset_after:
            n = tf.tanh(xh + r * rh)
        else:
            rh = r * h
            n = tf.tanh(xh + tf.matmul(rh, kernel_h))
        offset_h = _read(probe_h, t)
        h_new = _plus(z * h + (1 - z) * n, offset_h)
        keep = _keep(mask_ta, t)
        h_new = _where(keep, h_new, _plus(h, offset_h))
        values = dict(zip(_GRU_RECORDED, (h_new, z, r, n, rh)))
        return t + 1, h_new, _write(tas, t, values, record, keep)

    h_last, tas = _loop(
        body,
        timesteps,
        (h0, _arrays(len(record), h0, timesteps)),
        static_timesteps=projected.shape[0],
    )
    return (h_last,) + tuple(ta.stack() for ta in tas)


def _gru_backward(
    h0, kernel, mask, sequences, dh_last, upstream, probe_names, reset_after
):
    h_seq, z_seq, r_seq, n_seq, rh_seq = sequences
    timesteps = tf.shape(h_seq)[0]
    units = h0.shape[-1]
    reads = [unstack(s) for s in (z_seq, r_seq, n_seq, rh_seq, h_seq)]
    upstream = [_optional_unstack(d) for d in upstream]
    template = tf.concat([h0] * 3, axis=1)
    dx_ta = sequence_array(template, timesteps)
    drec_ta = sequence_array(template, timesteps)
    dprobe_tas = _arrays(len(probe_names), h0, timesteps)
    kernel_t = tf.transpose(kernel)
    kernel_zr_t = tf.transpose(kernel[:, : 2 * units])
    kernel_h_t = tf.transpose(kernel[:, 2 * units :])
    mask_ta = _optional_unstack(mask)

    def back(t, dh, dx_ta, drec_ta, dprobe_tas):
        dh = _plus(dh, _read(upstream[0], t))
        dprobe_tas = tuple(ta.write(t, dh) for ta in dprobe_tas)
        z, r, n, rh = (x.read(t) for x in reads[:4])
        h_prev = _previous(reads[4], t, h0)
        dz = _plus(dh * (h_prev - n), _read(upstream[1], t))
        dn = _plus(dh * (1 - z), _read(upstream[3], t))
        dh_prev = dh * z
        dan = dn * (1 - n * n)
        if reset_after:
            dr = _plus(dan * rh, _read(upstream[2], t))
            drh = dan * r
        else:
            d_rh = tf.matmul(dan, kernel_h_t)
            dr = _plus(d_rh * h_prev, _read(upstream[2], t))
            dh_prev = dh_prev + d_rh * r
        daz = dz * z * (1 - z)
        dar = dr * r * (1 - r)
        dx = tf.concat([daz, dar, dan], axis=1)
        if reset_after:
            drec = tf.concat([daz, dar, drh], axis=1)
            rec_back = tf.matmul(drec, kernel_t)
        else:
            drec = dx
            rec_back = tf.matmul(tf.concat([daz, dar], 1), kernel_zr_t)
        keep = _keep(mask_ta, t)
        dx = _where(keep, dx, tf.zeros_like(dx))
        drec = _where(keep, drec, tf.zeros_like(drec))
        dh_prev = _where(keep, dh_prev + rec_back, dh)
        return (
            t - 1,
            dh_prev,
            dx_ta.write(t, dx),
            drec_ta.write(t, drec),
            dprobe_tas,
        )

    dh0, dx_ta, drec_ta, dprobe_tas = _loop(
        back,
        timesteps,
        (dh_last, dx_ta, drec_ta, dprobe_tas),
        reverse=True,
        static_timesteps=h_seq.shape[0],
    )
    d_probes = [ta.stack() for ta in dprobe_tas]
    return [dx_ta.stack(), drec_ta.stack(), dh0] + d_probes


def _gru_weight_gradients(h0, sequences, drec, reset_after):
    """The recurrent kernel's and bias' gradients, each one large matmul or
    sum over all steps, run by TensorFlow (faster than XLA's CPU dot here,
    and without copying the shifted sequences)."""
    h_seq, rh_seq = sequences[0], sequences[4]
    units = h0.shape[-1]
    if reset_after:
        d_kernel = _matmul_after_initial(h0, h_seq, drec)
    else:
        d_kernel = tf.concat(
            [
                _matmul_after_initial(h0, h_seq, drec[..., : 2 * units]),
                _matmul_over_time(rh_seq, drec[..., 2 * units :]),
            ],
            axis=1,
        )
    return d_kernel, tf.reduce_sum(tf.cast(drec, tf.float32), axis=(0, 1))


_gru_forward_compiled = _compiled(_gru_forward)
_gru_backward_compiled = _compiled(_gru_backward)


def gru(
    projected,
    h0,
    recurrent_kernel,
    recurrent_bias=None,
    reset_after=True,
    mask=None,
    perturbations=None,
    wanted=GRU_SEQUENCES,
):
    """The GRU recurrence, both `reset_after` settings.

    `recurrent_bias` is the second row of the bias with `reset_after=True`
    (None otherwise, or without bias). `wanted` as in `lstm`.

    Returns:
        `(final_states, sequences)`: `[h_T]` and a dict holding (at least)
        the wanted `GRU_SEQUENCES` as `(timesteps, batch, units)` tensors.
    """
    perturbations = perturbations or {}
    names = tuple(n for n in ("hidden",) if n in perturbations)
    has_bias = recurrent_bias is not None
    record_all = bool(names) or _recording()
    # The update gate is always kept: without a store to hold it, XLA's CPU
    # backend fused the whole step into one loop that ran 2.2x slower
    # (24 vs 11 ms at batch 64, T=200, 128 units).
    kept = tuple(wanted) + ("update",)
    record = tuple(n for n in _GRU_RECORDED if record_all or n in kept)

    @tf.custom_gradient
    def recurrence(projected, h0, kernel, *rest):
        bias = rest[0] if has_bias else None
        probe = dict(zip(names, rest[1:] if has_bias else rest))
        outputs = _gru_forward_compiled(
            projected,
            h0,
            kernel,
            bias,
            mask,
            probe.get("hidden"),
            reset_after,
            record,
        )

        def grad(dh_last, *d_recorded):
            sequences = outputs[1:]
            if not record_all:
                sequences = _gru_forward_compiled(
                    projected,
                    h0,
                    kernel,
                    bias,
                    mask,
                    None,
                    reset_after,
                    _GRU_RECORDED,
                )[1:]
            # r * h is internal: no upstream gradient.
            upstream = dict(zip(record, d_recorded))
            dx, drec, dh0, *d_probes = _gru_backward_compiled(
                h0,
                kernel,
                mask,
                sequences,
                dh_last,
                [connected(upstream.get(n)) for n in GRU_SEQUENCES],
                names,
                reset_after,
            )
            d_kernel, d_bias = _gru_weight_gradients(
                h0, sequences, drec, reset_after
            )
            result = [dx, dh0, tf.cast(d_kernel, kernel.dtype)]
            if has_bias:
                result.append(tf.cast(d_bias, bias.dtype))
            return result + d_probes

        return outputs, grad

    extra = [tf.identity(recurrent_bias)] if has_bias else []
    probes = [tf.convert_to_tensor(perturbations[n], h0.dtype) for n in names]
    kernel = tf.identity(recurrent_kernel)
    outputs = recurrence(projected, h0, kernel, *extra, *probes)
    return [outputs[0]], dict(zip(record, outputs[1:]))
