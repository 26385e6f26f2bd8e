"""TensorFlow driver for `recurrence.run_recurrence`: one `tf.while_loop`.

The inputs are read from, and the recorded states written to,
TensorArrays, once per step, so the loop and its gradient stay linear in
the sequence length with and without XLA.
"""

import tensorflow as tf


def while_loop(step, projected, initial_states, mask, record):
    timesteps = tf.shape(projected)[0]
    inputs_ta = tf.TensorArray(
        projected.dtype, size=timesteps, element_shape=projected.shape[1:]
    ).unstack(projected)
    if mask is not None:
        mask_ta = tf.TensorArray(
            tf.bool, size=timesteps, element_shape=mask.shape[1:]
        ).unstack(mask)
    recorded_ta = tuple(
        tf.TensorArray(
            initial_states[i].dtype,
            size=timesteps,
            element_shape=initial_states[i].shape,
        )
        for i in record
    )

    def body(t, states, recorded_ta):
        mask_t = None if mask is None else mask_ta.read(t)
        new_states = step(inputs_ta.read(t), mask_t, list(states))
        recorded_ta = tuple(
            ta.write(t, new_states[i]) for ta, i in zip(recorded_ta, record)
        )
        return t + 1, tuple(new_states), recorded_ta

    _, states, recorded_ta = tf.while_loop(
        lambda t, *_: t < timesteps,
        body,
        (tf.constant(0), tuple(initial_states), recorded_ta),
        # A static bound lets XLA compile the gradient of the loop.
        maximum_iterations=projected.shape[0],
    )
    return list(states), [ta.stack() for ta in recorded_ta]
