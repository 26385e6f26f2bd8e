"""Gate names and their order in the weight matrices: the one source of truth.

Keras packs the per-gate blocks of `kernel`, `recurrent_kernel` and `bias`
side by side along the last axis. The order below is Keras' order, so the
weights of `keras.layers.LSTM` / `keras.layers.GRU` load into our layers
unchanged:

- LSTM: input gate i, forget gate f, candidate g (Keras calls it "c"),
  output gate o. `kernel` has shape `(features, 4 * units)`.
- GRU: update gate z, reset gate r, candidate h~. `kernel` has shape
  `(features, 3 * units)`; with `reset_after=True` the bias has shape
  `(2, 3 * units)`: row 0 is the input bias, row 1 the recurrent bias.
- SimpleRNN: one block, the pre-activation z_t = x_t W + h_{t-1} U + b
  (h_t = tanh(z_t)). A vanilla RNN has no gates; its pre-activation is
  what it returns in their place. `kernel` has shape `(features, units)`.

The names are the keys of the gate dictionaries our layers return, and they
are public API.
"""

from keras import ops

LSTM_GATES = ("input", "forget", "candidate", "output")
"""LSTM gate blocks in weight order (Keras' i, f, c, o)."""

LSTM_SEQUENCES = LSTM_GATES + ("cell",)
"""Keys of an LSTM gate dict: the four gates and the cell state c_t."""

GRU_GATES = ("update", "reset", "candidate")
"""GRU gate blocks in weight order (Keras' z, r, h)."""

GRU_SEQUENCES = GRU_GATES
"""Keys of a GRU gate dict."""

GRU_SIGMOID_GATES = ("update", "reset")
"""The GRU gates computed alike, sigmoid(x W + h U + b), adjacent in the
weights; the candidate differs with `reset_after`."""

SIMPLE_RNN_GATES = ("pre_activation",)
"""SimpleRNN's one weight block: the pre-activation z_t."""

SIMPLE_RNN_SEQUENCES = SIMPLE_RNN_GATES
"""Keys of a SimpleRNN gate dict."""


def split_gates(tensor, names):
    """Splits the last axis of `tensor` into one equal block per gate name.

    Args:
        tensor: a tensor whose last axis is `len(names) * units`.
        names: gate names in weight order, e.g. `LSTM_GATES`.

    Returns:
        A dict mapping each name to its block, in the given order.
    """
    return dict(zip(names, ops.split(tensor, len(names), axis=-1)))


def gate_block(tensor, names, name):
    """Returns the block of the last axis of `tensor` that belongs to `name`.

    Used to slice one gate's columns out of a packed weight matrix.
    """
    units = tensor.shape[-1] // len(names)
    return tensor[..., block_columns(names, (name,), units)]


def block_columns(names, selected, units):
    """The column slice of the adjacent gate blocks `selected` (names, in
    weight order) in a packed matrix of `len(names) * units` columns."""
    first = names.index(selected[0])
    if tuple(names[first : first + len(selected)]) != tuple(selected):
        raise ValueError(
            f"Gate blocks {selected} are not adjacent in the order {names}."
        )
    return slice(first * units, (first + len(selected)) * units)


def join_gates(blocks, names):
    """Concatenates per-gate blocks (a dict keyed by gate name) along the
    last axis in weight order: the inverse of `split_gates`."""
    return ops.concatenate([blocks[name] for name in names], axis=-1)
