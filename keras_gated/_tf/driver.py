"""The one driver: any described cell's recurrence, compiled by XLA, with
an analytic backward pass through time.

A description (`keras_gated._tf.lstm`, `gru`, `simple_rnn`) says what is
particular to a cell: its states and gates (names and order from
`keras_gated.gates`), one forward step, one backward step and the weight
gradients, each with its equations. This module owns everything else:

- the forward loop (`_forward`): probes added to the states as the step
  computes them, Keras' masking (states carry over, gates are zero), the
  stores the layer returns (batch-major, `(batch, timesteps, units)`,
  written in place: no transposes) and, where a gradient may be taken (a
  tape is active), what the backward pass reads. With no tape it stores
  only what is returned; a gradient asked for later through the same
  trace runs the forward pass again, recording;
- the backward loop (`_backward`): the description's backward step from
  the last step to the first, adding the upstream gradients of the
  returned sequences (skipped where TensorFlow hands over zeros), in up to
  sixteen stretches of time of at least four or eight steps
  (`description.shortest_stretch`), last first (`arrays.segments`), each
  stretch's share of the weight and input gradients (large matmuls over
  all its steps, compiled by XLA: `_shares`, once for the first stretch
  and once for the others, whose start it takes as a tensor) taken while
  the next stretch's loop runs, so the gradient of the projected inputs is
  held a few stretches at a time;
- the custom gradient that joins the two (`run`), dtypes, and compiling
  (`keras_gated._tf.compile`).

Inputs are time-major `(timesteps, batch, features)` and projected by the
`input_kernel` W inside the forward loop, a step at a time (x_t W joins
the step's recurrent matmul), or arrive projected, `(timesteps, batch, n)`,
without an `input_kernel` (input dropout in training: the layer projects
the dropped-out inputs, one mask per gate with `implementation=1`).
A whole-sequence projection ahead of the loop would be a temporary that
glibc maps afresh on every call once over 32 MB; faulting its pages in
cost more than the projection itself (README, "How it works").
"""

import dataclasses

import tensorflow as tf

from keras_gated._tf import arrays
from keras_gated._tf.compile import compiled
from keras_gated._tf.compile import is_portable
from keras_gated._tf.compile import recording

WEIGHT_ROLES = (
    "recurrent_kernel",
    "input_kernel",
    "input_bias",
    "recurrent_bias",
)
"""The weights a description reads, by role, in the order they travel."""


def _forward(description, inputs, initial, weights, mask, probes, stores):
    """The forward loop. `probes`: one `(timesteps, batch, units)` tensor
    or None per state; `stores`: `(batch_major, time_major)` names.

    Returns the final states and the `(batch_major, time_major)` dicts of
    the stored sequences.
    """
    timesteps = tf.shape(inputs)[0]
    x_ta = arrays.unstack(inputs)
    mask_ta = arrays.optional_unstack(mask)
    probe_tas = [arrays.optional_unstack(p) for p in probes]
    context = description.forward_context(weights, initial[0])
    carried = description.states + description.internals

    def body(t, states, stored):
        offsets = [arrays.read(ta, t) for ta in probe_tas]
        new, values = description.step(context, x_ta.read(t), states, offsets)
        keep = arrays.keep_at(mask_ta, t)
        new = tuple(
            arrays.where(keep, n, arrays.plus(s, o))
            for n, s, o in zip(new, states, offsets)
        )
        values.update(zip(description.states, new))
        return t + 1, new, arrays.record(stored, t, values, keep, carried)

    final, stored = arrays.loop(
        body,
        timesteps,
        (
            tuple(initial),
            arrays.recorder(
                initial[0],
                inputs,
                *stores,
                widths=description.widths(initial[0].shape[-1]),
            ),
        ),
        static=inputs.shape[0],
    )
    final = list(final)
    for name in description.keep_alive:
        if name in stored[0] and not is_portable():
            # A store that nothing reads would be removed under an
            # enclosing XLA compile, which then fused the step into a
            # slower loop: reading its last step (adding it times zero:
            # the state is unchanged, the value finite) keeps it.
            last = arrays.at(stored[0][name], timesteps - 1)
            final[0] = final[0] + tf.zeros_like(final[0]) * last
    return final, arrays.stacked(stored)


def _backward(
    description,
    initial,
    weights,
    mask,
    sequences,
    upstream,
    d_states,
    probed,
    first,
    length,
):
    """The steps `first` to `first + length - 1` (to the last step with
    `length` None), backwards. `sequences`: the `(batch_major,
    time_major)` dicts of what the backward step reads;
    `upstream`: the batch-major gradients of the returned sequences (None
    where zero); `d_states`: the gradients of the states after the
    stretch; `probed`: whether each state is probed.

    Returns `(d_projected, extras, d_states, d_probes)` for the stretch:
    the gradient of the projected inputs `(length, batch, n)`, the
    description's extra sequences (a dict), the gradients of the states
    before the stretch, and the probed states' gradients (time-major).
    """
    reads = _Reads(description, sequences, initial, upstream)
    steps = reads.timesteps() if length is None else (length, length)
    template = initial[0]
    back = _back_step(
        description,
        reads,
        description.backward_context(weights, template),
        upstream,
        probed,
        arrays.optional_unstack(mask),
        first,
    )
    blocks = tf.concat([template] * len(description.gates), axis=1)
    d_states, d_ta, extra_tas, probe_tas = arrays.loop(
        back,
        steps[0],
        (
            tuple(d_states),
            arrays.sequence_array(blocks, steps[0]),
            {
                n: arrays.sequence_array(template, steps[0])
                for n in description.extras
            },
            tuple(
                arrays.sequence_array(template, steps[0]) for p in probed if p
            ),
        ),
        reverse=True,
        static=steps[1],
        first=first,
    )
    extras = {n: ta.stack() for n, ta in extra_tas.items()}
    d_probes = [ta.stack() for ta in probe_tas]
    return d_ta.stack(), extras, list(d_states), d_probes


def _back_step(description, reads, context, upstream, probed, mask_ta, first):
    """The backward loop's body: the description's backward step at t,
    with the upstream gradients of the returned sequences added, Keras'
    masking (a masked step passes the states' gradients through and has
    none of its own) and the stores of the stretch's gradients."""

    def back(t, d_states, d_ta, extra_tas, probe_tas):
        d_states = [
            arrays.plus(d, arrays.at(upstream.get(n), t))
            for d, n in zip(d_states, description.states)
        ]
        gates_up = {n: arrays.at(upstream.get(n), t) for n in description.gates}
        d_prev, totals, d_projected, extras = description.backward_step(
            context, reads, t, d_states, gates_up
        )
        keep = arrays.keep_at(mask_ta, t)
        totals = [arrays.where(keep, x, d) for x, d in zip(totals, d_states)]
        probe_tas = tuple(
            ta.write(t - first, x)
            for ta, x in zip(
                probe_tas, [x for x, p in zip(totals, probed) if p]
            )
        )
        d_prev = tuple(
            arrays.where(keep, x, d) for x, d in zip(d_prev, d_states)
        )
        d_ta = d_ta.write(
            t - first, arrays.zero_where_masked(keep, d_projected)
        )
        extra_tas = {
            n: ta.write(t - first, arrays.zero_where_masked(keep, extras[n]))
            for n, ta in extra_tas.items()
        }
        return t - 1, d_prev, d_ta, extra_tas, probe_tas

    return back


class _Reads:
    """What a backward step reads: `value(name, t)`, step t of a stored
    sequence, and `previous(name, t)`, step t - 1 of a state's (the
    initial state at t = 0), each of all columns or of a slice of them
    (`columns`), and `upstream(name, t, columns)`, step t of a returned
    sequence's upstream gradient (None where it has none). `sequences`:
    the `(batch_major, time_major)` dicts of what the loop reads, each
    read in place; `upstream`: the batch-major upstream gradients."""

    def __init__(self, description, sequences, initial, upstream=None):
        self._initial = dict(zip(description.states, initial))
        self._upstream = upstream or {}
        batch_major, time_major = sequences
        self._sequences = {**batch_major, **time_major}
        self._time_major = set(time_major)

    def timesteps(self):
        """`(dynamic, static)` number of steps of the stored sequences."""
        name, sequence = next(iter(self._sequences.items()))
        axis = 0 if name in self._time_major else 1
        return tf.shape(sequence)[axis], sequence.shape[axis]

    def has(self, name):
        return name in self._sequences

    def _reader(self, name):
        return arrays.at_time if name in self._time_major else arrays.at

    def value(self, name, t, columns=None):
        return self._reader(name)(self._sequences[name], t, columns)

    def upstream(self, name, t, columns=None):
        return arrays.at(self._upstream.get(name), t, columns)

    def previous(self, name, t, columns=None):
        return arrays.before(
            self._sequences[name],
            t,
            self._initial[name],
            self._reader(name),
            columns,
        )


_forward_compiled = compiled(_forward)
_backward_compiled = compiled(_backward)


def _layouts(description, wanted, record_all, layout, projected):
    """`(batch_major, time_major)` names to store: the wanted ones, what
    the backward pass reads where a gradient may be taken (`layout`, the
    description's `backward_layout`), and what the description always
    keeps (`projected`: the inputs come projected)."""
    batch_major, time_major = layout
    keep = set(wanted) | set(description.always(projected))
    if record_all:
        keep |= set(batch_major)
    names = description.states + description.gates
    return (
        tuple(n for n in names if n in keep),
        tuple(time_major) if record_all else (),
    )


def _stored(stores, outputs):
    """The `(batch_major, time_major)` dicts of what the forward pass
    stored, from its outputs."""
    batch_major = dict(zip(stores[0], outputs))
    return batch_major, dict(zip(stores[1], outputs[len(stores[0]) :]))


def run(
    description, inputs, initial, weights, mask=None, probes=None, wanted=()
):
    """Runs a described cell over time.

    Args:
        description: the cell's description (`keras_gated._tf.describe`).
        inputs: time-major `(timesteps, batch, features)`, projected inside
            the loop by `weights["input_kernel"]`, or `(timesteps, batch,
            n)` already projected without one.
        initial: the initial states, `(batch, units)` each, in the order
            of `description.states`.
        weights: tensors by role (`WEIGHT_ROLES`); `recurrent_kernel`
            always, the others where the cell has them.
        mask: None or boolean `(timesteps, batch)`.
        probes: dict mapping state names to time-major `(timesteps, batch,
            units)` tensors added to those states as the step computes
            them (zeros change nothing); their gradient is dL/ds_t.
        wanted: names of the sequences (states or gates) the caller needs.

    Returns:
        `(final_states, sequences)`: a list in the order of
        `description.states`, and a dict holding (at least) the wanted
        sequences, batch-major `(batch, timesteps, units)`, the gates zero
        at masked steps.
    """
    probes = probes or {}
    plan = _Plan(
        description,
        mask,
        probed=tuple(n in probes for n in description.states),
        roles=tuple(r for r in WEIGHT_ROLES if weights.get(r) is not None),
    )
    record_all = any(plan.probed) or recording()
    layout = description.backward_layout(
        masked=mask is not None,
        probed=any(plan.probed),
        static=inputs.shape[0] is not None,
        returned=wanted,
    )
    projected = weights.get("input_kernel") is None
    stores = _layouts(description, wanted, record_all, layout, projected)
    recurrence = _custom_gradient(
        plan, stores, layout if not record_all else None
    )
    probe_values = [
        tf.convert_to_tensor(probes[n], initial[0].dtype)
        for n in plan.probe_names
    ]
    outputs = recurrence(
        inputs,
        *initial,
        *[tf.identity(weights[r]) for r in plan.roles],
        *probe_values,
    )
    count = len(initial)
    return list(outputs[:count]), dict(zip(stores[0], outputs[count:]))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What one call runs: the cell, the mask, which states are probed
    and which weights (by role) travel."""

    description: object
    mask: object
    probed: tuple
    roles: tuple

    @property
    def probe_names(self):
        return [n for n, p in zip(self.description.states, self.probed) if p]

    def unpack(self, tensors):
        """`(initial, weights, probes)` from the custom gradient's
        arguments after the inputs."""
        count, roles = len(self.description.states), self.roles
        weights = dict(zip(roles, tensors[count : count + len(roles)]))
        probes = dict(zip(self.probe_names, tensors[count + len(roles) :]))
        return list(tensors[:count]), weights, probes

    def forward(self, inputs, initial, weights, probes, stores):
        return _forward_compiled(
            description=self.description,
            inputs=inputs,
            initial=initial,
            weights=weights,
            mask=self.mask,
            probes=[probes.get(n) for n in self.description.states],
            stores=stores,
        )


def _custom_gradient(plan, stores, rerun_layout):
    """The recurrence as a function of `(inputs, *initial, *weights,
    *probes)` with the driver's backward pass as its gradient.
    `rerun_layout`: None where the forward pass records what the backward
    pass reads, else what a recording rerun stores."""
    count = len(plan.description.states)

    @tf.custom_gradient
    def recurrence(inputs, *rest):
        initial, weights, probes = plan.unpack(rest)
        final, (returned, kept) = plan.forward(
            inputs, initial, weights, probes, stores
        )
        outputs = [returned[n] for n in stores[0]]
        outputs += [kept[n] for n in stores[1]]

        def grad(*upstream):
            if rerun_layout is None:
                sequences = _stored(stores, outputs)
            else:
                sequences = plan.forward(
                    inputs, initial, weights, {}, rerun_layout
                )[1]
            d_final = [
                tf.zeros_like(s) if d is None else d
                for d, s in zip(upstream[:count], final)
            ]
            up = {
                n: arrays.connected(d)
                for n, d in zip(stores[0], upstream[count:])
            }
            return _gradients(
                plan, inputs, initial, weights, sequences, up, d_final
            )

        return final + outputs, grad

    return recurrence


def _gradients(plan, inputs, initial, weight, sequences, upstream, d_final):
    """The custom gradient's values: of the inputs, the initial states,
    the weights (in `weight`'s order) and the probes. A stretch reads the
    backward step's sequences (`description.loop_reads`) where they are
    kept, time-major or batch-major (`backward_layout`)."""
    description = plan.description
    reads = tuple(
        {n: kept[n] for n in description.loop_reads if n in kept}
        for kept in sequences
    )

    def loop(first, length, d_states):
        return _backward_compiled(
            description=description,
            initial=initial,
            weights=weight,
            mask=plan.mask,
            sequences=reads,
            upstream=upstream,
            d_states=d_states,
            probed=plan.probed,
            first=tf.constant(first),
            length=length,
        )

    def shares(first, length, d_projected, extras):
        return _shares_compiled(
            description=description,
            inputs=inputs,
            initial=initial,
            weights=weight,
            sequences=sequences,
            d_projected=d_projected,
            extras=extras,
            # A tensor after the first stretch: one trace for all of them.
            first=first if first == 0 else tf.constant(first),
            length=length,
        )

    d_initial, d_inputs, d_weights, d_probes = _by_stretches(
        arrays.segments(inputs.shape[0], shortest=description.shortest_stretch),
        loop,
        shares,
        d_final,
    )
    d_weights = [tf.cast(d_weights[r], w.dtype) for r, w in weight.items()]
    return [d_inputs, *d_initial, *d_weights, *d_probes]


def _shares(
    description,
    inputs,
    initial,
    weights,
    sequences,
    d_projected,
    extras,
    first,
    length,
):
    """A stretch's gradient of its inputs and its shares of the weights'
    gradients (a dict), from its gradient of the projected inputs and the
    description's extras; compiled by XLA like the loops (one call, no
    TensorFlow op dispatch per matmul). `first`: the int 0 for the
    stretch that starts the sequence, else an int32 tensor
    (`arrays.starts`)."""
    d_x, parts = _input_gradients(inputs, weights, d_projected, first, length)
    parts.update(
        description.weight_gradients(
            initial, weights, sequences, d_projected, extras, first
        )
    )
    return d_x, parts


_shares_compiled = compiled(
    _shares, static=("weights", "d_projected", "extras")
)


def _input_gradients(inputs, weight, d_projected, first, length):
    """For the stretch of steps `first` on that `d_projected` holds: the
    gradient of `inputs` there and the stretch's shares of the input
    kernel's and input bias' gradients, in float32 (the gradient of the
    inputs is `d_projected` where they came projected)."""
    parts = {}
    if "input_bias" in weight:
        parts["input_bias"] = arrays.sum_over_steps(d_projected)
    input_kernel = weight.get("input_kernel")
    if input_kernel is None:
        return d_projected, parts
    if length is not None:
        inputs = arrays.window(inputs, first, length)
    d_inputs = tf.tensordot(d_projected, tf.transpose(input_kernel), axes=1)
    parts["input_kernel"] = arrays.matmul_over_time(inputs, d_projected)
    return d_inputs, parts


def _by_stretches(stretches, loop, shares, states):
    """The backward pass a stretch of time at a time (`stretches`, from
    `arrays.segments`), last first. `loop(first, length, states)` runs a
    stretch's backward loop and returns the gradients of the states before
    it, of its projected inputs, the description's extras and the probes'
    gradients; `shares(first, length, d_projected, extras)` turns those
    into the stretch's gradient of its inputs and its shares of the
    weights' gradients (a dict). A stretch's shares are taken while the
    next stretch's loop runs (the loop's small sequential matmuls leave
    cores idle), and a stretch's gradient of the projected inputs is freed
    once its shares are taken; the loop after that next one waits for them
    (without it, TensorFlow's executor could run every loop ahead of the
    shares and hold every stretch's gradient).

    Returns the gradients of the initial states, of the inputs and of the
    weights (summed over stretches), and of the probes.
    """
    d_weights, d_inputs, d_probes = {}, [], []
    taken = []
    for first, length in stretches:
        if len(taken) >= 2:
            with tf.control_dependencies(taken[-2]):
                states = [tf.identity(s) for s in states]
        d_projected, extras, states, probes = loop(first, length, states)
        d_x, parts = shares(first, length, d_projected, extras)
        taken.append([d_x, *parts.values()])
        d_weights = {
            name: arrays.add(d_weights.get(name), part)
            for name, part in parts.items()
        }
        d_inputs.append(d_x)
        d_probes.append(probes)
    d_probes = [arrays.concat_over_time(list(p)) for p in zip(*d_probes)]
    return states, arrays.concat_over_time(d_inputs), d_weights, d_probes
