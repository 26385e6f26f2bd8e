"""Tests for the decomposition in `keras-gated compare` (keras_gated.compare).

The comparison's numbers are checked against `timestep_gradients` on the
saved model and against `tf.GradientTape`; the table against its inputs.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gated
from keras_gated import compare
from keras_gated import tasks
from keras_gated.cli import main


def test_compare_records_and_plots_the_decomposition(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(
        ["compare", "--task", "adding", "--length", "8", "--epochs", "1"]
        + ["--samples", "120", "--units", "5", "--batch-size", "40"]
        + ["--models", "simplernn,gated-lstm", "--out", str(out), "--quiet"]
    )
    assert code == 0
    header, _, *rows = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("model", "---", "simplernn", "gated-lstm"))
    ]
    assert header.split()[-2:] == ["sum", "check"]
    results = json.loads((out / "adding" / "results.json").read_text())
    by_model = {r["model"]: r for r in results}
    for row in rows:
        result = by_model[row.split()[0]]
        assert float(row.split()[-1]) == pytest.approx(
            result["sum_check"], rel=0.05
        )
        assert 0 <= result["sum_check"] < 1e-5
    for name in ("contributions.png", "memory.png"):
        assert (out / "adding" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The trained model's recorded curves are timestep_gradients' on the
    # probe batch (the last 15% of the data, its first 64 sequences).
    lstm = by_model["gated-lstm"]
    model = keras.saving.load_model(lstm["saved"]["keras"])
    x, y = tasks.make_data("adding", 8, 120, 0)
    split = int(len(x) * 0.85)
    probe = (x[split:][:64], y[split:][:64])
    norms = keras_gated.timestep_gradients(model, *probe, jacobians=True)
    for key in ("recurrent_kernel", "retention", "jacobian_cell_spectral"):
        np.testing.assert_allclose(
            lstm["end"][key], norms["rnn"][key], rtol=1e-4, err_msg=key
        )
    assert "retention" not in by_model["simplernn"]["end"]
    # Each entry is a share of the gradient: the shares sum to it.
    parts = keras_gated.weight_contributions(model, *probe)["rnn"]
    with tf.GradientTape() as tape:
        loss = model.compute_loss(
            x=probe[0], y=probe[1], y_pred=model(probe[0])
        )
    kernel = model.get_layer("rnn").cell.recurrent_kernel
    np.testing.assert_allclose(
        parts["recurrent_kernel"].sum(axis=0),
        tape.gradient(loss, kernel),
        rtol=1e-4,
        atol=1e-7,
    )


def test_table_sum_check_column_only_when_measured():
    result = {
        "model": "lstm",
        "metric": "mse",
        "final": 0.1,
        "baseline": 2 / 12,
        "beats_baseline": True,
        "steps_to_beat": 5,
        "seconds_per_epoch": 1.0,
        "decay_start": 2.0,
        "decay_end": 0.5,
    }
    old = compare.format_table([result]).splitlines()[0]
    assert old.split()[-1] == "decay@end"
    header, _, row = compare.format_table(
        [{**result, "sum_check": 3.2e-7}]
    ).splitlines()
    assert header.split()[-2:] == ["sum", "check"]
    assert row.split()[-1] == "3.2e-07"
