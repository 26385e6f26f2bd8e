"""Copy memory: recall 10 symbols from 8 categories after T blanks.

Compares keras.layers.SimpleRNN, LSTM, GRU with keras_gated.LSTM and GRU on
the same budget and writes a table, figures, TensorBoard runs and the
trained gated models. Every option of `keras-gated compare --help` works:

    python examples/copy_memory.py [--length 100] [--epochs N] [--out runs/]
"""

import sys

from keras_gated.cli import main

# The settings of examples/RESULTS.md; later options override them.
DEFAULTS = (
    "compare --task copy --length 100 --epochs "
    "15 --samples 10000 --units 64 --learning-rate 0.01"
).split()

if __name__ == "__main__":
    sys.exit(main(DEFAULTS + sys.argv[1:]))
