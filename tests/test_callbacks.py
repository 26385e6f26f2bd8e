"""Tests for keras_gated.TimestepGradientLogger.

The event files are read back with TensorBoard's EventAccumulator and the
tags and values compared with independent `tf.GradientTape` computations.
"""

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)

import keras_gated
from keras_gated.callbacks import _ImageHistory
from keras_gated.callbacks import gate_mean_and_saturation
from keras_gated.callbacks import gradient_decay

TIMESTEPS = 8
FEATURES = 3


def read_events(log_dir):
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return events


def series(events, tag):
    """`{step: value}` of a tensor, scalar or image tag."""
    return {
        event.step: tf.make_ndarray(event.tensor_proto)
        for event in events.Tensors(tag)
    }


def plugin(events, tag):
    return events.SummaryMetadata(tag).plugin_data.plugin_name


def tags_by_plugin(events):
    found = {}
    for tag in events.Tags()["tensors"]:
        found.setdefault(plugin(events, tag), set()).add(tag)
    return found


def data(samples=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, TIMESTEPS, FEATURES)).astype("float32")
    y = rng.normal(size=(samples, 1)).astype("float32")
    return x, y


def lstm_model():
    model = keras.Sequential(
        [
            keras.Input((TIMESTEPS, FEATURES)),
            keras_gated.LSTM(4, name="lstm"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def input_gradient_norms(model, x, y):
    """||dL/dx_t|| of the model's first layer by tape, L the mean squared
    error."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_mean(tf.square(model(x) - y))
    return np.sqrt(np.sum(np.square(tape.gradient(loss, x)), axis=(0, 2)))


CONTRIBUTIONS = ("kernel", "recurrent_kernel", "bias")
RETENTION = ("retention", "retention_q50", "retention_q90", "retention_max")
LSTM_QUANTITIES = ("inputs", "hidden", "cell") + CONTRIBUTIONS + RETENTION
GRU_QUANTITIES = ("inputs", "hidden") + CONTRIBUTIONS


def gradient_tags(name, quantities):
    images = {f"gradient_heatmap/{name}", f"gradient_profile/{name}"}
    if "kernel" in quantities:
        images.add(f"contribution_heatmap/{name}")
    if any(q.startswith(("retention", "jacobian")) for q in quantities):
        images.add(f"memory_profile/{name}")
    return {
        "tensors": {f"timestep_gradients/{name}/{q}" for q in quantities},
        "scalars": {
            tag
            for q in quantities
            for tag in (
                f"gradient_norm/{name}/{q}/first",
                f"gradient_norm/{name}/{q}/last",
                f"gradient_decay/{name}/{q}",
            )
        },
        "images": images,
    }


def gate_tags(name, gates):
    return {
        "tensors": {
            f"{kind}/{name}/{gate}"
            for kind in (
                "gate_mean",
                "gate_saturation_per_timestep",
                "gate_sequence",
            )
            for gate in gates
        },
        "scalars": {f"gate_saturation/{name}/{gate}" for gate in gates},
        "images": {f"gate_heatmap/{name}"},
    }


def merge(*groups):
    merged = {"tensors": set(), "scalars": {"nonfinite"}, "images": set()}
    for group in groups:
        for kind, tags in group.items():
            merged[kind] |= tags
    return merged


def test_logs_exact_tags_and_tape_values_at_every_epoch(tmp_path):
    model = lstm_model()
    x, y = data()
    probe = (x[:8], y[:8])
    initial_weights = model.get_weights()
    logger = keras_gated.TimestepGradientLogger(tmp_path, probe)

    model.fit(x, y, batch_size=8, epochs=2, callbacks=[logger], verbose=0)

    events = read_events(tmp_path)
    expected = merge(
        gradient_tags("lstm", LSTM_QUANTITIES),
        gate_tags("lstm", keras_gated.LSTM_GATES),
    )
    assert tags_by_plugin(events) == {
        "keras_gated": expected["tensors"],
        "scalars": expected["scalars"],
        "images": expected["images"],
    }
    inputs = series(events, "timestep_gradients/lstm/inputs")
    assert sorted(inputs) == [0, 4, 8]
    assert all(v.shape == (TIMESTEPS,) for v in inputs.values())
    # The last log saw the final weights, the first the initial ones.
    np.testing.assert_allclose(
        inputs[8], input_gradient_norms(model, *probe), rtol=1e-4
    )
    final = keras_gated.timestep_gradients(model, *probe)["lstm"]
    for quantity in ("hidden", "recurrent_kernel", "retention_q90"):
        np.testing.assert_allclose(
            series(events, f"timestep_gradients/lstm/{quantity}")[8],
            final[quantity],
            rtol=1e-5,
        )
    model.set_weights(initial_weights)
    np.testing.assert_allclose(
        inputs[0], input_gradient_norms(model, *probe), rtol=1e-4
    )
    first = series(events, "gradient_norm/lstm/inputs/first")[0]
    decay = series(events, "gradient_decay/lstm/inputs")[0]
    np.testing.assert_allclose(first, inputs[0][0], rtol=1e-6)
    np.testing.assert_allclose(
        decay, np.log10(inputs[0][-1] / inputs[0][0]), rtol=1e-5
    )
    assert [float(v) for v in series(events, "nonfinite").values()] == [0] * 3
    image = series(events, "gradient_heatmap/lstm")[8]
    assert image[2][:8] == b"\x89PNG\r\n\x1a\n"


def test_gate_statistics_of_builtin_layers_with_masking(tmp_path):
    inputs = keras.Input((TIMESTEPS,))
    embedded = keras.layers.Embedding(10, 3, mask_zero=True)(inputs)
    hidden = keras.layers.Bidirectional(
        keras.layers.GRU(3, return_sequences=True), name="bidi"
    )(embedded)
    outputs = keras.layers.Dense(1)(keras.layers.SimpleRNN(2)(hidden))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(1)
    x = rng.integers(1, 10, (16, TIMESTEPS))
    x[:, 5:] = 0
    y = rng.normal(size=(16, 1)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    logger = keras_gated.TimestepGradientLogger(
        tmp_path, dataset, saturation=0.1
    )

    model.fit(dataset, epochs=1, shuffle=False, callbacks=[logger], verbose=0)

    events = read_events(tmp_path)
    expected = merge(
        gradient_tags("bidi/forward", GRU_QUANTITIES),
        gradient_tags("bidi/backward", GRU_QUANTITIES),
        gradient_tags("simple_rnn", GRU_QUANTITIES),
        gate_tags("bidi/forward", keras_gated.GRU_GATES),
        gate_tags("bidi/backward", keras_gated.GRU_GATES),
        gate_tags("simple_rnn", keras_gated.SIMPLE_RNN_GATES),
    )
    assert tags_by_plugin(events) == {
        "keras_gated": expected["tensors"],
        "scalars": expected["scalars"],
        "images": expected["images"],
    }
    # The probe is the dataset's first batch; masked steps are left out
    # of the statistics and get no gradient.
    gates = keras_gated.inspect_gates(model, x[:8])["bidi/backward"]
    update = gates["update"][:, :5]
    mean = series(events, "gate_mean/bidi/backward/update")[2]
    np.testing.assert_allclose(mean[:5], update.mean(axis=(0, 2)), rtol=1e-5)
    assert np.all(np.isnan(mean[5:]))
    saturated = np.mean((update < 0.1) | (update > 0.9))
    logged = series(events, "gate_saturation/bidi/backward/update")[2]
    np.testing.assert_allclose(logged, saturated, rtol=1e-6)
    by_timestep = series(
        events, "gate_saturation_per_timestep/bidi/backward/update"
    )[2]
    np.testing.assert_allclose(
        by_timestep[:5],
        np.mean((update < 0.1) | (update > 0.9), axis=(0, 2)),
        rtol=1e-6,
    )
    assert np.all(np.isnan(by_timestep[5:]))
    # The first probe sequence's gates, unit by unit, at the first log and
    # (written at the end of training) the last.
    sequence = series(events, "gate_sequence/bidi/backward/update")
    assert sorted(sequence) == [0, 2]
    # Padded steps (x is 0 from step 5 on) are NaN.
    np.testing.assert_allclose(
        sequence[2][:, :5], gates["update"][0, :5].T, rtol=1e-5, atol=1e-7
    )
    assert np.all(np.isnan(sequence[2][:, 5:]))
    gradient = series(events, "timestep_gradients/bidi/backward/inputs")[2]
    np.testing.assert_array_equal(gradient[5:], 0.0)
    assert np.all(gradient[:5] > 0)
    # No gradient at the last timestep: an infinite gain back through time.
    decay = series(events, "gradient_decay/bidi/backward/inputs")[2]
    assert decay == -np.inf


def numpy_simple_rnn(x, kernel, recurrent_kernel, bias, mask):
    """`(z, outputs)` of a Keras SimpleRNN by hand: z_t = x_t W + h_{t-1} U
    + b, h_t = tanh(z_t); a masked step keeps h, repeats the output and has
    z = 0."""
    batch, timesteps, _ = x.shape
    h = np.zeros((batch, recurrent_kernel.shape[0]))
    z_steps, outputs = [], []
    for t in range(timesteps):
        z = x[:, t] @ kernel + h @ recurrent_kernel + bias
        keep = mask[:, t, None]
        h = np.where(keep, np.tanh(z), h)
        z_steps.append(z * keep)
        outputs.append(h)
    return np.stack(z_steps, axis=1), np.stack(outputs, axis=1)


def masked_mean_per_timestep(values, mask):
    counts = mask.sum(axis=0) * values.shape[-1]
    sums = (values * mask[..., None]).sum(axis=(0, 2))
    with np.errstate(invalid="ignore"):
        return sums / counts


def test_simple_rnn_pre_activation_statistics_ours_and_builtin(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((TIMESTEPS, FEATURES)),
            keras.layers.Masking(0.0),
            keras_gated.SimpleRNN(4, return_sequences=True, name="ours"),
            keras.layers.SimpleRNN(3, name="builtin"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(3)
    for name in ("ours", "builtin"):
        layer = model.get_layer(name)
        layer.set_weights(
            [1.5 * rng.normal(size=w.shape) for w in layer.get_weights()]
        )
    x, y = data(16)
    x[:4, 5:] = 0.0
    x[:, 7:] = 0.0
    mask = np.any(x != 0.0, axis=-1)
    saturation = 0.05
    logger = keras_gated.TimestepGradientLogger(
        tmp_path, (x, y), saturation=saturation
    )

    model.fit(x, y, batch_size=16, epochs=1, callbacks=[logger], verbose=0)

    events = read_events(tmp_path)
    assert (
        tags_by_plugin(events)["keras_gated"]
        == {
            f"timestep_gradients/{name}/{quantity}"
            for name in ("ours", "builtin")
            for quantity in GRU_QUANTITIES
        }
        | gate_tags("ours", ["pre_activation"])["tensors"]
        | gate_tags("builtin", ["pre_activation"])["tensors"]
    )
    z_ours, h = numpy_simple_rnn(
        x, *model.get_layer("ours").get_weights(), mask
    )
    z_builtin, _ = numpy_simple_rnn(
        h, *model.get_layer("builtin").get_weights(), mask
    )
    for name, z in (("ours", z_ours), ("builtin", z_builtin)):
        mean = series(events, f"gate_mean/{name}/pre_activation")[1]
        np.testing.assert_allclose(
            mean, masked_mean_per_timestep(z, mask), rtol=1e-4, atol=1e-5
        )
        assert np.all(np.isnan(mean[7:]))
        # Saturated as the tanh it feeds: |tanh(z)| within 5% of the range
        # (-1, 1) of either end, |tanh(z)| > 0.9.
        saturated = np.abs(np.tanh(z[mask])) > 1 - 2 * saturation
        logged = series(events, f"gate_saturation/{name}/pre_activation")[1]
        assert 0 < saturated.mean() < 1
        np.testing.assert_allclose(logged, saturated.mean(), rtol=1e-6)


def test_gate_mean_and_saturation_by_hand():
    z = np.array(
        [[[0.0, 2.0], [-1.0, 3.0]], [[-2.0, 0.5], [9.0, 9.0]]], "float32"
    )
    mask = np.array([[True, True], [True, False]])

    mean, saturated, value_range, per_timestep = gate_mean_and_saturation(
        z, mask, keras.activations.tanh, 0.05, pre_activation=True
    )

    # tanh(z) counted: 0, 0.964, -0.762, 0.995, -0.964, 0.462; beyond
    # +-0.9 (|z| > artanh(0.9) = 1.472): 2.0, 3.0 and -2.0.
    np.testing.assert_allclose(mean, [(0 + 2 - 2 + 0.5) / 4, (-1 + 3) / 2])
    assert mean.dtype == np.float32
    assert saturated == pytest.approx(3 / 6)
    assert value_range is None
    # Per timestep: 2.0 and -2.0 of 4 at t=0; 3.0 of 2 at t=1.
    np.testing.assert_allclose(per_timestep, [2 / 4, 1 / 2])
    assert per_timestep.dtype == np.float32

    forget = np.array([[[0.01, 0.5], [0.97, 0.2]]], "float32")
    mean, saturated, value_range, per_timestep = gate_mean_and_saturation(
        forget, None, keras.activations.sigmoid, 0.05
    )
    np.testing.assert_allclose(mean, [0.255, 0.585], rtol=1e-6)
    assert saturated == pytest.approx(2 / 4)
    assert value_range == (0.0, 1.0)
    np.testing.assert_allclose(per_timestep, [1 / 2, 1 / 2])
    # A candidate holds tanh's outputs: beyond +-0.8 with 10% margins.
    candidate = np.array([[[0.85, -0.5], [-0.81, 0.79]]], "float32")
    _, saturated, value_range, _ = gate_mean_and_saturation(
        candidate, None, keras.activations.tanh, 0.1
    )
    assert saturated == pytest.approx(2 / 4)
    assert value_range == (-1.0, 1.0)


def test_gate_saturation_is_nan_without_a_known_range_or_entries():
    z = np.ones((2, 3, 2), "float32")
    _, saturated, _, per_timestep = gate_mean_and_saturation(
        z, None, keras.activations.relu, 0.05, pre_activation=True
    )
    assert math.isnan(saturated) and np.all(np.isnan(per_timestep))
    mean, saturated, _, per_timestep = gate_mean_and_saturation(
        z, np.zeros((2, 3), bool), keras.activations.tanh, 0.05, True
    )
    assert math.isnan(saturated) and np.all(np.isnan(mean))
    assert np.all(np.isnan(per_timestep))


@pytest.mark.parametrize(
    "norms, expected",
    [
        ([1e-3, 0.5, 1.0], 3.0),
        ([2.0, 1.0, 0.2], -1.0),
        ([5.0], 0.0),
        # The ratio 1e310 overflows a float; the decay does not.
        ([1e-300, 1e10], 310.0),
        # A gradient that vanished to exactly zero at the first timestep.
        ([0.0, 1e-3], math.inf),
        ([1.0, 0.5, 0.0], -math.inf),
    ],
)
def test_gradient_decay_in_orders_of_magnitude(norms, expected):
    decay = gradient_decay(np.asarray(norms, "float64"))
    assert type(decay) is float
    assert decay == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "norms",
    [[0.0, 0.0], [np.nan, 1.0], [1.0, np.inf], [np.inf, 1.0], [-1.0, 1.0]],
)
def test_gradient_decay_is_nan_without_a_meaningful_ratio(norms):
    assert math.isnan(gradient_decay(np.asarray(norms, "float32")))


def test_a_gradient_vanished_at_the_first_timestep_decays_by_inf(tmp_path):
    # Masked timesteps get exactly zero gradient: left padding makes the
    # first timestep's gradient vanish completely.
    inputs = keras.Input((TIMESTEPS, FEATURES))
    hidden = keras.layers.LSTM(4, name="lstm")(keras.layers.Masking()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(optimizer="sgd", loss="mse")
    x, y = data(8)
    x[:, :2] = 0.0
    logger = keras_gated.TimestepGradientLogger(
        tmp_path, (x, y), gate_statistics=False, images=False
    )

    model.fit(x, y, batch_size=8, epochs=1, callbacks=[logger], verbose=0)

    events = read_events(tmp_path)
    norms = series(events, "timestep_gradients/lstm/inputs")[0]
    np.testing.assert_array_equal(norms[:2], 0.0)
    assert np.all(norms[2:] > 0)
    assert series(events, "gradient_decay/lstm/inputs")[0] == np.inf
    assert float(series(events, "nonfinite")[0]) == 0


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.lstm = keras_gated.LSTM(3, name="lstm")
        self.head = keras.layers.Dense(1, name="head")

    def call(self, x):
        return self.head(self.lstm(x * 2.0))


def test_subclassed_model(tmp_path):
    model = Subclassed()
    model.compile(optimizer="sgd", loss="mse")
    x, y = data()
    logger = keras_gated.TimestepGradientLogger(
        tmp_path, (x[:4], y[:4]), images=False
    )

    model.fit(x, y, batch_size=8, epochs=1, callbacks=[logger], verbose=0)

    events = read_events(tmp_path)
    logged = series(events, "timestep_gradients/lstm/inputs")[4]
    # The layer sees 2x: dL/d(2x) = dL/dx / 2.
    np.testing.assert_allclose(
        logged, input_gradient_norms(model, x[:4], y[:4]) / 2, rtol=1e-4
    )
    assert sorted(series(events, "gate_mean/lstm/forget")) == [0, 4]


def test_batch_frequency_and_switches(tmp_path):
    model = lstm_model()
    x, y = data()
    logger = keras_gated.TimestepGradientLogger(
        tmp_path,
        (x[:4], y[:4]),
        epoch_freq=None,
        batch_freq=3,
        gate_statistics=False,
        images=False,
    )

    model.fit(x, y, batch_size=8, epochs=2, callbacks=[logger], verbose=0)

    events = read_events(tmp_path)
    expected = gradient_tags("lstm", LSTM_QUANTITIES)
    assert tags_by_plugin(events) == {
        "keras_gated": expected["tensors"],
        "scalars": expected["scalars"] | {"nonfinite"},
    }
    assert sorted(series(events, "timestep_gradients/lstm/cell")) == [0, 3, 6]


def test_jacobians_are_logged_when_asked(tmp_path):
    model = lstm_model()
    x, y = data()
    probe = (x[:4], y[:4])
    logger = keras_gated.TimestepGradientLogger(
        tmp_path,
        probe,
        gate_statistics=False,
        jacobians=True,
        jacobian_samples=2,
    )

    model.fit(x, y, batch_size=8, epochs=1, callbacks=[logger], verbose=0)

    events = read_events(tmp_path)
    jacobians = (
        "jacobian_hidden",
        "jacobian_hidden_spectral",
        "jacobian_cell",
        "jacobian_cell_spectral",
    )
    expected = gradient_tags("lstm", LSTM_QUANTITIES + jacobians)
    assert tags_by_plugin(events) == {
        "keras_gated": expected["tensors"],
        "scalars": expected["scalars"] | {"nonfinite"},
        "images": expected["images"],
    }
    final = keras_gated.timestep_gradients(
        model, *probe, jacobians=True, jacobian_samples=2
    )["lstm"]
    for quantity in jacobians:
        logged = series(events, f"timestep_gradients/lstm/{quantity}")
        np.testing.assert_allclose(logged[4], final[quantity], rtol=1e-4)
    with pytest.raises(ValueError, match="jacobian_samples"):
        keras_gated.TimestepGradientLogger(tmp_path, probe, jacobian_samples=0)


def test_resuming_continues_the_step_axis(tmp_path):
    x, y = data()
    model = lstm_model()
    logger = keras_gated.TimestepGradientLogger(
        tmp_path, (x[:4], y[:4]), images=False
    )
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[logger], verbose=0)
    # The same callback in a second fit: the optimizer counts on.
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        initial_epoch=1,
        callbacks=[logger],
        verbose=0,
    )
    # A new model given the weights but a fresh optimizer, and a new logger:
    # the step axis continues from initial_epoch * steps_per_epoch.
    restored = lstm_model()
    restored.set_weights(model.get_weights())
    fresh_logger = keras_gated.TimestepGradientLogger(
        tmp_path, (x[:4], y[:4]), images=False
    )
    restored.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        initial_epoch=2,
        callbacks=[fresh_logger],
        verbose=0,
    )

    # Three event files (one per writer); the last fit starts at step 8.
    steps = [e.step for e in read_events(tmp_path).Tensors("nonfinite")]
    assert sorted(steps) == [0, 4, 8, 8, 12]
    assert len(os.listdir(tmp_path)) == 3


@pytest.mark.parametrize("fault", ["no_recurrent", "probe_shape", "log_dir"])
def test_clear_errors_before_any_training_step(tmp_path, fault):
    x, y = data()
    model = lstm_model()
    log_dir = tmp_path / "logs"
    probe = (x[:4], y[:4])
    if fault == "no_recurrent":
        model = keras.Sequential(
            [keras.Input((TIMESTEPS, FEATURES)), keras.layers.Dense(1)]
        )
        model.compile(optimizer="sgd", loss="mse")
        message = "model must contain a recurrent layer"
    elif fault == "probe_shape":
        probe = (x[:4, :, :2], y[:4])
        message = r"probe must fit .*\(None, 8, 3\).*\(4, 8, 2\)"
    else:
        (tmp_path / "file").write_text("")
        log_dir = tmp_path / "file" / "logs"
        message = "log_dir must be a directory"
    weights = model.get_weights()
    logger = keras_gated.TimestepGradientLogger(log_dir, probe)

    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, callbacks=[logger], verbose=0)

    assert int(model.optimizer.iterations) == 0
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"epoch_freq": 0}, "epoch_freq must be None or a positive integer"),
        ({"batch_freq": 1.5}, "batch_freq must be None"),
        ({"epoch_freq": None}, "cannot both be None"),
        ({"saturation": 0.5}, r"Received: saturation=0.5"),
        ({"saturation": "0.1"}, r"saturation must be a float in \(0, 0.5\)"),
        ({"image_freq": None}, "pass images=False for no images"),
        ({"image_freq": 0}, "image_freq must be a positive integer"),
        ({"probe": None}, "Received: probe=None"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(arguments, message):
    arguments = {"log_dir": "logs", "probe": data(), **arguments}
    with pytest.raises(ValueError, match=message):
        keras_gated.TimestepGradientLogger(**arguments)


def test_nonfinite_gradients_are_counted_and_training_goes_on(tmp_path):
    model = lstm_model()
    x, y = data()
    weights = model.get_weights()
    weights[0][0, 0] = np.inf
    model.set_weights(weights)
    logger = keras_gated.TimestepGradientLogger(
        tmp_path, (x[:4], y[:4]), image_freq=1
    )

    with pytest.warns(UserWarning, match="non-finite gradient norms"):
        history = model.fit(
            x, y, batch_size=8, epochs=2, callbacks=[logger], verbose=0
        )

    assert len(history.history["loss"]) == 2
    events = read_events(tmp_path)
    counts = series(events, "nonfinite")
    assert sorted(counts) == [0, 4, 8]
    assert all(count > 0 for count in counts.values())
    inputs = series(events, "timestep_gradients/lstm/inputs")[0]
    assert not np.all(np.isfinite(inputs))
    # The heatmaps from the second log on (one row is the profile's).
    assert len(series(events, "gradient_heatmap/lstm")) == 2
    assert len(series(events, "gradient_profile/lstm")) == 3


class Interrupt(Exception):
    pass


class InterruptAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt()


def test_an_interrupted_fit_leaves_its_events_readable(tmp_path):
    model = lstm_model()
    x, y = data()
    logger = keras_gated.TimestepGradientLogger(
        tmp_path, (x[:4], y[:4]), image_freq=1
    )

    with pytest.raises(Interrupt):
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=5,
            callbacks=[logger, InterruptAfter(1)],
            verbose=0,
        )

    # Tensors and scalars are written as they are logged; the images once
    # the background thread has drawn them.
    events = read_events(tmp_path)
    assert sorted(series(events, "timestep_gradients/lstm/inputs")) == [
        0,
        4,
        8,
    ]
    logger.flush()
    events = read_events(tmp_path)
    assert sorted(series(events, "gradient_profile/lstm")) == [0, 4, 8]


def test_simple_rnn_gradient_decays_orders_of_magnitude_more_than_lstm(
    tmp_path,
):
    # The setting the docs name: standard-normal inputs of 16 features,
    # T = 100, 16 units, at initialisation (see the callback's docstring).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 100, 16)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    inputs = keras.Input((100, 16))
    simple = keras.layers.SimpleRNN(16, name="simple")(inputs)
    lstm = keras_gated.LSTM(16, name="lstm")(inputs)
    model = keras.Model(
        inputs, keras.layers.Dense(1)(keras.layers.concatenate([simple, lstm]))
    )
    model.compile(optimizer="sgd", loss="mse")
    logger = keras_gated.TimestepGradientLogger(
        tmp_path, (x, y), gate_statistics=False, images=False
    )

    model.fit(x, y, batch_size=32, epochs=1, callbacks=[logger], verbose=0)

    events = read_events(tmp_path)
    simple_decay = series(events, "gradient_decay/simple/inputs")[0]
    lstm_decay = series(events, "gradient_decay/lstm/inputs")[0]
    assert lstm_decay > 3
    assert simple_decay > lstm_decay + 5


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    import keras
    import keras_gated

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = keras.Sequential([
            keras.Input((6, 2)),
            keras_gated.GRU(3, return_sequences=True, name="gru"),
            keras.layers.LSTM(2, name="builtin"),
            keras.layers.Dense(1),
        ])
        model.compile(optimizer="sgd", loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 2)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    logger = keras_gated.TimestepGradientLogger(
        sys.argv[1], (x[:4], y[:4]), images=False
    )
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[logger], verbose=0)

    probe = tf.constant(x[:4])
    with tf.GradientTape() as tape:
        tape.watch(probe)
        loss = tf.reduce_mean(tf.square(model(probe) - y[:4]))
    gradient = tape.gradient(loss, probe).numpy()
    np.save(sys.argv[2], np.sqrt(np.sum(gradient**2, axis=(0, 2))))
    """
)


def test_works_under_mirrored_strategy_with_two_cpu_devices(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    log_dir = tmp_path / "logs"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    reference = tmp_path / "reference.npy"

    result = subprocess.run(
        [sys.executable, str(script), str(log_dir), str(reference)],
        capture_output=True,
        text=True,
        timeout=180,
        env=environment,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    events = read_events(log_dir)
    for tag in (
        "timestep_gradients/gru/hidden",
        "timestep_gradients/builtin/inputs",
        "gate_mean/builtin/forget",
    ):
        values = series(events, tag)
        assert sorted(values) == [0, 2, 4]
        assert all(np.all(np.isfinite(v)) for v in values.values())
    logged = series(events, "timestep_gradients/gru/inputs")[4]
    np.testing.assert_allclose(logged, np.load(reference), rtol=1e-4)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def tensorboard_server(log_dir):
    """A TensorBoard server on `log_dir`; yields its base URL."""
    port = free_port()
    tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    server = subprocess.Popen(
        [
            tensorboard,
            "--logdir",
            str(log_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--load_fast",
            "false",
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def wait_for_scalar_tags(base, run, timeout=60):
    """The scalar tags of `run` once the server has loaded some."""
    deadline = time.monotonic() + timeout
    scalar_tags = {}
    while time.monotonic() < deadline:
        try:
            scalar_tags = get_json(f"{base}/scalars/tags")
            if scalar_tags.get(run):
                break
        except OSError:
            pass
        time.sleep(0.5)
    return scalar_tags[run]


def test_a_real_tensorboard_server_serves_the_tags(tmp_path):
    model = lstm_model()
    x, y = data()
    log_dir = tmp_path / "logs"
    logger = keras_gated.TimestepGradientLogger(
        log_dir / "gradients", (x[:4], y[:4])
    )
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[logger], verbose=0)
    with tensorboard_server(log_dir) as server:
        base = f"{server}/data/plugin"
        scalar_tags = wait_for_scalar_tags(base, "gradients")
        assert "gradient_decay/lstm/inputs" in scalar_tags

        query = urllib.parse.urlencode(
            {"run": "gradients", "tag": "gradient_norm/lstm/cell/first"}
        )
        points = get_json(f"{base}/scalars/scalars?{query}")
        expected = series(
            read_events(log_dir / "gradients"), "gradient_norm/lstm/cell/first"
        )
        assert [p[1] for p in points] == sorted(expected)
        np.testing.assert_allclose(
            [p[2] for p in points],
            [expected[s] for s in sorted(expected)],
            rtol=1e-6,
        )

        image_tags = get_json(f"{base}/images/tags")["gradients"]
        assert set(image_tags) == {
            "gradient_heatmap/lstm",
            "gradient_profile/lstm",
            "contribution_heatmap/lstm",
            "memory_profile/lstm",
            "gate_heatmap/lstm",
        }
        query = urllib.parse.urlencode(
            {"run": "gradients", "tag": "gradient_heatmap/lstm"}
        )
        images = get_json(f"{base}/images/images?{query}")
        assert [image["step"] for image in images] == [4]
        query = urllib.parse.urlencode(
            {"run": "gradients", "tag": "gradient_profile/lstm"}
        )
        profiles = get_json(f"{base}/images/images?{query}")
        assert [image["step"] for image in profiles] == [0, 4]
        with urllib.request.urlopen(
            f"{base}/images/individualImage?{images[-1]['query']}", timeout=5
        ) as response:
            assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"

        # TensorBoard's HTTP API has routes for plugin data only (scalars,
        # images, histograms, ...) and none for raw tensor summaries; the
        # other tests read the tensor tags from the event files.
        runs = get_json(f"{server}/data/runs")
        assert runs == ["gradients"]


def test_images_every_image_freq_logs_and_at_the_first_and_last(tmp_path):
    model = lstm_model()
    x, y = data()
    logger = keras_gated.TimestepGradientLogger(
        tmp_path, (x[:4], y[:4]), image_freq=3
    )
    model.fit(x, y, batch_size=8, epochs=5, callbacks=[logger], verbose=0)

    events = read_events(tmp_path)
    logged = sorted(series(events, "timestep_gradients/lstm/inputs"))
    assert len(logged) == 6  # before training, then after each epoch
    images = sorted(series(events, "gradient_profile/lstm"))
    # Logs 0 and 3 by the frequency, log 5 as the last one.
    assert images == [logged[0], logged[3], logged[5]]
    # A heatmap of the first log alone would be one row: not drawn.
    heatmaps = sorted(series(events, "gradient_heatmap/lstm"))
    assert heatmaps == [logged[3], logged[5]]


def test_image_history_stays_bounded_and_evenly_spaced_in_a_long_run():
    """100 000 logged steps: the heatmaps' history never holds more than
    its limit, the kept steps are evenly spaced over the whole run, each
    row stays with its step, and the latest step is always drawn."""
    history = _ImageHistory(limit=64)
    largest = 0
    for step in range(100_000):
        history.add(step, {"a": np.full(3, step), "b": np.full(2, -step)})
        largest = max(largest, len(history.steps), len(history.rows["a"]))
        if step in (10, 63, 64, 5_000, 99_999):
            steps, rows = history.snapshot()
            assert steps[-1] == step
            assert [r[0] for r in rows["a"]] == steps
            assert [-r[0] for r in rows["b"]] == steps
            kept = steps[:-1] if steps[-1] not in history.steps else steps
            assert len(set(np.diff(kept))) <= 1, kept
            assert len(steps) <= 65
    assert largest <= 64
    # Spread over the whole run, not the first or last stretch of it.
    assert history.steps[0] == 0 and history.steps[-1] > 90_000


def test_a_long_logging_run_keeps_a_bounded_image_history(tmp_path):
    model = lstm_model()
    x, y = data()
    logger = keras_gated.TimestepGradientLogger(
        tmp_path,
        (x[:4], y[:4]),
        epoch_freq=None,
        batch_freq=1,
        gate_statistics=True,
        image_freq=5,
    )
    logger._history.limit = 4
    model.fit(x, y, batch_size=4, epochs=3, callbacks=[logger], verbose=0)

    events = read_events(tmp_path)
    logged = sorted(series(events, "timestep_gradients/lstm/inputs"))
    assert logged == list(range(25))  # every step in the raw tensors
    assert len(logger._history.steps) <= 4
    assert all(len(r) <= 4 for r in logger._history.rows.values())
    images = sorted(series(events, "gradient_heatmap/lstm"))
    assert images == [5, 10, 15, 20, 24]
