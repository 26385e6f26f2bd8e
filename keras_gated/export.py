"""SavedModel export that serves a model's outputs and its gates.

`export_saved_model` writes a TensorFlow SavedModel with two signatures:

- `"serving_default"` (also reachable as the endpoint `serve`): the model's
  outputs, exactly as `model.export(path, format="tf_saved_model")` serves
  them: a single output under `"output_0"`, several under `"output_0"`,
  `"output_1"`, ..., a dict of outputs under its own keys;
- `"gates"`: the same outputs plus the gate sequences of every LSTM, GRU
  and SimpleRNN layer of the model (ours or Keras' built-ins, also inside
  `keras.layers.Bidirectional`), keyed `"<layer name>/<gate name>"`, each of
  shape `(batch, timesteps, units)`.

The SavedModel is plain TensorFlow: it loads with `tf.saved_model.load` in a
process where keras_gated is not installed, has the `serving_default`
signature TF Serving looks for, runs under `saved_model_cli` and wraps into
a Keras model with `keras.layers.TFSMLayer`.

The SavedModel also converts to LiteRT (TFLite, builtin ops only) and to
ONNX (tf2onnx), both signatures, outputs and gates equal to the model's; see
`export_saved_model`'s "Deployment" notes for what each converter needs.

The export is atomic: the model is written to a staging directory next to
`path` and renamed into place, so an interrupted export leaves `path` as it
was. TensorFlow is imported on first use only.
"""

import os
import shutil
import tempfile

import keras

from keras_gated._validation import check_bool
from keras_gated._validation import check_model
from keras_gated._validation import check_optional_positive_int
from keras_gated._validation import shape_fits

SERVE_ENDPOINT = "serve"
"""Endpoint serving the model's outputs; also signature `serving_default`."""

GATES_ENDPOINT = "gates"
"""Endpoint and signature serving the outputs and every gate sequence."""

_SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


def export_saved_model(
    model,
    path,
    gates=True,
    overwrite=False,
    *,
    input_signature=None,
    batch_size=None,
):
    """Exports a Keras model as a SavedModel serving its outputs and gates.

    The SavedModel holds the endpoints `serve` and, with `gates=True`,
    `gates`, and the signatures `"serving_default"` (= `serve`), `"serve"`
    and `"gates"`:

    - `serving_default` returns the model's outputs under the keys that
      `model.export(path, format="tf_saved_model")` uses: `"output_0"` for
      a single output, `"output_0"`, `"output_1"`, ... for a list, the
      model's own keys for a dict of outputs;
    - `gates` returns the same outputs plus, for every LSTM, GRU and
      SimpleRNN layer of the model (`keras_gated` layers and
      `keras.layers.LSTM`/`GRU`/`SimpleRNN`, also
      inside `keras.layers.Bidirectional`), every gate sequence of shape
      `(batch, timesteps, units)` under `"<layer name>/<gate name>"`, with
      the names of `keras_gated.recurrent_layers`: `"lstm/forget"`,
      `"bidi/backward/update"` for the backward half of a `Bidirectional`
      named `bidi` (gate names: `keras_gated.LSTM_SEQUENCES`,
      `keras_gated.GRU_SEQUENCES`). They are `keras_gated.gate_outputs`:
      computed on the inputs each layer receives in the model, masks
      included, in the input's time order.

    The signature inputs are named after the model's inputs. Batch size and
    sequence length are dynamic: the batch axis of every input, and the
    time axis (axis 1) of every input of rank 3 or more, are `None`
    whatever the shapes the model was built with. Pass `input_signature`
    to choose other shapes: a dynamic length for 2D token-id inputs, or a
    fixed one for a model that needs it (`unroll=True`, `Flatten`), or
    `batch_size` to fix the batch axis only.

    Deployment beyond TensorFlow: both signatures convert to ONNX with
    tf2onnx (`python -m tf2onnx.convert --saved-model path --signature_def
    gates --output gates.onnx`) and run in onnxruntime with dynamic batch
    and length. They convert to LiteRT (TFLite) with builtin ops only
    (`tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=[...])`
    with `target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]`)
    when the batch size is fixed: export with `batch_size=1` (or the batch
    the app runs). With a dynamic batch, the converter cannot lower the
    loops' per-step buffers (TensorList ops with a non-static element
    shape) of the `gates` signature, nor of a masked model's
    `serving_default`. The sequence length may stay dynamic in both.

    The model is written to a staging directory next to `path` and renamed
    into place once complete; if the export fails, `path` is left as it
    was. The result loads without keras_gated:
    `tf.saved_model.load(path)`, `keras.layers.TFSMLayer(path)`,
    `saved_model_cli show --dir path --all`. Its graphs are plain
    TensorFlow: the layers' loops, which XLA compiles when the model runs
    in Python, are traced without XLA here, so TF Serving and TensorFlow
    builds without XLA can serve it. (`model.export` keeps the XLA-compiled
    loops.)

    Args:
        model: A built `keras.Model`: Functional, Sequential, or
            subclassed with `input_signature` given.
        path: `str` or `os.PathLike`, the directory to create.
        gates: Whether to add the `gates` signature. The model must then
            contain at least one LSTM, GRU or SimpleRNN layer. Default:
            `True`.
        overwrite: Whether to replace an existing SavedModel at `path`. A
            path that exists and is neither a SavedModel nor an empty
            directory is never replaced. Default: `False`.
        input_signature: Optional structure of `tf.TensorSpec` matching
            the model's inputs (a single spec for a single input): one spec
            per input, of the input's rank, with the model's sizes (or
            `None`) on every axis but the batch axis. Default: the model's
            input shapes with dynamic batch and time axes.
        batch_size: Optional positive integer: the batch size of every
            input of the default signature, which is otherwise dynamic.
            LiteRT conversion with builtin ops needs it. Not with
            `input_signature` (fix the batch there). Default: `None`.

    Returns:
        The absolute path of the written SavedModel, as a `str`.

    Raises:
        ValueError: for an invalid argument, a model that is not built, an
            `input_signature` that does not match the model's inputs, an
            existing `path` that is not a SavedModel directory, a `path`
            below a file, or a Keras backend other than TensorFlow (the
            error says how to export from a TensorFlow process).
        FileExistsError: if `path` exists and `overwrite=False`.

    Example:

    >>> inputs = keras.Input((None, 2), name="sequence")
    >>> hidden = keras_gated.LSTM(8, name="lstm")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    >>> keras_gated.export_saved_model(model, "/tmp/adding")
    '/tmp/adding'
    >>> loaded = tf.saved_model.load("/tmp/adding")
    >>> x = np.random.rand(3, 20, 2).astype("float32")
    >>> loaded.serve(x).shape
    TensorShape([3, 1])
    >>> out = loaded.signatures["gates"](sequence=x)
    >>> out["lstm/forget"].shape
    TensorShape([3, 20, 8])
    """
    _check_backend()
    _check_model(model)
    target = _check_path(path)
    gates = check_bool("gates", gates)
    overwrite = check_bool("overwrite", overwrite)
    batch_size = check_optional_positive_int("batch_size", batch_size)
    if input_signature is None:
        input_signature = _default_input_signature(model, batch_size)
    elif batch_size is not None:
        raise ValueError(
            "batch_size cannot be combined with input_signature: fix the "
            "batch axis in the signature's specs instead. Received: "
            f"batch_size={batch_size}, input_signature={input_signature!r}"
        )
    else:
        _check_input_signature(model, input_signature)
    _check_target(target, overwrite)
    from keras_gated import _tf

    # Plain TensorFlow graphs: TF Serving, TFLite and TensorFlow builds
    # without XLA cannot run the layers' XLA-compiled loops.
    with _tf.portable():
        archive = _build_archive(model, input_signature, gates)
        _write_atomically(archive, target, overwrite)
    return target


def load_saved_model(path):
    """Loads a SavedModel with `tf.saved_model.load`, with clear errors.

    A thin wrapper for environments where keras_gated is installed; in one
    where it is not, call `tf.saved_model.load(path)` directly.

    Args:
        path: `str` or `os.PathLike`, a SavedModel directory.

    Returns:
        The loaded object: `loaded.signatures["serving_default"]`,
        `loaded.signatures["gates"]`, and the endpoints `loaded.serve`,
        `loaded.gates` for models written by `export_saved_model`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if `path` is not a readable SavedModel directory (no
            `saved_model.pb`, a corrupted graph or missing variables).

    Example:

    >>> loaded = keras_gated.load_saved_model("/tmp/adding")
    >>> sorted(loaded.signatures)
    ['gates', 'serve', 'serving_default']
    """
    import tensorflow as tf

    target = _check_path(path)
    if not os.path.exists(target):
        raise FileNotFoundError(
            f"No SavedModel at path '{target}': the path does not exist."
        )
    if not os.path.isdir(target):
        raise ValueError(
            f"path must be a SavedModel directory. Received: path='{target}',"
            " which is a file."
        )
    if not _is_saved_model_dir(target):
        raise ValueError(
            f"path must be a SavedModel directory, holding saved_model.pb. "
            f"Received: path='{target}', which holds: "
            f"{sorted(os.listdir(target)) or 'nothing'}."
        )
    try:
        return tf.saved_model.load(target)
    except Exception as error:
        raise ValueError(
            f"The SavedModel at path '{target}' is corrupted or unreadable: "
            f"{type(error).__name__}: {error}"
        ) from error


def _check_backend():
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            "export_saved_model traces the model into TensorFlow graphs and "
            "needs Keras' TensorFlow backend. Received: KERAS_BACKEND="
            f"'{backend}'. Save the model here with model.save('model.keras')"
            ", then load and export it in a process started with "
            "KERAS_BACKEND=tensorflow: the .keras file holds the same "
            "weights on every backend."
        )


def _check_model(model):
    check_model("model", model)
    if not model.built:
        raise ValueError(
            f"model must be built before export: call it on data or build it "
            f"from keras.Input. Received: model '{model.name}', not built."
        )


def _check_path(path):
    if (
        not isinstance(path, (str, os.PathLike))
        or not isinstance(os.fspath(path), str)
        or not os.fspath(path)
        or "\0" in os.fspath(path)
    ):
        raise ValueError(
            f"path must be a non-empty str or os.PathLike, without NUL "
            f"characters. Received: path={path!r}"
        )
    return os.path.abspath(os.fspath(path))


def _is_saved_model_dir(path):
    return any(
        os.path.isfile(os.path.join(path, name)) for name in _SAVED_MODEL_FILES
    )


def _check_parent(target):
    """The nearest existing folder above `target` is a writable folder."""
    ancestor = os.path.dirname(target)
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ValueError(
            f"path must lie in a directory. Received: path='{target}', below "
            f"'{ancestor}', which is a file."
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(
            f"path must lie in a directory that can be written. Received: "
            f"path='{target}', below '{ancestor}', which cannot be written."
        )


def _check_target(target, overwrite):
    if not os.path.lexists(target):
        _check_parent(target)
        return
    if not os.path.isdir(target) or os.path.islink(target):
        raise ValueError(
            f"path must be a new directory or an existing SavedModel "
            f"directory. Received: path='{target}', which exists and is not "
            "a directory (or is a symbolic link); it is left untouched."
        )
    if os.listdir(target) and not _is_saved_model_dir(target):
        raise ValueError(
            f"path must be a new directory or an existing SavedModel "
            f"directory. Received: path='{target}', a non-empty directory "
            "without saved_model.pb; it is not replaced, even with "
            "overwrite=True."
        )
    if not overwrite:
        raise FileExistsError(
            f"A SavedModel already exists at path '{target}'. Pass "
            "overwrite=True to replace it."
        )


def _model_inputs(model):
    """The structure of symbolic inputs that `model` is called on."""
    try:
        return model.input
    except (AttributeError, ValueError):
        pass
    # A Sequential model built by calling it on data has inputs but no
    # `input`; a subclassed model has neither.
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(
            "model must be a Functional or Sequential model with known "
            "inputs, or input_signature must be given. Received: model "
            f"'{model.name}' of type {type(model).__name__}."
        )
    return inputs[0] if len(inputs) == 1 else list(inputs)


def _default_input_signature(model, batch_size=None):
    import tensorflow as tf

    def spec(tensor):
        shape = list(tensor.shape)
        dynamic = 2 if len(shape) >= 3 else 1
        shape[:dynamic] = [None] * min(dynamic, len(shape))
        if shape:
            shape[0] = batch_size
        return tf.TensorSpec(shape, tensor.dtype, name=tensor.name)

    return keras.tree.map_structure(spec, _model_inputs(model))


def _check_input_signature(model, input_signature):
    """One `tf.TensorSpec` per model input, of its rank and sizes.

    The batch axis may take any size; the others must be the model's where
    both know them (Keras refuses another length than a model was built
    with). A model without known inputs (subclassed) is checked for the
    specs only.
    """
    import tensorflow as tf

    specs = keras.tree.flatten(input_signature)
    if not specs or not all(isinstance(s, tf.TensorSpec) for s in specs):
        raise ValueError(
            "input_signature must be a tf.TensorSpec, or a list or dict of "
            "them, one per model input. Received: "
            f"input_signature={input_signature!r}"
        )
    try:
        inputs = keras.tree.flatten(_model_inputs(model))
    except ValueError:
        return
    expected = [tuple(tensor.shape) for tensor in inputs]
    if len(specs) != len(inputs):
        raise ValueError(
            f"input_signature must hold one tf.TensorSpec per model input: "
            f"{len(inputs)} for model '{model.name}' (shapes {expected}). "
            f"Received: {len(specs)} specs, "
            f"input_signature={input_signature!r}"
        )
    for spec, shape in zip(specs, expected, strict=True):
        if spec.shape.rank is None or not shape_fits(
            spec.shape.as_list(), shape, 1
        ):
            raise ValueError(
                f"input_signature must match the model's input shapes "
                f"{expected}: the same rank, any batch size, the model's "
                f"sizes (or None) on the other axes. Received: "
                f"input_signature={input_signature!r}"
            )


def _output_dict(outputs):
    """The outputs under the keys a SavedModel signature gives them.

    The keys TensorFlow uses when a signature function returns a tensor
    (`"output_0"`), a sequence (`"output_<i>"`) or a dict (its keys); a
    nested structure is flattened and numbered.
    """
    if isinstance(outputs, dict) and _signature_ready(outputs):
        return dict(outputs)
    return {
        f"output_{index}": tensor
        for index, tensor in enumerate(keras.tree.flatten(outputs))
    }


def _signature_ready(outputs):
    """Whether TensorFlow accepts `outputs` as a signature's result as is."""
    if not keras.tree.is_nested(outputs):
        return True
    if isinstance(outputs, dict):
        return all(
            isinstance(key, str) and not keras.tree.is_nested(value)
            for key, value in outputs.items()
        )
    return isinstance(outputs, (list, tuple)) and not any(
        keras.tree.is_nested(value) for value in outputs
    )


def _build_archive(model, input_signature, gates):
    # The signature functions take the model's input structure as their
    # single argument, as `model.export` does.
    input_signature = [input_signature]

    def serve(inputs):
        outputs = model(inputs, training=False)
        return outputs if _signature_ready(outputs) else _output_dict(outputs)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVE_ENDPOINT, serve, input_signature)
    if gates:
        archive.add_endpoint(
            GATES_ENDPOINT,
            _gates_function(model, input_signature[0]),
            input_signature,
        )
    return archive


def _warm_up_batch(model, input_signature):
    """Zeros shaped as the signature: its None sizes are the model's, or 1."""
    try:
        model_inputs = keras.tree.flatten(_model_inputs(model))
    except ValueError:
        model_inputs = []
    specs = keras.tree.flatten(input_signature)
    if len(model_inputs) != len(specs):
        model_inputs = [None] * len(specs)
    batch = []
    for spec, tensor in zip(specs, model_inputs, strict=True):
        shape = list(spec.shape)
        for axis, size in enumerate(shape):
            if size is None:
                known = None if tensor is None else tensor.shape[axis]
                shape[axis] = 1 if known is None else known
        batch.append(keras.ops.zeros(shape, dtype=spec.dtype.name))
    return keras.tree.pack_sequence_as(input_signature, batch)


def _gates_function(model, input_signature):
    from keras_gated.inspection import gate_outputs
    from keras_gated.inspection import has_gates
    from keras_gated.inspection import recurrent_layers

    if not any(has_gates(layer) for _, layer in recurrent_layers(model)):
        raise ValueError(
            "gates=True needs a model with at least one LSTM, GRU or "
            "SimpleRNN layer. "
            f"Received: model '{model.name}', which has none; pass "
            "gates=False to export its outputs only."
        )

    # gate_outputs creates each layer's gate twin, variables included, on
    # its first call; made while the signature function is traced, they
    # would cost that function an extra trace (see
    # `inspection.cached_twin`). An eager call on a batch of zeros creates
    # them beforehand.
    gate_outputs(model, _warm_up_batch(model, input_signature))

    def gates(inputs):
        result = _output_dict(model(inputs, training=False))
        sequences = gate_outputs(model, inputs)
        clashes = sorted(set(result) & set(sequences))
        if clashes:
            raise ValueError(
                f"Model '{model.name}' has outputs named like gate "
                f"sequences: {clashes}. Rename those outputs to export the "
                "gates signature, or pass gates=False."
            )
        result.update(sequences)
        return result

    return gates


def _write_atomically(archive, target, overwrite):
    import tensorflow as tf

    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    # Staging next to the target keeps the final renames on one file
    # system, where they are atomic.
    staging = tempfile.mkdtemp(
        prefix=f".{os.path.basename(target)}.", suffix=".export", dir=parent
    )
    written = os.path.join(staging, "new")
    previous = os.path.join(staging, "previous")
    try:
        archive.write_out(written, verbose=False)
        if not tf.saved_model.contains_saved_model(written):
            raise RuntimeError(
                f"Export to path '{target}' failed: TensorFlow wrote no "
                "saved_model.pb."
            )
        # The target may have appeared while the model was written.
        _check_target(target, overwrite)
        if os.path.lexists(target):
            os.rename(target, previous)
        try:
            os.rename(written, target)
        except BaseException:
            if os.path.lexists(previous):
                os.rename(previous, target)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
