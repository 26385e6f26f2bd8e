"""Sequential digits: scikit-learn's 8x8 digits read pixel by pixel (64 steps).

Compares keras.layers.SimpleRNN, LSTM, GRU with keras_gated.LSTM and GRU on
the same budget and writes a table, figures, TensorBoard runs and the
trained gated models. Every option of `keras-gated compare --help` works:

    python examples/sequential_digits.py [--epochs N] [--out runs/]
"""

import sys

from keras_gated.cli import main

# The settings of examples/RESULTS.md; later options override them.
DEFAULTS = (
    "compare --task digits --epochs 20 "
    "--units 64 --learning-rate 0.01 --batch-size 32"
).split()

if __name__ == "__main__":
    sys.exit(main(DEFAULTS + sys.argv[1:]))
