"""`TimestepGradientLogger`: the vanishing gradient, watched in TensorBoard.

The callback computes; `keras_gated.summaries` writes. At the logging
frequency the callback runs the plain functions `timestep_gradients` and
`gate_outputs` on a fixed probe batch, reduces their arrays to the
statistics below, and hands dicts of arrays to a `summaries.SummaryWriter`.
TensorFlow-specific modules are imported on first use.
"""

import collections
import math
import warnings

import keras
import numpy as np

from keras_gated import inspection
from keras_gated._validation import check_bool
from keras_gated._validation import check_float_between
from keras_gated._validation import check_optional_positive_int
from keras_gated._validation import check_positive_int
from keras_gated._validation import check_writable_directory

_ACTIVATION_RANGES = {
    "sigmoid": (0.0, 1.0),
    "hard_sigmoid": (0.0, 1.0),
    "tanh": (-1.0, 1.0),
}
_QUANTITY_LABELS = {
    "inputs": "||dL/dx_t||",
    "hidden": "||dL/dh_t||",
    "cell": "||dL/dc_t||",
    "kernel": "||dL/dW_t|| (kernel)",
    "recurrent_kernel": "||dL/dU_t|| (recurrent_kernel)",
    "bias": "||dL/db_t|| (bias)",
    "retention": "prod f_j, mean",
    "retention_q50": "prod f_j, median unit",
    "retention_q90": "prod f_j, 90th pct unit",
    "retention_max": "prod f_j, max unit",
    "jacobian_hidden": "||dh_T/dh_t||_F",
    "jacobian_hidden_spectral": "||dh_T/dh_t||_2",
    "jacobian_cell": "||dc_T/dc_t||_F",
    "jacobian_cell_spectral": "||dc_T/dc_t||_2",
}
# The images of each layer: a heatmap (tag, its quantities, its title) and
# a profile of the latest step (tag, its quantities, its title). The
# contributions' heatmap shows the recurrent kernel's, the notes' quantity
# (the others are in the profile): drawing is the logger's costly part.
_HEATMAPS = (
    ("gradient_heatmap", ("inputs", "hidden", "cell"), "gradient norm"),
    (
        "contribution_heatmap",
        ("recurrent_kernel",),
        "contribution to the recurrent kernel's gradient",
    ),
)
_PROFILES = (
    (
        "gradient_profile",
        ("inputs", "hidden", "cell", "kernel", "recurrent_kernel", "bias"),
        "gradient norms and weight-gradient contributions",
    ),
    (
        "memory_profile",
        (
            "retention",
            "retention_q50",
            "retention_q90",
            "retention_max",
            "jacobian_hidden",
            "jacobian_cell",
        ),
        "memory: cell path and Jacobians",
    ),
)

# The layer attribute holding the activation of a gate sequence, and whether
# the sequence holds that activation's input (a pre-activation) rather than
# its output. Gates not listed are the sigmoid gates: `recurrent_activation`.
_GATE_ACTIVATIONS = {
    "candidate": ("activation", False),
    "pre_activation": ("activation", True),
}
_SIGMOID_GATE = ("recurrent_activation", False)


GateStatistics = collections.namedtuple(
    "GateStatistics",
    ["mean", "saturated", "value_range", "saturated_per_timestep"],
)


def gate_mean_and_saturation(
    values, mask, activation, saturation, pre_activation=False
):
    """The statistics the logger keeps of one gate sequence.

    Args:
        values: `(batch, timesteps, units)` array, a gate sequence as
            `keras_gated.gate_outputs` returns it.
        mask: `None`, or a boolean `(batch, timesteps)` array: the steps to
            count (masked steps are left out).
        activation: The activation that makes the gate (a sigmoid for an
            LSTM's forget gate, tanh for a candidate): `values` are its
            outputs, or with `pre_activation=True` its inputs.
        saturation: Float in (0, 0.5), the fraction of the activation's
            range at either end that counts as saturated.
        pre_activation: Whether `values` are the activation's inputs, like
            a SimpleRNN's z_t with h_t = tanh(z_t).

    Returns:
        A `GateStatistics` tuple `(mean, saturated, value_range,
        saturated_per_timestep)`: the float32 mean of `values` per
        timestep over the counted entries (NaN where there are none); the
        fraction of counted entries whose activation output lies within
        `saturation * (high - low)` of either end of the activation's
        range `(low, high)` (for a pre-activation: of `activation(values)`,
        so tanh(z) saturates as a tanh candidate does), NaN for an
        activation of unknown range (only sigmoid, hard_sigmoid and tanh
        have one) or without counted entries; the range of `values`
        for a heatmap's colour scale, `None` for a pre-activation, which
        is unbounded; and that saturated fraction per timestep, float32
        (all NaN for an activation of unknown range).
    """
    values = np.asarray(values)
    if mask is None:
        valid = np.ones(values.shape[:2], bool)
    else:
        valid = np.asarray(mask, bool)
    weights = valid[..., None] * np.ones_like(values)
    counts = weights.sum(axis=(0, 2))
    sums = (values * weights).sum(axis=(0, 2))
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    value_range = _ACTIVATION_RANGES.get(
        keras.activations.serialize(activation)
    )
    saturated = math.nan
    per_timestep = np.full(mean.shape, np.nan)
    if value_range is not None and weights.sum() > 0:
        outputs = values
        if pre_activation:
            outputs = keras.ops.convert_to_numpy(activation(values))
        low, high = value_range
        margin = saturation * (high - low)
        outside = ((outputs < low + margin) | (outputs > high - margin)) * (
            weights
        )
        saturated = float(outside.sum() / weights.sum())
        per_timestep = np.where(
            counts > 0, outside.sum(axis=(0, 2)) / np.maximum(counts, 1), np.nan
        )
    if pre_activation:
        value_range = None
    return GateStatistics(
        mean.astype("float32"),
        saturated,
        value_range,
        per_timestep.astype("float32"),
    )


def gradient_decay(norms):
    """How many orders of magnitude a gradient loses back through time.

    `log10(norms[-1] / norms[0])` for a per-timestep gradient norm profile
    (`timestep_gradients`): 3.0 when the norm at the first timestep is a
    thousandth of the norm at the last. The callback logs it as the scalar
    `gradient_decay/<layer>/<quantity>`; `keras-gated compare` reports it
    as `decay@init` and `decay@end`.

    Args:
        norms: A 1D sequence of non-negative norms, in the input's time
            order.

    Returns:
        A `float`: `inf` when the first timestep's norm is zero and the
        last's is not (the gradient vanished completely, e.g. underflowed
        to zero), `-inf` in the reverse case, and NaN when both are zero
        or either is negative or not finite.
    """
    first, last = float(norms[0]), float(norms[-1])
    if not (math.isfinite(first) and math.isfinite(last)):
        return math.nan
    if first < 0 or last < 0 or first == last == 0:
        return math.nan
    if first == 0:
        return math.inf
    if last == 0:
        return -math.inf
    return math.log10(last) - math.log10(first)


class _ImageHistory:
    """The rows the heatmap images draw, bounded for long runs.

    Keeps every `stride`-th logged step, at most `limit`: when full, every
    other kept row is dropped and the stride doubles, so the kept steps
    stay evenly spaced over the whole run, and memory and drawing time do
    not grow with its length. The latest logged step is always drawn too.
    (The raw tensor summaries hold every step.)
    """

    def __init__(self, limit=256):
        self.limit = limit
        self.stride = 1
        self.count = 0
        self.steps = []
        self.rows = {}
        self.latest = None

    def add(self, step, rows):
        """Remembers one logged step's rows, a dict of 1D arrays by key."""
        index, self.count = self.count, self.count + 1
        self.latest = (step, rows)
        if index % self.stride:
            return
        self.steps.append(step)
        for key, values in rows.items():
            self.rows.setdefault(key, []).append(values)
        if len(self.steps) > self.limit:
            self.stride *= 2
            self.steps = self.steps[::2]
            self.rows = {key: kept[::2] for key, kept in self.rows.items()}

    def snapshot(self):
        """`(steps, rows by key)`: copies of the kept steps, the latest
        last."""
        steps = list(self.steps)
        rows = {key: list(kept) for key, kept in self.rows.items()}
        step, latest = self.latest
        if steps[-1] != step:
            steps.append(step)
            for key, values in latest.items():
                rows[key].append(values)
        return steps, rows


class TimestepGradientLogger(keras.callbacks.Callback):
    """Logs per-timestep gradient norms and gate statistics to TensorBoard.

    At a fixed frequency, the callback takes a fixed probe batch and
    computes, for every recurrent layer of the model (Keras' `SimpleRNN`,
    `LSTM`, `GRU`, `RNN`, both halves of a `Bidirectional`, ours), the
    per-timestep quantities of `keras_gated.timestep_gradients`, over the
    input's time axis: how strongly the training loss depends on each
    timestep (||dL/dx_t||, ||dL/dh_t||, ||dL/dc_t||), each timestep's
    contribution to the gradients of `kernel`, `recurrent_kernel` and
    `bias`, the LSTM's retention prod_{j>t} f_j and, with
    `jacobians=True`, the Jacobian norms ||dh_T/dh_t||, ||dc_T/dc_t||
    (all but ||dL/dx_t|| for LSTM, GRU and SimpleRNN layers only, ours or
    built-in); and for every LSTM, GRU and SimpleRNN the mean gate
    activations (`keras_gated.gate_outputs`; a SimpleRNN has no gates and
    shows its pre-activation z_t, `"pre_activation"`, in their place). It
    writes to an event file in `log_dir`:

    - Tensors, shown by the "Timesteps" tab that this package adds to
      TensorBoard (`keras_gated.board`), one per logged step, shape
      `(timesteps,)`: `timestep_gradients/<layer>/<quantity>` for every
      quantity that `timestep_gradients` returns for the layer (`inputs`,
      `hidden`, `cell`, `kernel`, `recurrent_kernel`, `bias`, `retention`,
      `retention_q50`, `retention_q90`, `retention_max`, `jacobian_hidden`,
      ...; see `keras_gated.gradients.QUANTITIES`);
      `gate_mean/<layer>/<gate>`, the mean activation per timestep (over
      the unmasked entries), and `gate_saturation_per_timestep/<layer>/
      <gate>`, the saturated fraction per timestep (below); and at every
      `image_freq`-th log (and the last) `gate_sequence/<layer>/<gate>`,
      the first probe sequence's activations, shape `(units, timesteps)`,
      NaN at its masked steps.
      Scripts read them with TensorBoard's
      `EventAccumulator(log_dir, size_guidance={"tensors": 0})` (0 keeps
      every step) and `tensorboard.util.tensor_util.make_ndarray(
      event.tensor_proto)` (or `tf.make_ndarray`).
    - Scalars tab, for every quantity:
      `gradient_norm/<layer>/<quantity>/first` and `/last`, the value at
      the first and the last timestep; `gradient_decay/<layer>/<quantity>`,
      `log10(last / first)`, how many orders of magnitude it loses on its
      way back through the sequence (see `gradient_decay`: `inf` once the
      first timestep's value has vanished to zero; for `retention`, the
      orders of magnitude the cell path forgets over the whole sequence);
      `gate_saturation/<layer>/<gate>`, the
      fraction of gate activations within `saturation` of either end of the
      gate's range (with the default 0.05: below 0.05 or above 0.95 for a
      sigmoid gate, below -0.9 or above 0.9 for a tanh candidate); for a
      SimpleRNN's pre-activation z_t, the saturation of the tanh it feeds,
      h_t = tanh(z_t), counted as for a tanh candidate: |tanh(z_t)| > 0.9,
      i.e. |z_t| > 1.47, where tanh'(z_t) < 0.19 (logged only for sigmoid,
      hard_sigmoid and tanh activations, whose range is known; see
      `gate_mean_and_saturation`); `nonfinite`, the number of NaN or
      infinite values in the step.
    - Images tab, per layer: `gradient_heatmap/<layer>`, a panel per
      gradient (||dL/dx_t||, ||dL/dh_t||, ||dL/dc_t||) over timesteps (x)
      and logged steps (y), log colour scale, legend in orders of
      magnitude; `contribution_heatmap/<layer>`, the same for each
      timestep's contribution to the recurrent kernel's gradient;
      `gradient_profile/<layer>`, the latest step's gradient norms and
      contributions to the three weights' gradients against the
      timestep, log y axis; `memory_profile/<layer>` (LSTMs, and any
      layer with `jacobians=True`), the retention (mean, median, 90th
      percentile and maximum unit) beside the Jacobian norms, where the
      cell path alone and the full recurrence part ways;
      `gate_heatmap/<layer>`, a panel per gate with its mean activation
      over timesteps and logged steps (on the gate's range; a
      pre-activation's panel spans its data's range).

    The step of every summary is the number of training batches seen
    (`model.optimizer.iterations`), so resuming training (a second `fit`,
    or `fit(initial_epoch=...)` on a restored model) continues the step
    axis; if the optimizer starts afresh with `initial_epoch > 0`, the step
    starts at `initial_epoch * steps_per_epoch`. A step is never written
    twice. The probe is measured once before the first training step too,
    so the first row shows the untrained model. Probing never changes
    the model: weights, metrics and the states of stateful layers are left
    as they were; dropout is off during the probe.

    Reading the decay. The norms depend on the data as much as on the
    layer. At initialisation, with standard-normal inputs of 16 features
    over T = 100 timesteps (16 units), a `SimpleRNN`'s tanh units saturate
    and its input gradient falls by ~20 orders of magnitude from the last
    timestep to the first, an LSTM's by ~10 (its forget gates start near
    sigmoid(1) = 0.73): the vanishing gradient, and the LSTM's cure for
    it. With a single small input feature (e.g. uniform in [0, 1]) the
    orthogonally initialised `SimpleRNN` hardly saturates and can decay
    less than an untrained LSTM. `gate_mean/<layer>/forget` shows where
    the forget gates sit as training goes on.

    Writers are opened on the first write, flushed after every write (an
    interrupted `fit` leaves every event written so far readable) and
    closed at the end of training. The images are drawn in a background
    thread while training goes on (matplotlib's Agg backend, figures
    reused from step to step); `on_train_end` waits for them, and
    `flush()` does so on demand. Works with Sequential, Functional and
    nested models, masking, and under `tf.distribute.MirroredStrategy`;
    on every Keras backend, with the same values (the probe is a
    `tf.function` on TensorFlow, a `jax.jit` on JAX, eager on PyTorch;
    the writer needs no TensorFlow).

    Models without a recurrent layer, probes that do not fit the model
    and unwritable `log_dir`s raise a `ValueError` in `on_train_begin`,
    before any training step. A non-finite gradient is logged as NaN or
    Inf, counted in `nonfinite` and reported with a warning; it never
    stops training.

    Args:
        log_dir: Directory for the event file. Give it its own directory
            (e.g. `"logs/gradients"` next to `keras.callbacks.TensorBoard`'s
            `"logs"`) so TensorBoard shows it as a run of its own.
        probe: The fixed batch: a tuple `(x, y)` or `(x, y, sample_weight)`
            of arrays or tensors as `fit` takes them, or `x` alone for a
            model that needs no targets; or a `tf.data.Dataset`,
            `keras.utils.PyDataset` or other iterable of such batches, of
            which the first batch is taken once. A few dozen sequences
            suffice; the probe's cost grows with its size.
        epoch_freq: Log at the end of every `epoch_freq` epochs; `None` for
            never. Default: 1.
        batch_freq: Log after every `batch_freq` training batches (counted
            over the whole training, as the step is); `None` for never.
            Default: `None`.
        layers: `None` for every recurrent layer, or a list of layer names
            as `keras_gated.recurrent_layers` reports them (e.g.
            `"bidi/backward"`).
        gate_statistics: Also log the gate statistics of LSTM, GRU and
            SimpleRNN layers. Default: `True`.
        images: Also render and write the images (matplotlib needed).
            Default: `True`.
        image_freq: Draw the images, and write the probe sequence's
            gates, at every `image_freq`-th log (and at the first and the
            last; the heatmaps from the second log on): drawing the figures
            costs more CPU than measuring. The other tensors and the
            scalars are written at every log.
            The heatmaps show at most 256 logged steps, evenly spaced over
            the run (every 2nd, 4th, ... once a run logs more), plus the
            latest: memory and drawing time stay bounded however long it
            trains. Default: 10.
        saturation: Float in (0, 0.5), the fraction of a gate's range at
            either end that counts as saturated. Default: 0.05.
        jacobians: Also log the Jacobian norms (`timestep_gradients`'
            `jacobians`): one more forward and backward pass over `units`
            copies (`2 * units` for an LSTM) of `jacobian_samples`
            sequences at every log. Default: `False`.
        jacobian_samples: Positive integer, how many probe sequences the
            Jacobian norms average over. Default: 4.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((100, 2)),
    ...     keras_gated.LSTM(32, name="lstm"),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> logger = keras_gated.TimestepGradientLogger(
    ...     "logs/gradients", probe=(x_train[:32], y_train[:32]))
    >>> model.fit(x_train, y_train, epochs=10, callbacks=[logger])
    >>> # tensorboard --logdir logs
    """

    def __init__(
        self,
        log_dir,
        probe,
        epoch_freq=1,
        batch_freq=None,
        layers=None,
        gate_statistics=True,
        images=True,
        saturation=0.05,
        image_freq=10,
        jacobians=False,
        jacobian_samples=4,
    ):
        super().__init__()
        if probe is None:
            raise ValueError(
                "probe must be a batch (x, y) or a dataset to take one from. "
                "Received: probe=None"
            )
        self.log_dir = str(log_dir)
        self.probe = probe
        self.epoch_freq = check_optional_positive_int("epoch_freq", epoch_freq)
        self.batch_freq = check_optional_positive_int("batch_freq", batch_freq)
        if epoch_freq is None and batch_freq is None:
            raise ValueError(
                "epoch_freq and batch_freq cannot both be None: the callback "
                "would never log. Received: epoch_freq=None, batch_freq=None"
            )
        if layers is not None and isinstance(layers, str):
            layers = [layers]
        self.layers = None if layers is None else list(layers)
        self.gate_statistics = bool(gate_statistics)
        self.images = bool(images)
        if image_freq is None:
            raise ValueError(
                "image_freq must be a positive integer. Received: "
                "image_freq=None (pass images=False for no images)"
            )
        self.image_freq = check_positive_int("image_freq", image_freq)
        self.saturation = check_float_between("saturation", saturation, 0, 0.5)
        self.jacobians = check_bool("jacobians", jacobians)
        self.jacobian_samples = check_positive_int(
            "jacobian_samples", jacobian_samples
        )
        self._writer = None
        self._batch = None
        self._named_layers = None
        self._history = _ImageHistory()
        self._last_step = -1
        self._step_offset = None
        self._pending = None
        self._probe_fn = None
        self._probe_key = None
        self._renderer = None
        self._rendering = []
        self._figures = {}
        self._logs_written = 0
        self._unrendered = None
        self._unwritten_sequences = None

    # Set-up and checks, before any training step.

    def on_train_begin(self, logs=None):
        from keras_gated import gradients
        from keras_gated import summaries

        self._named_layers = gradients.select_layers(self.model, self.layers)
        gradients.check_compiled(self.model)
        if self._batch is None:
            self._batch = self._take_batch(self.probe)
        self._check_probe()
        check_writable_directory("log_dir", self.log_dir)
        if self.images:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise ValueError(
                    "images=True needs matplotlib to draw the images: "
                    "`pip install matplotlib`, or pass images=False. "
                    "Received: images=True"
                ) from None
        if self._writer is None:
            self._writer = summaries.SummaryWriter(self.log_dir)
        key = (id(self.model), [id(layer) for _, layer in self._named_layers])
        if self._probe_key != key:
            self._probe_fn = gradients.probe_function(
                self.model,
                self._named_layers,
                self.gate_statistics,
                jacobians=self.jacobians,
                jacobian_samples=self.jacobian_samples,
            )
            self._probe_key = key
        self._step_offset = None
        self._pending = self._measure()

    def _take_batch(self, probe):
        if isinstance(probe, tuple):
            batch = probe
        elif isinstance(probe, keras.utils.PyDataset):
            batch = probe[0]
        elif isinstance(probe, (list, dict, np.ndarray)) or hasattr(
            probe, "shape"
        ):
            batch = (probe,)
        else:
            try:
                batch = next(iter(probe))
            except (TypeError, StopIteration):
                raise ValueError(
                    "probe must be a tuple (x, y[, sample_weight]), an array "
                    "x, or a non-empty dataset or iterable of batches. "
                    f"Received: probe of type {type(probe).__name__}"
                ) from None
        if not isinstance(batch, tuple):
            batch = (batch,)
        if not 1 <= len(batch) <= 3:
            raise ValueError(
                "probe must be (x,), (x, y) or (x, y, sample_weight). "
                f"Received: a tuple of {len(batch)} elements"
            )
        return keras.utils.unpack_x_y_sample_weight(batch)

    def _check_probe(self):
        from keras_gated import gradients

        gradients.check_batch(self.model, *self._batch, argument="probe")

    # When to log.

    def _iterations(self):
        # `.numpy()`: under a tf.distribute strategy it is a MirroredVariable,
        # which int() does not take.
        return int(self.model.optimizer.iterations.numpy())

    def _step(self):
        return self._iterations() + (self._step_offset or 0)

    def on_epoch_begin(self, epoch, logs=None):
        if self._step_offset is None:
            # A fresh optimizer under fit(initial_epoch=...) counts from 0;
            # continue the step axis from where those epochs would end.
            iterations = self._iterations()
            steps = self.params.get("steps") if self.params else None
            self._step_offset = 0
            if epoch > 0 and steps and iterations < epoch * steps:
                self._step_offset = epoch * steps - iterations
        if self._pending is not None:
            step = self._step()
            if step > self._last_step:
                self._write(step, self._pending)
            self._pending = None

    def on_train_batch_end(self, batch, logs=None):
        if self.batch_freq is None:
            return
        step = self._step()
        if step % self.batch_freq == 0:
            self._log(step)

    def on_epoch_end(self, epoch, logs=None):
        if self.epoch_freq is not None and (epoch + 1) % self.epoch_freq == 0:
            self._log(self._step())

    def on_train_end(self, logs=None):
        self.flush()
        if self._renderer is not None:
            self._renderer.shutdown()
            self._renderer = None
        if self._writer is not None:
            self._writer.close()

    def flush(self):
        """Waits for the images still being rendered, then flushes.

        Tensors and scalars are on disk as soon as a step is logged; the
        images are drawn in a background thread so that training does not
        wait for matplotlib, at every `image_freq`-th log; this also draws
        those of the latest log. `on_train_end` calls this; call it yourself to
        read the images of a `fit` that was interrupted.
        """
        if self._unwritten_sequences is not None:
            self._write_sequences(*self._unwritten_sequences)
        if self._unrendered is not None:
            self._render_in_background(*self._unrendered)
            self._unrendered = None
        while self._rendering:
            self._rendering.pop(0).result()
        if self._writer is not None:
            self._writer.flush()

    def _log(self, step):
        if step > self._last_step:
            self._write(step, self._measure())

    # What to log: arrays from the plain functions, reduced to statistics.

    def _measure(self):
        x, y, sample_weight = self._batch
        norms, outputs, masks = self._probe_fn(x, y, sample_weight)
        gates = {
            name: self._gate_statistics(name, layer, outputs, masks)
            for name, layer in self._named_layers
            if name in masks
        }
        # The first probe sequence's gates, unit by unit: (units, timesteps),
        # NaN at its masked steps.
        sequences = {}
        for name, statistics in gates.items():
            mask = masks.get(name)
            for gate in statistics:
                values = np.asarray(outputs[f"{name}/{gate}"][0], "float32").T
                if mask is not None:
                    values = np.where(np.asarray(mask)[0], values, np.nan)
                sequences[f"gate_sequence/{name}/{gate}"] = values
        return norms, gates, sequences

    def _gate_statistics(self, name, layer, outputs, masks):
        statistics = {}
        for gate in inspection.gate_names(layer):
            attribute, pre_activation = _GATE_ACTIVATIONS.get(
                gate, _SIGMOID_GATE
            )
            statistics[gate] = gate_mean_and_saturation(
                outputs[f"{name}/{gate}"],
                masks.get(name),
                getattr(layer, attribute),
                self.saturation,
                pre_activation,
            )
        return statistics

    def _write(self, step, measured):
        norms, gates, sequences = measured
        tensors, scalars, rows = {}, {}, {}
        nonfinite = []
        for name, layer_norms in norms.items():
            for quantity, values in layer_norms.items():
                values = np.asarray(values, dtype="float32")
                tensors[f"timestep_gradients/{name}/{quantity}"] = values
                first, last = float(values[0]), float(values[-1])
                scalars[f"gradient_norm/{name}/{quantity}/first"] = first
                scalars[f"gradient_norm/{name}/{quantity}/last"] = last
                scalars[f"gradient_decay/{name}/{quantity}"] = gradient_decay(
                    values
                )
                count = int(np.sum(~np.isfinite(values)))
                if count:
                    nonfinite.append(f"{name}/{quantity} ({count})")
                rows[f"gradients/{name}/{quantity}"] = values
        for name, statistics in gates.items():
            for gate, stats in statistics.items():
                tensors[f"gate_mean/{name}/{gate}"] = stats.mean
                tensors[f"gate_saturation_per_timestep/{name}/{gate}"] = (
                    stats.saturated_per_timestep
                )
                if not math.isnan(stats.saturated):
                    scalars[f"gate_saturation/{name}/{gate}"] = stats.saturated
                rows[f"gates/{name}/{gate}"] = stats.mean
        self._history.add(step, rows)
        scalars["nonfinite"] = sum(
            int(np.sum(~np.isfinite(values)))
            for tag, values in tensors.items()
            if tag.startswith("timestep_gradients/")
        )
        self._writer.tensors(
            tensors,
            step,
            description="Per-timestep vector, shape (timesteps,), in the "
            "input's time order.",
        )
        self._writer.scalars(scalars, step)
        if self._logs_written % self.image_freq == 0:
            self._write_sequences(step, sequences)
        else:
            self._unwritten_sequences = (step, sequences)
        if self.images:
            # Drawing costs more than measuring: every image_freq-th log,
            # the first (the untrained model) and the last.
            if self._logs_written % self.image_freq == 0:
                self._render_in_background(step, norms, gates)
                self._unrendered = None
            else:
                self._unrendered = (step, norms, gates)
        self._logs_written += 1
        self._last_step = step
        if nonfinite:
            warnings.warn(
                f"TimestepGradientLogger: non-finite gradient norms at step "
                f"{step} in {', '.join(nonfinite)}; logged as NaN/Inf and "
                "counted in the 'nonfinite' scalar.",
                stacklevel=2,
            )

    def _write_sequences(self, step, sequences):
        self._unwritten_sequences = None
        if sequences:
            self._writer.tensors(
                sequences,
                step,
                description="One probe sequence's gate activations, shape "
                "(units, timesteps), in the input's time order.",
            )

    def _render_in_background(self, step, norms, gates):
        import concurrent.futures

        finished = [job for job in self._rendering if job.done()]
        for job in finished:
            self._rendering.remove(job)
            job.result()
        if self._renderer is None:
            self._renderer = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="TimestepGradientLogger"
            )
        # The worker gets copies: the history changes while it draws.
        steps, rows = self._history.snapshot()
        gradient_panels = {
            name: {
                quantity: rows[f"gradients/{name}/{quantity}"]
                for quantity in layer_norms
            }
            for name, layer_norms in norms.items()
        }
        gate_panels = {
            name: {
                gate: (rows[f"gates/{name}/{gate}"], stats.value_range)
                for gate, stats in statistics.items()
            }
            for name, statistics in gates.items()
        }
        self._rendering.append(
            self._renderer.submit(
                self._render_and_write,
                step,
                steps,
                norms,
                gradient_panels,
                gate_panels,
            )
        )

    def _figure(self, tag, figure_class, *args, **kwargs):
        """The figure of `tag`, built on first use and then reused."""
        if tag not in self._figures:
            self._figures[tag] = figure_class(*args, **kwargs)
        return self._figures[tag]

    def _layer_images(self, name, panels, latest, steps, step):
        """The heatmaps and profiles of one layer's quantities.

        A heatmap of one row says what the profile says: with one logged
        step the heatmaps' figures are only built (off the training
        thread's path), and drawn from the second step on.
        """
        from keras_gated import summaries

        images = {}
        for prefix, quantities, title in _HEATMAPS:
            labels = {q: _QUANTITY_LABELS[q] for q in quantities if q in panels}
            if labels:
                tag = f"{prefix}/{name}"
                figure = self._figure(
                    tag,
                    summaries.Heatmap,
                    labels.values(),
                    title=f"{name}: {title} per timestep",
                    colorbar_label="norm",
                    log_scale=True,
                )
                if len(steps) > 1:
                    images[tag] = figure.render(
                        {labels[q]: np.stack(panels[q]) for q in labels}, steps
                    )
        for prefix, quantities, title in _PROFILES:
            labels = {q: _QUANTITY_LABELS[q] for q in quantities if q in latest}
            if labels:
                tag = f"{prefix}/{name}"
                images[tag] = self._figure(
                    tag, summaries.LinePlot, labels.values(), ylabel="value"
                ).render(
                    {labels[q]: latest[q] for q in labels},
                    title=f"{name}: {title} per timestep at step {step}",
                )
        return images

    def _render_and_write(self, step, steps, norms, gradient_panels, gates):
        # Runs in the worker thread, the only one that touches the figures.
        from keras_gated import summaries

        images = {}
        for name, panels in gradient_panels.items():
            images.update(
                self._layer_images(name, panels, norms[name], steps, step)
            )
        for name, panels in gates.items():
            tag = f"gate_heatmap/{name}"
            figure = self._figure(
                tag,
                summaries.Heatmap,
                panels,
                title=f"{name}: mean gate activation per timestep",
                colorbar_label="mean",
                value_ranges={
                    gate: value_range
                    for gate, (_, value_range) in panels.items()
                    if value_range is not None
                },
            )
            if len(steps) > 1:
                images[tag] = figure.render(
                    {gate: np.stack(r) for gate, (r, _) in panels.items()},
                    steps,
                )
        self._writer.images(images, step)
