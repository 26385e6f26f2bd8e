"""The LSTM, described for the driver (`keras_gated._tf.driver`).

Forward, with z_t = x_t W + h_{t-1} U + b split into the blocks of
`keras_gated.gates.LSTM_GATES`:

    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o)
    g = tanh(z_c)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
"""

import dataclasses

import tensorflow as tf

from keras_gated import gates
from keras_gated._tf import arrays
from keras_gated._tf.description import Blocked
from keras_gated._tf.description import Description
from keras_gated._tf.description import is_default
from keras_gated._tf.description import joint_projection
from keras_gated.gates import LSTM_GATES


@dataclasses.dataclass(frozen=True)
class LSTMDescription(Description):
    """The LSTM step, its backward step and its weight gradients."""

    states = ("hidden", "cell")
    gates = LSTM_GATES
    loop_reads = LSTM_GATES + ("cell",)

    def supports(self, cell):
        return is_default(cell, "activation", "recurrent_activation")

    def backward_layout(self, masked, probed, static):
        """The gates and c batch-major for the backward loop; h_{t-1} for
        the kernel gradient is recomputed as o * tanh(c) after it (one
        sequence less to hold), except where a mask or a probe makes h
        differ from that, or the length is not static: then h is kept
        time-major."""
        if masked or probed or not static:
            return self.loop_reads, ("hidden",)
        return self.loop_reads, ()

    def _per_column(self, template, sigmoid, tanh):
        """A `(4 * units,)` vector: `sigmoid` on the columns of the
        sigmoid gates i, f, o and `tanh` on the candidate's."""
        units, dtype = template.shape[-1], template.dtype
        values = {n: tanh if n == "candidate" else sigmoid for n in self.gates}
        blocks = [
            tf.fill([units], tf.constant(values[n], dtype)) for n in self.gates
        ]
        return tf.concat(blocks, axis=0)

    def forward_context(self, weights, template):
        # sigmoid(z) = 0.5 * tanh(0.5 z) + 0.5 on i, f, o and tanh(z) on
        # the candidate: all four in one tanh pass of scale * tanh(scale
        # * z) + shift.
        scale = self._per_column(template, sigmoid=0.5, tanh=1.0)
        shift = self._per_column(template, sigmoid=0.5, tanh=0.0)
        project = joint_projection(
            weights.get("input_kernel"), weights["recurrent_kernel"]
        )
        return project, scale, shift, weights.get("input_bias")

    def step(self, context, x, states, offsets):
        """The forward step above. `offsets` (probes, or None) are added
        to c_t before h_t = o * tanh(c_t) is computed, and to h_t."""
        project, scale, shift, bias = context
        h, c = states
        z = arrays.plus(project(x, h), bias)
        g = gates.split_gates(scale * tf.tanh(scale * z) + shift, self.gates)
        c_new = arrays.plus(
            g["forget"] * c + g["input"] * g["candidate"], offsets[1]
        )
        h_new = arrays.plus(g["output"] * tf.tanh(c_new), offsets[0])
        return (h_new, c_new), g

    def backward_context(self, weights, template):
        """U^T in column blocks (`Blocked`, as the forward's matmul) and
        s, 1 on the columns of the sigmoid gates and 0 on the
        candidate's."""
        sigmoid = self._per_column(template, sigmoid=1.0, tanh=0.0)
        return Blocked(tf.transpose(weights["recurrent_kernel"])), sigmoid

    def backward_step(self, context, reads, t, d_states, up):
        """Given dh = dL/dh_t and dc = dL/dc_t (what reaches them from
        later steps and from outside) and `up`, the gates' own upstream
        gradients:

            dc_t^total = dc + dh * o * (1 - tanh(c_t)^2)
            dz_i = (dc_t^total * g + up_i) * i (1 - i)
            dz_f = (dc_t^total * c_{t-1} + up_f) * f (1 - f)
            dz_c = (dc_t^total * i + up_c) * (1 - g^2)
            dz_o = (dh * tanh(c_t) + up_o) * o (1 - o)
            dh_{t-1} = dz U^T,  dc_{t-1} = dc_t^total * f

        Where no gate has an upstream gradient, dz is computed over the
        four gates' columns at once, a = [i, f, g, o] and the derivative
        s * a + (1 - s) - a^2 (a (1 - a) where s = 1, 1 - a^2 where s =
        0): one fused loop instead of one per gate and a concatenation,
        3-8% faster in `fit` with the gates off; with upstream gradients
        the per-gate loops measured faster (README, "Performance").

        Returns the previous states' gradients, the states' total
        gradients (dh, dc_t^total: a probe's), dz and no extras.
        """
        kernel_t, sigmoid = context
        values = {n: reads.value(n, t) for n in self.gates}
        i, f, g, o = (values[n] for n in self.gates)
        c_t = reads.value("cell", t)
        dh, dc = d_states
        tc = tf.tanh(c_t)
        dct = dc + dh * o * (1 - tc * tc)
        d_gates = {
            "input": dct * g,
            "forget": dct * reads.previous("cell", t),
            "candidate": dct * i,
            "output": dh * tc,
        }
        if all(up[n] is None for n in self.gates):
            a = gates.join_gates(values, self.gates)
            slope = sigmoid * a + (1 - sigmoid) - a * a
            dz = gates.join_gates(d_gates, self.gates) * slope
        else:
            slopes = {
                "input": i * (1 - i),
                "forget": f * (1 - f),
                "candidate": 1 - g * g,
                "output": o * (1 - o),
            }
            dz = gates.join_gates(
                {
                    n: arrays.plus(d_gates[n], up[n]) * slopes[n]
                    for n in self.gates
                },
                self.gates,
            )
        return (kernel_t(dz), dct * f), (dh, dct), dz, {}

    def weight_gradients(self, initial, weights, sequences, dz, extras, first):
        """dU = sum_t h_{t-1}^T dz_t over the stretch's steps (h_{-1} the
        initial state), from the kept h or recomputed from o and c."""
        hidden = sequences[1].get("hidden")
        if hidden is not None:
            kernel = arrays.matmul_shifted(initial[0], hidden, dz, first)
        else:
            batch_major = sequences[0]
            kernel = _recomputed_kernel_gradient(
                initial[0],
                batch_major["output"],
                batch_major["cell"],
                dz,
                first,
            )
        return {"recurrent_kernel": kernel}


def _recomputed_kernel_gradient(h0, o_seq, c_seq, dz, first, chunks=4):
    """sum_t h_{t-1}^T dz_t (h_{-1} = h0) over the steps `first` on that
    `dz` holds (`first`: see `arrays.starts`), for an unmasked LSTM of
    static length, with h_t = o_t * tanh(c_t) recomputed from the
    batch-major gates in at most `chunks` slices of time (at least 32
    steps each): never a copy of the whole stretch."""
    length = dz.shape[0]
    step = max(32, -(-length // chunks))
    leading = arrays.starts(first)
    total = arrays.initial_term(h0, dz) if leading else None
    for start in range(1 if leading else 0, length, step):
        end = min(start + step, length)
        # One slice after the other, so that only one is held at a time.
        with tf.control_dependencies([] if total is None else [total]):
            o, c = (
                tf.cast(
                    arrays.window(s, first + start - 1, end - start, axis=1),
                    tf.float32,
                )
                for s in (o_seq, c_seq)
            )
            h = tf.transpose(o * tf.tanh(c), (1, 0, 2))
            total = arrays.add(total, arrays.matmul_over_time(h, dz[start:end]))
    return total


LSTM = LSTMDescription()


def describe(cell):
    """The description of an `LSTMCell` the fast path computes exactly."""
    from keras_gated.cells import LSTMCell

    if isinstance(cell, LSTMCell) and LSTM.supports(cell):
        return LSTM
    return None
