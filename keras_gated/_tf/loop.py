"""TensorFlow loop for `recurrence.run_recurrence`: a `tf.while_loop`,
with a hand-written backward pass through time when sequences are recorded.

Without recorded sequences or perturbations (the common `fit` case with
`return_sequences=False` and no gates) the plain loop is differentiated by
TensorFlow, which is fastest there. Otherwise the loop records every state
and the requested gates after every step, and a second loop walks time in
reverse: at step t it recomputes the step from the recorded previous states
and differentiates that one step locally with a tape, given the gradient
flowing into the new states and gates. Autodiff of a loop that records
sequences keeps every intermediate of every step, and under XLA its
accumulators grew faster than linearly in the sequence length; the local
recomputation keeps time and memory linear, and the step stays the cell's
own, whatever its activations, dropout or masking.

The optional `perturbations` are tensors the cell adds to its states as
it computes them (zeros change nothing); their gradient, taken by the same
local differentiation, is the total derivative dL/ds_t through the
recurrence and everything after the layer. That is how the per-timestep
gradient norms dL/dh_t and dL/dc_t are measured.
"""

import tensorflow as tf

from keras_gated._tf.arrays import connected
from keras_gated._tf.arrays import sequence_array
from keras_gated._tf.arrays import unstack


def _forward(
    step, projected, initial_states, mask, perturbations, record, gate_names
):
    """The loop: final states, every state's sequence (when `record`), the
    gate sequences."""
    timesteps = tf.shape(projected)[0]
    inputs_ta = unstack(projected)
    mask_ta = None if mask is None else unstack(mask)
    perturbation_tas = [unstack(p) for p in perturbations]
    template = initial_states[0]
    state_tas = (
        tuple(sequence_array(state, timesteps) for state in initial_states)
        if record
        else ()
    )
    gate_tas = {
        name: sequence_array(template, timesteps) for name in gate_names
    }

    def body(t, states, state_tas, gate_tas):
        mask_t = None if mask_ta is None else mask_ta.read(t)
        offsets = [ta.read(t) for ta in perturbation_tas] or None
        new_states, gates = step(
            inputs_ta.read(t), mask_t, list(states), offsets
        )
        state_tas = tuple(
            ta.write(t, state) for ta, state in zip(state_tas, new_states)
        )
        gate_tas = {
            name: ta.write(t, gates[name]) for name, ta in gate_tas.items()
        }
        return t + 1, tuple(new_states), state_tas, gate_tas

    _, states, state_tas, gate_tas = tf.while_loop(
        lambda t, *_: t < timesteps,
        body,
        (tf.constant(0), tuple(initial_states), state_tas, gate_tas),
        # A static bound lets XLA compile the loop.
        maximum_iterations=projected.shape[0],
    )
    sequences = [ta.stack() for ta in state_tas]
    gates = {name: ta.stack() for name, ta in gate_tas.items()}
    return list(states), sequences, gates


def _step_gradients(step, x_t, mask_t, previous, offsets, upstream, variables):
    """One step recomputed from the recorded previous states and
    differentiated locally: the gradients of x_t, the previous states, the
    offsets and the variables, given `upstream` = (the new states'
    gradients, the gates' as `(name, gradient)` pairs)."""
    d_states, d_gates = upstream
    with tf.GradientTape() as tape:
        tape.watch([x_t] + previous + offsets)
        new_states, gates = step(x_t, mask_t, previous, offsets or None)
    targets = list(new_states) + [gates[name] for name, _ in d_gates]
    return tape.gradient(
        targets,
        [x_t] + previous + offsets + list(variables),
        output_gradients=list(d_states) + [d for _, d in d_gates],
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )


def _reverse_step(step, recorded, upstream_tas, gate_names, variables):
    """The reverse loop's body at step t: the step's local gradients,
    given the recorded `(inputs, mask, previous states, perturbations)`
    arrays and the upstream `(state sequence, gate sequence)` gradient
    arrays (None where zero)."""
    inputs_ta, mask_ta, previous_tas, perturbation_tas = recorded
    sequence_grad_tas, gate_grad_tas = upstream_tas
    n, k = len(previous_tas), len(perturbation_tas)

    def body(t, d_states, d_variables, d_inputs_ta, d_perturbation_tas):
        d_states = [
            d if ta is None else d + ta.read(t)
            for d, ta in zip(d_states, sequence_grad_tas)
        ]
        d_gates_t = [
            (name, ta.read(t))
            for name, ta in zip(gate_names, gate_grad_tas)
            if ta is not None
        ]
        grads = _step_gradients(
            step,
            inputs_ta.read(t),
            None if mask_ta is None else mask_ta.read(t),
            [ta.read(t) for ta in previous_tas],
            [ta.read(t) for ta in perturbation_tas],
            (d_states, d_gates_t),
            variables,
        )
        d_perturbation_tas = tuple(
            ta.write(t, g)
            for ta, g in zip(d_perturbation_tas, grads[1 + n : 1 + n + k])
        )
        d_variables = tuple(
            acc + tf.cast(g, acc.dtype)
            for acc, g in zip(d_variables, grads[1 + n + k :])
        )
        d_inputs_ta = d_inputs_ta.write(t, grads[0])
        return (
            t - 1,
            tuple(grads[1 : 1 + n]),
            d_variables,
            d_inputs_ta,
            d_perturbation_tas,
        )

    return body


def _connected_arrays(gradients):
    return [
        None if d is None else unstack(d) for d in map(connected, gradients)
    ]


def _backward(
    step,
    projected,
    initial_states,
    mask,
    sequences,
    gate_names,
    upstream,
    variables,
    perturbations,
):
    """Reverse loop: gradients of the inputs, initial states, perturbations
    and variables, given `upstream` = (d final states, d state sequences,
    d gate sequences)."""
    d_final, d_sequences, d_gates = upstream
    timesteps = tf.shape(projected)[0]
    inputs_ta = unstack(projected)
    mask_ta = None if mask is None else unstack(mask)
    previous_tas = [
        unstack(tf.concat([init[None], seq[:-1]], axis=0))
        for init, seq in zip(initial_states, sequences)
    ]
    sequence_grad_tas = _connected_arrays(d_sequences)
    gate_grad_tas = _connected_arrays(d_gates)
    perturbation_tas = [unstack(p) for p in perturbations]
    body = _reverse_step(
        step,
        (inputs_ta, mask_ta, previous_tas, perturbation_tas),
        (sequence_grad_tas, gate_grad_tas),
        gate_names,
        variables,
    )

    _, d_initial, d_variables, d_inputs_ta, d_perturbation_tas = tf.while_loop(
        lambda t, *_: t >= 0,
        body,
        (
            timesteps - 1,
            tuple(d_final),
            tuple(tf.zeros_like(v) for v in variables),
            sequence_array(projected[0], timesteps),
            tuple(sequence_array(p[0], timesteps) for p in perturbations),
        ),
        maximum_iterations=projected.shape[0],
    )
    return (
        d_inputs_ta.stack(),
        list(d_initial),
        [ta.stack() for ta in d_perturbation_tas],
        list(d_variables),
    )


def while_loop(
    step, projected, initial_states, mask, perturbations, record, gate_names
):
    """Runs the recurrence; see `recurrence.run_recurrence`.

    `step(x_t, mask_t, states, offsets) -> (new_states, gates)`, with
    `offsets` None or the perturbations at step t, and `gates` keyed
    by `gate_names`. Returns `(final_states, state_sequences,
    gate_sequences)`; the state sequences are empty unless `record`, the
    gates or perturbations asked for them.
    """
    n_states = len(initial_states)
    if not (record or gate_names or perturbations):
        final, _, _ = _forward(
            step, projected, initial_states, mask, [], False, ()
        )
        return final, [], {}

    @tf.custom_gradient
    def recurrence(projected, *tensors):
        initial = list(tensors[:n_states])
        probes = list(tensors[n_states:])
        final, sequences, gates = _forward(
            step, projected, initial, mask, probes, True, gate_names
        )

        def grad(*upstream, variables=()):
            d_final = [
                tf.zeros_like(s) if d is None else d
                for d, s in zip(upstream[:n_states], final)
            ]
            d_sequences = list(upstream[n_states : 2 * n_states])
            d_gates = list(upstream[2 * n_states :])
            d_inputs, d_initial, d_perturbations, d_variables = _backward(
                step,
                projected,
                initial,
                mask,
                sequences,
                gate_names,
                (d_final, d_sequences, d_gates),
                list(variables),
                probes,
            )
            return [d_inputs, *d_initial, *d_perturbations], d_variables

        return (*final, *sequences, *[gates[n] for n in gate_names]), grad

    outputs = recurrence(projected, *initial_states, *perturbations)
    final = list(outputs[:n_states])
    sequences = list(outputs[n_states : 2 * n_states])
    gates = dict(zip(gate_names, outputs[2 * n_states :]))
    return final, sequences, gates
