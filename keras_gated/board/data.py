"""What the "Timesteps" dashboard shows, computed from logged arrays.

Plain functions on NumPy arrays and tag strings, testable without a
TensorBoard server: which run logged what (`catalogue`), one step's
profile, a heatmap over logged steps and timesteps reduced to a size a
browser draws at once (`block_mean`), and JSON-safe lists (`json_values`:
NaN and infinities become `null`). `plugin.py` reads the tensors through
TensorBoard's data provider and answers with these.
"""

import numpy as np

from keras_gated import gates as gate_names

# The tensor tags the logger writes: `<kind>/<layer>/<name>`. A layer's
# name may hold slashes ("bidi/backward"), a quantity's or gate's not.
PROFILE_KIND = "timestep_gradients"
GATE_MEAN_KIND = "gate_mean"
GATE_SATURATION_KIND = "gate_saturation_per_timestep"
GATE_SEQUENCE_KIND = "gate_sequence"
KINDS = (PROFILE_KIND, GATE_MEAN_KIND, GATE_SATURATION_KIND, GATE_SEQUENCE_KIND)
VECTOR_KINDS = KINDS[:3]
"""The kinds logged as one `(timesteps,)` vector per step."""


def parse_tag(tag):
    """`(kind, layer, name)` of a logger's tensor tag, or `None`.

    >>> parse_tag("timestep_gradients/bidi/backward/inputs")
    ('timestep_gradients', 'bidi/backward', 'inputs')
    """
    kind, _, rest = tag.partition("/")
    layer, _, name = rest.rpartition("/")
    if kind not in KINDS or not layer or not name:
        return None
    return kind, layer, name


def catalogue(tags_by_run):
    """What each run logged, for the dashboard's menus.

    Args:
        tags_by_run: `{run: {tag: max_step}}` of the plugin's tensors.

    Returns:
        A list, sorted by run, of `{"run", "max_step", "layers"}` where
        `layers` is a list, sorted by name, of `{"layer", "quantities",
        "gates", "sequences"}`: the quantities of `timestep_gradients`
        (sorted), the gates with a mean per timestep, and the gates with
        logged probe sequences (both in the layer's gate order: LSTM i,
        f, c, o; GRU z, r, h). Tags of other shapes are left out.
    """
    keys = {
        PROFILE_KIND: "quantities",
        GATE_MEAN_KIND: "gates",
        GATE_SEQUENCE_KIND: "sequences",
    }
    runs = []
    for run in sorted(tags_by_run):
        layers = {}
        for tag in tags_by_run[run]:
            parsed = parse_tag(tag)
            if parsed is None or parsed[0] not in keys:
                continue
            kind, layer, name = parsed
            entry = layers.setdefault(
                layer, {"quantities": [], "gates": [], "sequences": []}
            )
            entry[keys[kind]].append(name)
        if layers:
            runs.append(
                {
                    "run": run,
                    "max_step": max(tags_by_run[run].values()),
                    "layers": [
                        {
                            "layer": layer,
                            "quantities": sorted(entry["quantities"]),
                            "gates": _in_gate_order(entry["gates"]),
                            "sequences": _in_gate_order(entry["sequences"]),
                        }
                        for layer, entry in sorted(layers.items())
                    ],
                }
            )
    return runs


def _in_gate_order(names):
    """The gates in their layer's weight order (LSTM i, f, c, o; GRU z, r,
    h), or sorted when they are not one known layer's."""
    for order in (
        gate_names.LSTM_GATES,
        gate_names.GRU_GATES,
        gate_names.SIMPLE_RNN_GATES,
    ):
        if set(names) <= set(order):
            return [name for name in order if name in names]
    return sorted(names)


def json_values(array):
    """Nested lists of Python floats, `None` where `array` is not finite.

    Float32 values convert exactly, so a reader gets back the logged bits.
    """
    array = np.asarray(array, dtype="float64")
    if np.all(np.isfinite(array)):
        return array.tolist()
    return np.where(np.isfinite(array), array, None).tolist()


def by_step(pairs):
    """`(steps, arrays)` of `(step, array)` pairs, sorted by step; of
    pairs with the same step (a run resumed from an earlier checkpoint
    writes some steps again) the last one written."""
    latest = {}
    for step, array in pairs:
        latest[step] = array
    steps = sorted(latest)
    return steps, [latest[step] for step in steps]


def union_of_steps(series):
    """The sorted steps that any of the `(steps, arrays)` series logged."""
    return sorted({step for steps, _ in series for step in steps})


def stack_rows(arrays):
    """`(len(arrays), longest)` float array of 1D arrays, NaN-padded (the
    length of a run's sequences may change between logged steps)."""
    longest = max((np.size(a) for a in arrays), default=0)
    rows = np.full((len(arrays), longest), np.nan)
    for row, array in zip(rows, arrays):
        row[: np.size(array)] = np.ravel(array)
    return rows


def at_step(steps, step):
    """Index of the latest of the sorted `steps` at or before `step`.

    The first when all are later; the last when `step` is `None`.
    """
    if step is None:
        return len(steps) - 1
    return max(int(np.searchsorted(steps, step, side="right")) - 1, 0)


def _bins(size, limit):
    """Start indices of at most `limit` near-equal consecutive blocks."""
    count = min(size, limit)
    return np.linspace(0, size, count + 1).round().astype(int)[:-1]


def block_mean(matrix, max_rows, max_columns):
    """`matrix` reduced to at most `max_rows` x `max_columns` block means.

    Each output cell is the mean of the finite entries of one block of
    consecutive rows and columns (NaN when it has none); blocks differ by
    at most one row or column in size. A matrix within the limits comes
    back unchanged.

    Returns:
        `(reduced, row_starts, column_starts)`: the reduced matrix and the
        index of each block's first row and first column.

    >>> reduced, rows, columns = block_mean(np.arange(12.).reshape(3, 4), 3, 2)
    >>> reduced.tolist(), rows.tolist(), columns.tolist()
    ([[0.5, 2.5], [4.5, 6.5], [8.5, 10.5]], [0, 1, 2], [0, 2])
    """
    matrix = np.asarray(matrix, dtype="float64")
    row_starts = _bins(matrix.shape[0], max_rows)
    column_starts = _bins(matrix.shape[1], max_columns)
    finite = np.isfinite(matrix)
    sums = np.where(finite, matrix, 0.0)
    for axis, starts in ((0, row_starts), (1, column_starts)):
        sums = np.add.reduceat(sums, starts, axis=axis)
        finite = np.add.reduceat(finite.astype("int64"), starts, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        reduced = np.where(finite > 0, sums / finite, np.nan)
    return reduced, row_starts, column_starts


def heatmap(steps, rows, max_rows, max_columns):
    """A heatmap of logged vectors, one row per logged step, as JSON.

    Args:
        steps: The logged steps, sorted.
        rows: The logged 1D vectors, one per step (NaN-padded to the
            longest when their lengths differ).
        max_rows, max_columns: The most rows and columns to send; larger
            matrices are reduced with `block_mean`.

    Returns:
        `{"steps", "timesteps", "values", "shape"}`: the first step and
        the first timestep of each row and column block, the block means
        (`null` where not finite) and the shape before reduction.
    """
    rows = stack_rows(rows)
    reduced, row_starts, column_starts = block_mean(rows, max_rows, max_columns)
    return {
        "steps": np.asarray(steps)[row_starts].tolist(),
        "timesteps": column_starts.tolist(),
        "values": json_values(reduced),
        "shape": list(rows.shape),
    }


def profile(values, max_points):
    """One step's vector over timesteps, as JSON, at most `max_points` long.

    Returns:
        `{"timesteps", "values", "length"}`: the first timestep of each
        block of `block_mean`, the block means and the vector's length.
    """
    reduced, _, column_starts = block_mean(
        np.asarray(values).reshape(1, -1), 1, max_points
    )
    return {
        "timesteps": column_starts.tolist(),
        "values": json_values(reduced[0]),
        "length": int(np.size(values)),
    }
