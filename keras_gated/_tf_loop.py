"""TensorFlow driver for `recurrence.run_recurrence`: one `tf.while_loop`.

Outputs and gate sequences go into TensorArrays written once per step, so
the loop is linear in the sequence length with and without XLA. The step
body itself is the backend-neutral one from `keras_gated.recurrence`.
"""

import tensorflow as tf


def while_loop(step, projected, initial_states, mask, return_sequences, collect):
    inputs = tf.transpose(projected, [1, 0, 2])
    timesteps = tf.shape(inputs)[0]
    static_timesteps = inputs.shape[0]
    inputs_ta = tf.TensorArray(
        inputs.dtype, size=timesteps, element_shape=inputs.shape[1:]
    ).unstack(inputs)
    if mask is not None:
        mask_ta = tf.TensorArray(
            tf.bool, size=timesteps, element_shape=mask.shape[:1]
        ).unstack(tf.transpose(mask))
    template = initial_states[0]

    def array(dtype):
        return tf.TensorArray(dtype, size=timesteps, element_shape=template.shape)

    dtype = template.dtype
    outputs_ta = (array(dtype),) if return_sequences else ()
    gates_ta = {name: array(dtype) for name in collect}

    def body(t, prev_output, states, outputs_ta, gates_ta):
        mask_t = None if mask is None else mask_ta.read(t)
        output, new_states, gates = step(
            inputs_ta.read(t), mask_t, list(states), prev_output
        )
        outputs_ta = tuple(ta.write(t, output) for ta in outputs_ta)
        gates_ta = {name: gates_ta[name].write(t, gates[name]) for name in gates_ta}
        return t + 1, output, tuple(new_states), outputs_ta, gates_ta

    _, last_output, states, outputs_ta, gates_ta = tf.while_loop(
        lambda t, *_: t < timesteps,
        body,
        (
            tf.constant(0),
            tf.zeros_like(template),
            tuple(initial_states),
            outputs_ta,
            gates_ta,
        ),
        # A static bound lets XLA compile the gradient of the loop.
        maximum_iterations=static_timesteps,
        swap_memory=False,
    )

    def batch_major(ta):
        return tf.transpose(ta.stack(), [1, 0, 2])

    outputs = batch_major(outputs_ta[0]) if outputs_ta else None
    sequences = {name: batch_major(ta) for name, ta in gates_ta.items()}
    return last_output, outputs, list(states), sequences
