"""Tests for keras_gated.summaries: the writer and the image rendering."""

import os

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)
from tensorboard.compat.proto import summary_pb2

from keras_gated import summaries


def read_events(log_dir):
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return events


def values(events, tag):
    return [
        (event.step, tf.make_ndarray(event.tensor_proto))
        for event in events.Tensors(tag)
    ]


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
