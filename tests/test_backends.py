"""The layers on every Keras backend: the backend's own tensors, `.keras`
files that cross backends, and export's answer off TensorFlow.

These run on each backend (`KERAS_BACKEND=tensorflow`, `jax`, `torch`;
see tests/conftest.py); the parity grid is tests/test_layers.py's.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from harness import assert_all_close
from harness import random_weights
from harness import to_numpy

import keras_gated

pytestmark = pytest.mark.backends
BACKEND = keras.backend.backend()


def _gates_model():
    inputs = keras.Input((7, 3), name="sequence")
    hidden, gates = keras_gated.LSTM(
        5, return_sequences=True, return_gates=True, name="lstm"
    )(inputs)
    last = keras_gated.GRU(4, name="gru")(hidden)
    outputs = {"y": keras.layers.Dense(2)(last), "forget": gates["forget"]}
    model = keras.Model(inputs, outputs)
    random_weights(model, seed=3)
    return model


def _sequences():
    return np.random.default_rng(0).standard_normal((2, 7, 3)).astype("f4")


@pytest.mark.parametrize("name", ["LSTM", "GRU", "SimpleRNN"])
def test_layers_return_the_backends_tensors(name):
    # On JAX the layer once ran TensorFlow ops and returned tf.Tensors.
    x = _sequences()
    ours = getattr(keras_gated, name)(4, return_gates=True)
    builtin = getattr(keras.layers, name)(4)
    output, gates = ours(x)
    expected = type(builtin(x))
    assert type(output) is expected
    assert {type(value) for value in gates.values()} == {expected}


def test_keras_file_crosses_backends(tmp_path):
    # Saved on this backend, loaded on another, the same outputs and gates.
    model = _gates_model()
    x = _sequences()
    expected = {k: to_numpy(v) for k, v in model(x).items()}
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)
    other = "torch" if BACKEND == "tensorflow" else "tensorflow"
    script = textwrap.dedent(
        f"""
        import keras, numpy as np
        import keras_gated  # registers the classes
        assert keras.backend.backend() == "{other}"
        model = keras.saving.load_model(r"{tmp_path / "model.keras"}")
        out = model(np.load(r"{tmp_path / "x.npy"}"))
        np.savez(r"{tmp_path / "out.npz"}",
                 **{{k: keras.ops.convert_to_numpy(v) for k, v in out.items()}})
        """
    )
    env = dict(os.environ, KERAS_BACKEND=other, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, timeout=300
    )
    loaded = dict(np.load(tmp_path / "out.npz"))
    assert_all_close(loaded, expected, what=f"{BACKEND} -> {other}")


@pytest.mark.skipif(
    BACKEND == "tensorflow", reason="export works here: tests/test_export.py"
)
def test_export_needs_tensorflow(tmp_path):
    model = _gates_model()
    with pytest.raises(ValueError, match=f"KERAS_BACKEND='{BACKEND}'"):
        keras_gated.export_saved_model(model, tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


@pytest.mark.skipif(
    BACKEND == "tensorflow", reason="Keras' TensorFlow backend loads it"
)
def test_layers_run_without_loading_tensorflow():
    # TensorFlow is imported where it is used (the gradient tools, export),
    # not by `import keras_gated` or the layers on another backend.
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import keras_gated
        x = np.zeros((2, 3, 4), "float32")
        for name in ("LSTM", "GRU", "SimpleRNN"):
            getattr(keras_gated, name)(3, return_gates=True)(x)
        assert "tensorflow" not in sys.modules, "tensorflow was imported"
        for name in keras_gated.__all__:
            getattr(keras_gated, name)
        """
    )
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    subprocess.run(
        [sys.executable, "-c", script], env=env, check=True, timeout=300
    )


_LOGGED_FIT = """
import sys
import keras, numpy as np
import keras_gated
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 9, 3)).astype("float32")
x[:3, 6:] = 0.0
y = rng.standard_normal((8, 1)).astype("float32")
model = keras.Sequential([
    keras.Input((9, 3)),
    keras.layers.Masking(),
    keras_gated.LSTM(5, return_sequences=True, name="lstm"),
    keras.layers.GRU(4, go_backwards=True, name="gru"),
    keras.layers.Dense(1),
])
model.set_weights([
    rng.normal(scale=0.5, size=w.shape).astype("float32")
    for w in model.get_weights()
])
# Each step changes the weights: a log that missed it would differ.
model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
logger = keras_gated.TimestepGradientLogger(
    sys.argv[1], probe=(x, y), batch_freq=1, image_freq=1, jacobians=True
)
model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
          callbacks=[logger])
"""


def _logged_fit(backend, log_dir):
    from tensorboard.backend.event_processing import event_accumulator

    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(
        [sys.executable, "-c", _LOGGED_FIT, str(log_dir)],
        env=env,
        check=True,
        timeout=600,
    )
    events = event_accumulator.EventAccumulator(
        str(log_dir), size_guidance={event_accumulator.TENSORS: 0}
    ).Reload()
    return events


@pytest.mark.skipif(
    BACKEND == "tensorflow", reason="compares this backend with TensorFlow"
)
def test_logger_writes_what_it_writes_on_tensorflow(tmp_path):
    # The same model, weights, probe and training: every tensor and scalar the
    # logger writes here equals TensorFlow's, to 1e-4 of its largest value
    # (the images have the same tags).
    from tensorboard.util import tensor_util

    reference = _logged_fit("tensorflow", tmp_path / "tensorflow")
    measured = _logged_fit(BACKEND, tmp_path / BACKEND)
    tags = reference.Tags()
    assert measured.Tags()["tensors"] == tags["tensors"]
    assert any(
        t.startswith("timestep_gradients/gru/jacobian") for t in tags["tensors"]
    )
    for tag in tags["tensors"]:
        plugin = reference.SummaryMetadata(tag).plugin_data.plugin_name
        if plugin == "images":
            # Drawn from the values compared below; a pixel may differ.
            continue
        expected = [
            (e.step, tensor_util.make_ndarray(e.tensor_proto))
            for e in reference.Tensors(tag)
        ]
        received = [
            (e.step, tensor_util.make_ndarray(e.tensor_proto))
            for e in measured.Tensors(tag)
        ]
        assert [s for s, _ in received] == [s for s, _ in expected], tag
        for (step, value), (_, want) in zip(received, expected):
            if want.dtype.kind != "f":
                np.testing.assert_array_equal(value, want, err_msg=tag)
                continue
            finite = np.isfinite(want)
            np.testing.assert_array_equal(np.isfinite(value), finite, tag)
            scale = np.max(np.abs(want[finite]), initial=0.0) or 1.0
            np.testing.assert_allclose(
                value[finite],
                want[finite],
                rtol=0,
                atol=1e-4 * scale,
                err_msg=f"{tag} at step {step}",
            )


def _stateful_model(module, name):
    return keras.Sequential(
        [
            keras.Input((5, 3), batch_size=4),
            getattr(module, name)(6, stateful=True, name="rnn"),
            keras.layers.Dense(1),
        ]
    )


def _fit_states(model, x, y):
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    return [to_numpy(s) for s in model.get_layer("rnn").states]


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_stateful_fit_carries_states_from_batch_to_batch(name):
    # Inside `fit` the second batch starts from the states the first one
    # ended with: the states after `fit` are the built-in's after the two
    # batches called one after the other.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((8, 5, 3)).astype("float32")
    y = rng.standard_normal((8, 1)).astype("float32")
    ours = _stateful_model(keras_gated, name)
    random_weights(ours, seed=5)
    builtin = _stateful_model(keras.layers, name)
    builtin.set_weights(ours.get_weights())
    received = _fit_states(ours, x, y)
    if BACKEND == "jax":
        # Keras' JAX `fit` threads the model's variables through its
        # jitted step; the states of a stateful RNN, Keras' own as ours,
        # are not among them (not weights), so every batch starts from
        # zeros and they stay zero: as the built-in's own `fit` leaves them.
        expected = _fit_states(builtin, x, y)
        assert not np.any(expected[0])
    else:
        # Called, not fitted: Keras' own stateful LSTM and GRU fail in
        # `fit` on PyTorch (the step assigns the state variable in place
        # before the backward pass reads it).
        builtin.predict(x, batch_size=4, verbose=0)
        expected = [to_numpy(s) for s in builtin.get_layer("rnn").states]
        assert np.abs(expected[0]).max() > 0
    assert_all_close(received, expected, what="states after fit")
