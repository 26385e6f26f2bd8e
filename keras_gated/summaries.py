"""A tiny TensorBoard writer: NumPy arrays in, summaries out.

`SummaryWriter` writes scalars, tensors and images to an event file under a
directory, opening its file on the first write and flushing after every
write, so everything written survives a crash of the process. It builds
TensorBoard's protocol buffers itself and writes them with TensorBoard's
record writer, never importing TensorFlow: the package runs on Keras' JAX
and PyTorch backends without loading it. What it writes reads back as
`tf.summary.scalar`, `tf.summary.write` and `tf.summary.image` write it.
`heatmap` and `line_plot` render arrays into RGB images with matplotlib's
Agg backend (no display needed). The module knows nothing of Keras;
matplotlib and Pillow are imported on first use.
"""

import io
import itertools
import os
import socket
import threading
import time

import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.tensorflow_stub.io import gfile
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer.record_writer import RecordWriter
from tensorboard.util import tensor_util

TENSOR_PLUGIN = "keras_gated"
"""Plugin name in the metadata of the raw tensor summaries."""

# Numbers the event files of this process, so that two writers, or one
# reopened, in the same directory within one second never share a name.
# Zero-padded, so that a later file of the same second also sorts later:
# TensorBoard reads a directory's event files in the order of their names.
_file_numbers = itertools.count()


class SummaryWriter:
    """Writes dicts of arrays as TensorBoard summaries under `log_dir`.

    The event file is named as TensorFlow names its own,
    `events.out.tfevents.<seconds>.<host>.<pid>.<number>.v2`, and written
    through TensorBoard's own file layer, which also takes `s3://` URLs
    (with boto3) and those of fsspec's file systems (`gs://` with gcsfs).
    Writes from several threads are serialized.

    Args:
        log_dir: Directory of the event file (one TensorBoard run).

    Example:

    >>> writer = SummaryWriter("/tmp/run")
    >>> writer.scalars({"decay": 3.5}, step=10)
    >>> writer.tensors({"norms": np.ones(20)}, step=10)
    >>> image = line_plot({"norm": np.ones(20)}, title="norms")
    >>> writer.images({"plot": image}, step=10)
    >>> writer.close()
    """

    def __init__(self, log_dir):
        self.log_dir = str(log_dir)
        self._records = None
        self._lock = threading.Lock()

    def scalars(self, values, step):
        """Writes `{tag: number}` as scalar summaries at `step`.

        Each is a float32 scalar tensor; a number beyond float32's range
        is written as an infinity.
        """
        # As tf.summary.scalar writes it: no data class in the file, as
        # TensorBoard adds DATA_CLASS_SCALAR to the "scalars" plugin's
        # summaries when it reads them.
        metadata = scalar_metadata.create_summary_metadata(
            display_name="", description=""
        )
        with np.errstate(over="ignore"):
            tensors = {
                tag: np.float32(float(value)) for tag, value in values.items()
            }
        self._write(tensors, metadata, step)

    def tensors(self, values, step, description=""):
        """Writes `{tag: array}` as raw tensor summaries at `step`.

        The arrays keep their shape and dtype; read them back with
        TensorBoard's `EventAccumulator(...).Tensors(tag)` and
        `tensorboard.util.tensor_util.make_ndarray` (or
        `tf.make_ndarray`). Their metadata names the plugin
        `TENSOR_PLUGIN` (the "Timesteps" dashboard, `keras_gated.board`)
        and the data class `DATA_CLASS_TENSOR`, so TensorBoard's data
        providers, the Python one and the Rust one of `--load_fast`, serve
        them.
        """
        metadata = summary_pb2.SummaryMetadata(
            summary_description=description,
            plugin_data=summary_pb2.SummaryMetadata.PluginData(
                plugin_name=TENSOR_PLUGIN
            ),
            data_class=summary_pb2.DATA_CLASS_TENSOR,
        )
        self._write(
            {tag: np.asarray(value) for tag, value in values.items()},
            metadata,
            step,
        )

    def images(self, values, step):
        """Writes `{tag: (height, width, 3) uint8 array}` as images.

        Each is stored as `tf.summary.image` stores one image: a string
        tensor `[width, height, PNG bytes]`.
        """
        # Like the scalars', this metadata gets its data class,
        # DATA_CLASS_BLOB_SEQUENCE, from TensorBoard's readers.
        metadata = image_metadata.create_summary_metadata(
            display_name="", description=""
        )
        tensors = {}
        for tag, image in values.items():
            image = np.asarray(image)
            if (
                image.dtype != np.uint8
                or image.ndim != 3
                or image.shape[2] != 3
            ):
                raise ValueError(
                    "images must be (height, width, 3) uint8 arrays. "
                    f"Received: {tag!r} of shape {image.shape} and dtype "
                    f"{image.dtype}"
                )
            height, width, _ = image.shape
            # An object array, to make a DT_STRING tensor of the bytes as
            # they are (NumPy's fixed-width bytes strip trailing zeros).
            tensors[tag] = np.array(
                [str(width).encode(), str(height).encode(), _png(image)],
                dtype=object,
            )
        self._write(tensors, metadata, step)

    def _write(self, tensors, metadata, step):
        # One event per tag, as tf.summary writes them.
        events = []
        for tag, tensor in tensors.items():
            event = event_pb2.Event(wall_time=time.time(), step=int(step))
            event.summary.value.add(
                tag=tag,
                tensor=tensor_util.make_tensor_proto(tensor),
                metadata=metadata,
            )
            events.append(event.SerializeToString())
        with self._lock:
            if self._records is None:
                self._records = _open_event_file(self.log_dir)
            for event in events:
                self._records.write(event)
            self._records.flush()

    def flush(self):
        with self._lock:
            if self._records is not None:
                self._records.flush()

    def close(self):
        """Closes the event file; a later write opens a new one."""
        with self._lock:
            if self._records is not None:
                self._records.close()
                self._records = None


def _open_event_file(log_dir):
    """A new event file in `log_dir`, its first record written.

    TensorBoard's `EventFileWriter` is not used: it reaches the disk
    through `tensorboard.compat.tf`, which imports TensorFlow wherever it
    is installed. The file layer it falls back to where TensorFlow is not
    installed, `tensorflow_stub.io.gfile`, is the one used here.
    """
    gfile.makedirs(log_dir)
    name = "events.out.tfevents.%d.%s.%d.%06d.v2" % (
        time.time(),
        socket.gethostname(),
        os.getpid(),
        next(_file_numbers),
    )
    records = RecordWriter(gfile.GFile(os.path.join(log_dir, name), "wb"))
    # Readers take the first record for the file's format version.
    version = event_pb2.Event(
        wall_time=time.time(),
        file_version="brain.Event:2",
        source_metadata=event_pb2.SourceMetadata(
            writer="keras_gated.summaries"
        ),
    )
    records.write(version.SerializeToString())
    return records


def _png(image):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A fixed layout: tight_layout would cost as much as the drawing.
    figure = Figure(figsize=(width, height), dpi=80)
    figure.subplots_adjust(left=0.12, right=0.95, bottom=0.16, top=0.9)
    FigureCanvasAgg(figure)
    return figure


def _to_rgb(figure):
    figure.canvas.draw()
    return np.ascontiguousarray(
        np.asarray(figure.canvas.buffer_rgba())[..., :3]
    )


def _positive_range(values):
    finite = values[np.isfinite(values) & (values > 0)]
    if finite.size == 0:
        return 1e-12, 1.0
    low, high = float(finite.min()), float(finite.max())
    if high <= low:
        low, high = low / 10.0, high * 10.0
    return low, high


def _finite_range(values):
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    return (low, high) if high > low else (low, low + 1.0)


def _plain_log_ticks(axis):
    # Plain "1e-05" labels at a few decades: matplotlib's default "10^k"
    # labels go through its TeX parser, which costs most of the drawing.
    from matplotlib import ticker

    axis.set_major_locator(ticker.LogLocator(numticks=8))
    axis.set_minor_locator(ticker.NullLocator())
    axis.set_major_formatter(ticker.FuncFormatter(_plain_exponent))
    axis.set_minor_formatter(ticker.NullFormatter())


def _plain_exponent(value, _):
    return f"{value:.0e}"


class Heatmap:
    """Matrices as heatmaps, one panel each with a colour legend.

    The figure is built once and redrawn with new data on every `render`,
    which costs a fraction of building it: keep one `Heatmap` per image
    that is rendered again and again. Not thread-safe; render from one
    thread.

    Args:
        panels: Names of the panels, drawn top to bottom.
        title: Figure title.
        row_label, column_label: Axis labels.
        colorbar_label: Label of each panel's colour legend.
        log_scale: Logarithmic colour scale. Non-positive values then show
            in the "bad" colour, grey, like NaN and infinity always do.
        value_ranges: Optional dict `{panel: (vmin, vmax)}`; a panel
            without one spans its data's range (positive range with
            `log_scale`) at each render.

    Example:

    >>> heatmap = Heatmap(["inputs"], "norms", log_scale=True)
    >>> image = heatmap.render({"inputs": np.ones((3, 20))}, rows=[0, 5, 10])
    >>> image.dtype, image.ndim
    (dtype('uint8'), 3)
    """

    def __init__(
        self,
        panels,
        title,
        row_label="step",
        column_label="timestep",
        colorbar_label="",
        log_scale=False,
        value_ranges=None,
    ):
        from matplotlib import colormaps
        from matplotlib import colors

        self.panels = list(panels)
        self.log_scale = log_scale
        self.value_ranges = dict(value_ranges or {})
        height = 0.8 + 2.2 * len(self.panels)
        self.figure = _figure(6.4, height)
        self.figure.suptitle(title, fontsize=10)
        self.figure.subplots_adjust(
            left=0.12,
            right=0.97,
            bottom=0.5 / height,
            top=1 - 0.6 / height,
            hspace=0.45,
        )
        cmap = colormaps["viridis"].with_extremes(bad="0.6")
        self.images = {}
        self.colorbars = {}
        for index, name in enumerate(self.panels):
            axes = self.figure.add_subplot(len(self.panels), 1, index + 1)
            norm = colors.LogNorm(1e-12, 1) if log_scale else None
            image = axes.imshow(
                np.full((1, 1), np.nan),
                aspect="auto",
                interpolation="nearest",
                origin="lower",
                cmap=cmap,
                norm=norm,
            )
            axes.set_ylabel(row_label)
            axes.set_title(name, fontsize=9)
            if index == len(self.panels) - 1:
                axes.set_xlabel(column_label)
            self.colorbars[name] = self.figure.colorbar(
                image, ax=axes, label=colorbar_label
            )
            self.images[name] = image

    def render(self, panels, rows):
        """Draws `{panel: 2D array}` (a row per entry of `rows`).

        Returns:
            A `(height, width, 3)` uint8 RGB image.
        """
        from matplotlib import ticker

        rows = [str(row) for row in rows]
        ticks = np.unique(
            np.linspace(0, len(rows) - 1, min(len(rows), 5)).round()
        )
        for name in self.panels:
            matrix = np.asarray(panels[name], dtype="float64")
            value_range = self.value_ranges.get(name)
            if self.log_scale:
                value_range = value_range or _positive_range(matrix)
                matrix = np.where(matrix > 0, matrix, np.nan)
            else:
                value_range = value_range or _finite_range(matrix)
            image = self.images[name]
            image.set_data(matrix)
            image.set_clim(*value_range)
            image.set_extent(
                (-0.5, matrix.shape[1] - 0.5, -0.5, len(rows) - 0.5)
            )
            image.axes.set_yticks(ticks, [rows[int(i)] for i in ticks])
            if self.log_scale:
                colorbar = self.colorbars[name]
                colorbar.locator = ticker.LogLocator(numticks=8)
                colorbar.formatter = ticker.FuncFormatter(_plain_exponent)
                colorbar.minorticks_off()
        return _to_rgb(self.figure)


class LinePlot:
    """Vectors against their index as lines, e.g. a norm per timestep.

    Like `Heatmap`, the figure is built once and redrawn on every
    `render`. Non-finite values (and, with `log_scale`, non-positive ones)
    are left out of the lines.

    Args:
        lines: Labels of the lines; a legend names them when there are
            several.
        xlabel, ylabel: Axis labels.
        log_scale: Logarithmic y axis. Default: `True`.
    """

    def __init__(self, lines, xlabel="timestep", ylabel="", log_scale=True):
        self.figure = _figure(6.4, 3.2)
        self.axes = self.figure.add_subplot()
        self.log_scale = log_scale
        self.lines = {
            label: self.axes.plot(
                [], [], marker=".", markersize=3, label=label
            )[0]
            for label in lines
        }
        if len(self.lines) > 1:
            self.axes.legend(fontsize=8)
        self.axes.set_xlabel(xlabel)
        self.axes.set_ylabel(ylabel)
        self.axes.grid(True, which="major", alpha=0.3)

    def render(self, lines, title=""):
        """Draws `{label: 1D array}` under `title`.

        Returns:
            A `(height, width, 3)` uint8 RGB image.
        """
        any_shown = False
        for label, line in self.lines.items():
            values = np.asarray(lines[label], dtype="float64")
            shown = np.where(np.isfinite(values), values, np.nan)
            if self.log_scale:
                shown = np.where(shown > 0, shown, np.nan)
            any_shown = any_shown or bool(np.any(np.isfinite(shown)))
            line.set_data(np.arange(values.size), shown)
        if self.log_scale and any_shown:
            self.axes.set_yscale("log")
            _plain_log_ticks(self.axes.yaxis)
        else:
            self.axes.set_yscale("linear")
        self.axes.relim()
        self.axes.autoscale_view()
        self.axes.set_title(title, fontsize=10)
        return _to_rgb(self.figure)


def heatmap(panels, rows, title, **kwargs):
    """Renders `{panel: 2D array}` once; see `Heatmap` for the arguments."""
    return Heatmap(list(panels), title, **kwargs).render(panels, rows)


def line_plot(lines, title, **kwargs):
    """Renders `{label: 1D array}` once; see `LinePlot` for the arguments."""
    return LinePlot(list(lines), **kwargs).render(lines, title)
