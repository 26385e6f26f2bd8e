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
