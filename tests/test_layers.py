"""keras_gated.LSTM / GRU / SimpleRNN against independent references.

- Keras' own `keras.layers.LSTM` / `GRU` (`use_cudnn=False`) / `SimpleRNN`
  holding the same random weights: outputs, states, weight gradients and
  dropout in training must be equal across the feature grid.
- A NumPy implementation of the LSTM, GRU and vanilla RNN equations,
  written below from the published equations (not from our code), for the
  gate values.
- The LSTM identities c_t = f*c_{t-1} + i*g and h_t = o*tanh(c_t).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import assert_all_close
from harness import call
from harness import gradients
from harness import in_graph
from harness import random_weights
from harness import run_builtin_config_test
from harness import run_layer_test
from harness import split_gates_output
from harness import to_numpy

import keras_gated

pytestmark = pytest.mark.backends

BATCH, TIMESTEPS, FEATURES, UNITS = 3, 6, 4, 5
INPUT_SHAPE = (BATCH, TIMESTEPS, FEATURES)


def _builtin_simple_rnn(*args, use_cudnn=None, **kwargs):
    """keras.layers.SimpleRNN, which has no cuDNN path (nor argument)."""
    return keras.layers.SimpleRNN(*args, **kwargs)


# Our class, the built-in class and the shared arguments for each cell.
CELLS = {
    "lstm": (keras_gated.LSTM, keras.layers.LSTM, {}),
    "gru": (keras_gated.GRU, keras.layers.GRU, {"reset_after": True}),
    "gru_reset_before": (
        keras_gated.GRU,
        keras.layers.GRU,
        {"reset_after": False},
    ),
    "simple_rnn": (keras_gated.SimpleRNN, _builtin_simple_rnn, {}),
}
LSTM_KEYS = {"input", "forget", "candidate", "output", "cell"}
GRU_KEYS = {"update", "reset", "candidate"}
# The keys of each cell's gate dict, and those that are gates (zero at
# masked steps) rather than states.
GATE_KEYS = {
    "lstm": LSTM_KEYS,
    "gru": GRU_KEYS,
    "gru_reset_before": GRU_KEYS,
    "simple_rnn": {"pre_activation"},
}

# Row 0 is left-padded, row 1 has gaps and trailing padding, row 2 is
# fully masked.
EXPLICIT_MASK = np.array(
    [
        [0, 0, 1, 1, 1, 1],
        [1, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0],
    ],
    dtype=bool,
)


# --------------------------------------------------------------------------
# Reference equations, written once over a tiny ops namespace so the same
# code runs in NumPy (float64, for values) and in `keras.ops` on the
# backend under test (for gradients).


class NumPyOps:
    @staticmethod
    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    tanh = staticmethod(np.tanh)
    where = staticmethod(np.where)

    @staticmethod
    def stack(values):
        return np.stack(values, axis=1)

    @staticmethod
    def zeros(shape):
        return np.zeros(shape)


class KerasOps:
    sigmoid = staticmethod(keras.ops.sigmoid)
    tanh = staticmethod(keras.ops.tanh)
    where = staticmethod(keras.ops.where)

    @staticmethod
    def stack(values):
        return keras.ops.stack(values, axis=1)

    @staticmethod
    def zeros(shape):
        return keras.ops.zeros(shape)


def reference_rnn(
    cell,
    x,
    weights,
    mask=None,
    initial_state=None,
    go_backwards=False,
    ops=NumPyOps,
    repeats_state=False,
):
    """The LSTM / GRU / vanilla RNN recurrence with Keras' masking rules.

    Args:
        cell: a key of `CELLS`.
        x: `(batch, timesteps, features)`.
        weights: `[kernel, recurrent_kernel, bias]` in Keras' layout.
        mask: None or boolean `(batch, timesteps)`; a False step keeps the
            states, repeats the previous output (zeros before the first
            valid step, or the initial state with `repeats_state`) and has
            zero gates.
        repeats_state: Keras' JAX backend's scan (`unroll=False`).

    Returns:
        A dict: "outputs" `(batch, timesteps, units)` and "gates" (dict of
        such sequences) in processing order, "last_output", "states".
    """
    kernel, recurrent_kernel, bias = weights
    batch, timesteps = x.shape[0], x.shape[1]
    u = recurrent_kernel.shape[0]
    lstm = cell == "lstm"
    reset_after = CELLS[cell][2].get("reset_after")
    if initial_state is None:
        states = [ops.zeros((batch, u))] * (2 if lstm else 1)
    else:
        states = list(initial_state)
    order = range(timesteps)[::-1] if go_backwards else range(timesteps)
    # Keras outputs zeros at masked steps before the first valid one, but
    # for its JAX backend's scan, which repeats the initial state there.
    previous_output = states[0] if repeats_state else ops.zeros((batch, u))
    outputs, gate_steps = [], []
    for t in order:
        x_t = x[:, t]
        if lstm:
            h_prev, c_prev = states
            z = x_t @ kernel + h_prev @ recurrent_kernel + bias
            i = ops.sigmoid(z[:, :u])
            f = ops.sigmoid(z[:, u : 2 * u])
            g = ops.tanh(z[:, 2 * u : 3 * u])
            o = ops.sigmoid(z[:, 3 * u :])
            c = f * c_prev + i * g
            h = o * ops.tanh(c)
            new_states = [h, c]
            gates = {"input": i, "forget": f, "candidate": g, "output": o}
        elif cell == "simple_rnn":
            (h_prev,) = states
            z = x_t @ kernel + h_prev @ recurrent_kernel + bias
            h = ops.tanh(z)
            new_states = [h]
            gates = {"pre_activation": z}
        else:
            (h_prev,) = states
            if reset_after:
                xw = x_t @ kernel + bias[0]
                hu = h_prev @ recurrent_kernel + bias[1]
                z = ops.sigmoid(xw[:, :u] + hu[:, :u])
                r = ops.sigmoid(xw[:, u : 2 * u] + hu[:, u : 2 * u])
                n = ops.tanh(xw[:, 2 * u :] + r * hu[:, 2 * u :])
            else:
                xw = x_t @ kernel + bias
                z = ops.sigmoid(xw[:, :u] + h_prev @ recurrent_kernel[:, :u])
                r = ops.sigmoid(
                    xw[:, u : 2 * u] + h_prev @ recurrent_kernel[:, u : 2 * u]
                )
                n = ops.tanh(
                    xw[:, 2 * u :] + (r * h_prev) @ recurrent_kernel[:, 2 * u :]
                )
            h = z * h_prev + (1 - z) * n
            new_states = [h]
            gates = {"update": z, "reset": r, "candidate": n}
        if mask is None:
            output = h
        else:
            keep = np.asarray(mask)[:, t][:, None]
            new_states = [
                ops.where(keep, new, old)
                for new, old in zip(new_states, states, strict=True)
            ]
            output = ops.where(keep, h, previous_output)
            gates = {k: ops.where(keep, v, 0.0 * v) for k, v in gates.items()}
        states = new_states
        previous_output = output
        if lstm:
            gates["cell"] = states[1]
        outputs.append(output)
        gate_steps.append(gates)
    return {
        "outputs": ops.stack(outputs),
        "last_output": previous_output,
        "states": states,
        "gates": {
            name: ops.stack([g[name] for g in gate_steps])
            for name in gate_steps[0]
        },
    }


# --------------------------------------------------------------------------
# Helpers.


def build_twins(cell, variants=({},), input_shape=INPUT_SHAPE, **kw):
    """The built-in layer with random weights and ours with the same.

    Returns `(builtin, [ours for each dict of extra arguments in variants])`.
    Layers are built, not called, so no dropout mask is drawn yet.
    """
    ours_class, builtin_class, cell_kwargs = CELLS[cell]
    builtin = builtin_class(UNITS, use_cudnn=False, **cell_kwargs, **kw)
    builtin.build(input_shape)
    weights = random_weights(builtin)
    ours = []
    for extra in variants:
        layer = ours_class(UNITS, **cell_kwargs, **kw, **extra)
        layer.build(input_shape)
        if layer.stateful:
            # Only the cell's weights: test_stateful_weights_match_builtin
            # checks `set_weights` on stateful layers on its own.
            for variable, value in zip(
                layer.trainable_weights, weights, strict=True
            ):
                variable.assign(value)
        else:
            layer.set_weights(weights)
        ours.append(layer)
    return builtin, ours


def sequence_inputs(masking, seed=0):
    """`(layer input, mask argument, boolean mask for the reference, x)`."""
    x = (
        np.random.default_rng(seed)
        .standard_normal(INPUT_SHAPE)
        .astype("float32")
    )
    if masking == "none":
        return x, None, None, x
    if masking == "masking_layer":
        x[0, 4:] = 0.0
        x[1, :2] = 0.0
        x[1, 3] = 0.0
        mask = np.any(x != 0, axis=-1)
        return keras.layers.Masking()(x), None, mask, x
    assert masking == "explicit"
    return x, EXPLICIT_MASK, EXPLICIT_MASK, x


def jax_scan(unroll):
    """Whether Keras' built-ins run JAX's scan here (see `reference_rnn`)."""
    return keras.backend.backend() == "jax" and not unroll


def float64_weights(layer):
    return [w.astype("float64") for w in layer.get_weights()]


def random_initial_state(cell, seed=5):
    rng = np.random.default_rng(seed)
    count = 2 if cell == "lstm" else 1
    return [
        (0.5 * rng.standard_normal((BATCH, UNITS))).astype("float32")
        for _ in range(count)
    ]


# --------------------------------------------------------------------------
# Parity with the built-in layers across the feature grid.


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize(
    "return_state", [False, True], ids=["nostate", "state"]
)
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
@pytest.mark.parametrize("masking", ["none", "masking_layer", "explicit"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fw", "bw"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_matches_builtin(
    cell, go_backwards, masking, return_sequences, return_state, unroll
):
    builtin, (ours, ours_gates) = build_twins(
        cell,
        variants=({}, {"return_gates": True}),
        go_backwards=go_backwards,
        return_sequences=return_sequences,
        return_state=return_state,
        unroll=unroll,
    )
    inputs, mask, _, _ = sequence_inputs(masking)
    expected = call(builtin, inputs, mask)
    assert_all_close(call(ours, inputs, mask), expected, what="gates off")
    outputs, gates = split_gates_output(
        ours_gates, call(ours_gates, inputs, mask)
    )
    assert_all_close(outputs, expected, what="gates on")
    assert set(gates) == GATE_KEYS[cell]


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("masking", ["none", "explicit"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fw", "bw"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_inference_dropout_matches_builtin(cell, go_backwards, masking, unroll):
    # Dropout only applies in training: at inference the layer must equal
    # the built-in (and therefore ignore the masks it draws).
    builtin, (ours, ours_gates) = build_twins(
        cell,
        variants=({}, {"return_gates": True}),
        dropout=0.4,
        recurrent_dropout=0.3,
        seed=3,
        go_backwards=go_backwards,
        return_sequences=True,
        return_state=True,
        unroll=unroll,
    )
    inputs, mask, _, _ = sequence_inputs(masking)
    for training in (None, False):
        expected = call(builtin, inputs, mask, training=training)
        assert_all_close(call(ours, inputs, mask, training=training), expected)
        outputs, _ = split_gates_output(
            ours_gates, call(ours_gates, inputs, mask, training=training)
        )
        assert_all_close(outputs, expected)


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("masking", ["none", "explicit"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fw", "bw"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_stateful_matches_builtin(cell, go_backwards, masking, unroll):
    builtin, (ours, ours_gates) = build_twins(
        cell,
        variants=({}, {"return_gates": True}),
        stateful=True,
        go_backwards=go_backwards,
        return_sequences=True,
        return_state=True,
        unroll=unroll,
    )
    first, mask, np_mask, _ = sequence_inputs(masking, seed=0)
    second, _, _, x_second = sequence_inputs(masking, seed=1)
    expected_first = call(builtin, first, mask)
    assert_all_close(call(ours, first, mask), expected_first, what="batch 1")
    call(ours_gates, first, mask)
    for layer in (ours, ours_gates):
        assert_all_close(
            [s.numpy() for s in layer.states],
            [s.numpy() for s in builtin.states],
            what="state variables after batch 1",
        )
    carried = [to_numpy(s) for s in expected_first[1:]]

    # The second batch starts from the states the first one ended with.
    expected = call(builtin, second, mask)
    assert_all_close(call(ours, second, mask), expected, what="batch 2")
    outputs, gates = split_gates_output(
        ours_gates, call(ours_gates, second, mask)
    )
    assert_all_close(outputs, expected, what="batch 2, gates on")
    reference = reference_rnn(
        cell,
        x_second.astype("float64"),
        float64_weights(builtin),
        mask=np_mask,
        initial_state=[s.astype("float64") for s in carried],
        go_backwards=go_backwards,
    )
    assert_all_close(gates, reference["gates"], what="batch 2 gates")

    for layer in (builtin, ours, ours_gates):
        layer.reset_state()
    for layer in (ours, ours_gates):
        for state in layer.states:
            np.testing.assert_array_equal(state.numpy(), 0.0)
    expected = call(builtin, second, mask)
    assert_all_close(call(ours, second, mask), expected, what="after reset")
    outputs, _ = split_gates_output(ours_gates, call(ours_gates, second, mask))
    assert_all_close(outputs, expected, what="after reset, gates on")


@pytest.mark.parametrize("cell", list(CELLS))
def test_stateful_weights_match_builtin(cell):
    # The state variables are not weights, as in Keras: a stateful layer
    # has the same weight list as the built-in, so set_weights and weight
    # files carry over between the two.
    ours_class, builtin_class, cell_kwargs = CELLS[cell]
    builtin = builtin_class(UNITS, stateful=True, **cell_kwargs)
    ours = ours_class(UNITS, stateful=True, **cell_kwargs)
    builtin.build(INPUT_SHAPE)
    ours.build(INPUT_SHAPE)

    def paths(layer):  # without the layer's own (auto-numbered) name
        return [w.path.split("/", 1)[1] for w in layer.weights]

    assert paths(ours) == paths(builtin)
    weights = random_weights(builtin)
    ours.set_weights(weights)
    x = sequence_inputs("none")[0]
    assert_all_close(ours(x), builtin(x))


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("masking", ["none", "explicit"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fw", "bw"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_initial_state_matches_builtin(cell, go_backwards, masking, unroll):
    builtin, (ours, ours_gates) = build_twins(
        cell,
        variants=({}, {"return_gates": True}),
        go_backwards=go_backwards,
        return_sequences=True,
        return_state=True,
        unroll=unroll,
    )
    inputs, mask, _, _ = sequence_inputs(masking)
    initial_state = random_initial_state(cell)
    expected = call(builtin, inputs, mask, initial_state=initial_state)
    actual = call(ours, inputs, mask, initial_state=initial_state)
    assert_all_close(actual, expected)
    outputs, _ = split_gates_output(
        ours_gates,
        call(ours_gates, inputs, mask, initial_state=initial_state),
    )
    assert_all_close(outputs, expected, what="gates on")


@pytest.mark.parametrize("cell", list(CELLS))
def test_initial_state_from_model_inputs(cell):
    ours_class, builtin_class, cell_kwargs = CELLS[cell]
    builtin, _ = build_twins(cell)
    initial_state = random_initial_state(cell)
    x = sequence_inputs("none")[0]

    def model_for(layer):
        inputs = keras.Input((TIMESTEPS, FEATURES))
        states = [keras.Input((UNITS,)) for _ in initial_state]
        outputs = layer(inputs, initial_state=states)
        return keras.Model([inputs, *states], outputs)

    reference = model_for(builtin_class(UNITS, use_cudnn=False, **cell_kwargs))
    ours = model_for(ours_class(UNITS, **cell_kwargs))
    reference.set_weights(builtin.get_weights())
    ours.set_weights(builtin.get_weights())
    assert_all_close(ours([x, *initial_state]), reference([x, *initial_state]))


# --------------------------------------------------------------------------
# Gradients.


def _readouts(structure, seed=7):
    rng = np.random.default_rng(seed)
    return [
        keras.ops.convert_to_tensor(
            rng.standard_normal(t.shape).astype("float32")
        )
        for t in keras.tree.flatten(structure)
    ]


def _weighted_sum(structure, readouts):
    return sum(
        keras.ops.sum(keras.ops.cast(t, "float32") * r)
        for t, r in zip(keras.tree.flatten(structure), readouts, strict=True)
    )


def assert_gradients_close(actual, expected, what):
    # 1e-5 relative to the size of each gradient.
    for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
        a, e = to_numpy(a), to_numpy(e)
        scale = max(float(np.max(np.abs(e))), 1e-3)
        np.testing.assert_allclose(
            a, e, rtol=1e-5, atol=1e-5 * scale, err_msg=f"{what} [{index}]"
        )


def gradients_of_outputs(layers, x, mask, initial_state=None, **kwargs):
    """d(random readout of the outputs) / d(weights, x, initial states).

    The gate dict, if returned, is left out of the loss; the readout is
    drawn once, from the first layer's outputs, and shared.
    """
    readouts = None
    initial_state = initial_state or []
    all_gradients = []
    for layer in layers:

        def loss(x, *initial_state, layer=layer):
            nonlocal readouts
            outputs, _ = split_gates_output(
                layer,
                call(
                    layer,
                    x,
                    mask,
                    initial_state=list(initial_state) or None,
                    **kwargs,
                ),
            )
            if readouts is None:
                readouts = _readouts(outputs)
            return _weighted_sum(outputs, readouts)

        all_gradients.append(
            gradients(loss, layer.trainable_weights, [x, *initial_state])
        )
    return all_gradients


@pytest.mark.parametrize(
    "return_sequences, return_gates",
    [(True, False), (True, True), (False, True)],
    ids=["seq", "seq-gates", "last-gates"],
)
@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("masking", ["none", "explicit"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fw", "bw"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_weight_gradients_match_builtin(
    cell, go_backwards, masking, unroll, return_sequences, return_gates
):
    builtin, (ours,) = build_twins(
        cell,
        variants=({"return_gates": return_gates},),
        go_backwards=go_backwards,
        return_sequences=return_sequences,
        return_state=True,
        unroll=unroll,
    )
    inputs, mask, _, _ = sequence_inputs(masking)
    initial_state = [
        keras.ops.convert_to_tensor(s) for s in random_initial_state(cell)
    ]
    expected, actual = gradients_of_outputs(
        (builtin, ours), inputs, mask, initial_state
    )
    assert_gradients_close(actual, expected, "d loss / d weights, x, h0")


# Arguments that take a layer off its default (fast) path.
OPTIONS = {
    "no_bias": {"use_bias": False},
    "relu_hard_sigmoid": {
        "activation": "relu",
        "recurrent_activation": "hard_sigmoid",
    },
    "linear_activation": {"activation": None},
    "no_bias_relu": {"use_bias": False, "activation": "relu"},
}


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("cell", list(CELLS))
def test_options_match_builtin(cell, options, unroll):
    options = dict(OPTIONS[options])
    if cell == "simple_rnn":  # it has no gates, nor their activation
        options.pop("recurrent_activation", None)
    builtin, (ours, ours_gates) = build_twins(
        cell,
        variants=({}, {"return_gates": True}),
        go_backwards=True,
        return_sequences=True,
        return_state=True,
        unroll=unroll,
        **options,
    )
    inputs, mask, _, _ = sequence_inputs("explicit")
    initial_state = [
        keras.ops.convert_to_tensor(s) for s in random_initial_state(cell)
    ]
    expected = call(builtin, inputs, mask, initial_state=initial_state)
    assert_all_close(
        call(ours, inputs, mask, initial_state=initial_state), expected
    )
    reference, actual, actual_gates = gradients_of_outputs(
        (builtin, ours, ours_gates), inputs, mask, initial_state
    )
    assert_gradients_close(actual, reference, "gates off")
    assert_gradients_close(actual_gates, reference, "gates on")


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("masking", ["none", "explicit"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_xla_gradients_match_reference(cell, masking):
    # Under jit_compile the gates, the outputs and the gradient of a loss
    # on both equal the reference equations run eagerly.
    builtin, (ours,) = build_twins(
        cell,
        variants=({"return_gates": True},),
        go_backwards=True,
        return_sequences=True,
    )
    _, mask, np_mask, x = sequence_inputs(masking)
    x = tf.constant(x)
    weights = [tf.constant(w) for w in builtin.get_weights()]
    reference = reference_rnn(
        cell, x, weights, mask=np_mask, go_backwards=True, ops=KerasOps
    )
    readouts = _readouts((reference["outputs"], reference["gates"]))

    @tf.function(jit_compile=True)
    def compiled(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            result = call(ours, x, mask)
            loss = _weighted_sum(result, readouts)
        return result, tape.gradient(loss, [*ours.trainable_weights, x])

    result, actual = compiled(x)
    assert_all_close(result, (reference["outputs"], reference["gates"]))
    with tf.GradientTape() as tape:
        tape.watch([x, *weights])
        reference = reference_rnn(
            cell,
            x,
            weights,
            mask=np_mask,
            go_backwards=True,
            ops=KerasOps,
        )
        loss = _weighted_sum(
            (reference["outputs"], reference["gates"]), readouts
        )
    expected = tape.gradient(loss, [*weights, x])
    assert_gradients_close(actual, expected, "XLA gradients")


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("masking", ["none", "explicit"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fw", "bw"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_gate_gradients_match_reference(cell, go_backwards, masking, unroll):
    # A loss on the returned gates (and outputs) differentiates like the
    # reference equations written in TensorFlow.
    builtin, (ours,) = build_twins(
        cell,
        variants=({"return_gates": True},),
        go_backwards=go_backwards,
        return_sequences=True,
        unroll=unroll,
    )
    _, mask, np_mask, x = sequence_inputs(masking)
    readouts = _readouts(call(ours, x, mask))

    def loss(x):
        return _weighted_sum(call(ours, x, mask), readouts)

    def reference_loss(x, *weights):
        reference = reference_rnn(
            cell,
            x,
            weights,
            mask=np_mask,
            go_backwards=go_backwards,
            ops=KerasOps,
        )
        return _weighted_sum(
            (reference["outputs"], reference["gates"]), readouts
        )

    actual = gradients(loss, ours.trainable_weights, [x])
    expected = gradients(reference_loss, (), [x, *builtin.get_weights()])
    expected = expected[1:] + expected[:1]
    assert_gradients_close(actual, expected, "d gate loss / d weights")


# --------------------------------------------------------------------------
# Dropout in training: same seed, same masks, same outputs as the built-in.

DROPOUT_RATES = {
    "dropout": (0.4, 0.0),
    "recurrent_dropout": (0.0, 0.4),
    "both": (0.3, 0.3),
}


@pytest.mark.parametrize(
    "rates, run",
    [
        ("dropout", "eager"),
        ("recurrent_dropout", "eager"),
        ("both", "eager"),
        ("both", "eager_unroll"),
        ("both", "graph"),
    ],
)
@pytest.mark.parametrize("cell", list(CELLS))
def test_training_dropout_matches_builtin(cell, rates, run):
    dropout, recurrent_dropout = DROPOUT_RATES[rates]
    builtin, (ours,) = build_twins(
        cell,
        dropout=dropout,
        recurrent_dropout=recurrent_dropout,
        seed=11,
        return_sequences=True,
        return_state=True,
        unroll=run == "eager_unroll",
    )
    inputs, mask, _, _ = sequence_inputs("explicit")

    def runner(layer):
        def forward(x):
            return call(layer, x, mask, training=True)

        return in_graph(forward) if run == "graph" else forward

    run_builtin, run_ours = runner(builtin), runner(ours)
    # Twice: each call draws fresh masks, in step with the built-in.
    for attempt in range(2):
        expected = run_builtin(inputs)
        assert_all_close(run_ours(inputs), expected, what=f"call {attempt}")
    inference = call(builtin, inputs, mask, training=False)
    assert not np.allclose(to_numpy(expected[0]), to_numpy(inference[0]))


@pytest.mark.parametrize("rates", list(DROPOUT_RATES))
@pytest.mark.parametrize("cell", list(CELLS))
def test_training_dropout_gradients_match_builtin(cell, rates):
    dropout, recurrent_dropout = DROPOUT_RATES[rates]
    builtin, (ours,) = build_twins(
        cell,
        variants=({"return_gates": True},),
        dropout=dropout,
        recurrent_dropout=recurrent_dropout,
        seed=5,
        return_sequences=True,
    )
    x = sequence_inputs("none")[0]
    expected, actual = gradients_of_outputs(
        (builtin, ours), x, EXPLICIT_MASK, training=True
    )
    assert_gradients_close(actual, expected, "dropout gradients")


# --------------------------------------------------------------------------
# Gate values against the NumPy equations, and gate semantics.


@pytest.mark.parametrize(
    "return_sequences, with_initial_state",
    [(True, False), (False, True)],
    ids=["seq", "last+initial_state"],
)
@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("masking", ["none", "explicit"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fw", "bw"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_gates_match_numpy(
    cell, go_backwards, masking, unroll, return_sequences, with_initial_state
):
    builtin, (ours,) = build_twins(
        cell,
        variants=({"return_gates": True},),
        go_backwards=go_backwards,
        return_sequences=return_sequences,
        return_state=True,
        unroll=unroll,
    )
    inputs, mask, np_mask, x = sequence_inputs(masking)
    initial_state = random_initial_state(cell) if with_initial_state else None
    outputs, *states, gates = call(
        ours, inputs, mask, initial_state=initial_state
    )
    reference = reference_rnn(
        cell,
        x.astype("float64"),
        float64_weights(builtin),
        mask=np_mask,
        initial_state=initial_state,
        go_backwards=go_backwards,
        repeats_state=jax_scan(unroll),
    )
    expected_outputs = reference[
        "outputs" if return_sequences else "last_output"
    ]
    assert_all_close(outputs, expected_outputs, what="outputs")
    assert_all_close(states, reference["states"], what="states")
    # The full sequences, even with return_sequences=False.
    for name, value in gates.items():
        assert tuple(value.shape) == (BATCH, TIMESTEPS, UNITS), name
    assert_all_close(gates, reference["gates"], what="gates")


@pytest.mark.parametrize("masking", ["none", "explicit"])
@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["fw", "bw"])
def test_lstm_identities_on_returned_gates(go_backwards, unroll, masking):
    _, (ours,) = build_twins(
        "lstm",
        variants=({"return_gates": True},),
        go_backwards=go_backwards,
        return_sequences=True,
        unroll=unroll,
    )
    inputs, mask, np_mask, _ = sequence_inputs(masking)
    h0, c0 = random_initial_state("lstm")
    outputs, gates = call(ours, inputs, mask, initial_state=[h0, c0])
    outputs = to_numpy(outputs)
    g = {name: to_numpy(value) for name, value in gates.items()}
    c_prev = np.concatenate([c0[:, None], g["cell"][:, :-1]], axis=1)
    valid = np.ones((BATCH, TIMESTEPS), bool)
    if np_mask is not None:
        valid = np_mask[:, ::-1] if go_backwards else np_mask
    # c_t = f * c_{t-1} + i * g and h_t = o * tanh(c_t) at every valid step.
    cell_update = g["forget"] * c_prev + g["input"] * g["candidate"]
    np.testing.assert_allclose(
        g["cell"][valid], cell_update[valid], atol=1e-5, rtol=1e-5
    )
    np.testing.assert_allclose(
        outputs[valid],
        (g["output"] * np.tanh(g["cell"]))[valid],
        atol=1e-5,
        rtol=1e-5,
    )
    assert valid.any()


@pytest.mark.parametrize("go_backwards", [False, True], ids=["fw", "bw"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_gates_zero_at_masked_steps_and_cell_carries(cell, go_backwards):
    _, (ours,) = build_twins(
        cell,
        variants=({"return_gates": True},),
        go_backwards=go_backwards,
        return_sequences=True,
        return_state=True,
    )
    inputs, mask, np_mask, _ = sequence_inputs("explicit")
    initial_state = random_initial_state(cell)
    outputs, *states, gates = call(
        ours, inputs, mask, initial_state=initial_state
    )
    processing_mask = np_mask[:, ::-1] if go_backwards else np_mask
    for name in GATE_KEYS[cell] - {"cell"}:
        value = to_numpy(gates[name])
        np.testing.assert_array_equal(value[~processing_mask], 0.0, name)
        assert np.all(value[processing_mask] != 0.0), name
    # The fully masked row keeps its initial state and outputs zeros (its
    # initial state on JAX, as Keras' scan there does).
    np.testing.assert_allclose(to_numpy(states[0])[2], initial_state[0][2])
    expected = initial_state[0][2] if jax_scan(unroll=False) else 0.0
    np.testing.assert_array_equal(
        to_numpy(outputs)[2], np.broadcast_to(expected, (6, UNITS))
    )
    if cell == "lstm":
        cell_state = to_numpy(gates["cell"])
        np.testing.assert_allclose(
            cell_state[2], np.broadcast_to(initial_state[1][2], (6, UNITS))
        )
        # Elsewhere a masked step repeats the previous step's cell state.
        previous = np.concatenate(
            [initial_state[1][:, None], cell_state[:, :-1]], axis=1
        )
        np.testing.assert_array_equal(
            cell_state[~processing_mask], previous[~processing_mask]
        )


@pytest.mark.parametrize("unroll", [False, True], ids=["loop", "unroll"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_go_backwards_gates_in_processing_order(cell, unroll):
    # Running backwards over x equals running forwards over x reversed in
    # time: outputs and gates alike come out in processing order.
    x = sequence_inputs("none")[0]
    _, (backwards, forwards) = build_twins(
        cell,
        variants=(
            {"return_gates": True, "go_backwards": True},
            {"return_gates": True},
        ),
        return_sequences=True,
        unroll=unroll,
    )
    reference = reference_rnn(
        cell, x[:, ::-1].astype("float64"), float64_weights(backwards)
    )
    assert_all_close(backwards(x), (reference["outputs"], reference["gates"]))
    assert_all_close(backwards(x), forwards(x[:, ::-1]))


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
@pytest.mark.parametrize(
    "return_state", [False, True], ids=["nostate", "state"]
)
@pytest.mark.parametrize("cell", list(CELLS))
def test_output_structure(cell, return_state, return_sequences):
    _, (ours,) = build_twins(
        cell,
        variants=({"return_gates": True},),
        return_state=return_state,
        return_sequences=return_sequences,
    )
    keys = GATE_KEYS[cell]
    n_states = (2 if cell == "lstm" else 1) if return_state else 0
    output_shape = (TIMESTEPS, UNITS) if return_sequences else (UNITS,)
    x = sequence_inputs("none")[0]
    for result in (ours(x), ours(keras.Input((TIMESTEPS, FEATURES)))):
        assert isinstance(result, (tuple, list))
        assert len(result) == 2 + n_states
        outputs, *states, gates = result
        assert tuple(outputs.shape)[1:] == output_shape
        for state in states:
            assert tuple(state.shape)[1:] == (UNITS,)
        assert isinstance(gates, dict)
        assert set(gates) == keys
        for value in gates.values():
            assert tuple(value.shape)[1:] == (TIMESTEPS, UNITS)


# --------------------------------------------------------------------------
# Mixed precision.


@pytest.mark.parametrize("cell", list(CELLS))
def test_mixed_precision(mixed_policy, cell):
    compute_dtype = mixed_policy.split("_")[1]
    tolerance = 1e-2 if compute_dtype == "float16" else 5e-2
    ours_class, builtin_class, cell_kwargs = CELLS[cell]
    reference = builtin_class(
        UNITS,
        use_cudnn=False,
        return_sequences=True,
        dtype="float32",
        **cell_kwargs,
    )
    reference.build(INPUT_SHAPE)
    weights = random_weights(reference)
    ours = ours_class(
        UNITS,
        return_sequences=True,
        return_state=True,
        return_gates=True,
        **cell_kwargs,
    )
    ours.build(INPUT_SHAPE)
    ours.set_weights(weights)
    assert all(w.dtype == "float32" for w in ours.weights)
    inputs, mask, np_mask, x = sequence_inputs("explicit")
    outputs, *states, gates = call(ours, inputs, mask)
    for value in [outputs, *states, *gates.values()]:
        assert keras.backend.standardize_dtype(value.dtype) == compute_dtype
    np.testing.assert_allclose(
        to_numpy(outputs).astype("float32"),
        to_numpy(call(reference, inputs, mask)),
        atol=tolerance,
    )
    expected_gates = reference_rnn(
        cell, x.astype("float64"), float64_weights(reference), mask=np_mask
    )["gates"]
    for name, value in gates.items():
        np.testing.assert_allclose(
            to_numpy(value).astype("float32"),
            expected_gates[name],
            atol=tolerance,
            err_msg=name,
        )


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_mixed_precision_fit_step(mixed_policy, cell):
    # One fit step under the policy (loss scaling included for float16)
    # moves the weights like the built-in's under the same policy.
    ours_class, builtin_class, cell_kwargs = CELLS[cell]
    x = sequence_inputs("none")[0]
    y = np.random.default_rng(3).standard_normal((BATCH, 1)).astype("float32")
    weights, trained = None, []
    for layer in (
        builtin_class(UNITS, use_cudnn=False, **cell_kwargs),
        ours_class(UNITS, **cell_kwargs),
    ):
        model = keras.Sequential(
            [keras.Input((TIMESTEPS, FEATURES)), layer, keras.layers.Dense(1)]
        )
        if weights is None:
            weights = random_weights(model, scale=0.3)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        trained.append(model.get_weights())
    for ref, ours in zip(*trained, strict=True):
        assert np.all(np.isfinite(ours))
        np.testing.assert_allclose(ours, ref, atol=1e-2)
    assert not np.allclose(trained[1][0], weights[0])


# --------------------------------------------------------------------------
# Wrappers and models.


@pytest.mark.parametrize(
    "merge_mode, masking, return_state",
    [
        ("concat", "none", False),
        ("concat", "explicit", False),
        ("sum", "none", False),
        ("sum", "explicit", False),
        ("concat", "explicit", True),
    ],
)
@pytest.mark.parametrize("cell", list(CELLS))
def test_bidirectional_matches_builtin(cell, merge_mode, masking, return_state):
    ours_class, builtin_class, cell_kwargs = CELLS[cell]
    kwargs = dict(return_sequences=True, return_state=return_state)
    builtin = keras.layers.Bidirectional(
        builtin_class(UNITS, use_cudnn=False, **cell_kwargs, **kwargs),
        merge_mode=merge_mode,
    )
    ours = keras.layers.Bidirectional(
        ours_class(UNITS, **cell_kwargs, **kwargs), merge_mode=merge_mode
    )
    inputs, mask, _, _ = sequence_inputs(masking)
    call(builtin, inputs, mask)
    call(ours, inputs, mask)
    ours.set_weights(random_weights(builtin))
    assert_all_close(call(ours, inputs, mask), call(builtin, inputs, mask))


@pytest.mark.parametrize("cell", list(CELLS))
def test_bidirectional_rejects_return_gates(cell):
    ours_class, _, cell_kwargs = CELLS[cell]
    layer = ours_class(
        UNITS, return_sequences=True, return_gates=True, **cell_kwargs
    )
    with pytest.raises(ValueError, match="return_gates"):
        keras.layers.Bidirectional(layer)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_time_distributed_matches_builtin(cell, return_sequences):
    ours_class, builtin_class, cell_kwargs = CELLS[cell]
    x = (
        np.random.default_rng(0)
        .standard_normal((BATCH, 2, TIMESTEPS, FEATURES))
        .astype("float32")
    )
    builtin = keras.layers.TimeDistributed(
        builtin_class(
            UNITS,
            use_cudnn=False,
            return_sequences=return_sequences,
            **cell_kwargs,
        )
    )
    ours = keras.layers.TimeDistributed(
        ours_class(UNITS, return_sequences=return_sequences, **cell_kwargs)
    )
    builtin(x)
    ours(x)
    ours.set_weights(random_weights(builtin))
    expected = builtin(x)
    assert tuple(expected.shape)[:2] == (BATCH, 2)
    assert_all_close(ours(x), expected)


def _library(ours):
    """Constructors for the model builders: ours or the built-ins."""
    if ours:
        return keras_gated.LSTM, keras_gated.GRU
    return (
        lambda *a, **k: keras.layers.LSTM(*a, use_cudnn=False, **k),
        lambda *a, **k: keras.layers.GRU(*a, use_cudnn=False, **k),
    )


class SubclassedModel(keras.Model):
    def __init__(self, ours, **kwargs):
        super().__init__(**kwargs)
        lstm, gru = _library(ours)
        self.lstm = lstm(UNITS, return_sequences=True)
        self.gru = gru(UNITS, reset_after=False, return_state=True)
        self.head = keras.layers.Dense(1)

    def call(self, inputs, training=False):
        sequence = self.lstm(inputs, training=training)
        last, state = self.gru(sequence, training=training)
        return self.head(last + state)


def build_model(kind, ours):
    lstm, gru = _library(ours)
    if kind == "sequential":
        return keras.Sequential(
            [
                keras.Input((TIMESTEPS, FEATURES)),
                keras.layers.Masking(),
                lstm(UNITS, return_sequences=True, go_backwards=True),
                gru(UNITS),
                keras.layers.Dense(1),
            ]
        )
    if kind == "functional":
        tokens = keras.Input((TIMESTEPS,), dtype="int32")
        embedded = keras.layers.Embedding(10, FEATURES, mask_zero=True)(tokens)
        sequence = lstm(UNITS, return_sequences=True)(embedded)
        last = gru(UNITS)(sequence)
        return keras.Model(tokens, keras.layers.Dense(1)(last))
    model = SubclassedModel(ours)
    model(np.zeros(INPUT_SHAPE, "float32"))
    return model


def model_data(kind):
    rng = np.random.default_rng(4)
    if kind == "functional":
        tokens = rng.integers(1, 10, (BATCH, TIMESTEPS))
        tokens[0, :2] = 0
        tokens[1, 4:] = 0
        return tokens.astype("int32")
    x = rng.standard_normal(INPUT_SHAPE).astype("float32")
    if kind == "sequential":
        x[0, 4:] = 0.0
    return x


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_models_match_builtin(kind):
    x = model_data(kind)
    y = np.random.default_rng(5).standard_normal((BATCH, 1)).astype("float32")
    reference, ours = build_model(kind, ours=False), build_model(kind, True)
    ours.set_weights(random_weights(reference, scale=0.3))
    assert_all_close(ours(x), reference(x), what="call")
    assert_all_close(
        ours.predict(x, verbose=0), reference.predict(x, verbose=0)
    )
    for model in (reference, ours):
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    assert_all_close(
        ours.get_weights(), reference.get_weights(), what="after fit"
    )


@pytest.mark.parametrize("direction", ["builtin_to_ours", "ours_to_builtin"])
@pytest.mark.parametrize("file_name", ["model.weights.h5", "model.keras"])
@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_weights_files_swap_with_builtin(kind, file_name, direction, tmp_path):
    source = build_model(kind, ours=direction == "ours_to_builtin")
    target = build_model(kind, ours=direction == "builtin_to_ours")
    random_weights(source, scale=0.3)
    path = tmp_path / file_name
    if file_name.endswith(".keras"):
        source.save(path)
    else:
        source.save_weights(path)
    target.load_weights(path)
    x = model_data(kind)
    assert_all_close(target(x), source(x))


# --------------------------------------------------------------------------
# The shared harness, and configs of the built-in layers.

HARNESS_CASES = {
    "lstm": ("lstm", {}),
    "lstm_seq_state_gates": (
        "lstm",
        {"return_sequences": True, "return_state": True},
    ),
    "lstm_stateful_backwards": (
        "lstm",
        {"stateful": True, "go_backwards": True, "return_sequences": True},
    ),
    "lstm_regularized_constrained": (
        "lstm",
        {
            "activation": "relu",
            "recurrent_activation": "hard_sigmoid",
            "unit_forget_bias": False,
            "kernel_regularizer": "l2",
            "recurrent_regularizer": "l1",
            "bias_regularizer": "l2",
            "kernel_constraint": "max_norm",
            "recurrent_constraint": "unit_norm",
            "bias_constraint": "non_neg",
        },
    ),
    "gru": ("gru", {"return_sequences": True}),
    "gru_reset_before_unroll": (
        "gru_reset_before",
        {"unroll": True, "return_state": True, "use_bias": False},
    ),
}


@pytest.mark.parametrize(
    "return_gates", [False, True], ids=["nogates", "gates"]
)
@pytest.mark.parametrize("case", list(HARNESS_CASES))
def test_layer_harness(case, return_gates, tmp_path):
    cell, kwargs = HARNESS_CASES[case]
    ours_class, builtin_class, cell_kwargs = CELLS[cell]
    kwargs = {**cell_kwargs, **kwargs}
    run_layer_test(
        lambda: ours_class(UNITS, return_gates=return_gates, **kwargs),
        sequence_inputs("none")[0],
        tmp_path,
        reference_factory=lambda: builtin_class(
            UNITS, use_cudnn=False, **kwargs
        ),
    )


@pytest.mark.parametrize(
    "return_state", [False, True], ids=["nostate", "state"]
)
@pytest.mark.parametrize("cell", list(CELLS))
def test_activity_regularizer_ignores_gates(cell, return_state):
    # The gates are returned to be watched: asking for them must not add
    # them to the activity regularization, which (as in Keras) covers the
    # outputs and, with return_state, the states.
    builtin, (ours,) = build_twins(
        cell,
        variants=({"return_gates": True},),
        activity_regularizer="l2",
        return_state=return_state,
        return_sequences=True,
    )
    x = sequence_inputs("none")[0]
    builtin(x)
    ours(x)
    assert len(ours.losses) == len(builtin.losses)
    np.testing.assert_allclose(
        to_numpy(sum(ours.losses)), to_numpy(sum(builtin.losses)), rtol=1e-5
    )


@pytest.mark.parametrize("case", list(HARNESS_CASES))
def test_config_of_builtin_layer(case):
    cell, kwargs = HARNESS_CASES[case]
    ours_class, builtin_class, cell_kwargs = CELLS[cell]
    builtin = builtin_class(
        UNITS,
        dropout=0.2,
        recurrent_dropout=0.1,
        seed=9,
        **cell_kwargs,
        **kwargs,
    )
    ours = run_builtin_config_test(ours_class, builtin)
    assert ours.return_gates is False
    builtin.build(INPUT_SHAPE)
    ours.build(INPUT_SHAPE)
    assert [w.path.split("/")[-1] for w in ours.weights] == [
        w.path.split("/")[-1] for w in builtin.weights
    ]
    assert [tuple(w.shape) for w in ours.weights] == [
        tuple(w.shape) for w in builtin.weights
    ]


@pytest.mark.parametrize("cell", list(CELLS))
def test_default_arguments_match_builtin(cell):
    ours_class, builtin_class, cell_kwargs = CELLS[cell]
    ours_config = ours_class(UNITS).get_config()
    builtin_config = builtin_class(UNITS).get_config()
    for key, value in builtin_config.items():
        if key != "name":
            assert ours_config[key] == value, key
    assert ours_config["return_gates"] is False
