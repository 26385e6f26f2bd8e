"""keras_gated: explicit LSTM, GRU and SimpleRNN layers for Keras 3 that
show their gates, and per-timestep gradients for TensorBoard.

The modules, what each owns and how a call flows: docs/architecture.md.
"""

from keras_gated.cells import GRUCell
from keras_gated.cells import LSTMCell
from keras_gated.cells import SimpleRNNCell
from keras_gated.gates import GRU_GATES
from keras_gated.gates import GRU_SEQUENCES
from keras_gated.gates import LSTM_GATES
from keras_gated.gates import LSTM_SEQUENCES
from keras_gated.gates import SIMPLE_RNN_GATES
from keras_gated.gates import SIMPLE_RNN_SEQUENCES
from keras_gated.inspection import gate_outputs
from keras_gated.inspection import gate_twin
from keras_gated.inspection import inspect_gates
from keras_gated.inspection import recurrent_layers
from keras_gated.layers import GRU
from keras_gated.layers import LSTM
from keras_gated.layers import SimpleRNN

__version__ = "0.1.0"

# Imported on first use: the gradient tools and export run TensorFlow,
# which a program on the JAX or PyTorch backend need not load.
_LAZY = {
    "TimestepGradientLogger": "keras_gated.callbacks",
    "check_weight_contributions": "keras_gated.gradients",
    "export_saved_model": "keras_gated.export",
    "load_saved_model": "keras_gated.export",
    "timestep_gradients": "keras_gated.gradients",
    "weight_contributions": "keras_gated.gradients",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_gated' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "GRU",
    "GRUCell",
    "GRU_GATES",
    "GRU_SEQUENCES",
    "LSTM",
    "LSTMCell",
    "LSTM_GATES",
    "LSTM_SEQUENCES",
    "SIMPLE_RNN_GATES",
    "SIMPLE_RNN_SEQUENCES",
    "SimpleRNN",
    "SimpleRNNCell",
    "TimestepGradientLogger",
    "check_weight_contributions",
    "export_saved_model",
    "load_saved_model",
    "gate_outputs",
    "gate_twin",
    "inspect_gates",
    "recurrent_layers",
    "timestep_gradients",
    "weight_contributions",
]
