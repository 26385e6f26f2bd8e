"""Quick start: train a built-in Keras LSTM, then watch its gates.

1. Trains a small `keras.layers.LSTM` model on the adding problem (two
   marked numbers among T random ones; the target is their sum).
2. Builds the same model with `keras_gated.LSTM(return_gates=True)`, copies
   the trained weights over, and checks that both give the same
   predictions.
3. Prints the gate shapes and what the gates do at the two marked steps.

    python examples/quickstart.py [--length 30] [--epochs 8]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_gated  # noqa: E402
from keras_gated.tasks import adding_problem  # noqa: E402


def build(lstm_layer, length):
    inputs = keras.Input((length, 2))
    outputs = lstm_layer(inputs)
    gates = None
    if isinstance(outputs, tuple):
        outputs, gates = outputs
    prediction = keras.layers.Dense(1)(outputs)
    if gates is None:
        return keras.Model(inputs, prediction)
    return keras.Model(inputs, [prediction, gates])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    x, y = adding_problem(4000, args.length, seed=0)
    x_test, y_test = adding_problem(256, args.length, seed=1)

    builtin = build(keras.layers.LSTM(32), args.length)
    builtin.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    builtin.fit(x, y, batch_size=64, epochs=args.epochs, verbose=2)
    mse = builtin.evaluate(x_test, y_test, verbose=0)
    print(f"\nbuilt-in LSTM test MSE: {mse:.4f} (predicting 1.0: 0.167)")

    gated = build(keras_gated.LSTM(32, return_gates=True), args.length)
    gated.set_weights(builtin.get_weights())
    prediction, gates = gated.predict(x_test, verbose=0)
    difference = np.abs(prediction - builtin.predict(x_test, verbose=0)).max()
    print(
        f"same weights in keras_gated.LSTM: max |difference| = {difference:.2e}"
    )

    print("\ngate sequences, (batch, timesteps, units):")
    for name, value in gates.items():
        print(f"  {name:9} {value.shape}")
    marked = x_test[..., 1] == 1.0
    print("\nmean gate activation at marked vs unmarked steps:")
    for name in ("input", "forget", "output"):
        at, off = gates[name][marked].mean(), gates[name][~marked].mean()
        print(f"  {name:9} marked {at:.3f}   unmarked {off:.3f}")


if __name__ == "__main__":
    main()
