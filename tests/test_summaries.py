"""Tests for keras_gated.summaries: the writer and the image rendering.

The writer's files are read back with TensorBoard's EventAccumulator and
compared with what `tf.summary` writes for the same values.
"""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

from keras_gated import summaries

EVERYTHING = {
    "compressedHistograms": 0,
    "images": 0,
    "audio": 0,
    "scalars": 0,
    "histograms": 0,
    "tensors": 0,
}


def read_events(log_dir):
    events = EventAccumulator(str(log_dir), size_guidance=EVERYTHING)
    events.Reload()
    return events


def data_class(log_dir, tag):
    """The data class of `tag` as TensorBoard's data provider reads it."""
    events = plugin_event_accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    return events.SummaryMetadata(tag).data_class


def values(events, tag):
    return [
        (event.step, tf.make_ndarray(event.tensor_proto))
        for event in events.Tensors(tag)
    ]


def raw_events(log_dir):
    """`{file name: [Event]}`, read with TensorFlow's record reader."""
    return {
        name: [
            event_pb2.Event.FromString(record.numpy())
            for record in tf.data.TFRecordDataset(os.path.join(log_dir, name))
        ]
        for name in sorted(os.listdir(log_dir))
    }


def written_by_tf_summary(log_dir, write):
    """Runs `write()` with a `tf.summary` file writer as the default."""
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        write()
    writer.close()
    return read_events(log_dir)


def assert_same_series(ours, theirs, tag):
    """Same metadata, steps, dtypes, shapes and values (NaN equal NaN)."""
    assert ours.SummaryMetadata(tag) == theirs.SummaryMetadata(tag)
    our_values, their_values = values(ours, tag), values(theirs, tag)
    assert [step for step, _ in our_values] == [
        step for step, _ in their_values
    ]
    for (_, our_value), (_, their_value) in zip(our_values, their_values):
        assert our_value.dtype == their_value.dtype
        assert our_value.shape == their_value.shape
        np.testing.assert_array_equal(our_value, their_value)


def test_writer_opens_its_file_lazily_and_flushes_every_write(tmp_path):
    log_dir = tmp_path / "run"
    writer = summaries.SummaryWriter(log_dir)
    assert not log_dir.exists()

    writer.scalars({"a/b": 1.5, "c": -2}, step=3)

    # Readable before close: the write was flushed.
    events = read_events(log_dir)
    assert sorted(events.Tags()["tensors"]) == ["a/b", "c"]
    assert values(events, "a/b") == [(3, np.float32(1.5))]
    plugin = events.SummaryMetadata("c").plugin_data.plugin_name
    assert plugin == "scalars"
    writer.close()


def test_tensors_round_trip_exactly(tmp_path):
    writer = summaries.SummaryWriter(tmp_path)
    first = np.array([1e-30, 0.5, np.nan, np.inf], "float32")
    second = np.arange(4, dtype="float32")

    writer.tensors({"norms/x": first}, step=1, description="per timestep")
    writer.tensors({"norms/x": second}, step=5)
    writer.close()

    events = read_events(tmp_path)
    (step_1, read_1), (step_5, read_5) = values(events, "norms/x")
    assert (step_1, step_5) == (1, 5)
    np.testing.assert_array_equal(read_1, first)
    np.testing.assert_array_equal(read_5, second)
    assert read_1.dtype == np.float32 and read_1.shape == (4,)
    metadata = events.SummaryMetadata("norms/x")
    assert metadata.plugin_data.plugin_name == summaries.TENSOR_PLUGIN
    assert metadata.summary_description == "per timestep"
    # TensorBoard's data providers serve only tensors of a known data class.
    assert metadata.data_class == summary_pb2.DATA_CLASS_TENSOR


def test_images_are_stored_as_png_of_the_given_pixels(tmp_path):
    writer = summaries.SummaryWriter(tmp_path)
    image = np.random.default_rng(0).integers(0, 255, (6, 9, 3), "uint8")

    writer.images({"pictures/one": image}, step=2)
    writer.close()

    events = read_events(tmp_path)
    ((step, stored),) = values(events, "pictures/one")
    width, height, png = stored
    assert step == 2 and (int(width), int(height)) == (9, 6)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(tf.image.decode_png(png).numpy(), image)
    plugin = events.SummaryMetadata("pictures/one").plugin_data.plugin_name
    assert plugin == "images"


def test_close_then_write_again_keeps_both_files_readable(tmp_path):
    writer = summaries.SummaryWriter(tmp_path)
    writer.scalars({"s": 1.0}, step=1)
    writer.close()
    writer.close()
    writer.scalars({"s": 2.0}, step=2)
    writer.close()

    assert len(os.listdir(tmp_path)) == 2
    assert values(read_events(tmp_path), "s") == [
        (1, np.float32(1.0)),
        (2, np.float32(2.0)),
    ]


def test_scalars_read_back_as_tf_summary_scalar_writes_them(tmp_path):
    scalars = {"loss": 0.1, "decay/lstm": -2, "ratio": np.float64(1 / 3)}
    writer = summaries.SummaryWriter(tmp_path / "ours")
    writer.scalars(scalars, step=4)
    writer.scalars({"loss": float("nan")}, step=9)
    writer.close()

    def write():
        for tag, value in scalars.items():
            tf.summary.scalar(tag, value, step=4)
        tf.summary.scalar("loss", float("nan"), step=9)

    theirs = written_by_tf_summary(tmp_path / "theirs", write)
    ours = read_events(tmp_path / "ours")

    assert ours.Tags()["tensors"] == theirs.Tags()["tensors"]
    for tag in scalars:
        assert_same_series(ours, theirs, tag)
    assert values(ours, "ratio") == [(4, np.float32(1 / 3))]
    assert ours.SummaryMetadata("loss") == (
        scalar_metadata.create_summary_metadata("", "")
    )
    for run in ("ours", "theirs"):
        scalar = summary_pb2.DATA_CLASS_SCALAR
        assert data_class(tmp_path / run, "loss") == scalar


def test_scalars_beyond_float32_are_written_as_infinities(tmp_path):
    writer = summaries.SummaryWriter(tmp_path)
    writer.scalars({"big": 1e300, "small": -1e300}, step=0)
    writer.close()

    events = read_events(tmp_path)
    assert values(events, "big") == [(0, np.float32(np.inf))]
    assert values(events, "small") == [(0, np.float32(-np.inf))]


@pytest.mark.parametrize(
    "array",
    [
        np.array([1e-30, 0.5, np.nan, np.inf, -np.inf], "float32"),
        np.arange(6, dtype="float64").reshape(2, 3) / 7,
        np.array([[np.nan], [-0.0]], "float64"),
        np.array([1, -2, 2**31 - 1], "int32"),
        np.array([2**40, -1], "int64"),
        np.array([0, 255], "uint8"),
        np.array([True, False]),
        np.array(2.5, "float32"),
        np.zeros((0, 3), "float32"),
        np.array([1.5, 65504], "float16"),
    ],
    ids=lambda array: f"{array.dtype}{list(array.shape)}",
)
def test_tensors_read_back_as_tf_summary_write_writes_them(tmp_path, array):
    writer = summaries.SummaryWriter(tmp_path / "ours")
    writer.tensors({"stats/x": array}, step=2, description="per timestep")
    writer.tensors({"stats/x": array[::-1] if array.ndim else array}, step=3)
    writer.close()
    metadata = summary_pb2.SummaryMetadata(
        summary_description="per timestep",
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=summaries.TENSOR_PLUGIN
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )

    def write():
        tf.summary.write("stats/x", array, step=2, metadata=metadata)
        reversed_array = array[::-1] if array.ndim else array
        tf.summary.write("stats/x", reversed_array, step=3, metadata=metadata)

    theirs = written_by_tf_summary(tmp_path / "theirs", write)
    ours = read_events(tmp_path / "ours")

    assert ours.Tags()["tensors"] == theirs.Tags()["tensors"] == ["stats/x"]
    assert_same_series(ours, theirs, "stats/x")
    tensor = summary_pb2.DATA_CLASS_TENSOR
    assert data_class(tmp_path / "ours", "stats/x") == tensor
    ((step, value), _) = values(ours, "stats/x")
    assert step == 2 and value.dtype == array.dtype
    np.testing.assert_array_equal(value, array)


def test_images_read_back_as_tf_summary_image_writes_them(tmp_path):
    rng = np.random.default_rng(1)
    images = {
        "noise": rng.integers(0, 256, (7, 11, 3), "uint8"),
        "plot/line": summaries.line_plot({"x": np.arange(1.0, 9.0)}, "t"),
        "black": np.zeros((1, 1, 3), "uint8"),
    }
    writer = summaries.SummaryWriter(tmp_path / "ours")
    writer.images(images, step=6)
    writer.close()

    def write():
        for tag, image in images.items():
            tf.summary.image(tag, image[None], step=6, max_outputs=1)

    theirs = written_by_tf_summary(tmp_path / "theirs", write)
    ours = read_events(tmp_path / "ours")

    assert ours.Tags()["tensors"] == theirs.Tags()["tensors"]
    for tag, image in images.items():
        assert ours.SummaryMetadata(tag) == theirs.SummaryMetadata(tag)
        ((step, stored),) = values(ours, tag)
        ((their_step, their_stored),) = values(theirs, tag)
        assert step == their_step == 6
        assert stored.shape == their_stored.shape == (3,)
        assert list(stored[:2]) == list(their_stored[:2])
        for png in (stored[2], their_stored[2]):
            np.testing.assert_array_equal(tf.io.decode_png(png).numpy(), image)
    assert ours.SummaryMetadata("noise") == (
        image_metadata.create_summary_metadata("", "")
    )
    for run in ("ours", "theirs"):
        blobs = summary_pb2.DATA_CLASS_BLOB_SEQUENCE
        assert data_class(tmp_path / run, "noise") == blobs


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((4, 5, 3), "float32"),
        np.zeros((4, 5), "uint8"),
        np.zeros((4, 5, 4), "uint8"),
    ],
    ids=["float32", "grey", "rgba"],
)
def test_images_other_than_rgb_uint8_are_refused(tmp_path, image):
    writer = summaries.SummaryWriter(tmp_path)
    with pytest.raises(ValueError, match="uint8") as error:
        writer.images({"bad": image}, step=0)
    assert "'bad'" in str(error.value)
    # Refused before the event file is opened.
    assert os.listdir(tmp_path) == []


def test_event_files_start_with_their_version_then_timed_steps(tmp_path):
    before = time.time()
    writer = summaries.SummaryWriter(tmp_path)
    writer.scalars({"s": 1.0}, step=7)
    writer.tensors({"t": np.ones(2)}, step=8)
    writer.images({"i": np.zeros((2, 2, 3), "uint8")}, step=9)
    writer.close()
    after = time.time()

    ((name, events),) = raw_events(tmp_path).items()
    assert name.startswith("events.out.tfevents.") and name.endswith(".v2")
    version, *written = events
    assert version.file_version == "brain.Event:2"
    assert [event.step for event in written] == [7, 8, 9]
    assert [event.summary.value[0].tag for event in written] == ["s", "t", "i"]
    for event in events:
        assert before - 1 <= event.wall_time <= after


def test_writers_in_the_same_second_never_share_a_file(tmp_path, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(time, "time", lambda: 1_700_000_000.0)
        first = summaries.SummaryWriter(tmp_path)
        second = summaries.SummaryWriter(tmp_path)
        first.scalars({"first": 1.0}, step=1)
        second.scalars({"second": 1.0}, step=1)
        first.close()
        first.scalars({"first": 2.0}, step=2)
        first.close()
        second.close()

    names = sorted(os.listdir(tmp_path))
    assert len(names) == 3
    assert all(".1700000000." in name for name in names)
    events = read_events(tmp_path)
    # Read in the order of the names, the reopened file last.
    assert values(events, "first") == [
        (1, np.float32(1.0)),
        (2, np.float32(2.0)),
    ]
    assert values(events, "second") == [(1, np.float32(1.0))]


def test_writes_from_several_threads_are_all_kept(tmp_path):
    writer = summaries.SummaryWriter(tmp_path)

    def write(name):
        for step in range(50):
            writer.scalars({name: step}, step=step)
            writer.tensors({f"{name}/tensor": np.full(3, step)}, step=step)

    threads = [
        threading.Thread(target=write, args=(f"thread{i}",)) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()

    assert len(os.listdir(tmp_path)) == 1
    events = read_events(tmp_path)
    for i in range(4):
        assert values(events, f"thread{i}") == [
            (step, np.float32(step)) for step in range(50)
        ]
        assert len(values(events, f"thread{i}/tensor")) == 50


def test_writes_to_an_fsspec_url(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    url = f"memory://{tmp_path.name}/run"
    writer = summaries.SummaryWriter(url)
    writer.scalars({"s": 0.5}, step=1)
    writer.tensors({"t": np.arange(3)}, step=1)

    memory = fsspec.filesystem("memory")
    try:
        # Read before close: every write reached the file system.
        for path in memory.ls(url, detail=False):
            local = tmp_path / "copy" / os.path.basename(path)
            local.parent.mkdir(exist_ok=True)
            local.write_bytes(memory.cat(path))
    finally:
        writer.close()
        memory.rm(url, recursive=True)

    events = read_events(tmp_path / "copy")
    assert values(events, "s") == [(1, np.float32(0.5))]
    ((step, stored),) = values(events, "t")
    assert step == 1
    np.testing.assert_array_equal(stored, np.arange(3))


JAX_SCRIPT = textwrap.dedent(
    """
    import os
    import sys

    import keras
    import numpy as np

    from keras_gated import summaries

    assert keras.backend.backend() == "jax", keras.backend.backend()
    writer = summaries.SummaryWriter(sys.argv[1])
    writer.scalars({"loss": 0.25}, step=1)
    writer.tensors({"norms": np.arange(5, dtype="float32")}, step=1)
    image = summaries.line_plot({"x": np.arange(1.0, 6.0)}, "norms")
    writer.images({"plot": image}, step=1)
    np.save(sys.argv[2], image)
    loaded = {name.split(".")[0] for name in sys.modules}
    print("tensorflow" in loaded, flush=True)
    # A crash: no close, no flush at exit.
    os._exit(3)
    """
)


def test_on_jax_tensorflow_is_never_loaded_and_a_crash_loses_nothing(
    tmp_path,
):
    script = tmp_path / "write.py"
    script.write_text(JAX_SCRIPT)
    log_dir = tmp_path / "logs"
    image_file = tmp_path / "image.npy"
    environment = {**os.environ, "KERAS_BACKEND": "jax"}

    result = subprocess.run(
        [sys.executable, str(script), str(log_dir), str(image_file)],
        capture_output=True,
        text=True,
        timeout=180,
        env=environment,
    )

    assert result.returncode == 3, result.stderr[-3000:]
    assert result.stdout.strip() == "False"
    events = read_events(log_dir)
    assert values(events, "loss") == [(1, np.float32(0.25))]
    ((step, norms),) = values(events, "norms")
    assert step == 1
    np.testing.assert_array_equal(norms, np.arange(5, dtype="float32"))
    ((_, stored),) = values(events, "plot")
    np.testing.assert_array_equal(
        tf.io.decode_png(stored[2]).numpy(), np.load(image_file)
    )


def test_heatmap_renders_every_panel_including_non_finite_values():
    rows = [0, 10, 20]
    matrix = 10.0 ** -np.arange(12, dtype="float64").reshape(3, 4)
    matrix[1, 2] = np.nan
    matrix[2, 3] = 0.0

    one = summaries.heatmap({"a": matrix}, rows, "title", log_scale=True)
    two = summaries.heatmap(
        {"a": matrix, "b": np.full((3, 4), np.inf)},
        rows,
        "title",
        log_scale=True,
    )
    linear = summaries.heatmap(
        {"gate": np.zeros((3, 4))}, rows, "t", value_ranges={"gate": (0, 1)}
    )

    for image in (one, two, linear):
        assert image.dtype == np.uint8 and image.ndim == 3
        assert image.shape[2] == 3 and image.std() > 0
    assert two.shape[0] > one.shape[0]


def test_line_plot_renders_with_or_without_usable_values():
    lines = {"x": np.logspace(-10, 0, 20), "h": np.full(20, np.nan)}

    image = summaries.line_plot(lines, "profile")
    empty = summaries.line_plot({"x": np.zeros(5)}, "zeros")

    assert image.shape == empty.shape and image.dtype == np.uint8
    assert not np.array_equal(image, empty)
