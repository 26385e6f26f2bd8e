"""Our layers against the same layers at another commit, side by side.

For a refactor of the fast path: the package as it is in the working tree
and as it was at `--ref` (default HEAD~1), imported together in one
process (the old one renamed `keras_gated_ref`, taken with `git archive`),
each holding the same weights, timed interleaved as `bench_layers.py`
times its variants: a training step (layer, Dense(1) head, MSE, Adam) and
a forward pass, gates off and on, XLA off (and on with `--jit off,on`).
Prints medians and the ratio now / then; a ratio within run-to-run noise
(about +-10 % on a quiet 2-core machine) means no change.

    python benchmarks/bench_against.py --ref 145111a
    python benchmarks/bench_against.py --kinds LSTM --configs "64,200,32,128"
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _fit  # noqa: E402
import bench_layers  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gated  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAME = "keras_gated_ref"


def import_ref(ref, directory):
    """The package at commit `ref`, imported as `keras_gated_ref`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "keras_gated"],
        check=True,
        capture_output=True,
    ).stdout
    target = pathlib.Path(directory)
    with tempfile.TemporaryFile() as handle:
        handle.write(archive)
        handle.seek(0)
        with tarfile.open(fileobj=handle) as tar:
            tar.extractall(target, filter="data")
    (target / "keras_gated").rename(target / NAME)
    for path in (target / NAME).rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\bkeras_gated\b", NAME, text))
    sys.path.insert(0, str(target))
    import keras_gated_ref

    return keras_gated_ref


def variants(kind, config, packages, jits):
    """{(label, gates, jit): (train, predict)} with the same weights."""
    batch, timesteps, features, units = config
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, timesteps, features)), tf.float32)
    y = tf.constant(rng.normal(size=(batch, 1)), tf.float32)
    weights = None
    result = {}
    for jit in jits:
        for gates in (False, True):
            for label, package in packages.items():
                layer = getattr(package, kind)(units, return_gates=gates)
                layer.build(x.shape)
                if weights is None:
                    weights = layer.get_weights()
                layer.set_weights(weights)
                result[(label, gates, jit)] = bench_layers.keras_variant(
                    layer, jit, gates, x, y
                )
    return result


def report(kind, config, medians):
    for (label, gates, jit), (train, forward) in medians.items():
        if label != "now":
            continue
        then_train, then_forward = medians[("then", gates, jit)]
        print(
            f"{kind:9} {bench_layers.format_config(config):15} "
            f"xla {bench_layers.xla_label(jit):3} "
            f"gates {'on ' if gates else 'off'}"
            f"  train {then_train:7.1f} -> {train:7.1f} ms "
            f"({train / then_train:.2f}x)"
            f"  forward {then_forward:7.1f} -> {forward:7.1f} ms "
            f"({forward / then_forward:.2f}x)"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD~1")
    parser.add_argument("--kinds", default="LSTM,GRU")
    parser.add_argument("--jit", default="off", help="off, on or off,on")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument(
        "--configs", default="64,50,32,128;64,200,32,128;32,1000,32,64"
    )
    args = parser.parse_args()
    configs = _fit.parse_configs(args.configs)
    jits = [jit == "on" for jit in args.jit.split(",")]
    with tempfile.TemporaryDirectory() as directory:
        packages = {"now": keras_gated, "then": import_ref(args.ref, directory)}
        print(
            f"now: working tree; then: {args.ref}; load average "
            f"{os.getloadavg()[0]:.2f} at start; medians of {args.reps} "
            "interleaved repetitions (fewer for T > 200)"
        )
        for kind in args.kinds.split(","):
            for config in configs:
                reps = bench_layers.repetitions(args.reps, config[1])
                built = variants(kind, config, packages, jits)
                report(kind, config, bench_layers.time_variants(built, reps))


if __name__ == "__main__":
    main()
