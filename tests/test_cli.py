"""`keras-gated compare` at tiny sizes: everything it promises is written
and readable; bad input fails in one line before any training."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

import keras_gated
from keras_gated import compare
from keras_gated.cli import main


def _read_scalars_and_tensors(log_dir):
    tags = set()
    for root, _, files in os.walk(log_dir):
        if any(f.startswith("events.out.tfevents") for f in files):
            accumulator = event_accumulator.EventAccumulator(
                root, size_guidance={}
            )
            accumulator.Reload()
            for kind in ("tensors", "scalars", "images"):
                tags.update(accumulator.Tags()[kind])
    return tags


def assert_decays_are_log10_ratios_of_the_norms(results):
    for result in results:
        for when in ("start", "end"):
            norms = result[f"grad_norms_{when}"]
            assert result[f"decay_{when}"] == pytest.approx(
                np.log10(norms[-1] / norms[0]), rel=1e-6
            )


def test_compare_adding_writes_table_figures_logs_and_models(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(
        [
            "compare",
            "--task",
            "adding",
            "--length",
            "10",
            "--epochs",
            "1",
            "--samples",
            "200",
            "--units",
            "6",
            "--batch-size",
            "50",
            "--models",
            "simplernn,lstm,gated-lstm",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for model in ("simplernn", "lstm", "gated-lstm"):
        assert any(line.startswith(model) for line in printed.splitlines())
    assert f"tensorboard --logdir {out / 'logs' / 'adding'}" in printed

    for name in (
        "learning_curves.png",
        "gradient_norms.png",
        "gates_heatmap.png",
    ):
        path = out / "adding" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    results = json.loads((out / "adding" / "results.json").read_text())
    by_model = {r["model"]: r for r in results}
    assert by_model["lstm"]["baseline"] == pytest.approx(2 / 12)
    # Same initial weights and batch order: our LSTM tracks the built-in.
    np.testing.assert_allclose(
        [v for _, v in by_model["gated-lstm"]["curve"]],
        [v for _, v in by_model["lstm"]["curve"]],
        rtol=1e-4,
    )
    assert len(by_model["simplernn"]["grad_norms_start"]) == 10
    assert_decays_are_log10_ratios_of_the_norms(results)

    tags = _read_scalars_and_tensors(out / "logs" / "adding" / "gated-lstm")
    assert "timestep_gradients/rnn/inputs" in tags
    assert "timestep_gradients/rnn/cell" in tags

    saved = by_model["gated-lstm"]["saved"]
    x = np.random.default_rng(0).random((3, 10, 2)).astype("float32")
    model = keras.saving.load_model(saved["keras"])
    import tensorflow as tf

    served = tf.saved_model.load(saved["saved_model"])
    serving = served.signatures["serving_default"]
    (output,) = serving(
        **{list(serving.structured_input_signature[1])[0]: x}
    ).values()
    np.testing.assert_allclose(output, model.predict(x, verbose=0), atol=1e-5)


def test_gated_simplernn_starts_from_the_builtins_weights(tmp_path, capsys):
    out = tmp_path / "runs"
    arguments = "--length 6 --epochs 1 --samples 40 --units 3 --batch-size 17"
    code = main(
        ["compare", "--task", "adding", *arguments.split()]
        + ["--models", "simplernn,gated-simplernn", "--out", str(out)]
        + ["--quiet"]
    )
    assert code == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(row.startswith("gated-simplernn ") for row in rows)
    results = json.loads((out / "adding" / "results.json").read_text())
    ours, builtin = (
        {r["model"]: r for r in results}[m]
        for m in ("gated-simplernn", "simplernn")
    )
    # The same initial weights: the same validation loss before training,
    # the same input gradients; the same batches: the same curve after.
    assert ours["curve"][0][0] == builtin["curve"][0][0] == 0
    assert ours["curve"][0][1] == pytest.approx(builtin["curve"][0][1], 1e-6)
    np.testing.assert_allclose(
        ours["grad_norms_start"], builtin["grad_norms_start"], rtol=1e-5
    )
    np.testing.assert_allclose(
        [v for _, v in ours["curve"]],
        [v for _, v in builtin["curve"]],
        rtol=1e-4,
    )
    assert "saved" in ours and "saved" not in builtin
    tags = _read_scalars_and_tensors(
        out / "logs" / "adding" / "gated-simplernn"
    )
    assert {
        "timestep_gradients/rnn/hidden",
        "gate_mean/rnn/pre_activation",
        "gate_saturation/rnn/pre_activation",
    } <= tags
    model = keras.saving.load_model(ours["saved"]["keras"])
    assert isinstance(model.get_layer("rnn"), keras_gated.SimpleRNN)


def test_default_models_are_the_five_of_the_results():
    assert compare.DEFAULT_MODELS == (
        "simplernn",
        "lstm",
        "gru",
        "gated-lstm",
        "gated-gru",
    )
    assert compare.Settings().models == compare.DEFAULT_MODELS
    assert set(compare.MODEL_NAMES) == {
        *compare.DEFAULT_MODELS,
        "gated-simplernn",
    }


def test_table_columns_fit_the_longest_model_name():
    result = {
        "metric": "mse",
        "final": 0.17,
        "baseline": 2 / 12,
        "beats_baseline": False,
        "steps_to_beat": None,
        "seconds_per_epoch": 1.0,
        "decay_start": 2.0,
        "decay_end": 3.0,
    }
    lines = compare.format_table(
        [{**result, "model": m} for m in ("lstm", "gated-simplernn")]
    ).splitlines()
    _, _, lstm, simple = lines
    assert len({len(line) for line in lines}) == 1
    assert simple.split()[0] == "gated-simplernn"
    assert lstm.index(" mse") == simple.index(" mse")
    # The default models keep the 11 characters of examples/RESULTS.md.
    header = compare.format_table([{**result, "model": "gated-lstm"}])
    assert header.index("metric") == 11 + 3


@pytest.mark.parametrize("task,length", [("copy", 5), ("digits", 64)])
def test_compare_other_tasks(tmp_path, task, length):
    out = tmp_path / "runs"
    code = main(
        [
            "compare",
            "--task",
            task,
            "--length",
            str(length),
            "--epochs",
            "1",
            "--samples",
            "120",
            "--units",
            "4",
            "--batch-size",
            "60",
            "--models",
            "gated-gru",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    (result,) = json.loads((out / task / "results.json").read_text())
    assert result["metric"] == ("accuracy" if task == "digits" else "loss")
    assert os.path.exists(result["saved"]["keras"])


@pytest.mark.parametrize(
    "arguments,argument",
    [
        (["--task", "sorting"], "task"),
        (["--models", "lstm,transformer"], "models"),
        (["--length", "0"], "length"),
        (["--length", "-3"], "length"),
        (["--epochs", "0"], "epochs"),
        (["--units", "0"], "units"),
        (["--batch-size", "-1"], "batch_size"),
        (["--samples", "0"], "samples"),
        (["--samples", "1"], "samples"),
        (["--models", ""], "models"),
        (["--models", "lstm,gru,lstm"], "models"),
        (["--learning-rate", "0"], "learning_rate"),
        (["--learning-rate", "nan"], "learning_rate"),
        (["--learning-rate", "inf"], "learning_rate"),
        (["--log-every", "-1"], "log_every"),
        (["--seed", "-1"], "seed"),
        (["--seed", str(2**32)], "seed"),
        (["--task", "adding", "--length", "1"], "length"),
    ],
)
def test_bad_input_one_line_error_before_training(
    tmp_path, capsys, arguments, argument
):
    out = tmp_path / "never"
    code = main(["compare", "--out", str(out)] + arguments)
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"{argument}=" in error[0]
    assert error[0].startswith("keras-gated compare: error: ")
    assert "Received:" in error[0]
    assert not (out / "logs").exists()


@pytest.mark.parametrize(
    "arguments,message",
    [
        ([], "the following arguments are required: command"),
        (["train"], "invalid choice: 'train'"),
        (["compare", "--length", "ten"], "argument --length: invalid int"),
        (["compare", "--epochs", "1.5"], "argument --epochs: invalid int"),
        (["compare", "--units", ""], "argument --units: invalid int"),
        (
            ["compare", "--learning-rate", "fast"],
            "argument --learning-rate: invalid float",
        ),
        (["compare", "--seed"], "argument --seed: expected one argument"),
        (["compare", "--unknown", "1"], "unrecognized arguments: --unknown"),
    ],
)
def test_malformed_command_lines_exit_2_with_usage(capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: keras-gated")
    assert message in error
    assert "Traceback" not in error


def test_bad_input_from_the_console_exits_2_without_traceback(tmp_path):
    """The installed command as a user runs it: one line, exit code 2."""
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    for arguments, received in (
        (["--seed", "-5"], "Received: seed=-5"),
        (["--out", str(blocker)], f"Received: out='{blocker}'"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "keras_gated.cli", "compare", *arguments],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        (line,) = [
            line
            for line in result.stderr.splitlines()
            if line.startswith("keras-gated compare: error: ")
        ]
        assert received in line
        assert result.stdout == ""
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("below", [False, True])
def test_unwritable_output_directory(tmp_path, capsys, below):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = blocker / "runs" if below else blocker
    code = main(["compare", "--out", str(out)])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "out=" in error[0]
    assert blocker.read_text() == "not a directory"


def test_table_shows_a_fully_vanished_gradient_as_inf():
    result = {
        "model": "simplernn",
        "metric": "mse",
        "final": 0.174,
        "baseline": 2 / 12,
        "beats_baseline": False,
        "steps_to_beat": None,
        "seconds_per_epoch": 1.38,
        "decay_start": 2.69,
        "decay_end": float("inf"),
    }
    header, rule, row = compare.format_table([result]).splitlines()
    assert header.split()[-2:] == ["decay@init", "decay@end"]
    assert row.split() == [
        "simplernn",
        "mse",
        "0.174",
        "0.167",
        "no",
        "-",
        "1.38",
        "2.69",
        "inf",
    ]


def test_console_script_help_lists_every_option():
    result = subprocess.run(
        [sys.executable, "-m", "keras_gated.cli", "compare", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        # Wide enough that argparse does not break a name at its hyphen.
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0
    for name in compare.MODEL_NAMES:
        assert name in result.stdout
    assert f"(default: {','.join(compare.DEFAULT_MODELS)})" in result.stdout
    for option in (
        "--task",
        "--length",
        "--models",
        "--epochs",
        "--units",
        "--batch-size",
        "--samples",
        "--learning-rate",
        "--log-every",
        "--seed",
        "--out",
        "--quiet",
    ):
        assert option in result.stdout
