"""tf.distribute.MirroredStrategy over two logical CPU devices.

Splitting the CPU into logical devices must happen before TensorFlow runs
any op and cannot be undone, so the strategy runs in a fresh Python
process; this module only reads back its results. One fit step of a model
with our layer under the strategy must update the weights exactly as the
same step on one device, and as the built-in layer under the strategy.
"""

import json
import os
import subprocess
import sys

import pytest

import keras_gated

SCRIPT = r"""
import json
import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras
import numpy as np

import keras_gated

BATCH, TIMESTEPS, FEATURES, UNITS = 8, 6, 4, 5
rng = np.random.default_rng(0)
x = rng.standard_normal((BATCH, TIMESTEPS, FEATURES)).astype("float32")
x[0, 4:] = 0.0  # padding, masked by the Masking layer
x[5, :2] = 0.0
y = rng.standard_normal((BATCH, 1)).astype("float32")

CASES = {
    "lstm": (keras_gated.LSTM, keras.layers.LSTM, {}),
    "lstm_gates": (keras_gated.LSTM, keras.layers.LSTM, {"gates": True}),
    "gru": (keras_gated.GRU, keras.layers.GRU, {}),
    "gru_reset_before_gates": (
        keras_gated.GRU,
        keras.layers.GRU,
        {"reset_after": False, "gates": True},
    ),
}


def build(layer_class, kwargs, builtin):
    kwargs = dict(kwargs)
    gates = kwargs.pop("gates", False)
    if builtin:
        layer = layer_class(UNITS, use_cudnn=False, **kwargs)
    else:
        layer = layer_class(UNITS, return_gates=gates, **kwargs)
    inputs = keras.Input((TIMESTEPS, FEATURES))
    outputs = layer(keras.layers.Masking()(inputs))
    if gates and not builtin:
        outputs = outputs[0]
    model = keras.Model(inputs, keras.layers.Dense(1)(outputs))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    return model


def one_step(layer_class, kwargs, builtin, weights, strategy):
    with strategy.scope():
        model = build(layer_class, kwargs, builtin)
        model.set_weights(weights)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


def max_difference(a, b):
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b))


mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
single = tf.distribute.get_strategy()
results = {"replicas": mirrored.num_replicas_in_sync, "cases": {}}
for name, (ours, builtin_class, kwargs) in CASES.items():
    reference = build(builtin_class, kwargs, builtin=True)
    weights = [
        (0.3 * rng.standard_normal(w.shape)).astype("float32")
        for w in reference.get_weights()
    ]
    distributed = one_step(ours, kwargs, False, weights, mirrored)
    one_device = one_step(ours, kwargs, False, weights, single)
    builtin = one_step(builtin_class, kwargs, True, weights, mirrored)
    results["cases"][name] = {
        "vs_one_device": max_difference(distributed, one_device),
        "vs_builtin": max_difference(distributed, builtin),
        "update": max_difference(distributed, weights),
        "finite": bool(all(np.all(np.isfinite(w)) for w in distributed)),
    }
print("RESULTS " + json.dumps(results))
"""

CASES = ["lstm", "lstm_gates", "gru", "gru_reset_before_gates"]


@pytest.fixture(scope="module")
def mirrored_results():
    # The child imports the same keras_gated as this process.
    package_root = os.path.dirname(os.path.dirname(keras_gated.__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, env.get("PYTHONPATH", "")]
    )
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=package_root,
    )
    lines = [
        line
        for line in completed.stdout.splitlines()
        if line.startswith("RESULTS ")
    ]
    assert completed.returncode == 0 and lines, (
        f"exit code {completed.returncode}\n{completed.stderr[-4000:]}"
    )
    return json.loads(lines[-1][len("RESULTS ") :])


def test_two_replicas(mirrored_results):
    assert mirrored_results["replicas"] == 2


@pytest.mark.parametrize("case", CASES)
def test_mirrored_fit_step_matches_one_device_and_builtin(
    mirrored_results, case
):
    result = mirrored_results["cases"][case]
    assert result["finite"]
    assert result["update"] > 1e-3, "the step did not move the weights"
    assert result["vs_one_device"] < 1e-5, result
    assert result["vs_builtin"] < 1e-5, result
