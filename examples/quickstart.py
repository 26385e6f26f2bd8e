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


def adding_problem(samples, length, rng):
    """Inputs (samples, length, 2): a uniform value and a 0/1 marker."""
    values = rng.uniform(0.0, 1.0, size=(samples, length))
    markers = np.zeros((samples, length))
    first = rng.integers(0, length // 2, size=samples)
    second = rng.integers(length // 2, length, size=samples)
    markers[np.arange(samples), first] = 1.0
    markers[np.arange(samples), second] = 1.0
    x = np.stack([values, markers], axis=-1).astype("float32")
    y = (values * markers).sum(axis=1, keepdims=True).astype("float32")
    return x, y


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
    rng = np.random.default_rng(0)
    x, y = adding_problem(4000, args.length, rng)
    x_test, y_test = adding_problem(256, args.length, rng)

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
