"""What a cell tells the driver (`keras_gated._tf.driver`) about itself.

A description is a frozen value (one per cell configuration, hashable, so
the compiled loops trace once per configuration). It names the cell's
states and gates (from `keras_gated.gates`) and writes its math four
times over, each with the equations in its docstring:

- `step`: one forward step, as `keras_gated.cells` computes it, in the
  form that runs fastest in a compiled loop;
- `backward_step`: the gradients of one step, given those of its new
  states and of its returned gates;
- `weight_gradients`: the recurrent kernel's (and recurrent bias')
  gradient for a stretch of steps, large matmuls over all its steps;
- `backward_layout`: which sequences the backward pass reads, and where
  they are kept (batch-major buffers the loop reads in place, time-major
  sequences for the matmuls over time).

The inputs' projection x_t W (+ b), its gradients, masking, probes,
stores, stretches and dtypes are the driver's, the same for every cell.
"""

import dataclasses

import keras
import tensorflow as tf

from keras_gated._tf.compile import is_portable


@dataclasses.dataclass(frozen=True)
class Description:
    """The fields and hooks every description has; see the module doc.

    Attributes:
        states: state names in the cell's order (`"hidden"` first).
        gates: the weight blocks, named and ordered by `keras_gated.gates`.
        internals: per-step values a description may store time-major
            for its weight gradients (never returned, not zeroed at
            masked steps).
        extras: per-step sequences, `(batch, units)` each, that the
            backward step returns beside the
            gradient of the projected inputs.
        loop_reads: the sequences `backward_step` may read (those of
            them that `backward_layout` stores, time-major or
            batch-major).
        keep_alive: stores kept alive under an enclosing XLA compile.
        shortest_stretch: the fewest steps of a backward stretch but the
            first (`arrays.segments`); below 16 times that many steps it
            sets the stretches' length.
    """

    states = ("hidden",)
    gates = ()
    internals = ()
    extras = ()
    loop_reads = ()
    keep_alive = ()
    shortest_stretch = 4

    def supports(self, cell):
        """Whether `step` computes exactly what `cell.step` computes."""
        raise NotImplementedError

    def widths(self, units):
        """The widths of stored per-step values that are not `(batch,
        units)`, by name."""
        return {}

    def always(self, projected):
        """Stores kept even when nothing reads them (`projected`: the
        inputs came projected, without an input kernel)."""
        return ()


def sigmoid(x):
    """sigmoid(x) = (1 + tanh(x / 2)) / 2: XLA's CPU backend evaluates
    tanh several times faster than its sigmoid."""
    return 0.5 * tf.tanh(0.5 * x) + 0.5


def is_default(cell, *names):
    """Whether the cell's activations are Keras' defaults: `activation`
    tanh and, where named, `recurrent_activation` sigmoid."""
    defaults = {
        "activation": keras.activations.tanh,
        "recurrent_activation": keras.activations.sigmoid,
    }
    return all(getattr(cell, n) is defaults[n] for n in names)


def joint_projection(input_kernel, kernel, columns=slice(None)):
    """`f(x_t, h) = (x_t W)[:, columns] + h U`: the inputs projected
    inside the loop by one matmul of `[x_t, h]` by `[W[:, columns]; U]`
    per step (faster than two in the benchmarks), in column blocks
    (`Blocked`); `x_t[:, columns] + h U` where the inputs come projected
    (`input_kernel` None)."""
    if input_kernel is None:
        recurrent = Blocked(kernel)
        return lambda x, h: x[:, columns] + recurrent(h)
    joint = Blocked(tf.concat([input_kernel[:, columns], kernel], axis=0))
    return lambda x, h: joint(tf.concat([x, h], axis=1))


BLOCK_COLUMNS = 64
"""The width of the column blocks of `Blocked`."""


def one_block():
    """Whether the loops run one matmul per step instead of blocks (the
    blocks of `Blocked`, the LSTM's blocks of units): where a GPU is
    visible, and in `portable` graphs (each block would be an op of its
    own)."""
    return is_portable() or bool(tf.config.list_logical_devices("GPU"))


class Blocked:
    """`a @ matrix` in a compiled loop, as one matmul per block of
    `BLOCK_COLUMNS` columns of `matrix`, joined. On a CPU, XLA runs the
    per-step matmuls of the forward loops (batch x (features + units)
    by 4 units, say) in 0.5-0.7x the time this way (timed in a loop of
    such matmuls alone; README, "Performance", "Where the time goes"): the
    blocks are independent, so they run on all cores, where one such
    small matmul runs on one. The backward loops' dz U^T (batch x 4
    units by units) too: alone the split did not pay, but in a training
    step (`fit`, and most under `jit_compile=True`) it did (README,
    "Performance", "Stored h_{t-1} U_h, blocks in the backward step").
    One matmul where a GPU is
    visible, in `portable` graphs (each block would be an op of its own)
    and where `matrix` has at most one block's columns. The GRU's and
    SimpleRNN's loops use it, and the LSTM's with at most
    `BLOCK_COLUMNS` units; a larger LSTM computes its step in blocks of
    units instead (`lstm.block_count`).

    The blocks are sliced once, ahead of the loop; each output column is
    the same dot product as in one matmul.
    """

    def __init__(self, matrix):
        columns = matrix.shape[-1]
        if columns <= BLOCK_COLUMNS or one_block():
            self.blocks = [matrix]
        else:
            self.blocks = [
                matrix[:, start : start + BLOCK_COLUMNS]
                for start in range(0, columns, BLOCK_COLUMNS)
            ]

    def __call__(self, a):
        if len(self.blocks) == 1:
            return tf.matmul(a, self.blocks[0])
        return tf.concat([tf.matmul(a, b) for b in self.blocks], axis=1)
