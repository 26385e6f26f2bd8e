"""The time loop shared by our sequence layers.

`run_recurrence` steps a cell's `step` over an input projection computed
for all timesteps at once, carrying the states over masked steps as
`keras.layers.RNN` does, and records the state sequences asked for. The
step is written once, in `keras.ops`; a Python loop drives it when
`unroll=True` (portable), the TensorFlow while loop in
`keras_gated._tf_loop` otherwise, and the two are tested equal.

Outputs and gates are not collected inside the loop: both follow from the
recorded state sequences after it (see `masked_outputs` and the layers'
gate recomputation), which keeps the loop, and its gradient, small.
"""

from keras import ops


def masked_update(mask_t, new_states, states):
    """States after a step: the new ones where `mask_t`, else the old."""
    if mask_t is None:
        return list(new_states)
    keep = ops.expand_dims(mask_t, -1)
    return [ops.where(keep, new, old) for new, old in zip(new_states, states)]


def run_recurrence(step_fn, projected, initial_states, mask=None, *, unroll=False, record=()):
    """Runs `step_fn` over time.

    Args:
        step_fn: `(x_t, states) -> (output, new_states, gates)`, a cell's
            `step` with its recurrent dropout bound.
        projected: `(timesteps, batch, features)`, time-major and already
            in processing order (reversed by the caller for go_backwards).
        initial_states: list of `(batch, units)` tensors.
        mask: None or a boolean `(timesteps, batch)` in processing order.
        unroll: run a Python loop instead of a symbolic one.
        record: indices of the states to record after every step.

    Returns:
        `(final_states, recorded)`: `recorded` holds one
        `(timesteps, batch, units)` tensor per index in `record`.
    """

    def step(x_t, mask_t, states):
        _, new_states, _ = step_fn(x_t, states)
        return masked_update(mask_t, new_states, states)

    if unroll:
        return _unrolled(step, projected, initial_states, mask, record)
    from keras_gated import _tf_loop

    return _tf_loop.while_loop(step, projected, initial_states, mask, record)


def _unrolled(step, projected, initial_states, mask, record):
    states = list(initial_states)
    history = []
    for t in range(projected.shape[0]):
        states = step(projected[t], None if mask is None else mask[t], states)
        history.append(states)
    recorded = [ops.stack([s[i] for s in history]) for i in record]
    return states, recorded


def _output_keep(mask, zero_output_for_mask):
    if zero_output_for_mask:
        return mask
    return ops.cast(ops.cumsum(ops.cast(mask, "int32"), axis=0), "bool")


def masked_outputs(h_sequence, mask, zero_output_for_mask):
    """The per-step outputs that keras.layers.RNN returns, from the states.

    Keras repeats the previous output at a masked step (zeros before the
    first unmasked step), or outputs zeros there with
    `zero_output_for_mask`. Since the state h also carries over masked
    steps, the output is h where a valid step has been seen (resp. where
    the step is valid) and zero elsewhere.

    Args:
        h_sequence: `(timesteps, batch, units)` hidden states after masking.
        mask: None or boolean `(timesteps, batch)`.
    """
    if mask is None:
        return h_sequence
    keep = _output_keep(mask, zero_output_for_mask)
    return h_sequence * ops.cast(ops.expand_dims(keep, -1), h_sequence.dtype)


def masked_last_output(h_last, mask, zero_output_for_mask):
    """The last output of `masked_outputs`, from the final state alone."""
    if mask is None:
        return h_last
    keep = _output_keep(mask, zero_output_for_mask)[-1]
    return h_last * ops.cast(ops.expand_dims(keep, -1), h_last.dtype)


def previous_states(initial_state, sequence):
    """`(timesteps, batch, units)` states before each step: s_{t-1}."""
    return ops.concatenate(
        [ops.expand_dims(initial_state, 0), sequence[:-1]], axis=0
    )
