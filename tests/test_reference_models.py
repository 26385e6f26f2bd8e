"""The reference models in saved_models/ still load and compute the same.

They were exported by an earlier version of keras_gated (see
saved_models/README.md), so a change that breaks loading earlier `.keras`
files or SavedModels, or changes what a stored model computes or the names
of its gates, fails here. The stored gates are also checked against the
LSTM and GRU equations, which ties every gate name to its meaning.
"""

import json
import pathlib

import keras
import numpy as np
import pytest

import keras_gated

REFERENCE_DIR = pathlib.Path(__file__).resolve().parents[1] / "saved_models"
MODELS = {"lstm_adding": keras_gated.LSTM, "gru_adding": keras_gated.GRU}
ATOL = 1e-5


def stored_input():
    return np.load(REFERENCE_DIR / "inputs.npz")["sequence"]


def expected_values(name):
    with np.load(REFERENCE_DIR / f"{name}_expected.npz") as data:
        return {key: data[key] for key in data.files}


def load_keras_model(name):
    return keras.saving.load_model(
        REFERENCE_DIR / f"{name}.keras", safe_mode=True
    )


def assert_close(actual, expected, what=""):
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(actual),
        expected,
        atol=ATOL,
        rtol=ATOL,
        err_msg=what,
    )


def test_reference_files_are_present_and_small():
    manifest = json.loads((REFERENCE_DIR / "manifest.json").read_text())
    assert sorted(manifest["models"]) == sorted(MODELS)
    for name in MODELS:
        for relative in (
            f"{name}.keras",
            f"{name}_expected.npz",
            f"{name}_saved_model/saved_model.pb",
            f"{name}_saved_model/variables/variables.index",
        ):
            assert (REFERENCE_DIR / relative).is_file(), relative
        gate_keys = sorted(set(expected_values(name)) - {"output_0"})
        assert manifest["models"][name]["gate_keys"] == gate_keys
    total = sum(
        path.stat().st_size
        for path in REFERENCE_DIR.rglob("*")
        if path.is_file()
    )
    assert total < 1_000_000, total


@pytest.mark.parametrize("name", sorted(MODELS))
def test_keras_file_reproduces_outputs_and_gates(name):
    model = load_keras_model(name)
    layer_name, layer = keras_gated.recurrent_layers(model)[0]
    assert type(layer) is MODELS[name]
    x = stored_input()
    expected = expected_values(name)
    assert_close(model(x), expected["output_0"], "output_0")
    gates = keras_gated.gate_outputs(model, x)
    assert sorted(gates) == sorted(set(expected) - {"output_0"})
    assert all(key.startswith(f"{layer_name}/") for key in gates)
    for key, value in gates.items():
        assert_close(value, expected[key], key)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_saved_model_reproduces_outputs_and_gates(name):
    loaded = keras_gated.load_saved_model(REFERENCE_DIR / f"{name}_saved_model")
    x = stored_input()
    expected = expected_values(name)
    served = loaded.signatures["serving_default"](sequence=x)
    assert sorted(served) == ["output_0"]
    assert_close(served["output_0"], expected["output_0"], "output_0")
    gates = loaded.signatures["gates"](sequence=x)
    assert sorted(gates) == sorted(expected)
    for key, value in expected.items():
        assert_close(gates[key], value, key)
    # Both formats agree on a batch and length other than those stored.
    other = np.random.default_rng(0).random((2, 7, 2)).astype("float32")
    model = load_keras_model(name)
    assert_close(loaded.serve(other), keras.ops.convert_to_numpy(model(other)))


def _final_state_from_gates(name, gates):
    """h_T rebuilt from the stored gates with the cell's state update."""
    if name == "lstm_adding":
        cell = gates["lstm/cell"]
        previous = np.concatenate(
            [np.zeros_like(cell[:, :1]), cell[:, :-1]], axis=1
        )
        np.testing.assert_allclose(
            cell,
            gates["lstm/forget"] * previous
            + gates["lstm/input"] * gates["lstm/candidate"],
            atol=ATOL,
        )
        return gates["lstm/output"][:, -1] * np.tanh(cell[:, -1])
    update = gates["gru/update"]
    h = np.zeros_like(update[:, 0])
    for t in range(update.shape[1]):
        h = (
            update[:, t] * h
            + (1.0 - update[:, t]) * gates["gru/candidate"][:, t]
        )
    return h


@pytest.mark.parametrize("name", sorted(MODELS))
def test_stored_gates_obey_the_equations(name):
    """Gate values in [0, 1], the state update, and the output from h_T."""
    expected = expected_values(name)
    gate_names = ("input", "forget", "output", "update", "reset")
    for key, value in expected.items():
        if key.split("/")[-1] in gate_names:
            assert value.min() >= 0.0 and value.max() <= 1.0, key
    h_last = _final_state_from_gates(name, expected)
    kernel, bias = load_keras_model(name).get_layer("sum").get_weights()
    np.testing.assert_allclose(
        h_last @ kernel + bias, expected["output_0"], atol=ATOL
    )
