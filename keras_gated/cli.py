"""The `keras-gated` command line.

    keras-gated compare --task adding --length 100 \\
        --models simplernn,lstm,gru,gated-lstm,gated-gru --epochs 10 --out runs/
"""

import argparse
import math
import os
import sys

from keras_gated import compare
from keras_gated._validation import check_int_between
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


def _check_arguments(args, models):
    """What `compare.Settings.validate` leaves to the command line: the
    logger frequency, the seed's range, a finite learning rate, enough
    samples for both splits, each model once."""
    if args.log_every < 0:
        raise ValueError(
            "log_every must be 0 (once per epoch) or a positive number of "
            f"batches. Received: log_every={args.log_every}"
        )
    check_int_between("seed", args.seed, 0, 2**32 - 1)
    if not math.isfinite(args.learning_rate):
        raise ValueError(
            "learning_rate must be a finite positive number. "
            f"Received: learning_rate={args.learning_rate!r}"
        )
    # 85% train, 15% validation: two sequences leave one for each.
    if args.task != "digits" and args.samples < 2:
        raise ValueError(
            "samples must be an integer >= 2, one sequence for training "
            f"and one for validation. Received: samples={args.samples}"
        )
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise ValueError(
            f"models must name each model once (a repeat would overwrite "
            f"its logs and saved model). Received: models={args.models!r}, "
            f"repeating {', '.join(repeated)}"
        )


def main(argv=None):
    args = _parser().parse_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    settings = compare.Settings(
        task=args.task,
        length=args.length,
        models=models,
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
        _check_arguments(args, models)
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
    print(
        "\nview the runs in TensorBoard (its Timesteps tab for the gradients):"
    )
    print(f"  tensorboard --logdir {os.path.join(args.out, 'logs', args.task)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
