"""What TimestepGradientLogger adds to `fit` at its default frequency.

The adding problem (T = 100 by default): a keras_gated LSTM trained for 10
epochs with Adam, once without and once with the callback at its defaults
(every epoch: gradient norms, gate statistics and images for a 32-sequence
probe), alternating for `--repeats` rounds so machine noise hits both
alike. Every run starts from the same initial weights. It reports the
median `fit` wall time of each, the relative overhead, the time spent
inside the callback's own hooks (the part of the overhead that is the
callback's, free of the noise between two runs) and the time its
background thread spent drawing the images (which costs wall time only
where the machine has no core to spare).

    python benchmarks/bench_callback.py
    python benchmarks/bench_callback.py --epochs 3 --repeats 1   # quick
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_gated  # noqa: E402
from keras_gated.tasks import adding_problem  # noqa: E402

HOOKS = (
    "on_train_begin",
    "on_epoch_begin",
    "on_epoch_end",
    "on_train_batch_end",
    "on_train_end",
)


class Timed(keras_gated.TimestepGradientLogger):
    """The logger, with the wall time spent in its hooks added up, and the
    time its background thread spends drawing and writing images."""

    seconds = 0.0
    drawing = 0.0

    def __getattribute__(self, name):
        attribute = super().__getattribute__(name)
        if name not in HOOKS:
            return attribute

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                Timed.seconds += time.perf_counter() - start

        return timed

    def _render_and_write(self, *args):
        start = time.perf_counter()
        try:
            return super()._render_and_write(*args)
        finally:
            Timed.drawing += time.perf_counter() - start


def build(units, length, weights=None):
    model = keras.Sequential(
        [
            keras.Input((length, 2)),
            keras_gated.LSTM(units, name="lstm"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    if weights is not None:
        model.set_weights(weights)
    return model


def run(args, weights, x, y, with_logger):
    model = build(args.units, args.length, weights)
    callbacks = []
    if with_logger:
        log_dir = tempfile.mkdtemp(prefix="bench_callback_")
        callbacks.append(Timed(log_dir, probe=(x[:32], y[:32])))
    Timed.seconds = Timed.drawing = 0.0
    start = time.perf_counter()
    model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    return time.perf_counter() - start, Timed.seconds, Timed.drawing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10000)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    x, y = adding_problem(args.samples, args.length, seed=0)
    keras.utils.set_random_seed(0)
    weights = build(args.units, args.length).get_weights()
    plain, logged, hooks, drawing = [], [], [], []
    for _ in range(args.repeats):
        plain.append(run(args, weights, x, y, with_logger=False)[0])
        seconds, in_hooks, drawn = run(args, weights, x, y, with_logger=True)
        logged.append(seconds)
        hooks.append(in_hooks)
        drawing.append(drawn)
    base = statistics.median(plain)
    print(
        f"adding problem T={args.length}, {args.samples} samples, "
        f"batch {args.batch_size}, LSTM({args.units}), {args.epochs} epochs, "
        f"{args.repeats} rounds"
    )
    print(f"fit without callback: {base:8.2f} s  (runs: {_list(plain)})")
    print(
        f"fit with callback:    {statistics.median(logged):8.2f} s  "
        f"(runs: {_list(logged)})"
    )
    print(
        "overhead, fit time:   "
        f"{100 * (statistics.median(logged) / base - 1):+8.1f} %"
    )
    print(
        f"time in the callback: {statistics.median(hooks):8.2f} s = "
        f"{100 * statistics.median(hooks) / base:.1f} % of fit "
        f"({statistics.median(hooks) / (args.epochs + 1):.2f} s per log)"
    )
    print(
        f"images, background:   {statistics.median(drawing):8.2f} s "
        "(drawn in a second thread while training runs)"
    )


def _list(values):
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
