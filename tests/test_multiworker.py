"""tf.distribute.MultiWorkerMirroredStrategy: two worker processes.

Keras' `fit` fails under MultiWorkerMirroredStrategy for the built-in
layers too (keras-team/keras#20585), so the supported route is a custom
training loop with `strategy.run`. Two worker processes on loopback
(ports chosen free, every process bounded in time and killed on failure)
train a masked model with our layer and one with Keras' built-in layer from
the same initial weights, in the same loop; a third process trains ours
alone on the whole global batch. Losses and weights after a few SGD steps
must agree across the three routes and between the two workers.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import keras_gated

TIMEOUT = 180

SCRIPT = r"""
import json
import os
import sys

mode = sys.argv[1]
if mode == "worker":
    index, ports = int(sys.argv[2]), json.loads(sys.argv[3])
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
            "task": {"type": "worker", "index": index},
        }
    )
import tensorflow as tf

# The strategy comes first: it must exist before TensorFlow runs any op.
if mode == "worker":
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    workers = len(ports)
else:
    strategy = tf.distribute.get_strategy()
    index, workers = 0, 1

import keras
import numpy as np

import keras_gated

GLOBAL_BATCH, TIMESTEPS, FEATURES, UNITS, STEPS = 8, 6, 3, 4, 3
rng = np.random.default_rng(0)
x = rng.standard_normal((GLOBAL_BATCH, TIMESTEPS, FEATURES)).astype("float32")
x[1, 4:] = 0.0  # padding, masked by the Masking layer
x[6, :2] = 0.0
y = rng.standard_normal((GLOBAL_BATCH, 1)).astype("float32")
share = GLOBAL_BATCH // workers
x_local = x[index * share : (index + 1) * share]
y_local = y[index * share : (index + 1) * share]


def initial_weights(model):
    init = np.random.default_rng(1)
    return [
        (0.3 * init.standard_normal(w.shape)).astype("float32")
        for w in model.get_weights()
    ]


def train(layer_class, **kwargs):
    with strategy.scope():
        inputs = keras.Input((TIMESTEPS, FEATURES))
        hidden = layer_class(UNITS, **kwargs)(keras.layers.Masking()(inputs))
        model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
        model.set_weights(initial_weights(model))
        optimizer = keras.optimizers.SGD(0.5)

    def replica_step(inputs, targets):
        with tf.GradientTape() as tape:
            predictions = model(inputs, training=True)
            per_example = tf.reduce_mean(tf.square(predictions - targets), -1)
            # Scaled by the global batch: the gradients summed over the
            # workers are those of the global mean.
            loss = tf.nn.compute_average_loss(
                per_example, global_batch_size=GLOBAL_BATCH
            )
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function
    def train_step(inputs, targets):
        losses = strategy.run(replica_step, args=(inputs, targets))
        return strategy.reduce("SUM", losses, axis=None)

    losses = [float(train_step(x_local, y_local)) for _ in range(STEPS)]
    return {
        "losses": losses,
        "initial": [w.tolist() for w in initial_weights(model)],
        "weights": [w.tolist() for w in model.get_weights()],
    }


results = {"replicas": strategy.num_replicas_in_sync}
results["lstm"] = train(keras_gated.LSTM)
results["gru"] = train(keras_gated.GRU)
if mode == "worker":
    results["builtin lstm"] = train(keras.layers.LSTM, use_cudnn=False)
    results["builtin gru"] = train(keras.layers.GRU, use_cudnn=False)
print("RESULTS " + json.dumps(results))
"""


def free_ports(count):
    """Ports the system hands out as free on 127.0.0.1 (held together, so
    distinct)."""
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket()
            handle.bind(("127.0.0.1", 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


def _environment():
    package_root = os.path.dirname(os.path.dirname(keras_gated.__file__))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("TF_CONFIG", "CUDA_VISIBLE_DEVICES")
    }
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # One process must not hold a whole core pool: three share the CPU.
    env["TF_NUM_INTEROP_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [package_root, env.get("PYTHONPATH", "")]
    )
    return env, package_root


def _run_all(commands):
    """Runs the commands side by side; kills them all on any failure."""
    env, cwd = _environment()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        for command in commands
    ]
    try:
        outputs = [
            process.communicate(timeout=TIMEOUT) for process in processes
        ]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    results = []
    for command, process, (stdout, stderr) in zip(
        commands, processes, outputs, strict=True
    ):
        lines = [
            line for line in stdout.splitlines() if line.startswith("RESULTS ")
        ]
        assert process.returncode == 0 and lines, (
            f"{command}: exit code {process.returncode}\n{stderr[-4000:]}"
        )
        results.append(json.loads(lines[-1][len("RESULTS ") :]))
    return results


@pytest.fixture(scope="module")
def trained():
    for attempt in range(2):
        ports = json.dumps(free_ports(2))
        try:
            return _run_all(
                [["worker", "0", ports], ["worker", "1", ports], ["single"]]
            )
        except AssertionError as error:
            # Another process may take a port between its choice and the
            # worker's bind: choose again, once.
            if attempt or "already in use" not in str(error).lower():
                raise


def max_difference(a, b):
    return max(
        float(np.max(np.abs(np.asarray(p) - np.asarray(q))))
        for p, q in zip(a, b, strict=True)
    )


def test_two_workers_one_replica_each(trained):
    first, second, single = trained
    assert first["replicas"] == second["replicas"] == 2
    assert single["replicas"] == 1


@pytest.mark.parametrize("layer", ["lstm", "gru"])
def test_workers_train_like_the_builtin_and_one_process(trained, layer):
    first, second, single = trained
    ours = first[layer]
    # The steps moved the weights, and the loss went down.
    assert max_difference(ours["weights"], ours["initial"]) > 1e-2
    assert ours["losses"][-1] < ours["losses"][0]
    # Both workers hold the same synchronised weights.
    assert max_difference(ours["weights"], second[layer]["weights"]) == 0.0
    for reference in (first[f"builtin {layer}"], single[layer]):
        assert reference["initial"] == ours["initial"]
        np.testing.assert_allclose(
            ours["losses"], reference["losses"], rtol=1e-5, atol=1e-6
        )
        assert max_difference(ours["weights"], reference["weights"]) < 1e-5
