"""Long-dependency sequence tasks, generated on the spot (no downloads).

Each task function returns `(x, y)` NumPy arrays; `TASKS` maps task names to
`Task` records that also carry the loss, the metric and the baseline score
of a model that ignores the long dependency.

- Adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015): T
  uniform values in [0, 1] next to a marker channel with two ones; the
  target is the sum of the two marked values. Predicting the mean, 1.0,
  scores MSE Var(u1 + u2) = 2/12 = 0.167.
- Copy memory (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016): 10
  symbols from 8 categories, T blanks (the last one replaced by a
  delimiter), then the 10 symbols must be recalled. Predicting blanks and
  then a uniform guess scores cross-entropy 10 log(8) / (T + 20).
- Sequential digits: scikit-learn's bundled 8x8 digits (1797 images) read
  pixel by pixel as a sequence of 64 steps, a small cousin of sequential
  MNIST. Guessing scores 10% accuracy.
"""

import dataclasses
import math

import numpy as np

from keras_gated._validation import check_positive_int

COPY_SYMBOLS = 10
COPY_CATEGORIES = 8
BLANK, DELIMITER = 0, COPY_CATEGORIES + 1


def adding_problem(samples, length, seed=0):
    """The adding problem.

    Args:
        samples: number of sequences.
        length: timesteps T (at least 2).
        seed: seed of the NumPy generator.

    Returns:
        `x` of shape `(samples, length, 2)` (value, marker) and `y` of shape
        `(samples, 1)`. One marker lies in the first half, one in the
        second, so the dependency spans up to T steps.
    """
    check_positive_int("samples", samples)
    _check_length(length, minimum=2)
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(samples, length))
    markers = np.zeros((samples, length))
    rows = np.arange(samples)
    markers[rows, rng.integers(0, length // 2, size=samples)] = 1.0
    markers[rows, rng.integers(length // 2, length, size=samples)] = 1.0
    x = np.stack([values, markers], axis=-1).astype("float32")
    y = (values * markers).sum(axis=1, keepdims=True).astype("float32")
    return x, y


def copy_memory(samples, length, seed=0):
    """The copy-memory task.

    Args:
        samples: number of sequences.
        length: number of blank steps T between the symbols and recall.
        seed: seed of the NumPy generator.

    Returns:
        `x` of shape `(samples, length + 20, 10)`, one-hot inputs (0 blank,
        1-8 symbols, 9 delimiter), and `y` of shape `(samples, length + 20)`,
        integer targets in 0-8: blanks, then the 10 symbols at the end.
    """
    check_positive_int("samples", samples)
    _check_length(length, minimum=1)
    rng = np.random.default_rng(seed)
    total = length + 2 * COPY_SYMBOLS
    symbols = rng.integers(1, COPY_CATEGORIES + 1, size=(samples, COPY_SYMBOLS))
    tokens = np.full((samples, total), BLANK)
    tokens[:, :COPY_SYMBOLS] = symbols
    tokens[:, COPY_SYMBOLS + length - 1] = DELIMITER
    y = np.full((samples, total), BLANK)
    y[:, -COPY_SYMBOLS:] = symbols
    x = np.eye(DELIMITER + 1, dtype="float32")[tokens]
    return x, y.astype("int32")


def copy_memory_baseline(length):
    """Cross-entropy of blanks then a uniform guess: 10 log 8 / (T + 20)."""
    return (
        COPY_SYMBOLS * math.log(COPY_CATEGORIES) / (length + 2 * COPY_SYMBOLS)
    )


def sequential_digits(seed=0):
    """scikit-learn's 8x8 digits as 64-step pixel sequences.

    Returns:
        `x` of shape `(1797, 64, 1)` with pixels scaled to [0, 1] and `y` of
        shape `(1797,)` with the digit, shuffled with `seed`.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    x = (digits.images.reshape(-1, 64, 1) / 16.0).astype("float32")
    return x[order], digits.target[order].astype("int32")


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: data, loss, metric and the score of the trivial model.

    `lower_is_better` tells how to compare the metric with the baseline.
    """

    name: str
    metric: str
    baseline: float
    lower_is_better: bool
    loss: str
    output_units: int
    per_step_output: bool
    fixed_length: int = 0

    def beats(self, value):
        if self.lower_is_better:
            return value < self.baseline
        return value > self.baseline


def make_task(name, length):
    """The `Task` record of `name` for sequences of `length` steps."""
    if name == "adding":
        return Task("adding", "mse", 2.0 / 12.0, True, "mse", 1, False)
    if name == "copy":
        return Task(
            "copy",
            "loss",
            copy_memory_baseline(length),
            True,
            "sparse_categorical_crossentropy",
            COPY_CATEGORIES + 1,
            True,
        )
    if name == "digits":
        return Task(
            "digits",
            "accuracy",
            0.1,
            False,
            "sparse_categorical_crossentropy",
            10,
            False,
            fixed_length=64,
        )
    raise ValueError(
        f"task must be one of {TASK_NAMES}. Received: task={name!r}"
    )


TASK_NAMES = ("adding", "copy", "digits")


def make_data(name, length, samples, seed=0):
    """`(x, y)` of a task; `samples` is ignored for the fixed digits set."""
    if name == "adding":
        return adding_problem(samples, length, seed)
    if name == "copy":
        return copy_memory(samples, length, seed)
    if name == "digits":
        return sequential_digits(seed)
    raise ValueError(
        f"task must be one of {TASK_NAMES}. Received: task={name!r}"
    )


def _check_length(length, minimum):
    if (
        isinstance(length, bool)
        or not isinstance(length, int)
        or length < minimum
    ):
        raise ValueError(
            f"length must be an integer >= {minimum}. Received: "
            f"length={length!r}"
        )
