"""keras_gated: explicit LSTM and GRU layers for Keras 3 that show gates."""

from keras_gated.callbacks import TimestepGradientLogger
from keras_gated.cells import GRUCell
from keras_gated.cells import LSTMCell
from keras_gated.export import export_saved_model
from keras_gated.export import load_saved_model
from keras_gated.gates import GRU_GATES
from keras_gated.gates import GRU_SEQUENCES
from keras_gated.gates import LSTM_GATES
from keras_gated.gates import LSTM_SEQUENCES
from keras_gated.gradients import timestep_gradients
from keras_gated.inspection import gate_outputs
from keras_gated.inspection import gate_twin
from keras_gated.inspection import inspect_gates
from keras_gated.inspection import recurrent_layers
from keras_gated.layers import GRU
from keras_gated.layers import LSTM

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "GRUCell",
    "GRU_GATES",
    "GRU_SEQUENCES",
    "LSTM",
    "LSTMCell",
    "LSTM_GATES",
    "LSTM_SEQUENCES",
    "TimestepGradientLogger",
    "export_saved_model",
    "load_saved_model",
    "gate_outputs",
    "gate_twin",
    "inspect_gates",
    "recurrent_layers",
    "timestep_gradients",
]
