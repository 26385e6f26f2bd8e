"""Deployment beyond TensorFlow: `export_saved_model`'s SavedModel in
LiteRT (TFLite, builtin ops only) and in ONNX (tf2onnx, onnxruntime).

Both signatures, `serving_default` and `gates`, are converted and run, and
their outputs and gates compared with the Keras model's own `predict` and
`keras_gated.gate_outputs`, on three small models that cover what a user
exports: ours and Keras' built-in LSTM, GRU (reset_after True and False)
and SimpleRNN, masked by a `Masking` layer, in `Bidirectional`, stacked,
with `return_sequences` and `go_backwards`. The LSTM gates that come out of
the converted models also rebuild the built-in LSTM's own outputs,
h_t = o_t * tanh(c_t). LiteRT needs a fixed batch size (`batch_size=`);
with a dynamic one the converter fails, as documented and tested here.
ONNX runs with dynamic batch and length.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gated

ATOL = 1e-5
FEATURES = 3
LITERT_BATCH = 2
SIGNATURES = ("serving_default", "gates")


def ours_model():
    """Ours: masked, Bidirectional LSTM, backward GRU without reset_after,
    SimpleRNN, stacked."""
    inputs = keras.Input((None, FEATURES), name="sequence")
    x = keras.layers.Masking(0.0)(inputs)
    x = keras.layers.Bidirectional(
        keras_gated.LSTM(3, return_sequences=True), name="bidi"
    )(x)
    x = keras_gated.GRU(
        3,
        reset_after=False,
        go_backwards=True,
        return_sequences=True,
        name="gru",
    )(x)
    x = keras_gated.SimpleRNN(2, name="rnn")(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x), name="ours")


def builtin_model():
    """Keras' built-ins: masked, Bidirectional GRU, LSTM returning
    sequences, backward SimpleRNN, stacked."""
    inputs = keras.Input((None, FEATURES), name="sequence")
    x = keras.layers.Masking(0.0)(inputs)
    x = keras.layers.Bidirectional(
        keras.layers.GRU(3, return_sequences=True), name="bidi"
    )(x)
    x = keras.layers.LSTM(3, return_sequences=True, name="lstm")(x)
    x = keras.layers.SimpleRNN(2, go_backwards=True, name="rnn")(x)
    return keras.Model(inputs, keras.layers.Dense(2)(x), name="builtins")


def mixed_model():
    """Unmasked: our backward GRU with reset_after, then a built-in GRU
    without, returning sequences into a Dense per step."""
    inputs = keras.Input((None, FEATURES), name="sequence")
    x = keras_gated.GRU(
        3, go_backwards=True, return_sequences=True, name="gru"
    )(inputs)
    x = keras.layers.GRU(
        2, reset_after=False, return_sequences=True, name="builtin_gru"
    )(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x), name="mixed")


MODELS = {
    "ours": ours_model,
    "builtins": builtin_model,
    "mixed": mixed_model,
}


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights(
        [0.5 * rng.standard_normal(w.shape) for w in model.get_weights()]
    )
    return model


def padded_batch(batch, timesteps):
    """Random sequences; the first is zero-padded after half its steps."""
    rng = np.random.default_rng([batch, timesteps])
    x = rng.random((batch, timesteps, FEATURES))
    x[0, timesteps // 2 :] = 0.0
    return x.astype("float32")


def keras_values(model, x):
    """What Keras computes: `predict`, and the gates as `gate_outputs`."""
    values = {"output_0": model.predict(x, verbose=0)}
    for key, value in keras_gated.gate_outputs(model, x).items():
        values[key] = keras.ops.convert_to_numpy(value)
    return values


@pytest.fixture(scope="module")
def expected_for():
    """`keras_values` of a model on `padded_batch(batch, timesteps)`, each
    computed once for the LiteRT and ONNX tests alike."""
    cache = {}

    def values(model, batch, timesteps):
        key = (model.name, batch, timesteps)
        if key not in cache:
            x = padded_batch(batch, timesteps)
            cache[key] = x, keras_values(model, x)
        return cache[key]

    return values


def assert_equal_to_keras(served, expected, signature):
    keys = ["output_0"] if signature == "serving_default" else sorted(expected)
    assert sorted(served) == keys
    for key in keys:
        np.testing.assert_allclose(
            np.asarray(served[key]),
            expected[key],
            atol=ATOL,
            rtol=ATOL,
            err_msg=f"{signature}: {key}",
        )


def assert_lstm_gates_rebuild_keras_outputs(served, model, x):
    """h_t = o_t * tanh(c_t) from the converted gates is the built-in
    LSTM's own output at every unmasked step (gates are zero at masked
    ones, where Keras repeats the last output)."""
    layer = model.get_layer("lstm")
    outputs = keras.Model(model.input, layer.output).predict(x, verbose=0)
    rebuilt = served["lstm/output"] * np.tanh(served["lstm/cell"])
    kept = np.any(x != 0.0, axis=-1)
    np.testing.assert_allclose(rebuilt[kept], outputs[kept], atol=ATOL)


@pytest.fixture(scope="module", params=sorted(MODELS))
def exported(request, tmp_path_factory):
    """A model, its SavedModel with a dynamic batch (ONNX) and one with
    the batch fixed (LiteRT)."""
    keras.utils.set_random_seed(0)
    model = _randomize(MODELS[request.param]())
    directory = tmp_path_factory.mktemp(request.param)
    dynamic = keras_gated.export_saved_model(model, directory / "dynamic")
    fixed = keras_gated.export_saved_model(
        model, directory / "fixed", batch_size=LITERT_BATCH
    )
    return model, dynamic, fixed


def litert_interpreter(flatbuffer):
    """ai_edge_litert's interpreter; the test skips without it."""
    interpreter = pytest.importorskip(
        "ai_edge_litert.interpreter",
        reason="ai-edge-litert is not installed (pip install .[test])",
    )
    return interpreter.Interpreter(model_content=flatbuffer)


def to_litert(path, signature):
    converter = tf.lite.TFLiteConverter.from_saved_model(
        path, signature_keys=[signature]
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def onnx_session(model_proto):
    onnxruntime = pytest.importorskip(
        "onnxruntime",
        reason="onnxruntime is not installed (pip install .[test])",
    )
    return onnxruntime.InferenceSession(
        model_proto.SerializeToString(), providers=["CPUExecutionProvider"]
    )


def to_onnx(path, signature):
    """What `python -m tf2onnx.convert --saved-model path --signature_def
    signature` does, in this process."""
    pytest.importorskip(
        "tf2onnx", reason="tf2onnx is not installed (pip install .[test])"
    )
    import tf2onnx.convert
    from tf2onnx import tf_loader

    graph_def, inputs, outputs, _, renamed = tf_loader.from_saved_model(
        path,
        None,
        None,
        signatures=[signature],
        return_initialized_tables=True,
        return_tensors_to_rename=True,
    )
    model_proto, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        input_names=inputs,
        output_names=outputs,
        tensors_to_rename=renamed,
    )
    return model_proto


def run_onnx(session, x):
    (name,) = [tensor.name for tensor in session.get_inputs()]
    names = [tensor.name for tensor in session.get_outputs()]
    return dict(zip(names, session.run(None, {name: x}), strict=True))


@pytest.mark.parametrize("signature", SIGNATURES)
def test_litert_runs_both_signatures_as_keras(
    exported, expected_for, signature
):
    model, _, fixed = exported
    interpreter = litert_interpreter(to_litert(fixed, signature))
    runner = interpreter.get_signature_runner(signature)
    # The length stays dynamic: one interpreter runs two lengths.
    for timesteps in (7, 4):
        x, expected = expected_for(model, LITERT_BATCH, timesteps)
        served = runner(sequence=x)
        assert_equal_to_keras(served, expected, signature)
        if signature == "gates" and "lstm/cell" in expected:
            assert_lstm_gates_rebuild_keras_outputs(served, model, x)


@pytest.mark.parametrize("signature", SIGNATURES)
def test_onnx_runs_both_signatures_as_keras(exported, expected_for, signature):
    model, dynamic, _ = exported
    session = onnx_session(to_onnx(dynamic, signature))
    # Batch and length stay dynamic.
    for batch, timesteps in ((LITERT_BATCH, 7), (3, 9)):
        x, expected = expected_for(model, batch, timesteps)
        served = run_onnx(session, x)
        assert_equal_to_keras(served, expected, signature)
        if signature == "gates" and "lstm/cell" in expected:
            assert_lstm_gates_rebuild_keras_outputs(served, model, x)


def test_litert_needs_a_fixed_batch_size(tmp_path):
    """The documented limit: with a dynamic batch, the gates loops' per-step
    buffers (TensorList ops) have no static element shape, which LiteRT's
    builtin ops need; `batch_size=` makes the same model convert."""
    keras.utils.set_random_seed(0)
    model = _randomize(mixed_model())
    path = keras_gated.export_saved_model(model, tmp_path / "dynamic")
    with pytest.raises(Exception, match="element_shape to be static"):
        to_litert(path, "gates")


def test_onnx_command_line_of_the_readme(tmp_path):
    """The README's command, `python -m tf2onnx.convert`, on the gates
    signature of a built-in LSTM, run in onnxruntime."""
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed")
    onnxruntime = pytest.importorskip("onnxruntime")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, FEATURES), name="sequence")
    hidden = keras.layers.LSTM(3, return_sequences=True, name="lstm")(inputs)
    model = _randomize(keras.Model(inputs, hidden))
    path = keras_gated.export_saved_model(model, tmp_path / "model")
    output = tmp_path / "gates.onnx"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tf2onnx.convert",
            "--saved-model",
            path,
            "--signature_def",
            "gates",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    session = onnxruntime.InferenceSession(
        str(output), providers=["CPUExecutionProvider"]
    )
    x = padded_batch(2, 6)
    served = run_onnx(session, x)
    assert_equal_to_keras(served, keras_values(model, x), "gates")
    assert_lstm_gates_rebuild_keras_outputs(served, model, x)
