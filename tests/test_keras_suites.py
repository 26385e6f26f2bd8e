"""Keras' own RNN tests, run with our classes in place of Keras'.

The test files that ship with Keras (`keras/src/layers/rnn/lstm_test.py`,
`gru_test.py`, `simple_rnn_test.py`, `bidirectional_test.py`) are the
best drop-in check there is: each is loaded from the installed Keras and
run with `layers.LSTM`, `layers.GRU` and `layers.SimpleRNN` (and their
cells) resolving to `keras_gated`'s. The expected values in them are
Keras' own. A test we must waive is listed in `WAIVERS` with the reason.
"""

import importlib.util
import pathlib
import unittest

import keras
import pytest

import keras_gated

pytestmark = pytest.mark.backends

SUITES = ("lstm_test", "gru_test", "simple_rnn_test", "bidirectional_test")
SUBSTITUTES = {
    "LSTM": keras_gated.LSTM,
    "GRU": keras_gated.GRU,
    "SimpleRNN": keras_gated.SimpleRNN,
    "LSTMCell": keras_gated.LSTMCell,
    "GRUCell": keras_gated.GRUCell,
    "SimpleRNNCell": keras_gated.SimpleRNNCell,
}
# "<suite>.<TestCase>.<method>": why it cannot pass with our classes.
_FUSED = (
    "asserts that Keras' Bidirectional may dispatch its own classes to "
    "its fused cuDNN kernel (`_can_attempt_fused_*`), an internal of "
    "Keras' that only its built-in LSTM/GRU can use; ours compute each "
    "gate explicitly"
)
WAIVERS = {
    "bidirectional_test.SimpleRNNTest.test_fused_lstm_eligibility": _FUSED,
    "bidirectional_test.SimpleRNNTest.test_fused_gru_eligibility": _FUSED,
}


class _SubstitutedLayers:
    """Keras' `layers` module, with our classes for the substitutes."""

    def __init__(self, layers):
        self._layers = layers

    def __getattr__(self, name):
        if name in SUBSTITUTES:
            return SUBSTITUTES[name]
        return getattr(self._layers, name)


def _load(suite):
    path = (
        pathlib.Path(keras.__file__).parent / "src/layers/rnn" / f"{suite}.py"
    )
    spec = importlib.util.spec_from_file_location(f"keras_{suite}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.layers = _SubstitutedLayers(module.layers)
    return module


def _test_cases():
    """Each suite's TestCase classes, renamed, with the waivers applied."""
    cases = {}
    for suite in SUITES:
        module = _load(suite)
        for name, case in vars(module).items():
            if not (
                isinstance(case, type)
                and issubclass(case, unittest.TestCase)
                and case.__module__ == module.__name__
            ):
                continue
            waived = {
                key.rsplit(".", 1)[1]: unittest.skip(f"waived: {reason}")(
                    getattr(case, key.rsplit(".", 1)[1])
                )
                for key, reason in WAIVERS.items()
                if key.startswith(f"{suite}.{name}.")
            }
            cases[f"TestKeras_{suite}_{name}"] = type(
                f"TestKeras_{suite}_{name}", (case,), waived
            )
    return cases


globals().update(_test_cases())
