"""Per-timestep gradient norms of a model's loss (TensorFlow).

How much does the loss depend on what a recurrent layer saw, or held, at
each timestep? `timestep_gradients` answers with one norm per timestep:

- `"inputs"`: ||dL/dx_t|| for the layer's input x_t, for every recurrent
  layer, Keras' built-ins included. The layer's `call` is intercepted (see
  `keras_gated.inspection.intercept_calls`) to add a zero tensor to its
  input; the gradient of the loss with respect to that tensor is dL/dx.
- `"hidden"`, `"cell"`: ||dL/dh_t|| and ||dL/dc_t|| for our layers, one
  per name in the layer's `state_names` (h and c for the LSTM, h for the
  GRU and the SimpleRNN): the total derivative through the recurrence and
  the later layers, measured with zero perturbations of the states
  through the layer's `probe_states`. Keras' built-ins offer no way in to
  their states, so they get `"inputs"` only.

The module uses `tf.GradientTape` and so is TensorFlow-only.
"""

import inspect

import keras
import numpy as np
import tensorflow as tf

from keras_gated import inspection
from keras_gated.rnn import GatedRNN

QUANTITIES = ("inputs", "hidden", "cell")
"""Keys of a layer's result in `timestep_gradients`, in this order."""


def state_quantities(layer):
    """The state names whose gradients `timestep_gradients` reports.

    Our layers' `state_names` (`("hidden", "cell")` for `keras_gated.LSTM`,
    `("hidden",)` for `GRU` and `SimpleRNN`), which `probe_states` takes;
    `()` for any other layer.
    """
    if isinstance(layer, GatedRNN):
        return tuple(layer.state_names)
    return ()


def select_layers(model, layers=None):
    """The `(name, layer)` pairs of `recurrent_layers(model)` asked for.

    Args:
        model: A `keras.Model`.
        layers: `None` for all recurrent layers, or a list of names as
            `keras_gated.recurrent_layers` reports them.

    Returns:
        A non-empty list of `(name, layer)` pairs, in model order.
    """
    found = inspection.recurrent_layers(model)
    if not found:
        raise ValueError(
            "model must contain a recurrent layer (keras.layers.SimpleRNN, "
            "LSTM, GRU, RNN or Bidirectional, or keras_gated.LSTM, GRU or "
            "SimpleRNN). "
            f"Received: model={model.name!r} with layers "
            f"{[layer.name for layer in model.layers]}"
        )
    if layers is None:
        return found
    if isinstance(layers, str):
        layers = [layers]
    names = [name for name, _ in found]
    unknown = [name for name in layers if name not in names]
    if unknown or not layers:
        raise ValueError(
            "layers must be None or a non-empty list of recurrent layer "
            f"names among {names}. Received: layers={layers!r}"
        )
    return [(name, layer) for name, layer in found if name in layers]


def _compute_loss(model, x, y, y_pred, sample_weight, training):
    if "training" in inspect.signature(model.compute_loss).parameters:
        return model.compute_loss(
            x=x,
            y=y,
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=training,
        )
    return model.compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight
    )


def _graph(tensor):
    # None for eager tensors, whose `graph` raises AttributeError.
    return getattr(tensor, "graph", None)


def _norm_over_time(gradient):
    """L2 norm over every axis but the time axis 1, safe from overflow."""
    axes = [0] + list(range(2, gradient.shape.rank))
    scale = tf.reduce_max(tf.abs(gradient), axis=axes)
    safe_scale = tf.where(scale > 0, scale, tf.ones_like(scale))
    shape = [1, -1] + [1] * (gradient.shape.rank - 2)
    scaled = gradient / tf.reshape(safe_scale, shape)
    return safe_scale * tf.sqrt(tf.reduce_sum(tf.square(scaled), axis=axes))


def gradient_norm_tensors(
    model, x, y, named_layers, sample_weight=None, training=False
):
    """The per-timestep gradient norms as tensors; traceable.

    The computation behind `timestep_gradients`, without its bookkeeping
    (it may update metrics and stateful layers like any forward pass), for
    callers that compile it with `tf.function`.

    Args:
        model: A compiled `keras.Model`.
        x, y, sample_weight: One batch, as `fit` receives it.
        named_layers: `(name, layer)` pairs from `select_layers`.
        training: Forward pass and loss in training mode (dropout on).

    Returns:
        A dict `{name: {quantity: (timesteps,) tensor}}`.
    """
    perturbations = {}

    def make_hook(name, layer):
        states = state_quantities(layer)

        def hook(call, *args, **kwargs):
            args = list(args)
            if args:
                sequences = args[0]
            else:
                sequences = kwargs["sequences"]
            probes = perturbations.get(name)
            # A layer may first be called in a scratch graph (Keras builds
            # a subclassed model symbolically): probes belong to one graph.
            if probes is None or _graph(probes["inputs"]) is not _graph(
                sequences
            ):
                probes = {"inputs": tf.zeros_like(sequences)}
                batch, timesteps = (
                    tf.shape(sequences)[0],
                    tf.shape(sequences)[1],
                )
                for state in states:
                    probes[state] = tf.zeros(
                        [batch, timesteps, layer.cell.units], sequences.dtype
                    )
                tape.watch(list(probes.values()))
                perturbations[name] = probes
            sequences = sequences + probes["inputs"]
            if args:
                args[0] = sequences
            else:
                kwargs["sequences"] = sequences
            if not states:
                return call(*args, **kwargs)
            with layer.probe_states({s: probes[s] for s in states}):
                return call(*args, **kwargs)

        return hook

    hooks = {layer: make_hook(name, layer) for name, layer in named_layers}
    with tf.GradientTape() as tape:
        with inspection.intercept_calls(hooks):
            y_pred = model(x, training=training)
        loss = _compute_loss(model, x, y, y_pred, sample_weight, training)
    gradients = tape.gradient(
        loss,
        perturbations,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return {
        name: {
            quantity: _norm_over_time(gradients[name][quantity])
            for quantity in QUANTITIES
            if quantity in gradients.get(name, {})
        }
        for name, _ in named_layers
    }


class PreservedState:
    """Context manager restoring what a probe's forward pass may change.

    Saves the variables of the model's metrics and the states of the
    stateful layers among `named_layers` on entry, and assigns them back on
    exit.
    """

    def __init__(self, model, named_layers):
        self.variables = [v for m in model.metrics for v in m.variables]
        for _, layer in named_layers:
            if getattr(layer, "stateful", False) and layer.states is not None:
                self.variables.extend(keras.tree.flatten(layer.states))

    def __enter__(self):
        self.values = [v.numpy() for v in self.variables]
        return self

    def __exit__(self, *exc_info):
        for variable, value in zip(self.variables, self.values, strict=True):
            variable.assign(value)


def check_compiled(model):
    """Raises unless `model` can compute a loss as `fit` does."""
    overrides_loss = type(model).compute_loss is not keras.Model.compute_loss
    if not (getattr(model, "compiled", False) or overrides_loss):
        raise ValueError(
            "model must be compiled with a loss (model.compile(loss=...)) "
            "so its loss can be computed as fit computes it. Received: "
            f"model={model.name!r}, which is not compiled"
        )


def _as_tensors(structure):
    return tf.nest.map_structure(
        lambda value: None if value is None else tf.convert_to_tensor(value),
        structure,
    )


def probe_function(model, named_layers, gate_statistics=True):
    """A compiled probe for repeated measurements on batches of one shape.

    Compiles, with `tf.function`, what `timestep_gradients` and
    `keras_gated.gate_outputs` compute, in one call: after the first call
    (which traces), each call costs about a forward and a backward pass
    in graph mode. Like `timestep_gradients`, it leaves the model's
    metrics and the states of its stateful layers as they were.

    Args:
        model: A compiled `keras.Model`.
        named_layers: `(name, layer)` pairs from `select_layers`.
        gate_statistics: Also return the gates of the LSTM, GRU and
            SimpleRNN layers among `named_layers` (SimpleRNN's
            pre-activations).

    Returns:
        A function `(x, y, sample_weight) -> (norms, gates, masks)` of
        NumPy values: `norms` as `timestep_gradients` returns them;
        `gates` and `masks` as `gate_outputs(..., return_masks=True)`
        returns them, restricted to `named_layers` (empty dicts without
        `gate_statistics`).
    """
    gated = {
        name for name, layer in named_layers if inspection.has_gates(layer)
    }
    gated = gated if gate_statistics else set()

    def probe(x, y, sample_weight):
        norms = gradient_norm_tensors(
            model, x, y, named_layers, sample_weight=sample_weight
        )
        if not gated:
            return norms, {}, {}
        gates, masks = inspection.gate_outputs(model, x, return_masks=True)
        gates = {
            key: value
            for key, value in gates.items()
            if key.rsplit("/", 1)[0] in gated
        }
        masks = {name: masks[name] for name in gated if name in masks}
        return norms, gates, masks

    # Without AutoGraph, tracing takes a fraction of the time, and nothing
    # is lost: Keras does not convert layers' `call` with it either.
    compiled = tf.function(probe, autograph=False)
    for name, layer in named_layers:
        if name in gated and layer.built:
            inspection.cached_twin(layer)

    def run(x, y=None, sample_weight=None):
        with PreservedState(model, named_layers):
            results = compiled(
                _as_tensors(x), _as_tensors(y), _as_tensors(sample_weight)
            )
        return tf.nest.map_structure(
            lambda value: None if value is None else value.numpy(), results
        )

    return run


def timestep_gradients(
    model, x, y=None, layers=None, sample_weight=None, training=False
):
    """Per-timestep gradient norms of the loss for each recurrent layer.

    For one batch, computes the model's loss as `fit` does
    (`model.compute_loss`: the compiled loss with its sample weighting,
    loss weights and the layers' regularization losses) and, for each
    recurrent layer, the L2 norm over the batch and feature axes of the
    gradient of that loss with respect to

    - `"inputs"`: the layer's input at each timestep, x_t (every recurrent
      layer: Keras' `SimpleRNN`, `LSTM`, `GRU`, `RNN`, either half of a
      `Bidirectional`, ours);
    - `"hidden"`: for our layers (`keras_gated.LSTM`, `GRU`, `SimpleRNN`),
      the hidden state h_t;
    - `"cell"`: for `keras_gated.LSTM`, the cell state c_t.

    The state gradients are total derivatives, through the recurrence and
    through the layers after this one. Timestep t is the input's time axis
    as the user gave it, also for `go_backwards` layers and the backward
    half of a `Bidirectional`. The norms decaying towards t = 0 is the
    vanishing gradient. A layer called more than once accumulates the
    gradients of its calls. The model's metrics and the states of stateful
    layers are left as they were; the weights are not touched.

    Args:
        model: A compiled `keras.Model` (or one that overrides
            `compute_loss`).
        x: A batch of inputs, as `fit` takes it.
        y: The batch's targets (`None` for models whose loss needs none).
        layers: `None` (all recurrent layers), or a list of the names that
            `keras_gated.recurrent_layers(model)` reports.
        sample_weight: Optional per-sample weights, as `fit` takes them.
        training: Run the forward pass (and the loss) in training mode, so
            dropout is active. Default: `False`, the deterministic model.

    Returns:
        A dict `{layer name: {quantity: np.ndarray of shape (timesteps,)}}`
        with `"inputs"` for every layer, `"hidden"` for our LSTM, GRU and
        SimpleRNN, `"cell"` for our LSTM (the names of the layer's
        `state_names`). A non-finite gradient gives a non-finite
        norm at that timestep.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((20, 1)),
    ...     keras_gated.LSTM(8, name="lstm"),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile(loss="mse")
    >>> x = np.random.normal(size=(16, 20, 1)).astype("float32")
    >>> y = np.zeros((16, 1), "float32")
    >>> norms = keras_gated.timestep_gradients(model, x, y)
    >>> sorted(norms["lstm"]), norms["lstm"]["cell"].shape
    (['cell', 'hidden', 'inputs'], (20,))
    """
    check_compiled(model)
    named = select_layers(model, layers)
    with PreservedState(model, named):
        norms = gradient_norm_tensors(
            model, x, y, named, sample_weight=sample_weight, training=training
        )
    return {
        name: {q: np.asarray(value) for q, value in layer_norms.items()}
        for name, layer_norms in norms.items()
    }
