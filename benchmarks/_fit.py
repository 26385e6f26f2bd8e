"""The user's path for `bench_layers.py --path fit`: `train_on_batch`.

A model `Input((T, F)) -> layer(U) -> Dense(1)` compiled with Keras'
defaults (`model.compile(optimizer="adam", loss="mse")`: `jit_compile=
"auto"`, no XLA on a CPU) or with `jit_compile=True`, for the built-in
layer and for ours with the same weights, in three variants:

- `ours`: gates off;
- `ours+gates`: `return_gates=True`, the gates returned and unused (the
  model's output is the head alone);
- `ours+gates(loss)`: a second output, per sequence the mean of every
  returned gate sequence over time and units, with loss weight 1e-3, so
  the backward pass receives a gradient for every gate (regularising
  gates, or training a model whose outputs include them).

Each is timed by `train_on_batch` on one fixed batch, interleaved with the
others; the CPU, its AVX-512 support and TensorFlow's oneDNN setting are
reported by `machine()`.
"""

import os
import platform
import statistics
import time

import keras
import numpy as np

FIT_VARIANTS = ("builtin", "ours", "ours+gates", "ours+gates(loss)")


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def onednn_enabled():
    """Whether TensorFlow runs its oneDNN kernels in this process: what
    `TF_ENABLE_ONEDNN_OPTS` says, else TensorFlow's own default."""
    setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if setting is not None:
        return setting.strip().lower() in ("1", "true")
    try:
        # TensorFlow's own answer, which has no public API.
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except ImportError:
        return None


def machine():
    """One line: CPU model, AVX-512 or AVX2, and the oneDNN setting."""
    flags = _cpu_flags()
    vector = (
        "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "-"
    )
    onednn = {True: "on", False: "off", None: "unknown"}[onednn_enabled()]
    source = (
        "TF_ENABLE_ONEDNN_OPTS=" + os.environ["TF_ENABLE_ONEDNN_OPTS"]
        if "TF_ENABLE_ONEDNN_OPTS" in os.environ
        else "TensorFlow's default"
    )
    return f"{_cpu_model()}, {vector}, oneDNN {onednn} ({source})"


def parse_configs(text):
    """`"64,50,32,128;..."` -> `[(batch, timesteps, features, units), ...]`."""
    configs = []
    for item in text.split(";"):
        try:
            values = tuple(int(v) for v in item.split(","))
        except ValueError:
            values = ()
        if len(values) != 4 or min(values) < 1:
            raise ValueError(
                "each configuration is four positive integers "
                f"batch,timesteps,features,units. Received: {item!r}"
            )
        configs.append(values)
    return configs


def _model(make_layer, variant, shape, weights, jit):
    inputs = keras.Input(shape)
    layer = make_layer(variant)
    outputs = layer(inputs)
    gates = None
    if variant.startswith("ours+gates"):
        outputs, gates = outputs
    layer.set_weights(weights)
    head = keras.layers.Dense(1, name="head")(outputs)
    compile_args = {} if jit is None else {"jit_compile": jit}
    if variant == "ours+gates(loss)":
        # Each sequence's mean over time and units of every gate, averaged.
        means = [keras.ops.mean(g, axis=(1, 2)) for g in gates.values()]
        gate_mean = keras.ops.mean(
            keras.ops.stack(means, axis=-1), axis=-1, keepdims=True
        )
        model = keras.Model(inputs, [head, gate_mean])
        model.compile(
            optimizer="adam",
            loss=["mse", "mse"],
            loss_weights=[1.0, 1e-3],
            **compile_args,
        )
        return model
    model = keras.Model(inputs, head)
    model.compile(optimizer="adam", loss="mse", **compile_args)
    return model


def fit_variants(builtin_class, ours_class, config, jits):
    """`{(variant, jit): train_on_batch call}` with one set of weights."""
    batch, timesteps, features, units = config
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, timesteps, features)).astype("float32")
    y = rng.normal(size=(batch, 1)).astype("float32")
    reference = builtin_class(units)
    reference.build((batch, timesteps, features))
    weights = reference.get_weights()

    def make_layer(variant):
        if variant == "builtin":
            return builtin_class(units)
        return ours_class(units, return_gates=variant != "ours")

    calls = {}
    for jit in jits:
        for variant in FIT_VARIANTS:
            model = _model(
                make_layer,
                variant,
                (timesteps, features),
                weights,
                True if jit else None,
            )
            targets = y if variant != "ours+gates(loss)" else [y, 0 * y]
            calls[variant, jit] = _caller(model, x, targets)
    return calls


def _caller(model, x, y):
    return lambda: model.train_on_batch(x, y)


def time_fit(calls, reps):
    """`{key: median ms}` of each call, interleaved, after two warm-ups."""
    for call in calls.values():
        call()
        call()
    times = {key: [] for key in calls}
    for _ in range(reps):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            times[key].append((time.perf_counter() - start) * 1e3)
    return {key: statistics.median(values) for key, values in times.items()}
