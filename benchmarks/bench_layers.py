"""Side-by-side timings of keras_gated's LSTM/GRU against Keras' built-ins.

One process, interleaved: every repetition times each variant once, in
turn, so machine noise hits all of them alike. For each configuration
(batch, timesteps, features, units) it times one training step (forward,
backward, Adam update, inside one `tf.function`) and one forward pass, for
the built-in layer and for ours with gates off and on (with gates on, the
gate sequences are returned from the step so they are really computed),
with XLA off and on (`jit_compile`). Both layers hold the same weights.
It prints median milliseconds and the ratio ours / built-in, and the growth
of each variant's training time from the shortest to the longest sequence.

    python benchmarks/bench_layers.py            # the full table
    python benchmarks/bench_layers.py --quick    # fewer repetitions
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gated  # noqa: E402

CONFIGS = [(64, 50, 32, 128), (64, 200, 32, 128), (128, 100, 32, 256)]
KINDS = {
    "LSTM": (keras.layers.LSTM, keras_gated.LSTM),
    "GRU": (keras.layers.GRU, keras_gated.GRU),
}


def make_variant(layer, jit, with_gates, x, y):
    """Compiled train step and forward pass for one layer."""
    head = keras.layers.Dense(1)
    layer(x[:1])
    head(np.zeros((1, layer.units), "float32"))
    variables = layer.trainable_variables + head.trainable_variables
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(variables)

    def forward(inputs):
        outputs = layer(inputs)
        gates = {}
        if with_gates:
            outputs, gates = outputs
        return outputs, gates

    @tf.function(jit_compile=jit)
    def train_step(inputs, targets):
        with tf.GradientTape() as tape:
            outputs, gates = forward(inputs)
            loss = tf.reduce_mean(tf.square(head(outputs) - targets))
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        return loss, gates

    @tf.function(jit_compile=jit)
    def predict(inputs):
        return forward(inputs)

    return train_step, predict


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    keras.tree.map_structure(lambda t: t.numpy(), result)
    return (time.perf_counter() - start) * 1e3


def bench_config(kind, config, reps, jits):
    batch, timesteps, features, units = config
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, timesteps, features)), tf.float32)
    y = tf.constant(rng.normal(size=(batch, 1)), tf.float32)
    builtin_cls, ours_cls = KINDS[kind]
    variants = {}
    for jit in jits:
        reference = builtin_cls(units)
        reference(x[:1])
        for name, cls, gates in [
            ("builtin", builtin_cls, False),
            ("ours", ours_cls, False),
            ("ours+gates", ours_cls, True),
        ]:
            layer = cls(units, return_gates=True) if gates else cls(units)
            layer(x[:1])
            layer.set_weights(reference.get_weights())
            variants[(name, jit)] = make_variant(layer, jit, gates, x, y)
    times = {key: ([], []) for key in variants}
    for train, predict in variants.values():  # compile and warm up
        timed(train, x, y)
        timed(predict, x)
    for _ in range(reps):
        for key, (train, predict) in variants.items():
            times[key][0].append(timed(train, x, y))
            times[key][1].append(timed(predict, x))
    return {
        key: (statistics.median(tr), statistics.median(fw))
        for key, (tr, fw) in times.items()
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--kinds", default="LSTM,GRU")
    parser.add_argument("--jit", default="off,on", help="off, on or off,on")
    args = parser.parse_args()
    reps = 5 if args.quick else args.reps
    jits = [j == "on" for j in args.jit.split(",")]
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{os.cpu_count()} CPUs, median of {reps} interleaved repetitions"
    )
    header = (
        f"{'layer':5} {'B,T,F,U':>15} {'xla':>4} {'variant':>11} "
        f"{'train ms':>9} {'ratio':>6} {'fwd ms':>8} {'ratio':>6}"
    )
    growth = {}
    for kind in args.kinds.split(","):
        print()
        print(header)
        for config in CONFIGS:
            medians = bench_config(kind, config, reps, jits)
            for (name, jit), (train, fwd) in medians.items():
                base_train, base_fwd = medians[("builtin", jit)]
                print(
                    f"{kind:5} {','.join(map(str, config)):>15} "
                    f"{'on' if jit else 'off':>4} {name:>11} {train:9.1f} "
                    f"{train / base_train:6.2f} {fwd:8.1f} "
                    f"{fwd / base_fwd:6.2f}"
                )
                growth.setdefault((kind, name, jit), {})[config] = train
    print("\nTraining-time growth from T=50 to T=200 (linear in T is 4x):")
    for (kind, name, jit), by_config in growth.items():
        if CONFIGS[0] in by_config and CONFIGS[1] in by_config:
            ratio = by_config[CONFIGS[1]] / by_config[CONFIGS[0]]
            xla = "on" if jit else "off"
            print(f"  {kind:5} {name:>11} xla {xla:3} {ratio:5.2f}x")


if __name__ == "__main__":
    main()
