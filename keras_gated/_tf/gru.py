"""The GRU, both `reset_after` settings, described for the driver
(`keras_gated._tf.driver`).

Forward, with the blocks of `keras_gated.gates.GRU_GATES` (x_t W + b the
projected inputs, b' the recurrent bias of `reset_after=True`):

    z = sigmoid(x_z + h_{t-1} U_z + b'_z)
    r = sigmoid(x_r + h_{t-1} U_r + b'_r)
    n = tanh(x_h + r * (h_{t-1} U_h + b'_h))     reset_after=True
    n = tanh(x_h + (r * h_{t-1}) U_h)            reset_after=False
    h_t = z * h_{t-1} + (1 - z) * n
"""

import dataclasses

import tensorflow as tf

from keras_gated import gates
from keras_gated._tf import arrays
from keras_gated._tf.description import Blocked
from keras_gated._tf.description import Description
from keras_gated._tf.description import is_default
from keras_gated._tf.description import joint_projection
from keras_gated._tf.description import sigmoid
from keras_gated.gates import GRU_GATES
from keras_gated.gates import GRU_SIGMOID_GATES as _ZR


@dataclasses.dataclass(frozen=True)
class GRUDescription(Description):
    """The GRU step, its backward step and its weight gradients.

    `reset_after=False` stores r_t * h_{t-1} ("reset_hidden") for the
    kernel gradient. `reset_after=True` stores q_t = h_{t-1} U_h + b'_h
    ("recurrent_candidate"), which its backward step reads (rather than
    recompute it, a matmul in the sequential loop), and returns, beside
    the projected inputs' gradient [dz, dr, da_n], dq = da_n * r
    ("candidate_gradient"), the gradient of q: U and b' take [dz, dr, dq].
    """

    reset_after: bool = True

    gates = GRU_GATES
    loop_reads = GRU_GATES + ("hidden", "recurrent_candidate")
    # With the inputs projected ahead of the loop (input dropout) and no
    # stored sequence, XLA's CPU backend fused the whole step into one
    # loop that ran much slower (README, "How it works"); a kept store of
    # the update gate prevents it.
    keep_alive = ("update",)

    @property
    def internals(self):
        return (
            ("recurrent_candidate",) if self.reset_after else ("reset_hidden",)
        )

    @property
    def extras(self):
        return ("candidate_gradient",) if self.reset_after else ()

    def supports(self, cell):
        return is_default(cell, "activation", "recurrent_activation")

    def always(self, projected):
        return ("update",) if projected else ()

    def backward_layout(self, masked, probed, static, returned):
        """The gates batch-major; h time-major (the loop reads h_{t-1},
        the kernel gradient takes it over all steps), and the internal
        (h_{t-1} U_h + b'_h, or r * h_{t-1} with `reset_after=False`)."""
        return self.gates, ("hidden",) + self.internals

    def _columns(self, weights, selected):
        units = weights["recurrent_kernel"].shape[0]
        return gates.block_columns(self.gates, selected, units)

    def forward_context(self, weights, template):
        input_kernel = weights.get("input_kernel")
        kernel = weights["recurrent_kernel"]
        bias = weights.get("input_bias")
        if self.reset_after:
            return (
                None if input_kernel is None else Blocked(input_kernel),
                Blocked(kernel),
                bias,
                weights.get("recurrent_bias"),
            )
        # Both recurrent matmuls take their share of x_t W.
        zr, h = (
            self._columns(weights, _ZR),
            self._columns(weights, ("candidate",)),
        )
        return (
            joint_projection(input_kernel, kernel[:, zr], zr),
            joint_projection(input_kernel, kernel[:, h], h),
            None if bias is None else bias[zr],
            None if bias is None else bias[h],
        )

    def step(self, context, x, states, offsets):
        """The forward step above; `offsets` (a probe, or None) is added
        to h_t."""
        (h,) = states
        if self.reset_after:
            z, r, n, q = _step_reset_after(context, x, h)
            values = {"recurrent_candidate": q}
        else:
            zr_of, h_of, bias_zr, bias_h = context
            zr = sigmoid(arrays.plus(zr_of(x, h), bias_zr))
            z, r = gates.split_gates(zr, _ZR).values()
            values = {"reset_hidden": r * h}
            n = tf.tanh(arrays.plus(h_of(x, r * h), bias_h))
        h_new = arrays.plus(z * h + (1 - z) * n, offsets[0])
        values.update(update=z, reset=r, candidate=n)
        return (h_new,), values

    def backward_context(self, weights, template):
        """U^T (in column blocks, `Blocked`, as the forward's matmuls),
        or with `reset_after=False` U_zr^T and U_h^T."""
        kernel = weights["recurrent_kernel"]
        if self.reset_after:
            return Blocked(tf.transpose(kernel))
        return (
            tf.transpose(kernel[:, self._columns(weights, _ZR)]),
            tf.transpose(kernel[:, self._columns(weights, ("candidate",))]),
        )

    def backward_step(self, context, reads, t, d_states, up):
        """Given dh = dL/dh_t and the gates' upstream gradients `up`:

            dn = dh * (1 - z) + up_h,   da_n = dn * (1 - n^2)
            dz = (dh * (h_{t-1} - n) + up_z) * z (1 - z)
            reset_after=True, with q = h_{t-1} U_h + b'_h stored:
                dr = (da_n * q + up_r) * r (1 - r),   dq = da_n * r
                dh_{t-1} = dh * z + [dz, dr, dq] U^T
            reset_after=False, with dp = da_n U_h^T (p = r * h_{t-1}):
                dr = (dp * h_{t-1} + up_r) * r (1 - r)
                dh_{t-1} = dh * z + dp * r + [dz, dr] U_zr^T

        Returns the previous state's gradient, the state's total gradient
        (dh: a probe's), the projected inputs' [dz, dr, da_n] and, with
        `reset_after`, dq as "candidate_gradient".
        """
        (dh,) = d_states
        z, r, n = (reads.value(name, t) for name in self.gates)
        h_prev = reads.previous("hidden", t)
        dan = arrays.plus(dh * (1 - z), up["candidate"]) * (1 - n * n)
        daz = arrays.plus(dh * (h_prev - n), up["update"]) * z * (1 - z)
        dh_prev = dh * z
        extras = {}
        if self.reset_after:
            q = reads.value("recurrent_candidate", t)
            dar = arrays.plus(dan * q, up["reset"]) * r * (1 - r)
            extras["candidate_gradient"] = dan * r
            recurrent = {"update": daz, "reset": dar, "candidate": dan * r}
            recurrent = gates.join_gates(recurrent, self.gates)
            dh_prev = dh_prev + context(recurrent)
        else:
            kernel_zr_t, kernel_h_t = context
            dp = tf.matmul(dan, kernel_h_t)
            dar = arrays.plus(dp * h_prev, up["reset"]) * r * (1 - r)
            recurrent = gates.join_gates({"update": daz, "reset": dar}, _ZR)
            dh_prev = dh_prev + dp * r + tf.matmul(recurrent, kernel_zr_t)
        dx = gates.join_gates(
            {"update": daz, "reset": dar, "candidate": dan}, self.gates
        )
        return (dh_prev,), (dh,), dx, extras

    def weight_gradients(self, initial, weights, sequences, dx, extras, first):
        """reset_after=True: dU = sum_t h_{t-1}^T [dz, dr, dq]_t and
        db' = sum_t [dz, dr, dq]_t, [dz, dr, dq] joined for the stretch
        (a temporary of the shares' computation; the loop keeps dq
        alone). reset_after=False: dU_zr = sum_t h_{t-1}^T dx_zr and
        dU_h = sum_t (r_t * h_{t-1})^T dx_h, computing a block it does not
        need rather than copying a slice."""
        time_major = sequences[1]
        h0 = initial[0]
        if self.reset_after:
            blocks = gates.split_gates(dx, self.gates)
            blocks["candidate"] = extras["candidate_gradient"]
            recurrent = gates.join_gates(blocks, self.gates)
            result = {
                "recurrent_kernel": arrays.matmul_shifted(
                    h0, time_major["hidden"], recurrent, first
                )
            }
            if "recurrent_bias" in weights:
                result["recurrent_bias"] = arrays.sum_over_steps(recurrent)
            return result
        by_h = arrays.matmul_shifted(h0, time_major["hidden"], dx, first)
        blocks = gates.split_gates(by_h, self.gates)
        p = time_major["reset_hidden"]
        if dx.shape[0] is not None:
            p = arrays.window(p, first, dx.shape[0])
        by_p = arrays.matmul_over_time(p, dx)
        blocks["candidate"] = gates.split_gates(by_p, self.gates)["candidate"]
        return {"recurrent_kernel": gates.join_gates(blocks, self.gates)}


def _step_reset_after(context, x, h):
    """z, r, n and q = h U_h + b'_h with `reset_after=True`: two matmuls
    per step, x_t W and h U (one of [x_t, h] by a block matrix with zeros
    was slower), each in column blocks (`Blocked`)."""
    input_kernel, kernel, bias, recurrent_bias = context
    if input_kernel is not None:
        x = input_kernel(x)
    x = gates.split_gates(arrays.plus(x, bias), gates.GRU_GATES)
    q = gates.split_gates(
        arrays.plus(kernel(h), recurrent_bias), gates.GRU_GATES
    )
    z = sigmoid(x["update"] + q["update"])
    r = sigmoid(x["reset"] + q["reset"])
    n = tf.tanh(x["candidate"] + r * q["candidate"])
    return z, r, n, q["candidate"]


RESET_AFTER = GRUDescription(reset_after=True)
RESET_BEFORE = GRUDescription(reset_after=False)


def describe(cell):
    """The description of a `GRUCell` the fast path computes exactly."""
    from keras_gated.cells import GRUCell

    if not isinstance(cell, GRUCell):
        return None
    description = RESET_AFTER if cell.reset_after else RESET_BEFORE
    return description if description.supports(cell) else None
