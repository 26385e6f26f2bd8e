"""Side-by-side training of SimpleRNN, LSTM, GRU and our gated layers.

`run_comparison` trains every requested model on one task with the same
seed, units, optimizer and budget, and writes what the examples and the
`keras-gated compare` command show: a table, PNG figures, TensorBoard runs
and the trained gated models. Models that share a kind (`lstm` and
`gated-lstm`, `gru` and `gated-gru`, `simplernn` and `gated-simplernn`)
start from the same initial weights and see the batches in the same order,
so their curves can be compared.
"""

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np

from keras_gated import tasks as task_lib
from keras_gated._validation import check_positive_int
from keras_gated._validation import check_writable_directory
from keras_gated.callbacks import gradient_decay
from keras_gated.layers import GRU
from keras_gated.layers import LSTM
from keras_gated.layers import SimpleRNN

MODEL_NAMES = (
    "simplernn",
    "lstm",
    "gru",
    "gated-lstm",
    "gated-gru",
    "gated-simplernn",
)
"""The models a comparison can train, as `--models` names them."""
DEFAULT_MODELS = ("simplernn", "lstm", "gru", "gated-lstm", "gated-gru")
"""The models a comparison trains unless told otherwise (those of
examples/RESULTS.md and `make demo`)."""
_LAYERS = {
    "simplernn": keras.layers.SimpleRNN,
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
    "gated-lstm": LSTM,
    "gated-gru": GRU,
    "gated-simplernn": SimpleRNN,
}
# Gated models start from the initial weights of their built-in twin.
_TWIN = {
    "gated-lstm": "lstm",
    "gated-gru": "gru",
    "gated-simplernn": "simplernn",
}


@dataclasses.dataclass
class Settings:
    """What every model of a comparison shares."""

    task: str = "adding"
    length: int = 100
    models: tuple = DEFAULT_MODELS
    epochs: int = 10
    units: int = 64
    batch_size: int = 64
    samples: int = 5000
    learning_rate: float = 1e-3
    clipnorm: float = 1.0
    seed: int = 0
    out: str = "runs"
    verbose: int = 1

    def validate(self):
        """Raises ValueError for a bad setting, before any training."""
        if self.task not in task_lib.TASK_NAMES:
            raise ValueError(
                f"task must be one of {', '.join(task_lib.TASK_NAMES)}. "
                f"Received: task={self.task!r}"
            )
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ValueError(
                f"models must be a comma-separated list of "
                f"{', '.join(MODEL_NAMES)}. Received: "
                f"models={','.join(self.models)!r}"
            )
        for name in ("length", "epochs", "units", "batch_size", "samples"):
            check_positive_int(name, getattr(self, name))
        if self.task == "adding" and self.length < 2:
            raise ValueError(
                f"length must be >= 2 for the adding problem. "
                f"Received: length={self.length}"
            )
        if not self.learning_rate > 0:
            raise ValueError(
                "learning_rate must be positive. "
                f"Received: learning_rate={self.learning_rate!r}"
            )
        check_writable_directory("out", self.out)


def build_model(model_name, task, features, length, units, name=None):
    """A one-layer recurrent model for `task`; the layer is named "rnn"."""
    layer_class = _LAYERS[model_name]
    per_step = task.per_step_output
    recurrent = layer_class(units, return_sequences=per_step, name="rnn")
    activation = "softmax" if task.output_units > 1 else None
    inputs = keras.Input((length, features))
    outputs = keras.layers.Dense(task.output_units, activation=activation)(
        recurrent(inputs)
    )
    return keras.Model(
        inputs, outputs, name=name or model_name.replace("-", "_")
    )


class _StepEvaluator(keras.callbacks.Callback):
    """Evaluates a small validation set every `every` training steps and
    records when the task's baseline is first beaten."""

    def __init__(self, task, x, y, every):
        super().__init__()
        self.task, self.x, self.y, self.every = task, x, y, every
        self.steps = 0
        self.curve = []
        self.first_beaten = None

    def _evaluate(self):
        values = self.model.evaluate(
            self.x, self.y, verbose=0, return_dict=True
        )
        value = float(values[self.task.metric])
        self.curve.append((self.steps, value))
        if self.first_beaten is None and self.task.beats(value):
            self.first_beaten = self.steps

    def on_train_begin(self, logs=None):
        self._evaluate()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps % self.every == 0:
            self._evaluate()


def _compile(model, task, settings):
    metrics = ["accuracy"] if task.metric == "accuracy" else []
    if task.metric == "mse":
        metrics = ["mse"]
    model.compile(
        optimizer=keras.optimizers.Adam(
            settings.learning_rate, clipnorm=settings.clipnorm
        ),
        loss=task.loss,
        metrics=metrics,
    )


@dataclasses.dataclass
class _Data:
    """A task's sequences, split 85% for training and 15% for validation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray

    @classmethod
    def split(cls, x, y):
        split = int(len(x) * 0.85)
        return cls(x[:split], y[:split], x[split:], y[split:])

    @property
    def probe(self):
        """The batch the gradients are measured on: 64 held-out sequences."""
        return self.x_val[:64], self.y_val[:64]


def run_comparison(settings, callbacks_for=None):
    """Trains every model of `settings` and writes the outputs.

    Args:
        settings: a `Settings`.
        callbacks_for: optional `(model_name, log_dir, probe) -> list` of
            extra Keras callbacks per model (the gradient logger).

    Returns:
        A list of result dicts, one per model, also written to
        `<out>/<task>/results.json`.
    """
    settings.validate()
    task = task_lib.make_task(settings.task, settings.length)
    data = _Data.split(
        *task_lib.make_data(
            settings.task, settings.length, settings.samples, settings.seed
        )
    )
    run_dir = os.path.join(settings.out, settings.task)
    os.makedirs(run_dir, exist_ok=True)
    initial_weights, results = {}, []
    for model_name in settings.models:
        model = _initial_model(
            model_name, task, data, settings, initial_weights
        )
        results.append(
            _train_and_measure(
                model, model_name, task, data, settings, callbacks_for
            )
        )
    with open(os.path.join(run_dir, "results.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    return results


def _initial_model(model_name, task, data, settings, initial_weights):
    """The compiled model, seeded; a gated model gets its twin's weights.

    `initial_weights` maps the models built so far to their initial
    weights; this model's are added.
    """
    length, features = data.x_train.shape[1:]
    keras.utils.set_random_seed(settings.seed)
    model = build_model(model_name, task, features, length, settings.units)
    twin = _TWIN.get(model_name)
    if twin in initial_weights:
        model.set_weights(initial_weights[twin])
    elif twin is not None:
        keras.utils.set_random_seed(settings.seed)
        reference = build_model(twin, task, features, length, settings.units)
        model.set_weights(reference.get_weights())
    initial_weights[model_name] = model.get_weights()
    _compile(model, task, settings)
    return model


def _measure(model, probe):
    """What a comparison records of a model's gradient on the probe batch:
    ||dL/dx_t||, each step's contribution to the recurrent kernel's
    gradient, the sum check of those contributions and, for an LSTM, the
    retention beside the cell Jacobian (`timestep_gradients`)."""
    from keras_gated.gradients import check_weight_contributions
    from keras_gated.gradients import timestep_gradients

    lstm = isinstance(model.get_layer("rnn"), (keras.layers.LSTM, LSTM))
    norms = timestep_gradients(model, *probe, jacobians=lstm)["rnn"]
    errors = check_weight_contributions(model, *probe)["rnn"]
    measured = {
        "inputs": norms["inputs"].tolist(),
        "recurrent_kernel": norms["recurrent_kernel"].tolist(),
        "sum_check": max(errors.values()),
    }
    if lstm:
        for key in _MEMORY_CURVES:
            measured[key] = norms[key].tolist()
    return measured


# The LSTM's memory curves a comparison keeps and plots.
_MEMORY_CURVES = (
    "retention",
    "retention_max",
    "jacobian_cell",
    "jacobian_cell_spectral",
)


def _train_and_measure(model, model_name, task, data, settings, callbacks_for):
    """Trains one model; its result dict, saving a gated model."""
    x_probe, _ = data.probe
    start = _measure(model, data.probe)
    evaluator, log_dir, seconds = _fit(
        model, model_name, task, data, settings, callbacks_for
    )
    end = _measure(model, data.probe)
    final = evaluator.curve[-1][1]
    result = {
        "model": model_name,
        "task": settings.task,
        "length": settings.length,
        "metric": task.metric,
        "final": final,
        "baseline": task.baseline,
        "beats_baseline": task.beats(final),
        "steps_to_beat": evaluator.first_beaten,
        "seconds_per_epoch": seconds / settings.epochs,
        "decay_start": gradient_decay(start["inputs"]),
        "decay_end": gradient_decay(end["inputs"]),
        "sum_check": max(start.pop("sum_check"), end.pop("sum_check")),
        "curve": evaluator.curve,
        "grad_norms_start": start.pop("inputs"),
        "grad_norms_end": end.pop("inputs"),
        "start": start,
        "end": end,
        "log_dir": log_dir,
    }
    if model_name in _TWIN:
        result["saved"] = _save(model, settings, model_name)
        if settings.task == "adding" and model_name == "gated-lstm":
            result["gate_example"] = _gate_example(model, x_probe)
    return result


def _fit(model, model_name, task, data, settings, callbacks_for):
    """Trains with the step evaluator and TensorBoard.

    Returns:
        `(evaluator, log_dir, seconds)`: the `_StepEvaluator` with the
        validation curve, the model's TensorBoard run and the training
        time.
    """
    steps_per_epoch = math.ceil(len(data.x_train) / settings.batch_size)
    evaluator = _StepEvaluator(
        task, data.x_val, data.y_val, max(1, steps_per_epoch // 4)
    )
    log_dir = os.path.join(settings.out, "logs", settings.task, model_name)
    callbacks = [evaluator, keras.callbacks.TensorBoard(log_dir)]
    if callbacks_for is not None:
        callbacks += callbacks_for(
            model_name, os.path.join(log_dir, "gradients"), data.probe
        )
    if settings.verbose:
        length = data.x_train.shape[1]
        print(f"\n== {settings.task}, {length} steps: {model_name}")
    keras.utils.set_random_seed(settings.seed)
    start = time.perf_counter()
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        callbacks=callbacks,
        verbose=2 if settings.verbose else 0,
    )
    return evaluator, log_dir, time.perf_counter() - start


def _save(model, settings, model_name):
    directory = os.path.join(settings.out, "saved_models")
    os.makedirs(directory, exist_ok=True)
    stem = os.path.join(directory, f"{settings.task}-{model_name}")
    model.save(stem + ".keras")
    from keras_gated.export import export_saved_model

    export_saved_model(model, stem + "-savedmodel", overwrite=True)
    return {"keras": stem + ".keras", "saved_model": stem + "-savedmodel"}


def _gate_example(model, x_probe):
    from keras_gated.inspection import inspect_gates

    gates = inspect_gates(model, x_probe[:1])["rnn"]
    return {
        "input": gates["input"][0].tolist(),
        "forget": gates["forget"][0].tolist(),
        "markers": np.flatnonzero(x_probe[0, :, 1]).tolist(),
    }


def format_table(results):
    """The comparison table as text.

    With a `sum check` column when the results hold one (results written
    before the decomposition do not): the largest relative error of the
    per-step contributions' sum against the weight gradients, at
    initialisation and after training.
    """
    width = max([11] + [len(r["model"]) for r in results])
    checked = all("sum_check" in r for r in results)
    header = (
        f"{'model':{width}} {'metric':>8} {'final':>8} {'baseline':>8} "
        f"{'beats':>5} {'steps to beat':>13} {'s/epoch':>8} "
        f"{'decay@init':>10} {'decay@end':>9}"
    ) + (f" {'sum check':>9}" if checked else "")
    lines = [header, "-" * len(header)]
    for r in results:
        steps = "-" if r["steps_to_beat"] is None else str(r["steps_to_beat"])
        lines.append(
            f"{r['model']:{width}} {r['metric']:>8} {r['final']:8.3g} "
            f"{r['baseline']:8.3g} {'yes' if r['beats_baseline'] else 'no':>5} "
            f"{steps:>13} {r['seconds_per_epoch']:8.2f} "
            f"{r['decay_start']:10.2f} {r['decay_end']:9.2f}"
            + (f" {r['sum_check']:9.1e}" if checked else "")
        )
    return "\n".join(lines)


def plot_results(results, out_dir):
    """Writes the PNG figures; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")

    os.makedirs(out_dir, exist_ok=True)
    paths = [
        _plot_learning_curves(results, out_dir),
        _plot_gradient_norms(results, out_dir),
    ]
    if all("start" in r for r in results):
        paths.append(_plot_contributions(results, out_dir))
        if any("retention" in r["start"] for r in results):
            paths.append(_plot_memory(results, out_dir))
    for result in results:
        if result.get("gate_example"):
            paths.append(_plot_gate_example(result, out_dir))
    return paths


def _plot_learning_curves(results, out_dir):
    import matplotlib.pyplot as plt

    task, length = results[0]["task"], results[0]["length"]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for r in results:
        steps, values = zip(*r["curve"])
        axis.plot(steps, values, label=r["model"])
    axis.axhline(results[0]["baseline"], color="k", ls="--", label="baseline")
    axis.set_xlabel("training steps")
    axis.set_ylabel(f"validation {results[0]['metric']}")
    if results[0]["metric"] != "accuracy":
        axis.set_yscale("log")
    axis.set_title(f"{task}, T={length}: learning curves")
    axis.legend()
    return _save_figure(figure, out_dir, "learning_curves.png")


def _plot_start_end(results, out_dir, curve, title, ylabel, name):
    """One curve per model against t, at initialisation and after
    training, side by side; `curve(result, "start" or "end")` gives it."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for axis, when, label in [
        (axes[0], "start", "at initialisation"),
        (axes[1], "end", "after training"),
    ]:
        for r in results:
            values = np.asarray(curve(r, when))
            axis.semilogy(np.arange(len(values)), values, label=r["model"])
        axis.set_xlabel("timestep t")
        axis.set_title(f"{title[0]} {label}")
    axes[0].set_ylabel(ylabel)
    axes[1].legend()
    task, length = results[0]["task"], results[0]["length"]
    figure.suptitle(f"{task}, T={length}: {title[1]}")
    return _save_figure(figure, out_dir, name)


def _plot_gradient_norms(results, out_dir):
    return _plot_start_end(
        results,
        out_dir,
        lambda r, when: r[f"grad_norms_{when}"],
        ("||dL/dx_t||", "how much the loss depends on x_t"),
        "gradient norm (log scale)",
        "gradient_norms.png",
    )


def _plot_contributions(results, out_dir):
    """Each position's contribution to the recurrent kernel's gradient."""
    return _plot_start_end(
        results,
        out_dir,
        lambda r, when: r[when]["recurrent_kernel"],
        (
            "||dL/dU_t||",
            "each step's share of the recurrent kernel's gradient "
            "(they sum to it)",
        ),
        "contribution norm (log scale)",
        "contributions.png",
    )


def _plot_memory(results, out_dir):
    """The LSTMs' retention prod f_j beside the full cell Jacobian."""
    import matplotlib.pyplot as plt

    task, length = results[0]["task"], results[0]["length"]
    lstms = [r for r in results if "retention" in r["start"]]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    styles = {
        "retention": ("mean unit: prod f_j", "-"),
        "retention_max": ("max unit: prod f_j", "--"),
        "jacobian_cell_spectral": ("||dc_T/dc_t||_2", ":"),
    }
    for axis, key, title in [
        (axes[0], "start", "at initialisation"),
        (axes[1], "end", "after training"),
    ]:
        for index, r in enumerate(lstms):
            for curve, (label, style) in styles.items():
                values = np.asarray(r[key][curve])
                axis.semilogy(
                    np.arange(len(values)),
                    values,
                    style,
                    color=f"C{index}",
                    label=f"{r['model']}: {label}",
                )
        axis.set_xlabel("timestep t")
        axis.set_title(f"cell memory {title}")
    axes[0].set_ylabel("gain from c_t to c_T (log scale)")
    axes[1].legend(fontsize=7)
    figure.suptitle(
        f"{task}, T={length}: the cell path alone (prod f_j) and the full "
        "recurrence (dc_T/dc_t)"
    )
    return _save_figure(figure, out_dir, "memory.png")


def _plot_gate_example(result, out_dir):
    """The input and forget gates over one adding-problem sequence."""
    import matplotlib.pyplot as plt

    example = result["gate_example"]
    figure, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for axis, name in zip(axes, ("input", "forget")):
        image = axis.imshow(
            np.asarray(example[name]).T,
            aspect="auto",
            cmap="viridis",
            vmin=0,
            vmax=1,
            interpolation="nearest",
        )
        for marker in example["markers"]:
            # Above the panel, so the gate values stay visible.
            axis.annotate(
                "",
                xy=(marker, -0.5),
                xytext=(marker, -0.5 - 0.12 * len(example[name][0])),
                arrowprops={"arrowstyle": "->", "color": "red", "lw": 2},
                annotation_clip=False,
            )
        axis.set_ylabel(f"{name} gate\nunit")
        figure.colorbar(image, ax=axis)
    axes[-1].set_xlabel("timestep (red arrows: the two marked values)")
    figure.suptitle(f"{result['model']} gates on one adding-problem sequence")
    return _save_figure(figure, out_dir, "gates_heatmap.png")


def _save_figure(figure, out_dir, name):
    import matplotlib.pyplot as plt

    path = os.path.join(out_dir, name)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
