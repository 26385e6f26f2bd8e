"""Sequential digits: scikit-learn's 8x8 digits read pixel by pixel (64 steps).

Compares keras.layers.SimpleRNN, LSTM, GRU with keras_gated.LSTM and GRU on
the same budget and writes a table, figures, TensorBoard runs and the
trained gated models. Every option of `keras-gated compare --help` works:

    python examples/sequential_digits.py [--epochs N] [--out runs/]
"""

import sys

from keras_gated.cli import main

DEFAULTS = ["compare", "--task", "digits", "--length", "64", "--epochs", "15"]

if __name__ == "__main__":
    sys.exit(main(DEFAULTS + sys.argv[1:]))
