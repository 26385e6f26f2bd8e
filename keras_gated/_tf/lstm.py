"""The LSTM, described for the driver (`keras_gated._tf.driver`).

Forward, with z_t = x_t W + h_{t-1} U + b split into the blocks of
`keras_gated.gates.LSTM_GATES`:

    i, f, o = sigmoid(z_i), sigmoid(z_f), sigmoid(z_o)
    g = tanh(z_c)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
"""

import dataclasses
import functools

import tensorflow as tf

from keras_gated import gates
from keras_gated._tf import arrays
from keras_gated._tf.description import BLOCK_COLUMNS
from keras_gated._tf.description import Blocked
from keras_gated._tf.description import Description
from keras_gated._tf.description import is_default
from keras_gated._tf.description import joint_projection
from keras_gated._tf.description import one_block
from keras_gated.gates import LSTM_GATES
from keras_gated.gates import LSTM_SEQUENCES


@dataclasses.dataclass(frozen=True)
class LSTMDescription(Description):
    """The LSTM step, its backward step and its weight gradients."""

    blocks: int = 1
    """How many blocks of units the forward step computes
    (`block_count`)."""

    states = ("hidden", "cell")
    gates = LSTM_GATES
    # Each backward stretch is two XLA launches: with stretches of at
    # least eight steps instead of four, 128 units at T=50 took
    # 0.89-0.90x the built-in's time in `fit` instead of 0.99-1.06x; the
    # GRU kept four, where eight took its peak memory at T=50 from under
    # 1.2x the built-in's to 1.54x (README, "Performance").
    shortest_stretch = 8

    @property
    def activations(self):
        """The names of the blocks' stored activations, `(batch, 4 *
        block units)` each: [i, f, g, o] of the block's units (none with
        one block)."""
        if self.blocks == 1:
            return ()
        return tuple(f"activations_{j}" for j in range(self.blocks))

    def widths(self, units):
        blocks = _unit_blocks(units, self.blocks)
        return {
            name: len(self.gates) * (block.stop - block.start)
            for name, block in zip(self.activations, blocks)
        }

    @property
    def loop_reads(self):
        return LSTM_GATES + ("cell",) + self.activations

    def supports(self, cell):
        return is_default(cell, "activation", "recurrent_activation")

    def backward_layout(self, masked, probed, static, returned):
        """Where no gate nor c is returned and nothing (a mask, a probe, a
        dynamic length) makes h differ from o * tanh(c), with more than
        one block of units: each block's activations and c, time-major
        (one store per block and step, each written as soon as the block
        is computed; h_{t-1} for the kernel gradient is recomputed as o *
        tanh(c)). Otherwise the gates and c batch-major (the layer returns
        them, or the backward loop reads them in place), and h is
        recomputed as above, or kept time-major where a mask, a probe or
        a dynamic length makes h differ."""
        if masked or probed or not static:
            return LSTM_GATES + ("cell",), ("hidden",)
        if self.activations and not set(returned) & set(LSTM_SEQUENCES):
            return (), self.activations + ("cell",)
        return LSTM_GATES + ("cell",), ()

    def _per_column(self, template, units, sigmoid, tanh):
        """A `(4 * units,)` vector: `sigmoid` on the columns of the
        sigmoid gates i, f, o and `tanh` on the candidate's."""
        dtype = template.dtype
        values = {n: tanh if n == "candidate" else sigmoid for n in self.gates}
        blocks = [
            tf.fill([units], tf.constant(values[n], dtype)) for n in self.gates
        ]
        return tf.concat(blocks, axis=0)

    def forward_context(self, weights, template):
        """Per block of units (`block_count`): their slice, the step's
        matmul to their four gates' columns, their bias, and the scale
        and shift of one tanh pass: sigmoid(z) = 0.5 * tanh(0.5 z) + 0.5
        on i, f, o and tanh(z) on the candidate, all four gates at once
        as scale * tanh(scale * z) + shift."""
        input_kernel = weights.get("input_kernel")
        kernel = weights["recurrent_kernel"]
        bias = weights.get("input_bias")
        units = kernel.shape[0]
        context = []
        for block, pick in self._pickers(units):
            if self.blocks == 1:
                project = joint_projection(input_kernel, kernel)
            else:
                project = _block_projection(
                    None if input_kernel is None else pick(input_kernel),
                    pick(kernel),
                    pick,
                )
            width = block.stop - block.start
            context.append(
                _Block(
                    units=block,
                    project=project,
                    bias=None if bias is None else pick(bias),
                    scale=self._per_column(template, width, 0.5, 1.0),
                    shift=self._per_column(template, width, 0.5, 0.0),
                )
            )
        return context

    def _pickers(self, units):
        """Per block of units, its slice and `m -> m[..., columns]` for
        the columns of a packed matrix (weights, bias) that hold the
        block's four gates, in gate order (all columns with one block)."""
        blocks = _unit_blocks(units, self.blocks)
        if len(blocks) == 1:
            return [(blocks[0], _all_columns)]
        return [
            (
                block,
                _picker(
                    [
                        range(k * units + block.start, k * units + block.stop)
                        for k in range(len(self.gates))
                    ]
                ),
            )
            for block in blocks
        ]

    def step(self, context, x, states, offsets):
        """The forward step above, a block of units at a time: each
        block's four gates from one matmul, then its c_t and h_t, so the
        blocks are independent until h_t is joined for the next step.
        `offsets` (probes, or None) are added to c_t before h_t = o *
        tanh(c_t) is computed, and to h_t. Returns the new states and the
        gates, and with more than one block each block's activations
        (`activations`)."""
        h, c = states
        offsets = offsets or [None, None]
        new_h, new_c, parts = [], [], {n: [] for n in self.gates}
        activations = []
        for block in context:
            units = block.units
            z = arrays.plus(block.project(x, h), block.bias)
            a = block.scale * tf.tanh(block.scale * z) + block.shift
            activations.append(a)
            g = gates.split_gates(a, self.gates)
            c_new = arrays.plus(
                g["forget"] * _part(c, units) + g["input"] * g["candidate"],
                _part(offsets[1], units),
            )
            new_c.append(c_new)
            new_h.append(
                arrays.plus(
                    g["output"] * tf.tanh(c_new), _part(offsets[0], units)
                )
            )
            for name in self.gates:
                parts[name].append(g[name])
        values = {n: arrays.Parts(p) for n, p in parts.items()}
        values.update(zip(self.activations, activations))
        return (_join(new_h), _join(new_c)), values

    def backward_context(self, weights, template):
        """U^T in column blocks (`Blocked`, as the forward's matmul) and
        s, 1 on the columns of the sigmoid gates and 0 on the
        candidate's; with more than one block of units, per block its
        units, its rows of U^T and its s instead."""
        kernel = weights["recurrent_kernel"]
        units = kernel.shape[0]
        if self.blocks == 1:
            sigmoid = self._per_column(template, units, 1.0, 0.0)
            return Blocked(tf.transpose(kernel)), sigmoid, []
        blocks = [
            (
                block,
                tf.transpose(pick(kernel)),
                self._per_column(template, block.stop - block.start, 1.0, 0.0),
            )
            for block, pick in self._pickers(units)
        ]
        return None, None, blocks

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

        With more than one block of units, the same a block at a time
        (`_backward_in_blocks`).

        Returns the previous states' gradients, the states' total
        gradients (dh, dc_t^total: a probe's), dz and no extras.
        """
        if self.blocks > 1:
            return self._backward_in_blocks(context, reads, t, d_states)
        kernel_t, sigmoid, _ = context
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
        dz = self._dz(
            values,
            d_gates,
            up,
            lambda: gates.join_gates(values, self.gates),
            sigmoid,
        )
        return (kernel_t(dz), dct * f), (dh, dct), dz, {}

    def _dz(self, values, d_gates, up, joined, sigmoid):
        """dz from the gates' `values`, their `d_gates` and upstream
        gradients `up` (None where none): over the four gates' columns at
        once where no gate has an upstream gradient and `joined()` gives
        a = [i, f, g, o] (None: not at hand), else a gate at a time."""
        if joined is not None and all(u is None for u in up.values()):
            a = joined()
            slope = sigmoid * a + (1 - sigmoid) - a * a
            return gates.join_gates(d_gates, self.gates) * slope
        i, f, g, o = (values[n] for n in self.gates)
        slopes = {
            "input": i * (1 - i),
            "forget": f * (1 - f),
            "candidate": 1 - g * g,
            "output": o * (1 - o),
        }
        return gates.join_gates(
            {n: arrays.plus(d_gates[n], up[n]) * slopes[n] for n in self.gates},
            self.gates,
        )

    def _backward_in_blocks(self, context, reads, t, d_states):
        """`backward_step` a block of units at a time: per block, dz over
        its four gates' columns as above, then its share of dh_{t-1}, dz
        U^T over its rows of U^T (the blocks are independent until the
        shares are summed). Each block reads its columns of the gates
        (its stored activations where `backward_layout` kept them, else
        the batch-major gates), of c and of the gates' upstream
        gradients, each by one dynamic slice. Without upstream gradients
        and with stored activations a = [i, f, g, o], the derivative is
        taken over the block's four gates at once (s * a + (1 - s) - a^2,
        as above). dz is returned in the weights' gate order."""
        _, _, blocks = context
        dh, dc = d_states
        shares, dz_blocks, dct_blocks, d_cell = [], [], [], []
        stored = reads.has(self.activations[0])
        for (units, kernel_t, sigmoid), name in zip(blocks, self.activations):
            width = units.stop - units.start
            if stored:
                i, f, g, o = (
                    reads.value(name, t, slice(k * width, (k + 1) * width))
                    for k in range(len(self.gates))
                )
            else:
                i, f, g, o = (reads.value(n, t, units) for n in self.gates)
            tc = tf.tanh(reads.value("cell", t, units))
            dh_u = dh[:, units]
            dct = dc[:, units] + dh_u * o * (1 - tc * tc)
            d_gates = {
                "input": dct * g,
                "forget": dct * reads.previous("cell", t, units),
                "candidate": dct * i,
                "output": dh_u * tc,
            }
            dz = self._dz(
                dict(zip(self.gates, (i, f, g, o))),
                d_gates,
                {n: reads.upstream(n, t, units) for n in self.gates},
                (lambda name=name: reads.value(name, t)) if stored else None,
                sigmoid,
            )
            shares.append(tf.matmul(dz, kernel_t))
            dz_blocks.append(gates.split_gates(dz, self.gates))
            dct_blocks.append(dct)
            d_cell.append(dct * f)
        dz = tf.concat(
            [block[n] for n in self.gates for block in dz_blocks], axis=1
        )
        dct = _join(dct_blocks)
        return (tf.add_n(shares), _join(d_cell)), (dh, dct), dz, {}

    def weight_gradients(self, initial, weights, sequences, dz, extras, first):
        """dU = sum_t h_{t-1}^T dz_t over the stretch's steps (h_{-1} the
        initial state), from the kept h or recomputed from o and c (the
        batch-major gates, or the blocks' time-major activations)."""
        batch_major, time_major = sequences
        hidden = time_major.get("hidden")
        if hidden is not None:
            kernel = arrays.matmul_shifted(initial[0], hidden, dz, first)
        elif self.activations and self.activations[0] in time_major:

            def recomputed(start, length):
                o = tf.concat(
                    [
                        gates.gate_block(
                            arrays.window(time_major[n], start, length),
                            self.gates,
                            "output",
                        )
                        for n in self.activations
                    ],
                    axis=-1,
                )
                c = arrays.window(time_major["cell"], start, length)
                return _hidden(o, c)

            kernel = _recomputed_kernel_gradient(
                initial[0], recomputed, dz, first
            )
        else:

            def recomputed(start, length):
                o, c = (
                    arrays.window(batch_major[n], start, length, axis=1)
                    for n in ("output", "cell")
                )
                return tf.transpose(_hidden(o, c), (1, 0, 2))

            kernel = _recomputed_kernel_gradient(
                initial[0], recomputed, dz, first
            )
        return {"recurrent_kernel": kernel}


def _hidden(o, c):
    """h = o * tanh(c), in float32."""
    o, c = (tf.cast(v, tf.float32) for v in (o, c))
    return o * tf.tanh(c)


def _recomputed_kernel_gradient(h0, recomputed, dz, first, chunks=4):
    """sum_t h_{t-1}^T dz_t (h_{-1} = h0) over the steps `first` on that
    `dz` holds (`first`: see `arrays.starts`), for an unmasked LSTM of
    static length, with h_t recomputed as o_t * tanh(c_t) by
    `recomputed(start, length)` (time-major, float32) in at most `chunks`
    slices of time (at least 32 steps each): never a copy of the whole
    stretch."""
    length = dz.shape[0]
    step = max(32, -(-length // chunks))
    leading = arrays.starts(first)
    total = arrays.initial_term(h0, dz) if leading else None
    for start in range(1 if leading else 0, length, step):
        end = min(start + step, length)
        # One slice after the other, so that only one is held at a time.
        with tf.control_dependencies([] if total is None else [total]):
            h = recomputed(first + start - 1, end - start)
            total = arrays.add(total, arrays.matmul_over_time(h, dz[start:end]))
    return total


@dataclasses.dataclass(frozen=True)
class _Block:
    """One block of units of the forward step: their slice, the
    projection `f(x_t, h)` to their four gates' columns, and those
    columns' bias, scale and shift."""

    units: slice
    project: object
    bias: object
    scale: object
    shift: object


def block_count(units):
    """How many blocks of units the forward step computes
    (`LSTMDescription.blocks`): `BLOCK_COLUMNS` units each, the last
    maybe narrower; one block of all units where there are at most
    `BLOCK_COLUMNS` or the loops run one matmul per step (`one_block`: a
    GPU, `portable` graphs).

    Each block's gates come from one matmul and its c_t and h_t from
    them, so on a CPU XLA runs the blocks on all cores until h_t is
    joined; one matmul per gate's column block (`Blocked`) had all of
    them wait for every matmul of the step, then ran the gate arithmetic
    on one core (README, "Performance")."""
    if units <= BLOCK_COLUMNS or one_block():
        return 1
    return -(-units // BLOCK_COLUMNS)


def _unit_blocks(units, count):
    """The slices of units of `count` blocks (`block_count`)."""
    if count == 1:
        return [slice(0, units)]
    return [
        slice(start, min(start + BLOCK_COLUMNS, units))
        for start in range(0, units, BLOCK_COLUMNS)
    ]


def _all_columns(matrix):
    return matrix


def _picker(columns):
    """`m -> m[..., columns]` for a list of column ranges, joined (the
    weights' are sliced once, ahead of the loop)."""
    return lambda m: tf.concat([m[..., r.start : r.stop] for r in columns], -1)


def _block_projection(input_kernel, kernel, pick):
    """`f(x_t, h)` for one block of units: one matmul of `[x_t, h]` by
    the block's columns of `[W; U]`, or `pick(x_t) + h U` where the
    inputs come projected (`input_kernel` None)."""
    if input_kernel is None:
        return lambda x, h: pick(x) + tf.matmul(h, kernel)
    joint = tf.concat([input_kernel, kernel], axis=0)
    return lambda x, h: tf.matmul(tf.concat([x, h], axis=1), joint)


def _join(parts):
    """Per-block values, `(batch, block units)` each, side by side."""
    return arrays.joined(arrays.Parts(parts))


def _part(value, units):
    """The `units` slice of a `(batch, units)` value (None stays None)."""
    return None if value is None else value[:, units]


@functools.lru_cache(maxsize=None)
def _described(blocks):
    """One description per block count: the compiled loops hold their
    arguments weakly, and trace once per equal description."""
    return LSTMDescription(blocks=blocks)


def describe(cell):
    """The description of an `LSTMCell` the fast path computes exactly."""
    from keras_gated.cells import LSTMCell

    if not isinstance(cell, LSTMCell):
        return None
    description = _described(block_count(cell.units))
    return description if description.supports(cell) else None
