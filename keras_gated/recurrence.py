"""The time loop shared by our sequence layers.

`run_recurrence` steps a cell's `step` over an input projection that was
computed for all timesteps at once, applies the mask the way
`keras.layers.RNN` does, and collects outputs and gate sequences. The body
of a step is written once, in `keras.ops`; it is driven either by a Python
loop (`unroll=True`, portable) or by the TensorFlow while loop in
`keras_gated._tf_loop` (the default), and the two are tested equal.
"""

from keras import ops


def masked_step(step_fn, x_t, mask_t, states, prev_output, zero_output):
    """One step with Keras' masking rules.

    At a masked step (mask_t False) the states are carried over, the output
    repeats the previous output (or is zero when `zero_output`), and every
    gate is zero.

    Returns:
        `(output, new_states, gates)`.
    """
    output, new_states, gates = step_fn(x_t, states)
    if mask_t is None:
        return output, list(new_states), gates
    keep = ops.expand_dims(mask_t, -1)
    fallback = ops.zeros_like(output) if zero_output else prev_output
    output = ops.where(keep, output, fallback)
    new_states = [
        ops.where(keep, new, old) for new, old in zip(new_states, states)
    ]
    gates = {
        name: ops.where(keep, value, ops.zeros_like(value))
        for name, value in gates.items()
    }
    return output, new_states, gates


def run_recurrence(
    step_fn,
    projected,
    initial_states,
    mask=None,
    *,
    unroll=False,
    return_sequences=True,
    zero_output_for_mask=False,
    collect=(),
    state_sequences=None,
):
    """Runs `step_fn` over time.

    Args:
        step_fn: `(x_t, states) -> (output, new_states, gates)`, with
            `gates` a dict of `(batch, units)` tensors.
        projected: `(batch, timesteps, features)`, already in processing
            order (reversed by the caller for `go_backwards`).
        initial_states: list of `(batch, units)` tensors.
        mask: None or a boolean `(batch, timesteps)` in processing order.
        unroll: run a Python loop instead of a symbolic one.
        return_sequences: whether to collect the output at every step.
        zero_output_for_mask: masked steps output zeros instead of repeating
            the previous output (Keras sets this inside `Bidirectional`).
        collect: names of the sequences to record at every step: gate
            names and keys of `state_sequences`. Empty records nothing,
            which keeps the loop lean when no gates are returned.
        state_sequences: dict `{name: state index}` of states that can be
            recorded (after masking) next to the gates, e.g. `{"cell": 1}`
            for the LSTM cell state.

    Returns:
        `(last_output, outputs, final_states, sequences)`: `outputs` is
        `(batch, timesteps, units)` or None, `sequences` a dict of
        `(batch, timesteps, units)` tensors: the gates and the recorded
        states, in processing order.
    """
    state_sequences = state_sequences or {}

    def step(x_t, mask_t, states, prev_output):
        output, new_states, gates = masked_step(
            step_fn, x_t, mask_t, states, prev_output, zero_output_for_mask
        )
        recorded = {}
        for name in collect:
            if name in state_sequences:
                recorded[name] = new_states[state_sequences[name]]
            else:
                recorded[name] = gates[name]
        return output, new_states, recorded

    if unroll:
        return _unrolled(step, projected, initial_states, mask, return_sequences)
    from keras_gated import _tf_loop

    return _tf_loop.while_loop(
        step, projected, initial_states, mask, return_sequences, collect
    )


def _unrolled(step, projected, initial_states, mask, return_sequences):
    timesteps = projected.shape[1]
    states = list(initial_states)
    output = ops.zeros_like(states[0])
    outputs, gates = [], []
    for t in range(timesteps):
        mask_t = None if mask is None else mask[:, t]
        output, states, step_gates = step(projected[:, t], mask_t, states, output)
        outputs.append(output)
        gates.append(step_gates)
    sequences = {
        name: ops.stack([g[name] for g in gates], axis=1) for name in gates[0]
    }
    stacked = ops.stack(outputs, axis=1) if return_sequences else None
    return output, stacked, states, sequences
