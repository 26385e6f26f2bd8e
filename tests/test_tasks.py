"""Task generators: shapes, structure and baselines computed from the data."""

import math

import numpy as np
import pytest

from keras_gated import tasks


def test_adding_problem_structure_and_baseline():
    x, y = tasks.adding_problem(20000, 50, seed=1)
    assert x.shape == (20000, 50, 2) and y.shape == (20000, 1)
    markers = x[..., 1]
    np.testing.assert_array_equal(markers.sum(axis=1), 2.0)
    assert (markers[:, :25].sum(axis=1) == 1).all()
    np.testing.assert_allclose(
        y[:, 0], (x[..., 0] * markers).sum(axis=1), rtol=1e-6
    )
    # The baseline of predicting 1.0, measured on the data, is 2/12.
    measured = float(np.mean((y - 1.0) ** 2))
    assert abs(measured - 2.0 / 12.0) < 0.005
    assert tasks.make_task("adding", 50).baseline == pytest.approx(2 / 12)


def test_copy_memory_structure_and_baseline():
    length = 30
    x, y = tasks.copy_memory(500, length, seed=2)
    total = length + 20
    assert x.shape == (500, total, 10) and y.shape == (500, total)
    tokens = x.argmax(-1)
    np.testing.assert_array_equal(x.sum(-1), 1.0)
    np.testing.assert_array_equal(y[:, -10:], tokens[:, :10])
    assert (tokens[:, 10 + length - 1] == tasks.DELIMITER).all()
    assert (y[:, :-10] == tasks.BLANK).all()
    assert set(np.unique(tokens[:, :10])) <= set(range(1, 9))
    # Blanks first, then uniform over the 8 symbols: the formula's value.
    probabilities = np.zeros((500, total, 9))
    probabilities[:, :-10, tasks.BLANK] = 1.0
    probabilities[:, -10:, 1:] = 1.0 / 8
    picked = np.take_along_axis(probabilities, y[..., None], -1)
    measured = float(-np.log(picked).mean())
    expected = 10 * math.log(8) / (length + 20)
    assert measured == pytest.approx(expected, rel=1e-6)
    assert tasks.make_task("copy", length).baseline == pytest.approx(expected)


def test_sequential_digits():
    x, y = tasks.sequential_digits(seed=0)
    assert x.shape == (1797, 64, 1) and y.shape == (1797,)
    assert 0.0 <= x.min() and x.max() <= 1.0
    counts = np.bincount(y, minlength=10)
    # Guessing the most frequent class is close to the 10% baseline.
    assert abs(counts.max() / len(y) - 0.1) < 0.005


@pytest.mark.parametrize(
    "call,argument",
    [
        (lambda: tasks.adding_problem(10, 0), "length"),
        (lambda: tasks.adding_problem(0, 10), "samples"),
        (lambda: tasks.copy_memory(10, -5), "length"),
        (lambda: tasks.make_task("sorting", 10), "task"),
    ],
)
def test_bad_arguments_name_the_argument(call, argument):
    with pytest.raises(ValueError, match=f"{argument}="):
        call()
