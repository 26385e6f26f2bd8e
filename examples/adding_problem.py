"""The adding problem (Hochreiter & Schmidhuber 1997): add two marked values.

Compares keras.layers.SimpleRNN, LSTM, GRU with keras_gated.LSTM and GRU on
the same budget and writes a table, figures, TensorBoard runs and the
trained gated models. Every option of `keras-gated compare --help` works:

    python examples/adding_problem.py [--length 100] [--epochs N] [--out runs/]
"""

import sys

from keras_gated.cli import main

DEFAULTS = ["compare", "--task", "adding", "--length", "100", "--epochs", "10"]

if __name__ == "__main__":
    sys.exit(main(DEFAULTS + sys.argv[1:]))
