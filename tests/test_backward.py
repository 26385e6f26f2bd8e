"""The hand-written backward pass through time equals autodiff.

The unrolled Python loop (`unroll=True`) is differentiated by TensorFlow
op by op, the independent reference; the while loop (`unroll=False`) uses
the analytic backward pass of the fast path's driver (`keras_gated._tf`)
for the standard activations, and `keras_gated._tf.loop`'s recomputing
backward pass for
others. Both must give the same outputs and the same gradients for the
inputs, the weights, and the state probes (dL/dh_t, dL/dc_t), with a loss
that depends on every output, states and gates included, in eager, graph
and XLA execution.
"""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gated
from keras_gated import _tf

BATCH, TIMESTEPS, FEATURES, UNITS = 3, 7, 4, 5
# The layers that run the fast path (Keras' default activations).
FAST_PATH = [
    (keras_gated.LSTM, {}),
    (keras_gated.GRU, {"reset_after": True}),
    (keras_gated.GRU, {"reset_after": False}),
    (keras_gated.SimpleRNN, {}),
]


def _inputs():
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(BATCH, TIMESTEPS, FEATURES)), tf.float32)
    mask = rng.random((BATCH, TIMESTEPS)) > 0.3
    mask[0] = False  # a fully masked row
    mask[1, :3] = False  # left padding
    return x, tf.constant(mask)


def _reference_and_ours(cls, x, units=UNITS, **kwargs):
    """The unrolled layer (the autodiff reference) and ours, same weights."""
    reference = cls(units, unroll=True, **kwargs)
    ours = cls(units, **kwargs)
    reference(x)
    ours(x)
    ours.set_weights(reference.get_weights())
    return reference, ours


def _gradients(layer, x, mask, mode):
    names = layer.state_names

    def run(x):
        shape = (BATCH, TIMESTEPS, layer.units)
        probes = {n: tf.zeros(shape) for n in names}
        with tf.GradientTape() as tape:
            tape.watch(x)
            tape.watch(probes)
            with layer.probe_states(probes):
                outputs = keras.tree.flatten(layer(x, mask=mask))
            loss = sum(
                tf.reduce_sum(tf.sin(o) * (i + 1))
                for i, o in enumerate(outputs)
            )
        wrt = [x] + layer.trainable_variables + [probes[n] for n in names]
        return outputs, tape.gradient(loss, wrt)

    if mode != "eager":
        run = tf.function(run, jit_compile=mode == "xla")
    return run(x)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (keras_gated.LSTM, {}),
        (keras_gated.GRU, {"reset_after": True}),
        (keras_gated.GRU, {"reset_after": False}),
        (keras_gated.SimpleRNN, {}),
        # Not the fast path's activations: the generic loop's backward pass.
        (keras_gated.LSTM, {"recurrent_activation": "hard_sigmoid"}),
        (keras_gated.GRU, {"activation": "softsign"}),
        (keras_gated.SimpleRNN, {"activation": "relu"}),
    ],
)
@pytest.mark.parametrize(
    "options",
    [
        {"return_sequences": True},
        {
            "return_gates": True,
            "return_sequences": True,
            "return_state": True,
            "go_backwards": True,
        },
    ],
)
def test_while_loop_gradients_equal_unrolled_autodiff(
    cls, kwargs, options, use_mask, mode
):
    _assert_equals_unrolled_autodiff(cls, {**kwargs, **options}, use_mask, mode)


def _assert_equals_unrolled_autodiff(cls, kwargs, use_mask, mode):
    """Outputs and gradients (inputs, weights, probes) of ours equal those
    of the unrolled layer with the same weights."""
    x, mask = _inputs()
    reference, ours = _reference_and_ours(cls, x, **kwargs)
    mask = mask if use_mask else None
    ref_out, ref_grads = _gradients(reference, x, mask, mode)
    out, grads = _gradients(ours, x, mask, mode)
    for expected, actual in zip(ref_out, out):
        np.testing.assert_allclose(actual, expected, atol=1e-5)
    for expected, actual in zip(ref_grads, grads):
        _assert_close_to_float32_rounding(actual, expected)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {"return_sequences": True},
        {"return_gates": True, "return_state": True, "go_backwards": True},
    ],
)
def test_lstm_in_blocks_of_units_equals_unrolled_autodiff(
    options, use_mask, mode
):
    """With more units than one block (130: blocks of 64, 64 and 2, the
    fast path's forward step computes each block's gates, c_t and h_t on
    their own), outputs, gates, probes' and weights' gradients equal
    autodiff of the unrolled layer, whose step is one matmul."""
    from keras_gated._tf.lstm import _unit_blocks
    from keras_gated._tf.lstm import block_count

    blocks = _unit_blocks(130, block_count(130))
    assert [b.stop - b.start for b in blocks] == [64, 64, 2]
    _assert_equals_unrolled_autodiff(
        keras_gated.LSTM, {"units": 130, **options}, use_mask, mode
    )


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("timesteps", [7, 40])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_blocks_stored_activations_gradients_equal_builtin(
    return_sequences, timesteps, mode
):
    """Without gates returned, a mask or a probe, the forward pass stores
    each block's activations and c time-major and the backward pass reads
    them (`backward_layout`); outputs and the gradients of the inputs and
    every weight equal the built-in's with the same weights, over one
    backward stretch and over several (40 steps: ten of four)."""
    from keras_gated._tf.lstm import block_count
    from keras_gated._tf.lstm import describe

    layout = describe(keras_gated.LSTM(130).cell).backward_layout(
        masked=False, probed=False, static=True, returned=("hidden",)
    )
    blocks = tuple(f"activations_{j}" for j in range(block_count(130)))
    assert layout == ((), blocks + ("cell",))
    x = tf.constant(
        np.random.default_rng(1).normal(size=(BATCH, timesteps, FEATURES)),
        tf.float32,
    )
    builtin = keras.layers.LSTM(
        130, use_cudnn=False, return_sequences=return_sequences
    )
    ours = keras_gated.LSTM(130, return_sequences=return_sequences)
    builtin.build(x.shape)
    ours.build(x.shape)
    ours.set_weights(builtin.get_weights())

    def run(layer):
        def gradients(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                outputs = layer(x)
                loss = tf.reduce_sum(tf.sin(outputs))
            return outputs, tape.gradient(loss, [x] + layer.trainable_variables)

        if mode != "eager":
            gradients = tf.function(gradients, jit_compile=mode == "xla")
        return gradients(x)

    (expected, expected_grads), (actual, actual_grads) = map(
        run, (builtin, ours)
    )
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    for e, a in zip(expected_grads, actual_grads, strict=True):
        _assert_close_to_float32_rounding(a, e)


@pytest.mark.parametrize("implementation", [1, 2])
def test_lstm_in_blocks_of_units_with_input_dropout_equals_builtin(
    implementation,
):
    """Input dropout in training (the inputs come projected, the step
    takes each block's columns of them), 130 units: outputs and every
    gradient equal the built-in's with the same weights and seed."""
    x, _ = _inputs()
    kwargs = dict(
        dropout=0.3,
        seed=3,
        implementation=implementation,
        return_sequences=True,
    )
    builtin = keras.layers.LSTM(130, use_cudnn=False, **kwargs)
    ours = keras_gated.LSTM(130, **kwargs)
    builtin.build(x.shape)
    ours.build(x.shape)
    ours.set_weights(builtin.get_weights())
    results = []
    for layer in (builtin, ours):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layer(x, training=True)
            loss = tf.reduce_sum(tf.sin(outputs))
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        results.append((outputs, grads))
    (expected, expected_grads), (actual, actual_grads) = results
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    for e, a in zip(expected_grads, actual_grads, strict=True):
        _assert_close_to_float32_rounding(a, e)


def _assert_close_to_float32_rounding(actual, expected):
    """Equal up to float32 rounding: 1e-5 absolute, relative to the
    largest magnitude where that is above 1 (a gradient summed over steps
    can reach tens; oneDNN's kernels round differently from Eigen's)."""
    expected = np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, atol=1e-5 * scale)


@pytest.mark.parametrize(
    "options", [{}, {"return_gates": True, "return_sequences": True}]
)
@pytest.mark.parametrize("cls,kwargs", FAST_PATH)
def test_gradient_through_a_function_traced_without_a_tape(
    cls, kwargs, options
):
    """Traced with no tape, the fast path records only what it returns;
    a gradient taken later through the same trace runs the forward pass
    again and must still equal autodiff of the unrolled layer."""
    x, mask = _inputs()
    reference, ours = _reference_and_ours(cls, x, **kwargs, **options)
    forward = tf.function(lambda x: keras.tree.flatten(ours(x, mask=mask)))
    forward(x)  # traced here, with no tape active

    def gradients(call, layer):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = call(x)
            loss = sum(
                tf.reduce_sum(tf.sin(o) * (i + 1))
                for i, o in enumerate(outputs)
            )
        return outputs, tape.gradient(loss, [x] + layer.trainable_variables)

    out, grads = gradients(forward, ours)
    ref_out, ref_grads = gradients(
        lambda x: keras.tree.flatten(reference(x, mask=mask)), reference
    )
    for expected, actual in zip(ref_out + ref_grads, out + grads):
        np.testing.assert_allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("cls,kwargs", FAST_PATH)
def test_gradient_with_unused_gates_and_a_dynamic_batch(cls, kwargs):
    """With a batch size unknown at trace time (as in `fit`), TensorFlow
    hands the unused outputs' gradients over as `ZerosLike` ops, which the
    backward pass skips: the gradients must still equal autodiff of the
    unrolled layer."""
    x, mask = _inputs()
    options = {"return_gates": True, "return_sequences": True}
    reference, ours = _reference_and_ours(cls, x, **kwargs, **options)

    def gradients(layer):
        @tf.function(
            input_signature=[tf.TensorSpec((None, TIMESTEPS, FEATURES))]
        )
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                outputs, gates = layer(x)
                loss = tf.reduce_sum(tf.sin(outputs)) + tf.reduce_sum(
                    next(iter(gates.values()))
                )
            return tape.gradient(loss, [x] + layer.trainable_variables)

        return run(x)

    for expected, actual in zip(gradients(reference), gradients(ours)):
        np.testing.assert_allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("cls,kwargs", FAST_PATH)
def test_eager_calls_on_new_shapes_stay_exact_without_retracing_noise(
    cls, kwargs
):
    """Called eagerly on a new batch size and length each time (as in a
    notebook, or `inspect_gates` on sequences of several lengths), the
    compiled loops must keep equal to autodiff of the unrolled layer, and
    TensorFlow's "triggered tf.function retracing" warning, which would
    name our private loop functions, must not appear."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tf.get_logger().addHandler(handler)
    options = {"return_gates": True, "return_sequences": True}
    rng = np.random.default_rng(0)
    try:
        x = tf.constant(rng.normal(size=(2, 3, FEATURES)), tf.float32)
        reference, ours = _reference_and_ours(cls, x, **kwargs, **options)
        for step in range(8):
            shape = (2 + step % 3, 3 + step, FEATURES)
            x = tf.constant(rng.normal(size=shape), tf.float32)
            mask = tf.constant(rng.random(shape[:2]) > 0.2)
            results = []
            for layer in (reference, ours):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    outputs, gates = layer(x, mask=mask if step % 2 else None)
                    loss = tf.reduce_sum(tf.sin(outputs)) + sum(
                        tf.reduce_sum(g * g) for g in gates.values()
                    )
                wrt = [x] + layer.trainable_variables
                results.append([outputs] + tape.gradient(loss, wrt))
            for expected, actual in zip(*results):
                _assert_close_to_float32_rounding(actual, expected)
    finally:
        tf.get_logger().removeHandler(handler)
    messages = [record.getMessage() for record in records]
    assert not [m for m in messages if "retracing" in m], messages


@pytest.mark.parametrize("cls,kwargs", FAST_PATH)
def test_portable_graphs_equal_unrolled_autodiff(cls, kwargs):
    """`_tf.portable()` (used by the SavedModel export) builds the
    fast path without XLA: outputs and gradients must not change."""
    x, mask = _inputs()
    options = {
        "return_gates": True,
        "return_sequences": True,
        "return_state": True,
    }
    reference, ours = _reference_and_ours(cls, x, **kwargs, **options)
    ref_out, ref_grads = _gradients(reference, x, mask, "graph")
    with _tf.portable():
        out, grads = _gradients(ours, x, mask, "graph")
    for expected, actual in zip(ref_out + ref_grads, out + grads):
        np.testing.assert_allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("timesteps", [1, 32, 33, 70, 600])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_lstm_kernel_gradient_recomputed_in_chunks(timesteps, return_sequences):
    """Without a mask or probes, the LSTM's kernel gradient recomputes
    h_{t-1} = o * tanh(c) in slices of time of at least 32 steps within
    each of up to sixteen backward stretches: across slice and stretch
    edges (32, 33, 70 steps; 600, whose stretches of 38 steps take two
    slices) the gradients equal the built-in layer's."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(BATCH, timesteps, FEATURES)), tf.float32)
    builtin = keras.layers.LSTM(UNITS, return_sequences=return_sequences)
    ours = keras_gated.LSTM(UNITS, return_sequences=return_sequences)
    builtin(x)
    ours(x)
    ours.set_weights(builtin.get_weights())

    @tf.function
    def gradients(layer, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x)))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    expected = gradients(builtin, x)
    for want, got in zip(expected, gradients(ours, x)):
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got, want, atol=1e-5 * scale)


@pytest.mark.parametrize("shortest", [4, 8])
@pytest.mark.parametrize("timesteps", [None, 1, 2, 3, 4, 5, 7, 33, 200, 1001])
def test_backward_stretches_cover_every_step_once(timesteps, shortest):
    """The backward pass's stretches of time, last first, cover every step
    once, in at most sixteen stretches of at least `shortest` steps (the
    first may be shorter), of at most two lengths (the backward loop
    compiles at most twice); an unknown length is one stretch."""
    stretches = _tf.arrays.segments(timesteps, shortest=shortest)
    if timesteps is None:
        assert stretches == [(0, None)]
        return
    steps = [t for first, n in stretches for t in range(first, first + n)]
    assert sorted(steps) == list(range(timesteps))
    firsts = [first for first, _ in stretches]
    assert firsts == sorted(firsts, reverse=True)
    assert len(stretches) <= 16
    assert all(n >= shortest for first, n in stretches if first > 0)
    assert len({n for _, n in stretches}) <= 2
    # As short as these bounds allow: one step shorter would need more
    # than sixteen stretches.
    length = stretches[0][1]
    assert (
        length == timesteps
        or length == shortest
        or -(-timesteps // (length - 1)) > 16
    )


@pytest.mark.parametrize("columns", [64, 100, 512])
def test_blocked_matmul_equals_one_matmul(columns):
    """The forward loops' matmuls in column blocks (`Blocked`) equal
    NumPy's product, compiled by XLA and eagerly; one block in portable
    graphs and where the matrix has at most one block's columns."""
    from keras_gated._tf.description import BLOCK_COLUMNS
    from keras_gated._tf.description import Blocked

    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 40)).astype("float32")
    matrix = rng.normal(size=(40, columns)).astype("float32")
    blocked = Blocked(tf.constant(matrix))
    widths = [b.shape[1] for b in blocked.blocks]
    assert sum(widths) == columns
    assert max(widths) == min(columns, BLOCK_COLUMNS)
    compiled = tf.function(blocked.__call__, jit_compile=True)
    for got in (blocked(tf.constant(a)), compiled(tf.constant(a))):
        np.testing.assert_allclose(got, a @ matrix, rtol=1e-5, atol=1e-5)
    with _tf.portable():
        assert len(Blocked(tf.constant(matrix)).blocks) == 1


def test_state_probe_gradient_matches_finite_difference():
    """dL/dh_t from the probe equals a finite difference of the loss."""
    x, _ = _inputs()
    layer = keras_gated.LSTM(UNITS, return_sequences=True)
    layer(x)
    x64 = tf.cast(x, tf.float64)
    weights = layer.get_weights()
    layer64 = keras_gated.LSTM(UNITS, return_sequences=True, dtype="float64")
    layer64(x64)
    layer64.set_weights(weights)

    def loss(probes):
        with layer64.probe_states(probes):
            return tf.reduce_sum(tf.sin(layer64(x64)))

    zeros = {
        "hidden": tf.zeros((BATCH, TIMESTEPS, UNITS), tf.float64),
        "cell": tf.zeros((BATCH, TIMESTEPS, UNITS), tf.float64),
    }
    with tf.GradientTape() as tape:
        tape.watch(zeros)
        value = loss(zeros)
    grads = tape.gradient(value, zeros)
    eps = 1e-6
    for name, (b, t, u) in [("hidden", (1, 2, 3)), ("cell", (2, 0, 1))]:
        bump = np.zeros((BATCH, TIMESTEPS, UNITS))
        bump[b, t, u] = eps
        shifted = dict(zeros)
        shifted[name] = zeros[name] + bump
        numeric = (float(loss(shifted)) - float(value)) / eps
        assert abs(numeric - float(grads[name][b, t, u])) < 1e-4


def test_probe_rejects_unknown_state_names():
    layer = keras_gated.GRU(UNITS)
    with pytest.raises(ValueError, match="cell"):
        with layer.probe_states({"cell": tf.zeros((1, 2, UNITS))}):
            pass
