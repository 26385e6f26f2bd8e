"""How far an LSTM's cell state carries: the cell path against the full
recurrence, on sequences longer than those it was trained on.

Loads an LSTM model trained by `keras-gated compare` on the adding problem
(or any `.keras` model whose recurrent layer is an LSTM named "rnn" with
inputs of 2 features), rebuilds it with `keras_gated.LSTM` for each length,
and measures on adding-problem sequences of that length
(`keras_gated.timestep_gradients(..., jacobians=True)`):

- the retention prod_{j>t} f_j of the mean, the 90th percentile and the
  most retentive unit: dc_T/dc_t along the cell state alone;
- ||dc_T/dc_t||_2, the full Jacobian of the final cell state with respect
  to the cell state after step t, through every path of the recurrence.

It prints a table and writes `cell_memory.png`:

    keras-gated compare --task adding --length 100 --epochs 30 \\
        --samples 10000 --units 64 --learning-rate 0.01 --out runs/t100
    python examples/cell_memory.py \\
        --model runs/t100/saved_models/adding-gated-lstm.keras \\
        --lengths 100 300 1000 --out runs/t100/adding
"""

import argparse
import os

import keras
import numpy as np

import keras_gated
from keras_gated import tasks

CURVES = {
    "retention": "mean unit: prod f_j",
    "retention_q90": "90th pct unit: prod f_j",
    "retention_max": "max unit: prod f_j",
    "jacobian_cell_spectral": "||dc_T/dc_t||_2",
}


def measure(trained, length, samples=16):
    units = trained.get_layer("rnn").units
    model = keras.Sequential(
        [
            keras.Input((length, 2)),
            keras_gated.LSTM(units, name="rnn"),
            keras.layers.Dense(1),
        ]
    )
    model.set_weights(trained.get_weights())
    model.compile(loss="mse")
    x, y = tasks.make_data("adding", length, samples, seed=1)
    norms = keras_gated.timestep_gradients(model, x, y, jacobians=True)
    return norms["rnn"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained .keras model")
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--out", default=".", help="directory for the figure")
    args = parser.parse_args(argv)
    trained = keras.saving.load_model(args.model)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(
        1, len(args.lengths), figsize=(5 * len(args.lengths), 4), sharey=True
    )
    axes = np.atleast_1d(axes)
    print(f"{'T':>5} {'curve':>24} {'t=0':>9} {'t=T/2':>9}")
    for axis, length in zip(axes, args.lengths):
        norms = measure(trained, length)
        for key, label in CURVES.items():
            values = norms[key]
            axis.semilogy(np.arange(length), values, label=label)
            middle = values[length // 2]
            print(f"{length:5d} {key:>24} {values[0]:9.2e} {middle:9.2e}")
        axis.set_title(f"T={length}")
        axis.set_xlabel("timestep t")
    axes[0].set_ylabel("gain from c_t to c_T (log scale)")
    axes[-1].legend(fontsize=8)
    figure.suptitle(
        "a trained LSTM's cell memory: the cell path and the full recurrence"
    )
    figure.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "cell_memory.png")
    figure.savefig(path, dpi=110)
    print(path)


if __name__ == "__main__":
    main()
