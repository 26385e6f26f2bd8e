"""Training-step time on each Keras backend: ours against that backend's
built-in, on the user's path.

For each backend (one process each, as Keras reads `KERAS_BACKEND` once),
`train_on_batch` with Keras' compile defaults (`benchmarks/_fit.py`: the
built-in, ours with gates off, returned and unused, and in the loss), the
same weights, interleaved in one process; medians over `--reps` rounds.
Prints one table: ms and ratio ours / built-in of that backend.

    python benchmarks/bench_backends.py
    python benchmarks/bench_backends.py --backends jax --configs "64,50,32,128"
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _measure(kinds, configs, reps):
    """In this process's backend: `[{kind, config, variant: ms}]`."""
    sys.path.insert(0, HERE)
    import keras
    from _fit import fit_variants
    from _fit import parse_configs
    from _fit import time_fit

    import keras_gated

    rows = []
    for kind in kinds:
        builtin, ours = getattr(keras.layers, kind), getattr(keras_gated, kind)
        for config in parse_configs(configs):
            calls = fit_variants(builtin, ours, config, jits=(False,))
            medians = time_fit(calls, reps)
            row = {"kind": kind, "config": list(config)}
            row.update({variant: ms for (variant, _), ms in medians.items()})
            rows.append(row)
    return rows


def _child(args):
    rows = _measure(args.kinds.split(","), args.configs, args.reps)
    print("RESULT " + json.dumps(rows))


def _table(results):
    lines = [
        "| backend | layer | B,T,F,U | built-in ms | ours | ours+gates | "
        "ours+gates(loss) |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend, rows in results.items():
        for row in rows:
            base = row["builtin"]
            cells = [
                f"{row[v]:.1f} ms, {row[v] / base:.2f}x"
                for v in ("ours", "ours+gates", "ours+gates(loss)")
            ]
            config = ",".join(str(v) for v in row["config"])
            lines.append(
                f"| {backend} | {row['kind']} | {config} | {base:.1f} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--kinds", default="LSTM,GRU")
    parser.add_argument("--configs", default="64,50,32,128;64,200,32,128")
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    sys.path.insert(0, HERE)
    from _fit import machine
    from _fit import parse_configs

    parse_configs(args.configs)  # a bad --configs fails here, not per child
    print(machine())
    results = {}
    for backend in args.backends.split(","):
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
        command = [sys.executable, __file__, "--child"] + [
            f"--{name}={getattr(args, name)}"
            for name in ("kinds", "configs", "reps")
        ]
        output = subprocess.run(
            command, env=env, check=True, capture_output=True, text=True
        ).stdout
        line = [x for x in output.splitlines() if x.startswith("RESULT ")][-1]
        results[backend] = json.loads(line[len("RESULT ") :])
        print(f"{backend}: done", flush=True)
    print(_table(results))


if __name__ == "__main__":
    main()
