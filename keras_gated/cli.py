"""The `keras-gated` command line.

    keras-gated compare --task adding --length 100 \\
        --models simplernn,lstm,gru,gated-lstm,gated-gru --epochs 10 --out runs/
"""

import argparse
import os
import sys

from keras_gated import compare
from keras_gated.tasks import TASK_NAMES


def _parser():
    parser = argparse.ArgumentParser(
        prog="keras-gated",
        description=(
            "Explicit LSTM, GRU and SimpleRNN layers that show their gates: "
            "tools."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "compare",
        help="train SimpleRNN, LSTM, GRU and our gated layers side by side",
        description=(
            "Trains each model on a long-dependency task with the same seed, "
            "units, optimizer and budget, with the TimestepGradientLogger, "
            "then prints a table (final metric against the task's baseline, "
            "steps to beat it, seconds per epoch, gradient decay "
            "log10(||dL/dx_T|| / ||dL/dx_1||) at initialisation and at the "
            "end) and writes PNG figures, TensorBoard runs "
            "(OUT/logs/TASK/MODEL) and the trained gated models "
            "(OUT/saved_models)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_task_arguments(command)
    _add_training_arguments(command)
    _add_run_arguments(command)
    return parser


def _add_task_arguments(command):
    """What is compared: the task, its length and the models."""
    command.add_argument(
        "--task",
        default="adding",
        help=(
            f"one of {', '.join(TASK_NAMES)}: adding problem (baseline MSE "
            "0.167), copy memory (baseline cross-entropy 10 log 8/(T+20)), "
            "sequential 8x8 digits (64 steps, baseline accuracy 0.1)"
        ),
    )
    command.add_argument(
        "--length",
        type=int,
        default=100,
        help="sequence length T (adding) or number of blanks T (copy); "
        "ignored by digits, which has 64 steps",
    )
    command.add_argument(
        "--models",
        default=",".join(compare.DEFAULT_MODELS),
        help=(
            f"comma-separated subset of {', '.join(compare.MODEL_NAMES)}; "
            "gated-X is keras_gated's layer, started from the initial "
            "weights of the built-in X"
        ),
    )


def _add_training_arguments(command):
    """The budget every model shares."""
    command.add_argument(
        "--epochs", type=int, default=10, help="epochs per model"
    )
    command.add_argument(
        "--units", type=int, default=64, help="recurrent units per model"
    )
    command.add_argument(
        "--batch-size", type=int, default=64, help="batch size"
    )
    command.add_argument(
        "--samples",
        type=int,
        default=5000,
        help="sequences generated (85%% train, 15%% validation); digits uses "
        "its 1797 images",
    )
    command.add_argument(
        "--learning-rate", type=float, default=1e-3, help="Adam learning rate"
    )


def _add_run_arguments(command):
    """How the run is seeded, logged and written."""
    command.add_argument(
        "--log-every",
        type=int,
        default=0,
        help="gradient-logger frequency in batches (0: once per epoch)",
    )
    command.add_argument("--seed", type=int, default=0, help="random seed")
    command.add_argument(
        "--out", default="runs", help="directory for figures, logs and models"
    )
    command.add_argument(
        "--quiet", action="store_true", help="no per-epoch progress lines"
    )


def _logger_factory(log_every):
    from keras_gated.callbacks import TimestepGradientLogger

    def make(model_name, log_dir, probe):
        if log_every:
            return [
                TimestepGradientLogger(log_dir, probe, batch_freq=log_every)
            ]
        return [TimestepGradientLogger(log_dir, probe)]

    return make


def main(argv=None):
    args = _parser().parse_args(argv)
    settings = compare.Settings(
        task=args.task,
        length=args.length,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        epochs=args.epochs,
        units=args.units,
        batch_size=args.batch_size,
        samples=args.samples,
        learning_rate=args.learning_rate,
        seed=args.seed,
        out=args.out,
        verbose=0 if args.quiet else 1,
    )
    try:
        settings.validate()
    except ValueError as error:
        print(f"keras-gated compare: error: {error}", file=sys.stderr)
        return 2
    results = compare.run_comparison(settings, _logger_factory(args.log_every))
    figure_dir = os.path.join(args.out, args.task)
    figures = compare.plot_results(results, figure_dir)
    print()
    print(compare.format_table(results))
    print("\nfigures:")
    for path in figures:
        print(f"  {path}")
    print("\nview the runs in TensorBoard:")
    print(f"  tensorboard --logdir {os.path.join(args.out, 'logs', args.task)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
