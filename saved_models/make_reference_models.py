"""Writes the reference models in saved_models/ (see README.md there).

Trains a small `keras_gated.LSTM` model and a small `keras_gated.GRU` model
briefly on the adding problem from a fixed seed, and writes, for each
`<name>` in `lstm_adding`, `gru_adding`:

- `<name>.keras`: the Keras model file;
- `<name>_saved_model/`: the SavedModel from
  `keras_gated.export_saved_model` (signatures `serving_default` and
  `gates`);
- `<name>_expected.npz`: what the Keras model computes on the stored input,
  under the keys of the `gates` signature: `"output_0"` and
  `"<layer name>/<gate name>"`;

and, shared by both, `inputs.npz` (`sequence`, the stored input, and
`target`, its adding-problem sums) and `manifest.json` (seed, training
set-up, final losses, library versions).

Usage, from the repository root:

    python saved_models/make_reference_models.py
"""

import argparse
import json
import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gated  # noqa: E402

SEED = 20240611
UNITS = 16
TRAIN_TIMESTEPS = 20
TRAIN_SAMPLES = 2048
EPOCHS = 20
BATCH_SIZE = 64
LEARNING_RATE = 1e-2
# The stored input has another length than the training data: the
# signatures and the models accept any length.
STORED_BATCH = 3
STORED_TIMESTEPS = 25

MODELS = {"lstm_adding": keras_gated.LSTM, "gru_adding": keras_gated.GRU}
BUILTINS = {
    keras_gated.LSTM: keras.layers.LSTM,
    keras_gated.GRU: keras.layers.GRU,
}


def adding_problem(samples, timesteps, rng):
    """The adding problem (Hochreiter & Schmidhuber 1997).

    Each timestep holds a value drawn uniformly in [0, 1) and a marker; two
    timesteps, one in each half of the sequence, are marked with 1, and the
    target is the sum of their values.

    Returns:
        `(sequence, target)`: float32 arrays of shapes
        `(samples, timesteps, 2)` and `(samples, 1)`.
    """
    values = rng.random((samples, timesteps))
    markers = np.zeros((samples, timesteps))
    half = timesteps // 2
    rows = np.arange(samples)
    first = rng.integers(0, half, samples)
    second = rng.integers(half, timesteps, samples)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    sequence = np.stack([values, markers], axis=-1).astype("float32")
    target = (values[rows, first] + values[rows, second])[:, None]
    return sequence, target.astype("float32")


def build_model(layer_class, **layer_kwargs):
    inputs = keras.Input((None, 2), name="sequence")
    name = layer_class.__name__.lower()
    hidden = layer_class(UNITS, name=name, **layer_kwargs)(inputs)
    outputs = keras.layers.Dense(1, name="sum")(hidden)
    return keras.Model(inputs, outputs, name=f"{name}_adding")


def expected_values(model, sequence):
    values = {"output_0": model(sequence, training=False)}
    values.update(keras_gated.gate_outputs(model, sequence))
    return {key: keras.ops.convert_to_numpy(v) for key, v in values.items()}


def check_against_builtin(model, layer_class, sequence, expected):
    """The stored outputs must be those of Keras' own layer, same weights."""
    builtin = build_model(BUILTINS[layer_class], use_cudnn=False)
    builtin.set_weights(model.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(builtin(sequence)),
        expected["output_0"],
        atol=1e-5,
    )


def check_saved_model(path, sequence, expected):
    loaded = tf.saved_model.load(path)
    served = loaded.signatures["gates"](sequence=tf.constant(sequence))
    if sorted(served) != sorted(expected):
        raise RuntimeError(
            f"{path}: keys {sorted(served)} != {sorted(expected)}"
        )
    for key, value in expected.items():
        np.testing.assert_allclose(served[key].numpy(), value, atol=1e-6)


def main(output_dir):
    tf.config.experimental.enable_op_determinism()
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    train_x, train_y = adding_problem(TRAIN_SAMPLES, TRAIN_TIMESTEPS, rng)
    sequence, target = adding_problem(STORED_BATCH, STORED_TIMESTEPS, rng)
    np.savez_compressed(
        output_dir / "inputs.npz", sequence=sequence, target=target
    )
    manifest = {
        "seed": SEED,
        "task": "adding problem",
        "units": UNITS,
        "train_samples": TRAIN_SAMPLES,
        "train_timesteps": TRAIN_TIMESTEPS,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "stored_input_shape": list(sequence.shape),
        "versions": {
            "keras_gated": keras_gated.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
        },
        "models": {},
    }
    for name, layer_class in MODELS.items():
        keras.utils.set_random_seed(SEED)
        model = build_model(layer_class)
        model.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE), loss="mse"
        )
        history = model.fit(
            train_x,
            train_y,
            batch_size=BATCH_SIZE,
            epochs=EPOCHS,
            shuffle=False,
            verbose=0,
        )
        model.save(output_dir / f"{name}.keras")
        saved_model = output_dir / f"{name}_saved_model"
        keras_gated.export_saved_model(model, saved_model, overwrite=True)
        # Git keeps no empty directory: remove it here so that the files
        # tested are the files a clone has.
        assets = saved_model / "assets"
        if assets.is_dir() and not any(assets.iterdir()):
            assets.rmdir()
        expected = expected_values(model, sequence)
        np.savez_compressed(output_dir / f"{name}_expected.npz", **expected)
        check_against_builtin(model, layer_class, sequence, expected)
        check_saved_model(str(saved_model), sequence, expected)
        manifest["models"][name] = {
            "layer": f"keras_gated.{layer_class.__name__}",
            "final_train_mse": float(history.history["loss"][-1]),
            "stored_input_mse": float(
                np.mean((expected["output_0"] - target) ** 2)
            ),
            "gate_keys": sorted(k for k in expected if k != "output_0"),
        }
        print(f"{name}: {manifest['models'][name]}")
    with open(output_dir / "manifest.json", "w") as file:
        json.dump(manifest, file, indent=2)
        file.write("\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir",
        default=pathlib.Path(__file__).resolve().parent,
        help="where to write the models (default: this script's directory)",
    )
    main(parser.parse_args().output_dir)
