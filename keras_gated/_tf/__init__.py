"""TensorFlow at the edges: the fast path and the generic while loop.

- `describe(cell)`: the fast path's description of a cell (None where it
  does not apply: other activations, a cell it does not know). Each
  description module (`lstm`, `gru`, `simple_rnn`) says what is
  particular to its cell; `driver.run` runs any of them, compiled by XLA,
  with an analytic backward pass through time.
- `loop.while_loop`: the generic loop over a cell's own portable `step`
  (any activation, recurrent dropout), with a recomputing backward pass.
- `compile.portable()`: plain graphs without XLA, for export.

The sequence layer (`keras_gated.rnn.GatedRNN`) reaches all of this
through one hook, `inner_loop`; docs/architecture.md shows the whole path.
"""

from keras_gated._tf import gru
from keras_gated._tf import lstm
from keras_gated._tf import simple_rnn
from keras_gated._tf.compile import portable
from keras_gated._tf.driver import run

_DESCRIBERS = (lstm.describe, gru.describe, simple_rnn.describe)


def describe(cell):
    """The fast path's description of `cell`, or None where the fast path
    does not compute exactly what `cell.step` computes."""
    for describer in _DESCRIBERS:
        description = describer(cell)
        if description is not None:
            return description
    return None


__all__ = ["describe", "portable", "run"]
