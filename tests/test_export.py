"""keras_gated.export: SavedModels that serve outputs and gates.

The exported signatures are checked against the Keras model and
`keras_gated.gate_outputs` on batches and lengths other than at export, in
this process, in a fresh process in which keras_gated cannot be imported
(`tf.saved_model.load`, `keras.layers.TFSMLayer`, the plain
`model.export` route) and through `saved_model_cli`. The export is atomic:
failures are simulated mid-write and at the final rename. `.keras` files of
stacked and `Bidirectional` models load in safe mode.
"""

import importlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gated
from keras_gated import export

ATOL = 1e-5

# Run first in the fresh process: a meta path finder ahead of every other
# (the editable install's included) makes `import keras_gated` fail there.
BLOCK_KERAS_GATED = """
import sys

class _BlockKerasGated:
    def find_spec(self, name, path=None, target=None):
        if name == "keras_gated" or name.startswith("keras_gated."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None

sys.meta_path.insert(0, _BlockKerasGated())
"""

FRESH_PROCESS_CHECK = """
import json

import keras
import numpy as np
import tensorflow as tf

try:
    import keras_gated  # noqa: F401
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("keras_gated is importable in the fresh process")

saved_model_dir, keras_export_dir, data_path = sys.argv[1:4]
data = np.load(data_path)
x = data["x"]
expected = {key[len("expected:"):]: data[key] for key in data.files
            if key.startswith("expected:")}
errors = {}

def record(what, actual, reference):
    actual = np.asarray(actual)
    if actual.shape != reference.shape:
        errors[what] = f"shape {actual.shape} != {reference.shape}"
    else:
        errors[what] = float(np.max(np.abs(actual - reference)))

loaded = tf.saved_model.load(saved_model_dir)
served = loaded.signatures["serving_default"](sequence=tf.constant(x))
errors["serving_default keys"] = sorted(served)
record("serving_default", served["output_0"], expected["output_0"])
record("serve", loaded.serve(x), expected["output_0"])
gates = loaded.signatures["gates"](sequence=tf.constant(x))
errors["gates keys"] = sorted(gates)
for key, value in gates.items():
    record(f"gates {key}", value, expected[key])

layer = keras.layers.TFSMLayer(saved_model_dir)
record("TFSMLayer serve", layer(x), expected["output_0"])
inputs = keras.Input((None, x.shape[-1]))
wrapped = keras.Model(inputs, layer(inputs))
record("TFSMLayer in a model", wrapped.predict(x, verbose=0),
       expected["output_0"])
gate_layer = keras.layers.TFSMLayer(saved_model_dir, call_endpoint="gates")
gate_values = gate_layer(x)
record("TFSMLayer gates lstm/forget", gate_values["lstm/forget"],
       expected["lstm/forget"])

plain = tf.saved_model.load(keras_export_dir)
record("model.export serve", plain.serve(x), expected["output_0"])

errors["keras_gated loaded"] = any(
    name.split(".")[0] == "keras_gated" for name in sys.modules)
print("RESULT " + json.dumps(errors))
"""


def _random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights(
                [
                    0.5 * rng.standard_normal(w.shape).astype(w.dtype)
                    for w in weights
                ]
            )


def mixed_model():
    """Ours and built-ins, stacked, in Bidirectional, masked, backwards."""
    inputs = keras.Input((None, 3), name="sequence")
    x = keras.layers.Masking(0.0, name="masking")(inputs)
    x = keras_gated.LSTM(6, return_sequences=True, name="lstm")(x)
    x = keras.layers.Bidirectional(
        keras_gated.GRU(4, return_sequences=True), name="bidi"
    )(x)
    x = keras.layers.LSTM(5, go_backwards=True, name="builtin_lstm")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs, name="mixed")
    _random_weights(model)
    return model


def padded_batch(batch, timesteps, features=3, seed=1):
    """Random sequences, the first with its last steps zero-padded."""
    x = np.random.default_rng(seed).random((batch, timesteps, features))
    x[0, timesteps // 2 :] = 0.0
    return x.astype("float32")


def expected_values(model, x):
    """What the `gates` signature must return: outputs and gates."""
    values = {"output_0": model(x, training=False)}
    values.update(keras_gated.gate_outputs(model, x))
    return {key: keras.ops.convert_to_numpy(v) for key, v in values.items()}


def assert_close(actual, expected, what=""):
    np.testing.assert_allclose(
        np.asarray(actual),
        np.asarray(expected),
        atol=ATOL,
        rtol=ATOL,
        err_msg=what,
    )


def assert_serves(path, model, x, input_name="sequence"):
    loaded = keras_gated.load_saved_model(path)
    expected = expected_values(model, x)
    served = loaded.signatures["serving_default"](
        **{input_name: tf.constant(x)}
    )
    assert sorted(served) == ["output_0"]
    assert_close(served["output_0"], expected["output_0"], "serving_default")
    gates = loaded.signatures["gates"](**{input_name: tf.constant(x)})
    assert sorted(gates) == sorted(expected)
    for key, value in expected.items():
        assert gates[key].shape == value.shape, key
        assert_close(gates[key], value, key)


def snapshot(directory):
    """Every file under `directory`, relative path to bytes."""
    directory = pathlib.Path(directory)
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def saved_model_cli():
    script = pathlib.Path(sys.executable).with_name("saved_model_cli")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def run_quietly(command, cwd):
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The mixed model and its SavedModel, exported once for the module."""
    keras.utils.set_random_seed(0)
    model = mixed_model()
    path = tmp_path_factory.mktemp("export") / "mixed"
    returned = keras_gated.export_saved_model(model, path)
    assert returned == str(path)
    return model, str(path)


def test_signatures_have_dynamic_batch_and_length(exported):
    model, path = exported
    loaded = keras_gated.load_saved_model(path)
    assert set(loaded.signatures) == {"serving_default", "serve", "gates"}
    units = {
        "lstm": 6,
        "bidi/forward": 4,
        "bidi/backward": 4,
        "builtin_lstm": 5,
    }
    for name in ("serving_default", "serve", "gates"):
        signature = loaded.signatures[name]
        _, inputs = signature.structured_input_signature
        assert list(inputs) == ["sequence"]
        assert inputs["sequence"].shape.as_list() == [None, None, 3]
        assert signature.structured_outputs["output_0"].shape.as_list() == [
            None,
            2,
        ]
    outputs = loaded.signatures["gates"].structured_outputs
    expected_keys = {"output_0"}
    for layer, gate_names in (
        ("lstm", keras_gated.LSTM_SEQUENCES),
        ("bidi/forward", keras_gated.GRU_SEQUENCES),
        ("bidi/backward", keras_gated.GRU_SEQUENCES),
        ("builtin_lstm", keras_gated.LSTM_SEQUENCES),
    ):
        for gate in gate_names:
            key = f"{layer}/{gate}"
            expected_keys.add(key)
            assert outputs[key].shape.as_list() == [None, None, units[layer]]
    assert set(outputs) == expected_keys


def test_exported_graphs_need_no_xla(exported):
    """The SavedModel holds plain TensorFlow ops: no function that must be
    compiled by XLA and no XLA-only op, which TF Serving and TensorFlow
    builds without XLA cannot run. The layers do use both in Python."""
    from tensorflow.core.protobuf import saved_model_pb2

    _, path = exported
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((pathlib.Path(path) / "saved_model.pb").read_bytes())
    library = proto.meta_graphs[0].graph_def.library
    assert library.function, "no functions in the SavedModel"
    for function in library.function:
        compile_attr = function.attr.get("_XlaMustCompile")
        assert compile_attr is None or not compile_attr.b, (
            function.signature.name
        )
        ops = {node.op for node in function.node_def}
        assert not {op for op in ops if op.startswith("Xla")}, (
            function.signature.name,
            sorted(ops),
        )


def test_layers_compile_their_loops_with_xla_outside_export():
    """The counterpart of the check above, so that it cannot pass for the
    wrong reason: a traced call of the layer holds an XLA-compiled
    function with XLA-only ops."""
    layer = keras_gated.LSTM(3, return_gates=True)
    function = tf.function(lambda x: layer(x))
    graph = function.get_concrete_function(tf.TensorSpec((None, 4, 2))).graph
    functions = graph.as_graph_def().library.function
    assert any(
        f.attr.get("_XlaMustCompile") is not None
        and f.attr["_XlaMustCompile"].b
        for f in functions
    )
    assert any(
        node.op == "XlaDynamicUpdateSlice"
        for f in functions
        for node in f.node_def
    )


@pytest.mark.parametrize("batch, timesteps", [(1, 2), (5, 11)])
def test_signatures_equal_model_on_new_batch_and_length(
    exported, batch, timesteps
):
    model, path = exported
    x = padded_batch(batch, timesteps)
    assert_serves(path, model, x)
    loaded = keras_gated.load_saved_model(path)
    assert_close(loaded.serve(x), model(x), "serve endpoint")


def test_fresh_process_without_keras_gated(exported, tmp_path):
    """tf.saved_model.load, TFSMLayer and the plain model.export route,
    in a process where `import keras_gated` fails."""
    model, path = exported
    keras_export = tmp_path / "plain_keras_export"
    model.export(str(keras_export), format="tf_saved_model", verbose=False)
    x = padded_batch(4, 9, seed=7)
    expected = expected_values(model, x)
    data = tmp_path / "data.npz"
    np.savez(data, x=x, **{f"expected:{k}": v for k, v in expected.items()})
    result = run_quietly(
        [
            sys.executable,
            "-I",
            "-c",
            BLOCK_KERAS_GATED + FRESH_PROCESS_CHECK,
            path,
            str(keras_export),
            str(data),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [s for s in result.stdout.splitlines() if s.startswith("RESULT ")]
    errors = json.loads(line[-1][len("RESULT ") :])
    assert errors.pop("keras_gated loaded") is False
    assert errors.pop("serving_default keys") == ["output_0"]
    assert errors.pop("gates keys") == sorted(expected)
    for what, error in errors.items():
        assert isinstance(error, float) and error <= ATOL, (what, error)


def test_saved_model_cli_show_and_run(exported, tmp_path):
    model, path = exported
    show = run_quietly(
        saved_model_cli() + ["show", "--dir", path, "--all"], cwd=tmp_path
    )
    assert show.returncode == 0, show.stderr[-3000:]
    for text in (
        "signature_def['serving_default']",
        "signature_def['gates']",
        "inputs['sequence']",
        "shape: (-1, -1, 3)",
        "outputs['output_0']",
        "outputs['bidi/backward/update']",
        "outputs['builtin_lstm/cell']",
    ):
        assert text in show.stdout, text
    x = padded_batch(3, 6, seed=3)
    np.save(tmp_path / "x.npy", x)
    expected = expected_values(model, x)
    outdir = tmp_path / "out"
    # --outdir writes <key>.npy; gate keys hold slashes, so the layer
    # directories must exist.
    for key in expected:
        (outdir / key).parent.mkdir(parents=True, exist_ok=True)
    run = run_quietly(
        saved_model_cli()
        + [
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "gates",
            "--inputs",
            f"sequence={tmp_path / 'x.npy'}",
            "--outdir",
            str(outdir),
        ],
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for key, value in expected.items():
        assert_close(np.load(outdir / f"{key}.npy"), value, key)


def test_sequential_built_on_data_exports_dynamic_shapes(tmp_path):
    model = keras.Sequential(
        [
            keras_gated.GRU(4, return_sequences=True, name="gru"),
            keras_gated.LSTM(3, name="lstm"),
        ]
    )
    model(np.zeros((2, 5, 2), "float32"))
    path = keras_gated.export_saved_model(model, tmp_path / "sequential")
    loaded = keras_gated.load_saved_model(path)
    _, inputs = loaded.signatures["gates"].structured_input_signature
    ((name, spec),) = inputs.items()
    assert spec.shape.as_list() == [None, None, 2]
    x = np.random.default_rng(0).random((4, 9, 2)).astype("float32")
    assert_serves(path, model, x, input_name=name)


def test_multiple_inputs_and_outputs_keep_keras_keys(tmp_path):
    first = keras.Input((None, 2), name="first")
    second = keras.Input((None, 3), name="second")
    outputs = [
        keras_gated.GRU(4, name="gru")(first),
        keras.layers.LSTM(2, name="lstm")(second),
    ]
    model = keras.Model({"first": first, "second": second}, outputs)
    path = keras_gated.export_saved_model(model, tmp_path / "two")
    keras_route = tmp_path / "keras"
    model.export(str(keras_route), format="tf_saved_model", verbose=False)
    ours = keras_gated.load_saved_model(path).signatures
    theirs = tf.saved_model.load(str(keras_route)).signatures
    assert ours["serving_default"].structured_input_signature == (
        theirs["serving_default"].structured_input_signature
    )
    assert sorted(ours["serving_default"].structured_outputs) == sorted(
        theirs["serving_default"].structured_outputs
    )
    rng = np.random.default_rng(0)
    x = {
        "first": rng.random((3, 7, 2)).astype("float32"),
        "second": rng.random((3, 4, 3)).astype("float32"),
    }
    gates = ours["gates"](**{k: tf.constant(v) for k, v in x.items()})
    reference = model(x)
    assert_close(gates["output_0"], reference[0])
    assert_close(gates["output_1"], reference[1])
    for key, value in keras_gated.gate_outputs(model, x).items():
        assert_close(gates[key], value, key)
    assert sorted(gates) == sorted(
        ["output_0", "output_1", "gru/update", "gru/reset", "gru/candidate"]
        + [f"lstm/{gate}" for gate in keras_gated.LSTM_SEQUENCES]
    )


def test_model_returning_a_gate_dict_is_flattened(tmp_path):
    inputs = keras.Input((None, 2), name="sequence")
    outputs = keras_gated.LSTM(3, return_gates=True, name="lstm")(inputs)
    model = keras.Model(inputs, outputs)
    path = keras_gated.export_saved_model(model, tmp_path / "nested")
    loaded = keras_gated.load_saved_model(path)
    x = np.random.default_rng(0).random((2, 5, 2)).astype("float32")
    served = loaded.signatures["serving_default"](sequence=tf.constant(x))
    flat = keras.tree.flatten(model(x))
    assert sorted(served) == sorted(f"output_{i}" for i in range(len(flat)))
    for index, value in enumerate(flat):
        assert_close(served[f"output_{index}"], value)
    gates = loaded.signatures["gates"](sequence=tf.constant(x))
    assert_close(gates["lstm/forget"], model(x)[1]["forget"])


def test_input_signature_for_a_fixed_length_model(tmp_path):
    inputs = keras.Input((6, 2), name="sequence")
    outputs = keras_gated.LSTM(3, unroll=True, name="lstm")(inputs)
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="unroll=True"):
        keras_gated.export_saved_model(model, tmp_path / "dynamic")
    assert not (tmp_path / "dynamic").exists()
    signature = tf.TensorSpec((None, 6, 2), tf.float32, name="sequence")
    path = keras_gated.export_saved_model(
        model, tmp_path / "fixed", input_signature=signature
    )
    x = np.random.default_rng(0).random((3, 6, 2)).astype("float32")
    assert_serves(path, model, x)


def test_builtin_simple_rnn_exports_its_pre_activations(tmp_path):
    """A built-in SimpleRNN's one "gate", z_t = x_t W + h_{t-1} U + b, is
    served by the gates signature, equal to NumPy's from its weights."""
    inputs = keras.Input((None, 2), name="sequence")
    outputs = keras.layers.SimpleRNN(3, name="rnn")(inputs)
    model = keras.Model(inputs, outputs)
    _random_weights(model)
    path = keras_gated.export_saved_model(model, tmp_path / "rnn")
    x = np.random.default_rng(0).random((2, 7, 2)).astype("float32")
    served = keras_gated.load_saved_model(path).signatures["gates"](
        sequence=tf.constant(x)
    )
    assert sorted(served) == ["output_0", "rnn/pre_activation"]
    kernel, recurrent_kernel, bias = model.get_layer("rnn").get_weights()
    h = np.zeros((2, 3))
    expected = []
    for t in range(7):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        h = np.tanh(z)
        expected.append(z)
    assert_close(served["rnn/pre_activation"], np.stack(expected, 1))
    assert_close(served["output_0"], h)


def test_gates_false_serves_outputs_only(tmp_path):
    inputs = keras.Input((None, 2), name="sequence")
    # An RNN of Keras' own cell: no twin of ours, so no gates to serve.
    outputs = keras.layers.RNN(keras.layers.SimpleRNNCell(3), name="rnn")(
        inputs
    )
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="gates=False"):
        keras_gated.export_saved_model(model, tmp_path / "rnn")
    path = keras_gated.export_saved_model(model, tmp_path / "rnn", gates=False)
    loaded = keras_gated.load_saved_model(path)
    assert set(loaded.signatures) == {"serving_default", "serve"}
    x = np.random.default_rng(0).random((2, 7, 2)).astype("float32")
    assert_close(loaded.serve(x), model(x))


def small_model(units=3):
    inputs = keras.Input((None, 2), name="sequence")
    outputs = keras_gated.GRU(units, name="gru")(inputs)
    return keras.Model(inputs, outputs)


def test_existing_saved_model_refused_unless_overwrite(tmp_path):
    first, second = small_model(3), small_model(4)
    path = tmp_path / "model"
    keras_gated.export_saved_model(first, path)
    before = snapshot(path)
    with pytest.raises(FileExistsError, match=str(path)) as error:
        keras_gated.export_saved_model(second, path)
    assert "overwrite=True" in str(error.value)
    assert snapshot(path) == before
    keras_gated.export_saved_model(second, path, overwrite=True)
    x = np.random.default_rng(0).random((2, 3, 2)).astype("float32")
    assert_serves(str(path), second, x)
    assert sorted(os.listdir(tmp_path)) == ["model"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_paths_that_are_not_saved_models_are_never_replaced(
    tmp_path, overwrite
):
    model = small_model()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(ValueError, match="not a directory"):
        keras_gated.export_saved_model(model, a_file, overwrite=overwrite)
    assert a_file.read_text() == "keep me"
    a_directory = tmp_path / "data"
    a_directory.mkdir()
    (a_directory / "table.csv").write_text("1,2")
    with pytest.raises(ValueError, match="without saved_model.pb"):
        keras_gated.export_saved_model(model, a_directory, overwrite=overwrite)
    assert snapshot(a_directory) == {"table.csv": b"1,2"}


def test_export_into_an_empty_directory(tmp_path):
    model = small_model()
    with pytest.raises(FileExistsError):
        keras_gated.export_saved_model(model, tmp_path)
    path = keras_gated.export_saved_model(model, tmp_path, overwrite=True)
    assert tf.saved_model.contains_saved_model(path)


@pytest.fixture
def patch_save(monkeypatch):
    """Replaces tf.saved_model.save for one test."""
    # Keras' exporter imports tensorflow.saved_model.experimental, which
    # rebinds tf.saved_model to another module object and so would drop a
    # patch made before the first export of the process: import it first.
    importlib.import_module("tensorflow.saved_model.experimental")

    def patch(function):
        monkeypatch.setattr(tf.saved_model, "save", function)

    return patch


def _failing_save(directory_log):
    """A tf.saved_model.save that writes part of a SavedModel, then fails."""

    def save(obj, export_dir, *args, **kwargs):
        directory = pathlib.Path(export_dir)
        directory_log.append(directory)
        (directory / "variables").mkdir(parents=True)
        (directory / "saved_model.pb").write_bytes(b"\x08\x01partial")
        (directory / "variables" / "variables.index").write_bytes(b"part")
        raise OSError("No space left on device")

    return save


def test_failed_export_leaves_no_target(tmp_path, patch_save):
    written = []
    patch_save(_failing_save(written))
    target = tmp_path / "model"
    with pytest.raises(OSError, match="No space left"):
        keras_gated.export_saved_model(small_model(), target)
    # The partial files went next to the target, never to it.
    assert written and written[0].parent.parent == tmp_path
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_previous_model(
    tmp_path, monkeypatch, patch_save
):
    model = small_model()
    target = tmp_path / "model"
    keras_gated.export_saved_model(model, target)
    before = snapshot(target)
    patch_save(_failing_save([]))
    with pytest.raises(OSError, match="No space left"):
        keras_gated.export_saved_model(small_model(5), target, overwrite=True)
    assert snapshot(target) == before
    assert os.listdir(tmp_path) == ["model"]
    monkeypatch.undo()
    x = np.random.default_rng(0).random((2, 4, 2)).astype("float32")
    assert_serves(str(target), model, x)


def test_target_created_during_export_is_not_replaced(tmp_path, patch_save):
    target = tmp_path / "model"
    save = tf.saved_model.save

    def save_while_someone_writes_target(obj, export_dir, *args, **kwargs):
        target.mkdir()
        (target / "theirs.txt").write_text("theirs")
        save(obj, export_dir, *args, **kwargs)

    patch_save(save_while_someone_writes_target)
    with pytest.raises(ValueError, match="not replaced"):
        keras_gated.export_saved_model(small_model(), target)
    assert snapshot(target) == {"theirs.txt": b"theirs"}
    assert os.listdir(tmp_path) == ["model"]


def test_failed_final_rename_restores_previous_model(tmp_path, monkeypatch):
    target = tmp_path / "model"
    keras_gated.export_saved_model(small_model(), target)
    before = snapshot(target)
    rename = os.rename
    failures = []

    def failing_rename(source, destination):
        # Fails to move the new model into place, once.
        if str(destination) == str(target) and not failures:
            failures.append(source)
            raise OSError("rename interrupted")
        rename(source, destination)

    monkeypatch.setattr(export.os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename interrupted"):
        keras_gated.export_saved_model(small_model(5), target, overwrite=True)
    monkeypatch.undo()
    assert failures
    assert snapshot(target) == before
    assert os.listdir(tmp_path) == ["model"]


def test_load_missing_path_names_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        keras_gated.load_saved_model(missing)


def test_load_directory_without_saved_model_names_it(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path}.*nothing"):
        keras_gated.load_saved_model(tmp_path)
    (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(ValueError, match="weights.h5"):
        keras_gated.load_saved_model(tmp_path)
    with pytest.raises(ValueError, match="which is a file"):
        keras_gated.load_saved_model(tmp_path / "weights.h5")


@pytest.mark.parametrize("damage", ["garbage graph", "missing variables"])
def test_load_corrupted_saved_model_names_it(exported, tmp_path, damage):
    _, path = exported
    copy = tmp_path / "damaged"
    shutil.copytree(path, copy)
    if damage == "garbage graph":
        (copy / "saved_model.pb").write_bytes(b"\xff" * 64)
    else:
        shutil.rmtree(copy / "variables")
    with pytest.raises(ValueError, match=f"'{copy}' is corrupted"):
        keras_gated.load_saved_model(copy)


def _spec(shape):
    return tf.TensorSpec(shape, tf.float32, name="sequence")


BAD_ARGUMENTS = [
    ({"model": "model"}, "model must be a keras.Model"),
    ({"model": lambda: keras_gated.GRU(2)}, "model must be a keras.Model"),
    ({"model": lambda: keras.Sequential([keras_gated.LSTM(2)])}, "built"),
    ({"path": ""}, "path must be a non-empty str"),
    ({"path": 3}, "path must be a non-empty str"),
    ({"path": b"model"}, "path must be a non-empty str"),
    ({"path": "mod\0el"}, "without NUL"),
    ({"gates": "yes"}, "gates must be True or False"),
    ({"gates": None}, "gates must be True or False"),
    ({"overwrite": 1}, "overwrite must be True or False"),
    ({"batch_size": 0}, "batch_size must be None or a positive integer"),
    ({"batch_size": 1.5}, "batch_size must be None or a positive integer"),
    ({"batch_size": True}, "batch_size must be None or a positive integer"),
    (
        {"batch_size": 2, "input_signature": lambda: _spec((2, None, 2))},
        "batch_size cannot be combined with input_signature",
    ),
    ({"input_signature": (None, None, 2)}, "must be a tf.TensorSpec"),
    ({"input_signature": []}, "must be a tf.TensorSpec"),
    ({"input_signature": "sequence"}, "must be a tf.TensorSpec"),
    (
        {"input_signature": lambda: [_spec((None, None, 2))] * 2},
        r"one tf.TensorSpec per model input: 1 .* Received: 2 specs",
    ),
    (
        {"input_signature": lambda: _spec((None, None, 3))},
        r"must match the model's input shapes \[\(None, None, 2\)\]",
    ),
    (
        {"input_signature": lambda: _spec((None, 2))},
        "must match the model's input shapes",
    ),
    (
        {"input_signature": lambda: tf.TensorSpec(None, tf.float32)},
        "must match the model's input shapes",
    ),
]


def _bad_call(arguments, path):
    call = {"model": small_model(), "path": path}
    call.update(
        (name, value() if callable(value) else value)
        for name, value in arguments.items()
    )
    return call


@pytest.mark.parametrize("arguments, message", BAD_ARGUMENTS)
def test_invalid_arguments(tmp_path, arguments, message):
    call = _bad_call(arguments, tmp_path / "model")
    with pytest.raises(ValueError, match=message) as error:
        keras_gated.export_saved_model(**call)
    # The message names the argument and the value received.
    assert "Received:" in str(error.value)
    assert sorted(os.listdir(tmp_path)) == []


@pytest.fixture(scope="module")
def small_saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("small") / "model"
    keras_gated.export_saved_model(small_model(), path)
    return path


@pytest.mark.parametrize("arguments, message", BAD_ARGUMENTS)
def test_invalid_arguments_keep_an_existing_saved_model(
    tmp_path, small_saved_model, arguments, message
):
    path = tmp_path / "model"
    shutil.copytree(small_saved_model, path)
    before = snapshot(path)
    call = _bad_call(arguments, path)
    if "path" not in arguments:
        call["overwrite"] = call.get("overwrite", True)
    with pytest.raises(ValueError, match=message):
        keras_gated.export_saved_model(**call)
    assert snapshot(path) == before
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_path_below_a_file_is_refused_early(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    with pytest.raises(ValueError, match=r"path must lie in a directory"):
        keras_gated.export_saved_model(
            small_model(), a_file / "deeper" / "model"
        )
    assert a_file.read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_batch_size_fixes_the_batch_axis_only(tmp_path):
    model = small_model()
    path = keras_gated.export_saved_model(model, tmp_path / "m", batch_size=2)
    loaded = keras_gated.load_saved_model(path)
    for name in ("serving_default", "gates"):
        _, inputs = loaded.signatures[name].structured_input_signature
        assert inputs["sequence"].shape.as_list() == [2, None, 2]
    for timesteps in (1, 9):
        x = padded_batch(2, timesteps, features=2)
        assert_serves(path, model, x)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[2,2\]"):
        loaded.signatures["serving_default"](
            sequence=tf.constant(padded_batch(3, 4, features=2))
        )


def test_input_signature_fixes_or_frees_batch_and_length(tmp_path):
    model = small_model()
    path = keras_gated.export_saved_model(
        model, tmp_path / "fixed", input_signature=_spec((1, 9, 2))
    )
    assert_serves(path, model, padded_batch(1, 9, features=2))
    inputs = keras.Input((6, 2), name="sequence")
    built_for_six = keras.Model(inputs, keras_gated.LSTM(3)(inputs))
    with pytest.raises(ValueError, match=r"\(None, 6, 2\).*shape=\(1, 9, 2\)"):
        keras_gated.export_saved_model(
            built_for_six, tmp_path / "nine", input_signature=_spec((1, 9, 2))
        )
    path = keras_gated.export_saved_model(
        built_for_six, tmp_path / "free", input_signature=_spec((2, None, 2))
    )
    assert_serves(path, built_for_six, padded_batch(2, 6, features=2))


def test_subclassed_model_needs_an_input_signature(tmp_path):
    class Encoder(keras.Model):
        def __init__(self):
            super().__init__()
            self.rnn = keras.layers.SimpleRNN(
                4, return_sequences=True, name="rnn"
            )
            self.gru = keras_gated.GRU(3, name="gru")

        def call(self, inputs):
            return self.gru(self.rnn(inputs))

    model = Encoder()
    model(np.random.default_rng(0).random((2, 4, 2)).astype("float32"))
    with pytest.raises(ValueError, match="input_signature must be given"):
        keras_gated.export_saved_model(model, tmp_path / "a")
    path = keras_gated.export_saved_model(
        model,
        tmp_path / "b",
        input_signature=tf.TensorSpec((None, None, 2), name="sequence"),
    )
    x = np.random.default_rng(1).random((3, 6, 2)).astype("float32")
    assert_serves(path, model, x)


def stacked_model():
    inputs = keras.Input((None, 3), name="sequence")
    x = keras_gated.LSTM(5, return_sequences=True, name="lstm")(inputs)
    x = keras_gated.GRU(4, return_sequences=True, name="gru")(x)
    x = keras_gated.LSTM(3, go_backwards=True, name="last")(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(x))


def bidirectional_model():
    inputs = keras.Input((None, 3), name="sequence")
    x = keras.layers.Masking(0.0)(inputs)
    x = keras.layers.Bidirectional(
        keras_gated.LSTM(4, return_sequences=True), name="bidi_lstm"
    )(x)
    x = keras.layers.Bidirectional(
        keras_gated.GRU(3, reset_after=False),
        backward_layer=keras_gated.GRU(
            3, reset_after=False, go_backwards=True, activation="relu"
        ),
        merge_mode="concat",
        name="bidi_gru",
    )(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(x))


@pytest.mark.parametrize("build", [stacked_model, bidirectional_model])
def test_keras_file_round_trip_in_safe_mode(tmp_path, build):
    model = build()
    _random_weights(model)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    for original, restored in zip(
        keras_gated.recurrent_layers(model),
        keras_gated.recurrent_layers(loaded),
        strict=True,
    ):
        assert original[0] == restored[0]
        assert type(original[1]) is type(restored[1])
        assert original[1].get_config() == restored[1].get_config()
    x = padded_batch(3, 8)
    assert_close(loaded(x), model(x))
    reference = keras_gated.gate_outputs(model, x)
    restored = keras_gated.gate_outputs(loaded, x)
    assert sorted(restored) == sorted(reference)
    for key, value in reference.items():
        assert_close(restored[key], value, key)
