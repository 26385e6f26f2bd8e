"""The vanilla RNN (Keras' SimpleRNN), described for the driver
(`keras_gated._tf.driver`).

Forward, with z_t the one block of `keras_gated.gates.SIMPLE_RNN_GATES`:

    z_t = x_t W + h_{t-1} U + b
    h_t = tanh(z_t)

Backward: dz_t = dh_t * (1 - tanh(z_t)^2) + up_z, dh_{t-1} = dz_t U^T.
The product of these Jacobians, diag(1 - h_t^2) U^T per step, is what
shrinks (or grows) geometrically with distance in time.
"""

import dataclasses

import tensorflow as tf

from keras_gated._tf import arrays
from keras_gated._tf.description import Description
from keras_gated._tf.description import is_default
from keras_gated._tf.description import joint_projection
from keras_gated.gates import SIMPLE_RNN_GATES


@dataclasses.dataclass(frozen=True)
class SimpleRNNDescription(Description):
    """The vanilla RNN step, its backward step and weight gradients."""

    gates = SIMPLE_RNN_GATES
    loop_reads = SIMPLE_RNN_GATES + ("hidden",)

    def supports(self, cell):
        return is_default(cell, "activation")

    def backward_layout(self, masked, probed, static, returned):
        """h time-major, for the kernel gradient and for tanh'(z_t) =
        1 - h_t^2 in the backward loop (at masked steps h_t is carried,
        but they pass no gradient to z_t). Where a probe moves h_t off
        tanh(z_t), z batch-major too, and tanh'(z_t) from it."""
        return (self.gates if probed else ()), ("hidden",)

    def forward_context(self, weights, template):
        project = joint_projection(
            weights.get("input_kernel"), weights["recurrent_kernel"]
        )
        return project, weights.get("input_bias")

    def step(self, context, x, states, offsets):
        """The forward step above; `offsets` (a probe, or None) is added
        to h_t."""
        project, bias = context
        z = arrays.plus(project(x, states[0]), bias)
        h = arrays.plus(tf.tanh(z), offsets[0])
        return (h,), {"pre_activation": z}

    def backward_context(self, weights, template):
        return tf.transpose(weights["recurrent_kernel"])

    def backward_step(self, kernel_t, reads, t, d_states, up):
        """dz_t = dh_t * (1 - tanh(z_t)^2) + up_z; dh_{t-1} = dz_t U^T.
        Returns the previous state's gradient, the state's total gradient
        (dh: a probe's), dz and no extras."""
        (dh,) = d_states
        if reads.has("pre_activation"):
            a = tf.tanh(reads.value("pre_activation", t))
        else:
            a = reads.value("hidden", t)
        dz = arrays.plus(dh * (1 - a * a), up["pre_activation"])
        return (tf.matmul(dz, kernel_t),), (dh,), dz, {}

    def weight_gradients(self, initial, weights, sequences, dz, extras, first):
        """dU = sum_t h_{t-1}^T dz_t (h_{-1} the initial state)."""
        hidden = sequences[1]["hidden"]
        kernel = arrays.matmul_shifted(initial[0], hidden, dz, first)
        return {"recurrent_kernel": kernel}


SIMPLE_RNN = SimpleRNNDescription()


def describe(cell):
    """The description of a `SimpleRNNCell` the fast path computes
    exactly."""
    from keras_gated.cells import SimpleRNNCell

    if isinstance(cell, SimpleRNNCell) and SIMPLE_RNN.supports(cell):
        return SIMPLE_RNN
    return None
