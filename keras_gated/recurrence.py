"""The portable time loop of our sequence layers, over a cell's `step`.

`run_recurrence` steps a cell's `step` (written in `keras.ops`) over an
input projection computed for all timesteps at once (on JAX, over the
inputs, with a step that projects its own), carrying the states
over masked steps as `keras.layers.RNN` does, and records the state and
gate sequences asked for. A Python loop drives it when `unroll=True`;
otherwise TensorFlow's while loop (`keras_gated._tf.loop`) on the
TensorFlow backend, `keras.ops.scan` on the others (`lax.scan` on JAX,
a loop autograd records on PyTorch). It serves
whatever the fast path (`keras_gated._tf`) does not: other activations,
recurrent dropout, `unroll`; and it is the reference the fast path is
tested equal to. `masked_outputs` turns the recorded hidden states into
the outputs Keras returns.
"""

import keras
from keras import ops


def masked_update(mask_t, new_states, states, gates):
    """States and gates after a step, with Keras' masking rules.

    Where `mask_t` is False the old states carry over and the gates are
    zero.
    """
    if mask_t is None:
        return list(new_states), gates
    keep = ops.expand_dims(mask_t, -1)
    new_states = [
        ops.where(keep, new, old) for new, old in zip(new_states, states)
    ]
    gates = {
        name: ops.where(keep, value, ops.zeros_like(value))
        for name, value in gates.items()
    }
    return new_states, gates


def run_recurrence(
    step_fn,
    projected,
    initial_states,
    mask=None,
    *,
    unroll=False,
    record_states=(),
    record_gates=(),
    perturbations=(),
):
    """Runs `step_fn` over time.

    Args:
        step_fn: `(x_t, states, offsets) -> (output, new_states, gates)`,
            a cell's `step` with its recurrent dropout bound; `offsets` is
            None or a list of tensors the cell adds to its new states.
        projected: `(timesteps, batch, features)`, time-major and already
            in processing order (reversed by the caller for go_backwards).
        initial_states: list of `(batch, units)` tensors.
        mask: None or a boolean `(timesteps, batch)` in processing order.
        unroll: run a Python loop instead of a symbolic one.
        record_states: indices of the states to record after every step.
        record_gates: names of the gates to record at every step.
        perturbations: tensors `(timesteps, batch, units)`, one per leading
            state: at step t the cell adds them to the states it computes
            (to the carried states at a masked step). Zeros leave the
            result unchanged; their gradient is the total dL/ds_t.

    Returns:
        `(final_states, states, gates)`: `states` a list of
        `(timesteps, batch, units)` tensors, one per index in
        `record_states`; `gates` a dict of such tensors, one per name in
        `record_gates`, zero at masked steps.
    """

    def step(x_t, mask_t, states, offsets):
        _, new_states, gates = step_fn(x_t, states, offsets)
        gates = {name: gates[name] for name in record_gates}
        if offsets is not None:
            states = [s + o for s, o in zip(states, offsets)] + list(
                states[len(offsets) :]
            )
        return masked_update(mask_t, new_states, states, gates)

    if unroll:
        driver = _unrolled
    elif keras.backend.backend() == "tensorflow":
        from keras_gated._tf import loop

        driver = loop.while_loop
    else:
        driver = _scanned
    final, sequences, gates = driver(
        step,
        projected,
        initial_states,
        mask,
        list(perturbations),
        bool(record_states),
        tuple(record_gates),
    )
    return final, [sequences[i] for i in record_states], gates


def _unrolled(
    step, projected, initial_states, mask, perturbations, record, gate_names
):
    states = list(initial_states)
    history, gate_history = [], []
    for t in range(projected.shape[0]):
        mask_t = None if mask is None else mask[t]
        offsets = [p[t] for p in perturbations] if perturbations else None
        states, gates = step(projected[t], mask_t, states, offsets)
        history.append(states)
        gate_history.append(gates)
    sequences = [ops.stack([s[i] for s in history]) for i in range(len(states))]
    gates = {
        name: ops.stack([g[name] for g in gate_history]) for name in gate_names
    }
    return states, sequences, gates


def _scanned(
    step, projected, initial_states, mask, perturbations, record, gate_names
):
    """`keras.ops.scan` over time; the backend differentiates it."""
    slices = {"x": projected}
    if mask is not None:
        slices["mask"] = mask
    if perturbations:
        slices["offsets"] = list(perturbations)

    def body(states, t_slices):
        states, gates = step(
            t_slices["x"],
            t_slices.get("mask"),
            list(states),
            t_slices.get("offsets"),
        )
        recorded = list(states) if record else []
        return list(states), (recorded, {n: gates[n] for n in gate_names})

    final, (sequences, gates) = ops.scan(body, list(initial_states), slices)
    return list(final), list(sequences), dict(gates)


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
        h_sequence: `(batch, timesteps, units)` hidden states after masking.
        mask: None or boolean `(timesteps, batch)`.
    """
    if mask is None:
        return h_sequence
    keep = ops.transpose(_output_keep(mask, zero_output_for_mask))
    return h_sequence * ops.cast(ops.expand_dims(keep, -1), h_sequence.dtype)


def masked_last_output(h_last, mask, zero_output_for_mask):
    """The last output of `masked_outputs`, from the final state alone."""
    if mask is None:
        return h_last
    keep = _output_keep(mask, zero_output_for_mask)[-1]
    return h_last * ops.cast(ops.expand_dims(keep, -1), h_last.dtype)
