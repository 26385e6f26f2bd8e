"""Find a model's recurrent layers; read its LSTM, GRU and SimpleRNN gates.

These functions work on any Keras model, Sequential, Functional or nested,
whose recurrent layers are Keras' built-ins (`SimpleRNN`, `LSTM`, `GRU`,
`RNN`, also inside `Bidirectional`) or ours (`keras_gated.LSTM`, `GRU`,
`SimpleRNN`). A SimpleRNN has no gates: its "gate" is its pre-activation
z_t (`keras_gated.SIMPLE_RNN_GATES`).

A built-in LSTM, GRU or SimpleRNN does not expose its gates, so the gates
are read from a *gate twin*: a `keras_gated` layer built from the same
config with `return_gates=True` and holding the same weights, which
computes the very same function and returns its gates too (`gate_twin`;
`TWIN_CLASSES` pairs each built-in class with ours). The twin is fed the
inputs that the original layer actually receives inside the model, with
its mask and initial state: while the model runs, each recurrent layer's
`call` is intercepted for the duration of the run and its arguments are
handed to the twin. Nothing about the model is changed.

Layer names are the keys of every result: a layer's `name`; for the two
halves of a `keras.layers.Bidirectional` named `bidi`, `"bidi/forward"`
and `"bidi/backward"`; for a layer inside a nested model `inner`,
`"inner/<layer name>"`.

Time order: every per-timestep array these functions return is in the
*input's* time order, as the user gave the sequence: `[:, t]` belongs to
input timestep t, also for `go_backwards=True` layers and for the backward
half of a `Bidirectional`, whose gates are flipped back from processing
order. (A `keras_gated` layer called directly with `return_gates=True`
returns its gates in processing order instead.)
"""

import contextlib
import weakref

import keras
import numpy as np
from keras import ops

from keras_gated._validation import check_bool
from keras_gated._validation import check_model
from keras_gated._validation import shape_fits
from keras_gated.layers import GRU
from keras_gated.layers import LSTM
from keras_gated.layers import SimpleRNN
from keras_gated.rnn import GatedRNN

TWIN_CLASSES = (
    (LSTM, keras.layers.LSTM),
    (GRU, keras.layers.GRU),
    (SimpleRNN, keras.layers.SimpleRNN),
)
"""`(our class, Keras' built-in class)` pairs: a layer of either class has
a gate twin of our class. A new cell is one more pair; its gate names come
from our class (`sequence_names` less `state_sequences`)."""


def recurrent_layers(model):
    """Every recurrent layer of a model, in order, with its reported name.

    Recurrent layers are instances of `keras.layers.RNN` (which includes
    `keras.layers.SimpleRNN`, `LSTM` and `GRU`) and of our layers
    (`keras_gated.LSTM`, `GRU`, `SimpleRNN`). The search recurses into
    nested models, and a `keras.layers.Bidirectional` contributes its two
    halves.

    Args:
        model: A `keras.Model` (Sequential, Functional or subclassed; the
            layers it tracks in `model.layers` are searched).

    Returns:
        A list of `(name, layer)` pairs in the order of `model.layers`, each
        layer once. `name` is the layer's name; `f"{bidi.name}/forward"` and
        `f"{bidi.name}/backward"` for the halves of a `Bidirectional` `bidi`
        (the layers `bidi.forward_layer` and `bidi.backward_layer`); names
        of layers inside a nested model are prefixed with
        `f"{nested_model.name}/"`.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((10, 3)),
    ...     keras.layers.Bidirectional(
    ...         keras.layers.LSTM(4, return_sequences=True), name="bidi"),
    ...     keras_gated.GRU(2, name="gru"),
    ... ])
    >>> [name for name, _ in keras_gated.recurrent_layers(model)]
    ['bidi/forward', 'bidi/backward', 'gru']
    """
    check_model("model", model)
    found = []
    seen = set()

    def add(name, layer):
        if id(layer) not in seen:
            seen.add(id(layer))
            found.append((name, layer))

    def search(container, prefix):
        for layer in container.layers:
            if isinstance(layer, keras.layers.Bidirectional):
                add(f"{prefix}{layer.name}/forward", layer.forward_layer)
                add(f"{prefix}{layer.name}/backward", layer.backward_layer)
            elif is_recurrent(layer):
                add(prefix + layer.name, layer)
            elif isinstance(layer, keras.Model):
                search(layer, f"{prefix}{layer.name}/")

    search(model, "")
    return found


def is_recurrent(layer):
    """Whether `layer` is a recurrent layer that `recurrent_layers` finds."""
    return isinstance(layer, (keras.layers.RNN, GatedRNN))


def has_gates(layer):
    """Whether `layer` has a gate twin: an LSTM, GRU or SimpleRNN, ours or
    Keras' (a class of `TWIN_CLASSES`)."""
    return _twin_class(layer) is not None


def gate_names(layer):
    """The gate names of an LSTM, GRU or SimpleRNN layer (ours or Keras'),
    else `()`.

    The gate sequences of its twin's gate dict, its states left out:
    `keras_gated.LSTM_GATES` for an LSTM, `GRU_GATES` for a GRU,
    `SIMPLE_RNN_GATES` (`("pre_activation",)`) for a SimpleRNN; for our
    layers these are `layer.cell.gate_names`.
    """
    twin_class = _twin_class(layer)
    if twin_class is None:
        return ()
    return tuple(
        name
        for name in twin_class.sequence_names
        if name not in twin_class.state_sequences
    )


def _twin_class(layer):
    for ours, builtin in TWIN_CLASSES:
        if isinstance(layer, (ours, builtin)):
            return ours
    return None


def _twin_choices():
    """The classes `gate_twin` takes, for error messages."""
    builtins = [f"keras.layers.{b.__name__}" for _, b in TWIN_CLASSES]
    ours = [f"keras_gated.{o.__name__}" for o, _ in TWIN_CLASSES]
    *rest, last = builtins + ours
    return f"{', '.join(rest)} or {last}"


def gate_twin(layer):
    """A `keras_gated` layer that computes what `layer` computes, with gates.

    The twin is built from `layer.get_config()` with `return_gates=True` and
    `stateful=False` (everything else, `go_backwards` included, unchanged),
    built for the layer's input features and given the layer's weights with
    `set_weights`. Its outputs equal the layer's, and it also returns the
    gate dict (keys `keras_gated.LSTM_SEQUENCES`, `GRU_SEQUENCES` or
    `SIMPLE_RNN_SEQUENCES`) as its last output, in processing order. To
    reproduce a stateful layer, pass the layer's `states` as the twin's
    `initial_state`.

    Args:
        layer: A built `keras.layers.LSTM`, `GRU` or `SimpleRNN`, or a
            built `keras_gated.LSTM`, `GRU` or `SimpleRNN`.

    Returns:
        The built twin, a `keras_gated.LSTM`, `GRU` or `SimpleRNN` (the
        class paired with the layer's in `TWIN_CLASSES`). It holds a copy
        of the weights: later training of `layer` does not reach it.

    Example:

    >>> builtin = keras.layers.LSTM(4, return_sequences=True)
    >>> x = np.random.rand(2, 10, 3).astype("float32")
    >>> outputs = builtin(x)
    >>> twin = keras_gated.gate_twin(builtin)
    >>> twin_outputs, gates = twin(x)
    >>> np.allclose(outputs, twin_outputs, atol=1e-6)
    True
    >>> gates["forget"].shape
    (2, 10, 4)
    """
    twin_class = _twin_class(layer)
    if twin_class is None:
        hint = ""
        if isinstance(layer, keras.layers.Bidirectional):
            hint = (
                "; pass layer.forward_layer or layer.backward_layer for a "
                "half of a Bidirectional"
            )
        raise ValueError(
            f"layer must be a {_twin_choices()}: a layer with a gate twin. "
            f"Received: layer={layer!r} of type {type(layer).__name__}{hint}"
        )
    if not layer.built:
        raise ValueError(
            f"layer must be built (called once or built with an input "
            f"shape) so its weights can be copied. Received: layer="
            f"{layer.name!r}, which is not built"
        )
    twin = _build_twin(twin_class, layer)
    twin.cell.set_weights(layer.cell.get_weights())
    return twin


def _build_twin(twin_class, layer):
    config = dict(layer.get_config())
    config.update(return_gates=True, stateful=False)
    twin = twin_class.from_config(config)
    twin.build((None, None, layer.cell.kernel.shape[0]))
    return twin


# Twins kept for `gate_outputs`, one per original layer, so that repeated
# (and traced) calls create no new variables.
_TWINS = weakref.WeakKeyDictionary()


def cached_twin(layer):
    """The gate twin that `gate_outputs` uses for `layer`, in sync.

    Created on first use and kept for as long as `layer` lives; every call
    assigns it the layer's current weights (traceable). Creating it before
    tracing a function that calls `gate_outputs` spares that function a
    second trace (the first one would create the twin's variables).

    Args:
        layer: A built LSTM, GRU or SimpleRNN, ours or Keras'.

    Returns:
        The twin, as `gate_twin` builds it.
    """
    twin = _TWINS.get(layer)
    if twin is None:
        twin = _TWINS[layer] = _build_twin(_twin_class(layer), layer)
    for target, source in zip(
        twin.cell.weights, layer.cell.weights, strict=True
    ):
        target.assign(ops.cast(source, target.dtype))
    return twin


@contextlib.contextmanager
def intercept_calls(hooks):
    """Temporarily routes the `call` of some layers through hooks.

    Inside the context, calling a layer `layer` in `hooks` (directly or as
    part of a model) runs `hooks[layer](call, *args, **kwargs)` instead of
    `layer.call(*args, **kwargs)`, where `call` is the layer's own `call`.
    Keras' `__call__` (masks, building, dtype handling) runs as usual
    around it. The hooks are removed on exit, also after an error.

    Args:
        hooks: Dict mapping layers to hook functions.
    """
    patched = []
    try:
        for layer, hook in hooks.items():
            original = layer.call

            def hooked(*args, _hook=hook, _original=original, **kwargs):
                return _hook(_original, *args, **kwargs)

            layer.call = hooked
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            del layer.call


def call_arguments(args, kwargs):
    """`(sequences, initial_state, mask, training)` of a recurrent `call`."""
    names = ("sequences", "initial_state", "mask", "training")
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    return (
        bound["sequences"],
        bound.get("initial_state"),
        bound.get("mask"),
        bound.get("training", False),
    )


def _known_inputs(model):
    """The shapes of a model's inputs, flattened as its input structure
    (dict inputs by key, as `keras.tree.flatten` orders a user's dict), or
    None where it has none yet (subclassed, or not built)."""
    try:
        inputs = keras.tree.flatten(model.input)
    except (AttributeError, ValueError):
        inputs = getattr(model, "inputs", None)
    if not inputs:
        return None
    return [tuple(tensor.shape) for tensor in inputs]


def _shape_and_dtype(value):
    """`(shape, dtype name)` of an array or tensor, eager or symbolic."""
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        value = np.asarray(value)
    try:
        dtype = keras.backend.standardize_dtype(value.dtype)
    except (TypeError, ValueError):
        dtype = str(value.dtype)
    return tuple(value.shape), dtype


def _is_numeric(dtype):
    return dtype == "bool" or dtype.startswith(("float", "int", "uint"))


def _check_inputs(name, model, inputs):
    """Inputs `model(inputs)` can run: as many arrays as the model has
    inputs, numeric, none empty, each of its input's rank and of its sizes
    after the time axis. Returns the flat list of their shapes."""
    if inputs is None:
        raise ValueError(
            f"{name} must be the model's inputs: an array or tensor (a list "
            f"or dict of them for several inputs). Received: {name}=None"
        )
    given = [_shape_and_dtype(value) for value in keras.tree.flatten(inputs)]
    expected = _known_inputs(model)
    if expected is not None and len(given) != len(expected):
        raise ValueError(
            f"{name} must hold one array per input of model '{model.name}': "
            f"{len(expected)} (shapes {expected}). Received: {len(given)} "
            f"arrays of shapes {[shape for shape, _ in given]}"
        )
    for index, (shape, dtype) in enumerate(given):
        if not _is_numeric(dtype):
            raise ValueError(
                f"{name} must hold numbers or booleans. Received: an array "
                f"of dtype {dtype} and shape {shape} in {name}"
            )
        if 0 in shape:
            raise ValueError(
                f"{name} must not be empty: at least one sequence of at "
                f"least one timestep. Received: an array of shape {shape} "
                f"in {name}"
            )
        if expected is not None and not shape_fits(shape, expected[index], 2):
            raise ValueError(
                f"{name} must match the input shapes of model "
                f"'{model.name}', {expected}: the same rank, any batch size "
                f"and length, the model's sizes on the other axes. "
                f"Received: an array of shape {shape} in {name}"
            )
    return [shape for shape, _ in given]


def _check_mask(mask, shapes):
    """A mask of the single input's `(batch, timesteps)`, or None."""
    if mask is None:
        return
    for value in keras.tree.flatten(mask):
        shape, dtype = _shape_and_dtype(value)
        if not _is_numeric(dtype) or len(shape) != 2:
            raise ValueError(
                "mask must be None or a boolean (batch, timesteps) array. "
                f"Received: an array of dtype {dtype} and shape {shape} in "
                "mask"
            )
        if len(shapes) == 1 and not all(
            given is None or wanted is None or given == wanted
            for given, wanted in zip(shape, shapes[0][:2], strict=False)
        ):
            raise ValueError(
                f"mask must have the inputs' (batch, timesteps) = "
                f"{shapes[0][:2]}. Received: mask of shape {shape}"
            )


def _call_model(model, inputs, mask):
    if mask is None:
        return model(inputs, training=False)
    return model(inputs, training=False, mask=mask)


def gate_outputs(model, inputs, mask=None, return_masks=False):
    """The gate sequences of every LSTM, GRU and SimpleRNN in a model.

    Runs `model(inputs, training=False)` once. For every LSTM, GRU and
    SimpleRNN layer that `recurrent_layers(model)` finds, ours or Keras'
    built-in (both halves of a `Bidirectional` included), the layer's gate
    twin (see `gate_twin`, holding the layer's current weights) is applied
    to the very inputs, mask and initial state the layer receives in that
    run, so masks from `Masking` or `Embedding(mask_zero=True)` and the
    layers before it are taken into account. Works eagerly and inside a
    `tf.function` (the twins are created on the first call and reused).

    Args:
        model: A `keras.Model`.
        inputs: The model's inputs, as `model(inputs)` accepts them.
        mask: Optional mask passed to `model(inputs, mask=mask)`.
        return_masks: If `True`, also return each layer's timestep mask.

    Returns:
        A dict `{f"{layer name}/{gate}": tensor}` with one tensor of shape
        `(batch, timesteps, units)` per gate of each layer (keys of
        `keras_gated.LSTM_SEQUENCES`: `"input"`, `"forget"`,
        `"candidate"`, `"output"`, `"cell"`; of `GRU_SEQUENCES`:
        `"update"`, `"reset"`, `"candidate"`; of `SIMPLE_RNN_SEQUENCES`:
        `"pre_activation"`). Axis 1 is in the input's
        time order: the gates of `go_backwards` layers and backward
        `Bidirectional` halves are flipped back from processing order.
        Gates are zero at masked steps. If a layer is called more than
        once in the model, its last call is reported. With
        `return_masks=True`, a pair `(gates, masks)` where `masks` maps
        each layer name to its boolean `(batch, timesteps)` mask or `None`.

    Raises:
        ValueError: if `model` is not a `keras.Model`, `inputs` is `None`,
            holds another number of arrays than the model has inputs, an
            empty or non-numeric array, or one of another rank or other
            feature sizes than the model's input; if `mask` is not a
            `(batch, timesteps)` array of the inputs' sizes, or
            `return_masks` not a bool.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((10, 3)),
    ...     keras.layers.LSTM(4, return_sequences=True, name="lstm"),
    ...     keras.layers.GRU(2, name="gru"),
    ... ])
    >>> gates = keras_gated.gate_outputs(model, np.zeros((5, 10, 3)))
    >>> gates["lstm/forget"].shape, gates["gru/update"].shape
    (TensorShape([5, 10, 4]), TensorShape([5, 10, 2]))
    """
    return _gate_outputs(model, inputs, mask, return_masks, "inputs")


def _gate_outputs(model, inputs, mask, return_masks, inputs_name):
    check_model("model", model)
    return_masks = check_bool("return_masks", return_masks)
    _check_mask(mask, _check_inputs(inputs_name, model, inputs))
    named = [
        (name, layer)
        for name, layer in recurrent_layers(model)
        if has_gates(layer)
    ]
    gates = {}
    masks = {}

    def make_hook(name, layer):
        def hook(call, *args, **kwargs):
            # Keras has built the layer by now, also in an unbuilt model.
            twin = cached_twin(layer)
            sequences, initial_state, layer_mask, _ = call_arguments(
                args, kwargs
            )
            if initial_state is None and layer.stateful:
                initial_state = list(layer.states)
            twin_outputs = twin(
                sequences,
                initial_state=initial_state,
                mask=layer_mask,
                training=False,
            )
            layer_gates = twin_outputs[-1]
            for gate, value in layer_gates.items():
                if layer.go_backwards:
                    value = ops.flip(value, axis=1)
                gates[f"{name}/{gate}"] = value
            if layer_mask is not None:
                layer_mask = ops.cast(keras.tree.flatten(layer_mask)[0], "bool")
            masks[name] = layer_mask
            return call(*args, **kwargs)

        return hook

    hooks = {layer: make_hook(name, layer) for name, layer in named}
    with intercept_calls(hooks):
        _call_model(model, inputs, mask)
    if return_masks:
        return gates, masks
    return gates


def inspect_gates(model, x, mask=None):
    """The gates of every LSTM, GRU and SimpleRNN in a model, as NumPy.

    The NumPy counterpart of `gate_outputs`: this is how to watch the gates
    of a model trained with Keras' built-in `LSTM`, `GRU` or `SimpleRNN`
    (also inside `Bidirectional`), or with ours, on the inputs each layer
    actually receives inside the model.

    Args:
        model: A `keras.Model`.
        x: A batch of the model's inputs.
        mask: Optional mask for the model's inputs.

    Returns:
        A dict `{layer name: {gate: array}}`, arrays of shape
        `(batch, timesteps, units)` in the input's time order (see
        `gate_outputs`; zeros at masked steps).

    Raises:
        ValueError: for bad arguments, as `gate_outputs` (naming `x`).

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((10, 3)),
    ...     keras.layers.Bidirectional(keras.layers.LSTM(4), name="bidi"),
    ... ])
    >>> gates = keras_gated.inspect_gates(model, np.zeros((5, 10, 3)))
    >>> sorted(gates)
    ['bidi/backward', 'bidi/forward']
    >>> gates["bidi/backward"]["forget"].shape
    (5, 10, 4)
    """
    flat = _gate_outputs(model, x, mask, False, "x")
    nested = {}
    for key, value in flat.items():
        name, gate = key.rsplit("/", 1)
        nested.setdefault(name, {})[gate] = keras.ops.convert_to_numpy(value)
    return nested
