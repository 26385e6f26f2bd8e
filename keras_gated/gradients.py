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

The gradients are the backend's own (`keras_gated._autodiff`): the
measurements run on TensorFlow, JAX and PyTorch alike.
"""

import inspect
import weakref

import keras
import numpy as np
from keras import ops

from keras_gated import _autodiff
from keras_gated import decomposition
from keras_gated import inspection
from keras_gated._validation import check_bool
from keras_gated._validation import check_positive_int
from keras_gated._validation import shape_fits
from keras_gated.rnn import GatedRNN

QUANTITIES = (
    ("inputs", "hidden", "cell")
    + decomposition.WEIGHTS
    + ("retention",)
    + tuple(decomposition.RETENTION_QUANTILES)
    + ("retention_max",)
    + (
        "jacobian_hidden",
        "jacobian_hidden_spectral",
        "jacobian_cell",
        "jacobian_cell_spectral",
    )
)
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


def _norm_over_time(gradient):
    """L2 norm over every axis but the time axis 1, safe from overflow."""
    axes = (0,) + tuple(range(2, len(gradient.shape)))
    return decomposition.scaled_norm(gradient, axes)


class _LayerProbe:
    """The probes of one recurrent layer during one measured forward pass.

    Our layers are probed themselves; a built-in LSTM, GRU or SimpleRNN is
    replaced, for the pass, by its gate twin (`inspection.cached_twin`,
    holding the layer's current weights), which computes the same
    function and takes the probes; any other recurrent layer gets the
    input probe only. The probes are the pass's `_autodiff.Sources`, keyed
    `(name, "inputs")`, `(name, state)` and `(name, "steps", call)`.
    """

    def __init__(self, name, layer, target, sources):
        self.name, self.layer, self.sources = name, layer, sources
        self.target = target
        self.probes = None
        self.calls = []
        self.arguments = None

    def _make_probes(self, sequences):
        # A layer may first be called in a scratch graph (Keras builds a
        # subclassed model symbolically): probes belong to one graph.
        if self.probes is not None and _graph(self.probes["inputs"]) is _graph(
            sequences
        ):
            return
        source = self.sources.source
        self.probes = {
            "inputs": source(
                (self.name, "inputs"), ops.shape(sequences), sequences.dtype
            )
        }
        self.calls = []
        shape = tuple(ops.shape(sequences)[:2])
        for state in state_quantities(self.target):
            self.probes[state] = source(
                (self.name, state),
                shape + (self.target.cell.units,),
                sequences.dtype,
            )

    def hook(self, call, *args, **kwargs):
        sequences, initial_state, mask, training = inspection.call_arguments(
            args, kwargs
        )
        self._make_probes(sequences)
        perturbed = sequences + self.probes["inputs"]
        args = list(args)
        if args:
            args[0] = perturbed
        else:
            kwargs["sequences"] = perturbed
        if self.target is None:
            return call(*args, **kwargs)
        if initial_state is None and getattr(self.layer, "stateful", False):
            initial_state = list(self.layer.states)
        if mask is not None:
            mask = ops.cast(keras.tree.flatten(mask)[0], "bool")
        self.arguments = (sequences, initial_state, mask)
        self._add_call(sequences)
        states = {s: self.probes[s] for s in state_quantities(self.target)}
        with self.target.probe_states(states):
            with self.target.probe_pre_activations(*self.calls[-1]):
                if self.target is self.layer:
                    return call(*args, **kwargs)
                outputs = self.target(
                    perturbed,
                    initial_state=initial_state,
                    mask=mask,
                    training=training,
                )
        rest = outputs[:-1]
        return rest[0] if len(rest) == 1 else tuple(rest)

    def _add_call(self, sequences):
        """A new pre-activation probe for this call, and its record, in
        `calls`."""
        cell = self.target.cell
        width = len(cell.gate_names) * cell.units
        shape = tuple(ops.shape(sequences)[:2]) + (width,)
        key = (self.name, "steps", len(self.calls))
        self.calls.append(
            (self.sources.source(key, shape, sequences.dtype), {})
        )

    def recorded(self):
        """What the pass recorded: the call's arguments and records."""
        return self.arguments, [record for _, record in self.calls]

    def restore(self, recorded):
        """Takes back `recorded` as the differentiation returned it (the
        same tensors, or concrete arrays where the pass was traced)."""
        self.arguments, records = recorded
        self.calls = [
            (probe, record)
            for (probe, _), record in zip(self.calls, records, strict=True)
        ]

    def step_gradients(self, gradients):
        """`(record, dL/dz time-major in processing order)` per call."""
        # dL/dz has the probe's layout: the layer's own conversion serves.
        return [
            (record, self.target._time_major_probe(gradient))
            for (_, record), gradient in zip(self.calls, gradients, strict=True)
        ]


def _graph(tensor):
    # None for eager tensors and other backends' arrays.
    return getattr(tensor, "graph", None)


def measured_layer(layer):
    """The keras_gated layer that `timestep_gradients` probes for `layer`:
    the layer itself if it is ours, the gate twin of a built-in LSTM, GRU
    or SimpleRNN (`keras_gated.inspection.cached_twin`), else None."""
    if isinstance(layer, GatedRNN):
        return layer
    if inspection.has_gates(layer):
        return inspection.cached_twin(layer)
    return None


def probe_gradients(
    model,
    x,
    y,
    named_layers,
    sample_weight=None,
    training=False,
    weights=False,
):
    """One measured forward and backward pass; traceable.

    Runs the model with every layer of `named_layers` probed
    (`_LayerProbe`) and takes the gradient of the loss with respect to the
    probes and, with `weights=True`, to the probed layers' weights.

    Returns:
        `(probes, gradients)`: the `_LayerProbe` of each name, and a dict
        `{name: {"inputs": ..., state: ..., "steps": [dL/dz per call],
        "weights": [gradients of the probed layer's cell weights, less
        their regularization penalty's]}}` (`"weights"` with
        `weights=True`).
    """

    if keras.backend.backend() != "tensorflow" and not all(
        layer.built for _, layer in named_layers
    ):
        # Variables made in the measured pass would not outlive it (JAX
        # traces it; PyTorch first calls an unbuilt model symbolically).
        model(x, training=False)
    # The targets are synchronised with the layers' weights once, before
    # the pass differentiates with respect to their weights.
    targets = {name: measured_layer(layer) for name, layer in named_layers}

    def forward(sources):
        probes = {
            name: _LayerProbe(name, layer, targets[name], sources)
            for name, layer in named_layers
        }
        hooks = {probe.layer: probe.hook for probe in probes.values()}
        with inspection.intercept_calls(hooks):
            y_pred = model(x, training=training)
        loss = _compute_loss(model, x, y, y_pred, sample_weight, training)
        forward.probes = probes
        return loss, {name: p.recorded() for name, p in probes.items()}

    variables = _cell_weights(targets.values()) if weights else []
    recorded, source_grads, weight_grads = _autodiff.gradients(
        forward, variables, reads=model.variables
    )
    probes = forward.probes
    gradients = {}
    for name, probe in probes.items():
        probe.restore(recorded[name])
        grads = {
            q: source_grads[(name, q)]
            for q in ("inputs",) + state_quantities(probe.target)
            if (name, q) in source_grads
        }
        grads["steps"] = [
            source_grads[(name, "steps", i)] for i in range(len(probe.calls))
        ]
        if weights:
            count = len(_cell_weights([probe.target]))
            grads["weights"], weight_grads = (
                weight_grads[:count],
                weight_grads[count:],
            )
            if probe.target is probe.layer:
                # The model's loss holds the penalties of our layers'
                # weight regularizers, which belong to no timestep.
                penalties = _penalty_gradients(probe.target)
                grads["weights"] = [
                    g - p
                    for g, p in zip(grads["weights"], penalties, strict=True)
                ]
        gradients[name] = grads
    return probes, gradients


def _cell_weights(targets):
    """The cell weights of the probed layers (none for a layer without a
    target)."""
    return [
        w
        for target in targets
        if target is not None
        for w in target.cell.trainable_weights
    ]


def _penalty_gradients(layer):
    """The gradients of the regularization penalties of a layer's cell
    weights (zeros for a weight without a regularizer)."""
    weights = layer.cell.trainable_weights
    if all(getattr(w, "regularizer", None) is None for w in weights):
        return [ops.zeros(w.shape, w.dtype) for w in weights]

    def penalty(sources):
        terms = [
            w.regularizer(w)
            for w in weights
            if getattr(w, "regularizer", None) is not None
        ]
        return sum(terms[1:], terms[0]), None

    return _autodiff.gradients(penalty, weights)[2]


def gradient_norm_tensors(
    model,
    x,
    y,
    named_layers,
    sample_weight=None,
    training=False,
    jacobians=False,
    jacobian_samples=4,
    return_gates=False,
):
    """The per-timestep quantities of `timestep_gradients` as tensors;
    traceable.

    The computation behind `timestep_gradients`, without its bookkeeping
    (it may update metrics and stateful layers like any forward pass), for
    callers that compile it (with `tf.function` on TensorFlow).

    Args:
        model: A compiled `keras.Model`.
        x, y, sample_weight: One batch, as `fit` receives it.
        named_layers: `(name, layer)` pairs from `select_layers`.
        training: Forward pass and loss in training mode (dropout on).
        jacobians, jacobian_samples: as for `timestep_gradients`.
        return_gates: Also return the gates and masks the measured pass
            computed, as `keras_gated.gate_outputs(..., return_masks=True)`
            returns them, for the LSTM, GRU and SimpleRNN layers.

    Returns:
        A dict `{name: {quantity: (timesteps,) tensor}}`; with
        `return_gates`, a triple `(norms, gates, masks)`.
    """
    probes, gradients = probe_gradients(
        model, x, y, named_layers, sample_weight, training
    )
    results = {}
    for name, probe in probes.items():
        grads = gradients[name]
        norms = {
            q: _norm_over_time(grads[q])
            for q in ("inputs",) + state_quantities(probe.target)
            if q in grads
        }
        if probe.calls:
            calls = probe.step_gradients(grads["steps"])
            norms.update(decomposition.contribution_norms(probe.target, calls))
            if "forget" in probe.target.cell.gate_names:
                norms.update(
                    decomposition.retention(probe.target, calls[-1][0])
                )
            if jacobians:
                norms.update(_jacobians(probe, jacobian_samples))
        results[name] = norms
    if not return_gates:
        return results
    return (results,) + _recorded_gates(probes)


def _recorded_gates(probes):
    """The gate sequences and masks of each probed layer's last call,
    batch-major in the input's time order (`gate_outputs`' layout)."""
    gates, masks = {}, {}
    for name, probe in probes.items():
        if not probe.calls:
            continue
        record = probe.calls[-1][1]
        flip = probe.target.go_backwards
        for gate in inspection.gate_names(probe.layer):
            value = ops.transpose(record["sequences"][gate], (1, 0, 2))
            gates[f"{name}/{gate}"] = ops.flip(value, 1) if flip else value
        mask = record["mask"]
        if mask is not None:
            mask = ops.transpose(mask)
            mask = ops.flip(mask, 1) if flip else mask
        masks[name] = mask
    return gates, masks


def _jacobians(probe, samples):
    sequences, initial_state, mask = probe.arguments
    take = slice(0, samples)
    return decomposition.jacobian_norms(
        jacobian_twin(probe.layer),
        sequences[take],
        None if initial_state is None else [s[take] for s in initial_state],
        None if mask is None else mask[take],
    )


_JACOBIAN_TWINS = weakref.WeakKeyDictionary()


def jacobian_twin(layer):
    """The layer `timestep_gradients` computes Jacobians with: the gate
    twin's class and config with `return_state=True` and
    `return_sequences=False`, kept per layer and given its current
    weights (traceable after the first call)."""
    twin = _JACOBIAN_TWINS.get(layer)
    if twin is None:
        base = inspection.cached_twin(layer)
        config = base.get_config()
        config.update(return_state=True, return_sequences=False)
        twin = type(base).from_config(config)
        twin.build((None, None, base.cell.kernel.shape[0]))
        _JACOBIAN_TWINS[layer] = twin
    for target, source in zip(
        twin.cell.weights, layer.cell.weights, strict=True
    ):
        target.assign(ops.cast(source, target.dtype))
    return twin


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


def _shapes(structure):
    return keras.tree.map_structure(
        lambda value: tuple(getattr(value, "shape", ())), structure
    )


def _is_numeric(value):
    dtype = getattr(value, "dtype", None)
    if dtype is None or not hasattr(value, "shape"):
        return False
    try:
        name = keras.backend.standardize_dtype(dtype)
    except (TypeError, ValueError):
        return False
    return name.startswith(("float", "int", "uint", "bool", "bfloat"))


def check_batch(model, x, y=None, sample_weight=None, argument="x"):
    """Raises a ValueError unless `(x, y, sample_weight)` is one batch the
    model takes: numeric arrays or tensors fitting `model.inputs` (where
    the model has them), at least one sample, one batch size throughout.

    Args:
        model: A `keras.Model`.
        x, y, sample_weight: The batch.
        argument: The name the error gives the batch (`"probe"` for the
            logger's).
    """
    given = keras.tree.flatten(x) if x is not None else []
    received = (
        f"Received: {argument} x of shapes {_shapes(x)}, y of shapes "
        f"{_shapes(y)}"
    )
    if not given or not all(_is_numeric(v) for v in given):
        raise ValueError(
            f"{argument} must hold the model's inputs as numeric arrays or "
            f"tensors. Received: {argument} x={x!r:.200}"
        )
    inputs = getattr(model, "inputs", None)
    if inputs:
        expected = [tuple(i.shape) for i in inputs]
        fits = len(given) == len(expected) and all(
            shape_fits(tuple(value.shape), shape, 0)
            for value, shape in zip(given, expected, strict=True)
        )
        if not fits:
            raise ValueError(
                f"{argument} must fit the model's inputs of shapes "
                f"{expected}. {received}"
            )
    values = given + [
        v
        for v in keras.tree.flatten(y) + keras.tree.flatten(sample_weight)
        if v is not None
    ]
    batches = {v.shape[0] for v in values if len(getattr(v, "shape", ())) > 0}
    if len(batches) > 1 or 0 in batches:
        raise ValueError(
            f"{argument} must be one batch of at least one sample: x, y and "
            f"sample_weight with the same first dimension. {received}, "
            f"sample_weight of shape {_shapes(sample_weight)}"
        )


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
    return keras.tree.map_structure(
        lambda value: None if value is None else ops.convert_to_tensor(value),
        structure,
    )


def _as_numpy(structure):
    return keras.tree.map_structure(
        lambda value: None if value is None else ops.convert_to_numpy(value),
        structure,
    )


def probe_function(
    model,
    named_layers,
    gate_statistics=True,
    jacobians=False,
    jacobian_samples=4,
):
    """A compiled probe for repeated measurements on batches of one shape.

    Runs what `timestep_gradients` and `keras_gated.gate_outputs`
    compute, in one call (the gates are those of the measured forward
    pass). On TensorFlow it is compiled with `tf.function`: after the
    first call (which traces), each call costs about a forward and a
    backward pass in graph mode (plus the Jacobians' pass if asked for);
    on JAX it is a `jax.jit` of the measurement as a function of the
    variables' values (the first call compiles it); on PyTorch it runs
    eagerly. Like
    `timestep_gradients`, it leaves the model's metrics and the states of
    its stateful layers as they were.

    Args:
        model: A compiled `keras.Model`.
        named_layers: `(name, layer)` pairs from `select_layers`.
        gate_statistics: Also return the gates of the LSTM, GRU and
            SimpleRNN layers among `named_layers` (SimpleRNN's
            pre-activations).
        jacobians, jacobian_samples: as for `timestep_gradients`.

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
    shown = gated if gate_statistics else set()

    def probe(x, y, sample_weight):
        norms, gates, masks = gradient_norm_tensors(
            model,
            x,
            y,
            named_layers,
            sample_weight=sample_weight,
            jacobians=jacobians,
            jacobian_samples=jacobian_samples,
            return_gates=True,
        )
        gates = {
            key: value
            for key, value in gates.items()
            if key.rsplit("/", 1)[0] in shown
        }
        masks = {name: masks[name] for name in shown if name in masks}
        return norms, gates, masks

    for name, layer in named_layers:
        # Twins created now spare the function a second trace.
        if name in gated and layer.built:
            measured_layer(layer)
            if jacobians:
                jacobian_twin(layer)
    compiled = _compiled(probe, model, named_layers, jacobians)

    def run(x, y=None, sample_weight=None):
        with PreservedState(model, named_layers):
            results = compiled(
                _as_tensors(x), _as_tensors(y), _as_tensors(sample_weight)
            )
        return _as_numpy(results)

    return run


def _compiled(probe, model, named_layers, jacobians):
    """`probe` compiled for the backend: a `tf.function` on TensorFlow, a
    `jax.jit` of it as a function of the variables' values on JAX (the
    model's and its twins'), as it is on PyTorch."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # Without AutoGraph, tracing takes a fraction of the time, and
        # nothing is lost: Keras does not convert layers' `call` with it.
        return tf.function(probe, autograph=False)
    if backend != "jax":
        return probe
    import jax

    layers = [model]
    for _, layer in named_layers:
        if inspection.has_gates(layer) and layer.built:
            layers.append(measured_layer(layer))
            if jacobians:
                layers.append(jacobian_twin(layer))
    unique = {id(v): v for layer in layers for v in layer.variables}
    variables = list(unique.values())
    pure = _autodiff.stateless(probe, variables)
    traced = {}

    def keyed(values, x, y, sample_weight):
        result = pure(values, x, y, sample_weight)
        traced["skeleton"] = _skeleton(result)
        return result

    jitted = jax.jit(keyed)

    def run(x, y, sample_weight):
        result = jitted([v.value for v in variables], x, y, sample_weight)
        # jax.jit hands dicts back with their keys sorted.
        return _reordered(result, traced["skeleton"])

    return run


def _skeleton(structure):
    """The nesting and dict key order of `structure`, without its
    tensors."""
    if isinstance(structure, dict):
        return {key: _skeleton(value) for key, value in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(_skeleton(value) for value in structure)
    return None


def _reordered(structure, skeleton):
    """`structure` with its dicts' keys in the order of `skeleton`'s."""
    if isinstance(skeleton, dict):
        return {k: _reordered(structure[k], v) for k, v in skeleton.items()}
    if isinstance(skeleton, (list, tuple)):
        return type(skeleton)(
            _reordered(value, part)
            for value, part in zip(structure, skeleton, strict=True)
        )
    return structure


def _check_measurement(model, x, y, sample_weight, layers, training):
    check_compiled(model)
    named = select_layers(model, layers)
    check_batch(model, x, y, sample_weight)
    check_bool("training", training)
    return named


def timestep_gradients(
    model,
    x,
    y=None,
    layers=None,
    sample_weight=None,
    training=False,
    jacobians=False,
    jacobian_samples=4,
):
    """Per-timestep gradients of the loss for each recurrent layer.

    For one batch, computes the model's loss L as `fit` does
    (`model.compute_loss`: the compiled loss with its sample weighting,
    loss weights and the layers' regularization losses) and, for each
    recurrent layer, one value per timestep t of:

    - `"inputs"`: ||dL/dx_t||, the L2 norm over the batch and features of
      the gradient with respect to the layer's input x_t (every recurrent
      layer: Keras' `SimpleRNN`, `LSTM`, `GRU`, `RNN`, either half of a
      `Bidirectional`, ours);
    - `"hidden"`, `"cell"`: ||dL/dh_t||, ||dL/dc_t|| for the states
      (`"cell"` for LSTMs), total derivatives through the recurrence and
      the layers after this one;
    - `"kernel"`, `"recurrent_kernel"`, `"bias"`: the Frobenius norm of
      the gradient with respect to the copy of that weight used at step t,
      the batch summed as the gradient sums it: the gradient of a
      recurrent weight is the sum of these contributions over t (exactly:
      `check_weight_contributions`; the matrices: `weight_contributions`).
      Zero at masked steps. `"bias"` only with `use_bias`;
    - `"retention"` (LSTMs): the mean over the batch and units of
      prod_{j>t} f_j, the forget gates' product after step t: dc_T/dc_t
      along the cell state alone, the path with no weight product (1 at
      the last step processed; a masked step counts as f = 1); and
      `"retention_q50"`, `"retention_q90"`, `"retention_max"`: the median,
      90th percentile and maximum over the units of its mean over the
      batch, where a few long-memory units show;
    - with `jacobians=True`, `"jacobian_hidden"`: the mean over the first
      `jacobian_samples` sequences of ||dh_T/dh_t||_F, h_t the hidden state
      after step t and h_T the final one, c_t held fixed; for LSTMs
      `"jacobian_cell"`, the same for dc_T/dc_t with h_t held fixed; and
      `"jacobian_hidden_spectral"` (`"jacobian_cell_spectral"`), the mean
      spectral norm. They cost one more forward and backward pass over
      `units` copies of each sample (`2 * units` for an LSTM).

    The states, contributions, retention and Jacobians are computed for
    our layers (`keras_gated.LSTM`, `GRU`, `SimpleRNN`) and for Keras'
    `LSTM`, `GRU` and `SimpleRNN`, which are measured exactly through
    their gate twin (`keras_gated.gate_twin`: the same function, with
    the layer's weights); a `keras.layers.RNN` with another cell gets
    `"inputs"` only. Timestep t is the input's time axis as the user gave
    it, also for `go_backwards` layers and the backward half of a
    `Bidirectional` (whose "last step processed" is t = 0). The norms
    decaying towards t = 0 is the vanishing gradient. A layer called more
    than once accumulates the gradients of its calls (the retention and
    Jacobians are those of its last call). The model's metrics and the
    states of stateful layers are left as they were; the weights are not
    touched.

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
        jacobians: Also compute the Jacobian norms. Default: `False`.
        jacobian_samples: Positive integer, how many sequences of the
            batch (the first ones) the Jacobians are averaged over.
            Default: 4.

    Returns:
        A dict `{layer name: {quantity: np.ndarray of shape (timesteps,)}}`
        with the quantities above that exist for the layer (names in
        `QUANTITIES`). A non-finite gradient gives a non-finite norm at
        that timestep.

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
    >>> norms["lstm"]["recurrent_kernel"].shape, norms["lstm"]["retention"][-1]
    ((20,), 1.0)
    """
    named = _check_measurement(model, x, y, sample_weight, layers, training)
    check_bool("jacobians", jacobians)
    check_positive_int("jacobian_samples", jacobian_samples)
    with PreservedState(model, named):
        norms = gradient_norm_tensors(
            model,
            x,
            y,
            named,
            sample_weight=sample_weight,
            training=training,
            jacobians=jacobians,
            jacobian_samples=jacobian_samples,
        )
    return {
        name: {q: ops.convert_to_numpy(v) for q, v in layer_norms.items()}
        for name, layer_norms in norms.items()
    }


def _contributions(model, x, y, layers, sample_weight, training):
    named = _check_measurement(model, x, y, sample_weight, layers, training)
    with PreservedState(model, named):
        probes, gradients = probe_gradients(
            model, x, y, named, sample_weight, training, weights=True
        )
    results = {}
    for name, probe in probes.items():
        if probe.calls:
            calls = probe.step_gradients(gradients[name]["steps"])
            matrices = decomposition.contribution_matrices(probe.target, calls)
            results[name] = (matrices, gradients[name]["weights"])
    return results


def weight_contributions(
    model, x, y=None, layers=None, sample_weight=None, training=False
):
    """Each timestep's contribution to each recurrent weight's gradient.

    The matrices whose Frobenius norms `timestep_gradients` reports as
    `"kernel"`, `"recurrent_kernel"` and `"bias"`: entry t is the
    gradient of the loss with respect to the copy of the weight used at
    step t, so that their sum over t is the weight's gradient (what `fit`
    applies, less the gradient of the weight's own regularization
    penalty, which belongs to no timestep). For LSTM, GRU and SimpleRNN
    layers, ours and Keras' (through their gate twin).

    Args:
        model, x, y, layers, sample_weight, training: as for
            `timestep_gradients`.

    Returns:
        `{layer name: {"kernel": (timesteps, features, n * units),
        "recurrent_kernel": (timesteps, units, n * units), "bias":
        (timesteps,) + bias.shape}}` NumPy arrays, in the input's time
        order; n is the number of gate blocks (4, 3 or 1).

    Example:

    >>> parts = keras_gated.weight_contributions(model, x, y)
    >>> parts["lstm"]["recurrent_kernel"].shape
    (20, 8, 32)
    """
    return {
        name: {k: ops.convert_to_numpy(v) for k, v in matrices.items()}
        for name, (matrices, _) in _contributions(
            model, x, y, layers, sample_weight, training
        ).items()
    }


def check_weight_contributions(
    model, x, y=None, layers=None, sample_weight=None, training=False
):
    """How exactly the per-step contributions sum to the weight gradients.

    In one forward and backward pass, computes each weight's per-step
    contributions (`weight_contributions`) and its gradient by automatic
    differentiation, and compares their sum with the gradient: the
    identity grad(W) = sum_t dL/dW_t that the decomposition rests on,
    checked on the user's own model and data. (For a Keras built-in layer
    both sides are its gate twin's.)

    Args:
        model, x, y, layers, sample_weight, training: as for
            `timestep_gradients`.

    Returns:
        `{layer name: {weight name: relative error}}`, the relative error
        `max |sum_t C_t - grad| / max |grad|`: float32 rounding, ~1e-7
        to 1e-6 (~1e-4 under the `mixed_float16` policy, whose gradients
        are float16).

    Example:

    >>> keras_gated.check_weight_contributions(model, x, y)["lstm"]
    {'kernel': 2.1e-07, 'recurrent_kernel': 1.6e-07, 'bias': 1.1e-07}
    """
    errors = {}
    for name, (matrices, grads) in _contributions(
        model, x, y, layers, sample_weight, training
    ).items():
        errors[name] = {}
        for (weight, matrix), grad in zip(matrices.items(), grads):
            matrix = ops.convert_to_numpy(matrix)
            total = np.sum(matrix, axis=0, dtype="float64")
            grad = ops.convert_to_numpy(grad).astype("float64")
            scale = np.max(np.abs(grad))
            error = np.max(np.abs(total - grad))
            errors[name][weight] = float(error / scale) if scale else error
    return errors
