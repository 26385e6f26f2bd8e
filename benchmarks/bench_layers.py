"""Side-by-side timings of keras_gated's layers against Keras and PyTorch.

Variants. For each configuration (batch, timesteps, features, units) and
each kind (LSTM, GRU, SimpleRNN): the built-in Keras layer and ours with
gates off and on (with gates on, the step returns the gate sequences, so
they are really computed), each with XLA off and on (`jit_compile`), and,
where `torch` is importable, `torch.nn.LSTM` / `nn.GRU` / `nn.RNN`
(`batch_first=True`, one thread per CPU the process may use). All hold the
same weights: ours by `set_weights`, torch's converted (kernels
transposed; the GRU's gates reordered from Keras' z, r, h to torch's r, z,
n; Keras' LSTM bias becomes `bias_ih` with a zero `bias_hh`, as does
SimpleRNN's; the GRU's two bias rows become `bias_ih` and `bias_hh`).
Once per configuration torch's last output is checked against the
built-in's to 1e-4; where it differs, the torch comparison is
left out, with a message.

What is timed. One training step (forward, a Dense(1) / Linear(1) head on
the last output, mean squared error, backward, an Adam update; for Keras
inside one `tf.function`) and one forward pass of the layer alone (for
torch under `torch.no_grad()`). One process, the Keras variants
interleaved: every repetition times each of them once, in turn, so machine
noise hits all of them alike; then torch's, in a loop of its own (timed
in turn with them, torch's threads slowed the variant after it); the
table shows medians. Sequences longer than 200 steps get fewer
repetitions, `max(5, reps * 200 // T)`; the default run takes about twenty
minutes on 2 quiet cores. PyTorch's OpenMP threads wait for each other at
every timestep, so its times grow many-fold when other processes load the
machine (TensorFlow's suffer far less); the first line of the output gives
the load average at start, and a fair comparison needs it near 0.

Peak memory (`--memory`, on by default; `--no-memory` skips it). For each
configuration a child process (so the timings are not disturbed) builds
the same variants, runs two training steps to compile and warm up, then
measures the peak memory of the third step above what was held just
before it: activations kept for the backward pass, gradients, temporaries
and outputs, not weights, optimizer slots or compiled code. Bytes are
counted at malloc by a small preloaded library, the same way for
TensorFlow and PyTorch; `benchmarks/_memory.py` says why neither
TensorFlow's counters nor the resident set size will do on CPU.

Percent of the matmul roof. At start the script times a 2048 x 2048
float32 matmul in TensorFlow (median of 7) as the machine's attainable
rate. A training step's work is counted analytically, with G gates (4 for
the LSTM, 3 for the GRU, 1 for SimpleRNN):

    forward  = 2*B*T*F*G*U  (input projection)
             + 2*B*T*U*G*U  (recurrent matmul)
    training = 3 * forward

since the backward pass does two matmuls of the same size for each one of
the forward pass (input and kernel gradients of the projection, state and
recurrent-kernel gradients of the recurrence). Elementwise gate math, the
head and the optimizer are left out. The table shows this count over the
measured time as a percentage of the roof; the recurrent matmuls are small
(batch x units) and sequential, so far below 100 % is expected.

Growth. Where the configurations include several sequence lengths at the
same batch, features and units (by default T = 50, 200, 1000), it prints
how each variant's training time grows from one length to the next;
linear in T is the ideal, and `!` marks growth more than 10 % above it.

The user's path (`--path fit`, with the above by default:
`--path fit,step`). `model.train_on_batch` of `Input -> layer -> Dense(1)`
compiled with Keras' defaults (`optimizer="adam", loss="mse"`,
`jit_compile="auto"`: no XLA on a CPU) and with `jit_compile=True`, for
the built-in and for ours with the same weights: gates off, gates returned
and unused, and gates in the loss (a second output, the mean of the
gates, loss weight 1e-3, so every gate gets a gradient); see
`benchmarks/_fit.py`. Its table follows the other, with ratios to the
built-in with the same `jit_compile` and to PyTorch's training step; the
growth lines include its variants ("fit ...").

The machine. The first line names the CPU, whether it has AVX-512 and
whether TensorFlow's oneDNN kernels are on (`TF_ENABLE_ONEDNN_OPTS`, or
TensorFlow's default: on for AVX-512 CPUs). `--onednn on`, `off` or
`both` runs the whole benchmark in a new process per setting (TensorFlow
reads the variable when it starts); the built-in layers gain much from
oneDNN, so measure both before comparing.

    python benchmarks/bench_layers.py                # the full table
    python benchmarks/bench_layers.py --quick        # 5 repetitions
    python benchmarks/bench_layers.py --configs "64,50,32,128;64,200,32,128"
    python benchmarks/bench_layers.py --markdown     # table for README.md
    python benchmarks/bench_layers.py --path fit --onednn both
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import _fit  # noqa: E402
import _memory  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gated  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

# Every variant is a tf.function of its own, traced once: the retracing
# warning that this sets off is expected.
tf.get_logger().setLevel("ERROR")

CONFIGS = [
    (64, 50, 32, 128),
    (64, 200, 32, 128),
    (128, 100, 32, 256),
    (64, 1000, 32, 128),
    (32, 5000, 32, 64),
]
KINDS = {
    "LSTM": (keras.layers.LSTM, keras_gated.LSTM, 4),
    "GRU": (keras.layers.GRU, keras_gated.GRU, 3),
    "SimpleRNN": (keras.layers.SimpleRNN, keras_gated.SimpleRNN, 1),
}
TORCH_MODULES = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}
KERAS_VARIANTS = ("builtin", "ours", "ours+gates")
TORCH = ("torch", None)
MB = 2**20
CPUS = (
    len(os.sched_getaffinity(0))
    if hasattr(os, "sched_getaffinity")
    else os.cpu_count()
)


def keras_variant(layer, jit, with_gates, x, y):
    """Compiled training step and forward pass, as argument-less calls."""
    head = keras.layers.Dense(1)
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

    return lambda: train_step(x, y), lambda: predict(x)


def torch_weights(kind, weights, units):
    """Keras kernel, recurrent kernel and bias as torch's weight_ih_l0,
    weight_hh_l0, bias_ih_l0 and bias_hh_l0."""
    kernel, recurrent_kernel, bias = weights
    if kind != "GRU":  # the LSTM's i, f, c, o in both; one block in an RNN
        return kernel.T, recurrent_kernel.T, bias, np.zeros_like(bias)
    # Keras orders the GRU's gates z, r, h, torch r, z, n; Keras'
    # reset_after=True bias has an input row and a recurrent row.
    order = np.r_[units : 2 * units, :units, 2 * units : 3 * units]
    return (
        kernel[:, order].T,
        recurrent_kernel[:, order].T,
        bias[0, order],
        bias[1, order],
    )


def torch_module(kind, weights, features, units):
    module = getattr(torch.nn, TORCH_MODULES[kind])(
        features, units, batch_first=True
    )
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    with torch.no_grad():
        for name, value in zip(names, torch_weights(kind, weights, units)):
            getattr(module, name).copy_(
                torch.from_numpy(np.ascontiguousarray(value))
            )
    return module


def torch_variant(module, x, y):
    """Training step and forward pass doing the same work as the Keras
    ones, as argument-less calls."""
    head = torch.nn.Linear(module.hidden_size, 1)
    optimizer = torch.optim.Adam(
        list(module.parameters()) + list(head.parameters()), lr=1e-3
    )
    loss_fn = torch.nn.MSELoss()
    inputs, targets = torch.from_numpy(x.numpy()), torch.from_numpy(y.numpy())

    def train_step():
        optimizer.zero_grad()
        outputs, _ = module(inputs)
        loss = loss_fn(head(outputs[:, -1]), targets)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def predict():
        with torch.no_grad():
            return module(inputs)[0][:, -1]

    return train_step, predict


def build_variants(kind, config, jits):
    """{(name, jit): (train, predict)}; torch's key is TORCH."""
    batch, timesteps, features, units = config
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, timesteps, features)), tf.float32)
    y = tf.constant(rng.normal(size=(batch, 1)), tf.float32)
    builtin_cls, ours_cls, _ = KINDS[kind]
    reference = builtin_cls(units)
    reference.build(x.shape)
    weights = reference.get_weights()
    variants = {}
    for jit in jits:
        for name in KERAS_VARIANTS:
            with_gates = name == "ours+gates"
            if name == "builtin":
                layer = builtin_cls(units)
            else:
                layer = ours_cls(units, return_gates=with_gates)
            layer.build(x.shape)
            layer.set_weights(weights)
            variants[(name, jit)] = keras_variant(layer, jit, with_gates, x, y)
    if torch is not None:
        module = torch_module(kind, weights, features, units)
        with torch.no_grad():
            outputs = module(torch.from_numpy(x.numpy()))[0][:, -1].numpy()
        expected = tf.function(reference)(x).numpy()
        error = np.max(np.abs(outputs - expected))
        if error <= 1e-4:
            variants[TORCH] = torch_variant(module, x, y)
        else:
            print(
                f"{kind} {config}: torch's output differs from the "
                f"built-in's by {error:.2e} (more than 1e-4); "
                "torch left out of this comparison"
            )
    return variants


def timed(fn):
    start = time.perf_counter()
    keras.tree.map_structure(np.asarray, fn())
    return (time.perf_counter() - start) * 1e3


def time_variants(variants, reps):
    """{key: (median train ms, median forward ms)}: the Keras variants
    interleaved, then PyTorch's in a loop of its own. Interleaved with
    them, PyTorch made the TensorFlow variant after it up to 22% slower
    (the built-in LSTM at T=50: 28.9 against 23.7 ms; ours 11-16%), which
    favoured ours in the ratios."""
    times = _interleaved(
        {k: v for k, v in variants.items() if k != TORCH}, reps
    )
    if TORCH in variants:
        times.update(_interleaved({TORCH: variants[TORCH]}, reps))
    return times


def _interleaved(variants, reps):
    """{key: (median train ms, median forward ms)}, interleaved."""
    for train, predict in variants.values():  # compile and warm up
        timed(train)
        timed(predict)
    times = {key: ([], []) for key in variants}
    for _ in range(reps):
        for key, (train, predict) in variants.items():
            times[key][0].append(timed(train))
            times[key][1].append(timed(predict))
    return {
        key: (statistics.median(train), statistics.median(forward))
        for key, (train, forward) in times.items()
    }


def repetitions(reps, timesteps):
    if timesteps <= 200:
        return reps
    return min(reps, max(5, reps * 200 // timesteps))


def train_flops(kind, config):
    batch, timesteps, features, units = config
    gates = KINDS[kind][2]
    forward = 2 * batch * timesteps * gates * units * (features + units)
    return 3 * forward


def matmul_roof(size=2048, reps=7):
    """float32 matmul FLOP/s of this machine, in TensorFlow."""
    a = tf.random.normal((size, size))
    for _ in range(2):
        tf.matmul(a, a)
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        tf.matmul(a, a)  # eager ops on CPU return when done
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds)


def key_name(key):
    name, jit = key
    return f"{name}|{xla_label(jit)}"


def parse_key(text):
    name, xla = text.split("|")
    return name, None if xla == "-" else xla == "on"


def xla_label(jit):
    return "-" if jit is None else ("on" if jit else "off")


def memory_child(kind, config, jits):
    """In the child: prints {key name: peak MB of one training step}."""
    peaks = {}
    for key, (train, _) in build_variants(kind, config, jits).items():
        timed(train)
        timed(train)
        peaks[key_name(key)] = _memory.peak_bytes(train) / MB
    print(json.dumps(peaks))


def memory_of(kind, config, jits, env):
    """{key: peak MB} from a child process."""
    argv = [
        os.path.abspath(__file__),
        "--memory-child",
        "--kinds",
        kind,
        "--configs",
        format_config(config),
        "--jit",
        ",".join(xla_label(jit) for jit in jits),
    ]
    try:
        peaks = json.loads(_memory.run_child(argv, env))
    except RuntimeError as error:
        print(f"{kind} {format_config(config)}: no peak memory: {error}")
        return {}
    return {parse_key(text): value for text, value in peaks.items()}


def format_config(config):
    return ",".join(map(str, config))


def ratio(value, base):
    return None if value is None or not base else value / base


def table_rows(kind, config, medians, peaks, roof):
    """One row per variant: the cells of the table, None where unknown."""
    flops = train_flops(kind, config)
    torch_train = medians.get(TORCH, (None,))[0]
    rows = []
    for (name, jit), (train, forward) in medians.items():
        base_train, base_forward = medians.get(("builtin", jit), (None, None))
        peak = peaks.get((name, jit))
        rows.append(
            [
                kind,
                format_config(config),
                xla_label(jit),
                name,
                train,
                ratio(train, base_train),
                ratio(train, torch_train),
                forward,
                ratio(forward, base_forward),
                peak,
                ratio(peak, peaks.get(("builtin", jit))),
                100 * flops / (train / 1e3) / roof,
            ]
        )
    return rows


HEADER = [
    "layer",
    "B,T,F,U",
    "xla",
    "variant",
    "train ms",
    "vs blt",
    "vs torch",
    "fwd ms",
    "vs blt",
    "peak MB",
    "vs blt",
    "% roof",
]
WIDTHS = [5, 15, 3, 10, 9, 6, 8, 8, 6, 8, 6, 6]
DIGITS = [None, None, None, None, 1, 2, 2, 1, 2, 1, 2, 1]


def cells(row):
    return [
        "-"
        if value is None
        else (value if digits is None else f"{value:.{digits}f}")
        for value, digits in zip(row, DIGITS)
    ]


def plain_line(values):
    first = [f"{v:<{w}}" for v, w in zip(values[:1], WIDTHS[:1])]
    rest = [f"{v:>{w}}" for v, w in zip(values[1:], WIDTHS[1:])]
    return " ".join(first + rest)


def markdown_line(values):
    return "| " + " | ".join(values) + " |"


def growth_pairs(configs):
    """Consecutive sequence lengths at the same batch, features, units."""
    groups = {}
    for config in configs:
        batch, _, features, units = config
        groups.setdefault((batch, features, units), []).append(config)
    pairs = []
    for group in groups.values():
        group.sort(key=lambda config: config[1])
        pairs += zip(group, group[1:])
    return pairs


def growth_lines(train_times, pairs, markdown):
    """Training-time growth of each variant between the pairs' lengths."""
    header = ["layer", "variant", "xla / jit"] + [
        f"T {a[1]}->{b[1]} (linear {b[1] / a[1]:g}x)" for a, b in pairs
    ]
    lines = []
    for (kind, name, jit), by_config in train_times.items():
        growth = []
        for a, b in pairs:
            if a in by_config and b in by_config:
                ratio = by_config[b] / by_config[a]
                over = ratio > 1.1 * b[1] / a[1]
                growth.append(f"{ratio:.2f}x" + ("!" if over else ""))
            else:
                growth.append("-")
        # The fit path's jit_compile is "auto" (no XLA on a CPU) or True.
        label = ("True" if jit else "auto") if name.startswith("fit") else None
        lines.append([kind, name, label or xla_label(jit)] + growth)
    if markdown:
        rule = ["---"] * len(header)
        return [markdown_line(line) for line in [header, rule] + lines]
    widths = [5, 20, 9] + [len(column) for column in header[3:]]
    return [
        " ".join(f"{v:>{w}}" for v, w in zip(line, widths))
        for line in [header] + lines
    ]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions")
    parser.add_argument(
        "--reps", type=int, default=15, help="repetitions for T <= 200"
    )
    parser.add_argument("--kinds", default="LSTM,GRU,SimpleRNN")
    parser.add_argument("--jit", default="off,on", help="off, on or off,on")
    parser.add_argument(
        "--configs",
        default=";".join(map(format_config, CONFIGS)),
        help='"B,T,F,U;B,T,F,U;..." (default: the five of the table)',
    )
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="peak memory of a training step, in child processes",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print Markdown tables"
    )
    parser.add_argument(
        "--path",
        default="fit,step",
        help="fit (train_on_batch, compile defaults), step (one "
        "tf.function training step and a forward pass), or fit,step",
    )
    parser.add_argument(
        "--onednn",
        default="default",
        choices=("default", "on", "off", "both"),
        help="TensorFlow's oneDNN kernels (TF_ENABLE_ONEDNN_OPTS): as this "
        "process has them, or on, off or both, each in a process of its own",
    )
    parser.add_argument(
        "--memory-child", action="store_true", help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    try:
        args.configs = _fit.parse_configs(args.configs)
    except ValueError as error:
        parser.error(str(error))
    if args.reps < 1:
        parser.error(f"--reps must be at least 1. Received: {args.reps}")
    args.kinds = args.kinds.split(",")
    jits = args.jit.split(",")
    if not set(args.kinds) <= set(KINDS) or not set(jits) <= {"off", "on"}:
        parser.error(
            "--kinds takes LSTM, GRU and/or SimpleRNN, --jit off and/or on"
        )
    args.jits = [jit == "on" for jit in jits]
    args.paths = args.path.split(",")
    if not args.paths or not set(args.paths) <= {"fit", "step"}:
        parser.error(f"--path takes fit and/or step. Received: {args.path}")
    if args.quick:
        args.reps = 5
    return args


FIT_HEADER = ["layer", "B,T,F,U", "jit", "variant", "fit ms", "vs blt"]
FIT_HEADER += ["vs torch"]


def fit_rows(kind, config, args, torch_train):
    """The fit table's rows for one kind and configuration."""
    builtin_class, ours_class, _ = KINDS[kind]
    calls = _fit.fit_variants(builtin_class, ours_class, config, args.jits)
    medians = _fit.time_fit(calls, repetitions(args.reps, config[1]))
    rows = []
    for (variant, jit), median in medians.items():
        base = medians["builtin", jit]
        rows.append(
            [
                kind,
                format_config(config),
                "True" if jit else "auto",
                variant,
                f"{median:.1f}",
                f"{median / base:.2f}",
                "-" if torch_train is None else f"{median / torch_train:.2f}",
            ]
        )
    return rows, medians


def run_onednn_children(setting):
    """Runs this script again, once per oneDNN setting, in new processes
    (TensorFlow reads TF_ENABLE_ONEDNN_OPTS when it starts)."""
    argv = [a for a in sys.argv[1:] if not a.startswith("--onednn")]
    if "--onednn" in sys.argv:
        index = sys.argv.index("--onednn")
        argv = sys.argv[1:index] + sys.argv[index + 2 :]
    failed = []
    for value in {"on": ["1"], "off": ["0"], "both": ["1", "0"]}[setting]:
        print(f"\n=== TF_ENABLE_ONEDNN_OPTS={value}", flush=True)
        env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=value)
        code = subprocess.call([sys.executable, __file__, *argv], env=env)
        if code:
            reason = _memory.exit_reason(code)
            failed.append(f"TF_ENABLE_ONEDNN_OPTS={value}: {reason}")
    for line in failed:
        print(f"bench_layers.py: the process with {line}", file=sys.stderr)
    return 1 if failed else 0


def bench(kind, config, args, roof, env):
    """The table's rows for one kind and configuration, and the medians."""
    reps = repetitions(args.reps, config[1])
    medians = time_variants(build_variants(kind, config, args.jits), reps)
    peaks = memory_of(kind, config, args.jits, env) if env else {}
    return table_rows(kind, config, medians, peaks, roof), medians


def run_all(args, roof, env, progress):
    """Every kind and configuration: the step table's rows, the fit table's
    rows and `{(kind, variant, jit): {config: train ms}}` for the growth."""
    rows, fits, train_times = [], [], {}
    for kind in args.kinds:
        if "step" in args.paths and not args.markdown:
            print("\n" + plain_line(HEADER))
        for config in args.configs:
            medians = {}
            if "step" in args.paths:
                new_rows, medians = bench(kind, config, args, roof, env)
                rows += new_rows
                if args.markdown:
                    print(f"{kind} {format_config(config)} done", file=progress)
                else:
                    print("\n".join(plain_line(cells(row)) for row in new_rows))
            times = {key: train for key, (train, _) in medians.items()}
            if "fit" in args.paths:
                new_fits, fit_medians = fit_rows(
                    kind, config, args, times.get(TORCH)
                )
                fits += new_fits
                times.update(
                    {
                        (f"fit {v}", jit): ms
                        for (v, jit), ms in fit_medians.items()
                    }
                )
            for (name, jit), train in times.items():
                train_times.setdefault((kind, name, jit), {})[config] = train
    return rows, fits, train_times


FIT_WIDTHS = [9, 14, 4, 16, 8, 6, 8]


def fit_line(values):
    return " ".join(
        f"{v:<{w}}" if i in (0, 3) else f"{v:>{w}}"
        for i, (v, w) in enumerate(zip(values, FIT_WIDTHS))
    )


def print_fit_table(fits, markdown):
    line = markdown_line if markdown else fit_line
    print(
        "\nThe user's path: train_on_batch of Input -> layer -> Dense(1), "
        'compile(optimizer="adam", loss="mse"), jit_compile auto (no XLA '
        "on a CPU) or True; vs blt: / the built-in with the same "
        "jit_compile; vs torch: / PyTorch's training step"
    )
    print(line(FIT_HEADER))
    if markdown:
        print(line(["---"] * len(FIT_HEADER)))
    print("\n".join(line(row) for row in fits))


def main():
    args = parse_args()
    if args.onednn != "default":
        sys.exit(run_onednn_children(args.onednn))
    if torch is not None:
        torch.set_num_threads(CPUS)
    if args.memory_child:
        for kind in args.kinds:
            for config in args.configs:
                memory_child(kind, config, args.jits)
        return
    roof = matmul_roof()
    versions = f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    if torch is not None:
        versions += f", PyTorch {torch.__version__}"
    notes = [
        _fit.machine(),
        f"{versions}, {CPUS} CPUs, load average {os.getloadavg()[0]:.2f} "
        "at start",
        f"median of {args.reps} interleaved repetitions, for T > 200 of "
        f"max(5, {args.reps} * 200 // T)",
        "ratios: variant / built-in with the same xla, variant / torch",
        f"matmul roof {roof / 1e9:.0f} GFLOP/s (float32 2048x2048)",
    ]
    progress = sys.stderr if args.markdown else sys.stdout
    print("\n".join(notes), file=progress)
    memory = _memory.preload_env() if args.memory else contextlib.nullcontext()
    with memory as env:
        rows, fits, train_times = run_all(args, roof, env, progress)
    if args.markdown:
        print("\n".join(notes))
    if args.markdown and rows:
        print()
        print(markdown_line(HEADER))
        print(markdown_line(["---"] * len(HEADER)))
        for row in rows:
            print(markdown_line(cells(row)))
    if fits:
        print_fit_table(fits, args.markdown)
    pairs = growth_pairs(args.configs)
    if pairs:
        print("\nTraining-time growth with the sequence length:")
        print("\n".join(growth_lines(train_times, pairs, args.markdown)))


if __name__ == "__main__":
    main()
