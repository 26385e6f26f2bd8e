"""Bad arguments and bad inputs fail early with a message that says what.

Arguments are checked at construction (`ValueError` naming the argument
and the value received); inputs at call time (`ValueError` naming the
layer, the expected and the received shape). The shared checks of
`keras_gated._validation` that the callback, the export and the
comparison use are tested directly at the end.
"""

import os

import keras
import numpy as np
import pytest

import keras_gated
from keras_gated import _validation

LAYERS = [keras_gated.LSTM, keras_gated.GRU, keras_gated.SimpleRNN]
CELLS = [keras_gated.LSTMCell, keras_gated.GRUCell, keras_gated.SimpleRNNCell]
GATED = [keras_gated.LSTM, keras_gated.GRU]
GATED_CELLS = [keras_gated.LSTMCell, keras_gated.GRUCell]

# (argument, bad value) pairs every layer and cell must reject.
COMMON_BAD_ARGUMENTS = [
    ("units", 0),
    ("units", -1),
    ("units", 2.5),
    ("units", True),
    ("units", "5"),
    ("units", None),
    ("activation", "nope"),
    ("use_bias", "yes"),
    ("dropout", 1.0),
    ("dropout", -0.1),
    ("dropout", "0.5"),
    ("recurrent_dropout", 1.5),
    ("recurrent_dropout", -1e-3),
    ("kernel_initializer", "nope"),
    ("recurrent_initializer", "nope"),
    ("bias_initializer", "nope"),
    ("kernel_regularizer", "nope"),
    ("recurrent_regularizer", "nope"),
    ("bias_regularizer", "nope"),
    ("kernel_constraint", "nope"),
    ("recurrent_constraint", "nope"),
    ("bias_constraint", "nope"),
    ("seed", "x"),
    ("seed", 1.5),
]
# What the LSTM and GRU (layers and cells) take besides.
GATED_BAD_ARGUMENTS = [
    ("recurrent_activation", "nope"),
    ("implementation", 3),
]
LAYER_BAD_ARGUMENTS = [
    ("return_gates", "yes"),
    ("return_sequences", "yes"),
    ("return_state", 1),
    ("go_backwards", "no"),
    ("stateful", "x"),
    ("unroll", None),
]
SPECIFIC_BAD_ARGUMENTS = [
    (keras_gated.LSTM, "use_cudnn", "x"),
    (keras_gated.GRU, "use_cudnn", "x"),
    (keras_gated.LSTM, "unit_forget_bias", "yes"),
    (keras_gated.LSTMCell, "unit_forget_bias", "yes"),
    (keras_gated.GRU, "reset_after", "yes"),
    (keras_gated.GRUCell, "reset_after", "yes"),
]


def construct(cls, argument, value):
    if argument == "units":
        return cls(value)
    return cls(3, **{argument: value})


def assert_names_argument_and_value(error, argument, value):
    message = str(error.value)
    assert f"{argument}={value!r}" in message, message


def _name(value):
    """A test id that is the same in every process (no addresses), as
    pytest-xdist needs to hand the same tests to each worker."""
    if callable(value) and hasattr(value, "__name__"):
        return value.__name__
    if type(value).__repr__ is object.__repr__:
        return type(value).__name__
    return repr(value)


# Every class with each argument it takes, and a bad value for it.
BAD_CONSTRUCTIONS = [
    (cls, argument, value)
    for classes, cases in (
        (LAYERS + CELLS, COMMON_BAD_ARGUMENTS),
        (GATED + GATED_CELLS, GATED_BAD_ARGUMENTS),
    )
    for cls in classes
    for argument, value in cases
]


@pytest.mark.parametrize("cls, argument, value", BAD_CONSTRUCTIONS, ids=_name)
def test_bad_argument_raises_at_construction(cls, argument, value):
    with pytest.raises(ValueError) as error:
        construct(cls, argument, value)
    assert_names_argument_and_value(error, argument, value)


@pytest.mark.parametrize("argument, value", LAYER_BAD_ARGUMENTS, ids=_name)
@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_bad_layer_argument_raises_at_construction(cls, argument, value):
    with pytest.raises(ValueError) as error:
        construct(cls, argument, value)
    assert_names_argument_and_value(error, argument, value)


@pytest.mark.parametrize(
    "cls, argument, value",
    SPECIFIC_BAD_ARGUMENTS,
    ids=_name,
)
def test_bad_specific_argument_raises_at_construction(cls, argument, value):
    with pytest.raises(ValueError) as error:
        construct(cls, argument, value)
    assert_names_argument_and_value(error, argument, value)


@pytest.mark.parametrize(
    "argument, value",
    [
        ("dropout", 0.0),
        ("dropout", 0.999),
        ("recurrent_dropout", 0),
        ("activation", None),
        ("activation", keras.activations.relu),
        ("kernel_initializer", keras.initializers.Constant(0.1)),
        ("seed", 0),
    ],
    ids=_name,
)
@pytest.mark.parametrize("cls", LAYERS + CELLS, ids=lambda c: c.__name__)
def test_good_arguments_are_accepted(cls, argument, value):
    # What the built-in accepts, ours accepts: the checks are not too strict.
    builtin = getattr(keras.layers, cls.__name__)
    construct(builtin, argument, value)
    construct(cls, argument, value)


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("shape", [(3, 4), (3, 2, 6, 4)], ids=["2d", "4d"])
def test_input_that_is_not_3d_raises(cls, shape):
    layer = cls(5, name="my_rnn")
    with pytest.raises(ValueError) as error:
        layer(np.zeros(shape, "float32"))
    message = str(error.value)
    assert "my_rnn" in message, message
    assert "(batch, timesteps, features)" in message, message
    assert str(shape) in message, message


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_symbolic_input_that_is_not_3d_raises(cls):
    layer = cls(5, name="my_rnn")
    with pytest.raises(ValueError) as error:
        layer(keras.Input((4,)))
    message = str(error.value)
    assert "my_rnn" in message, message
    assert "(None, 4)" in message, message


@pytest.mark.parametrize("symbolic", [False, True], ids=["eager", "symbolic"])
@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_feature_size_differs_from_built_raises(cls, symbolic):
    # Symbolically too: a Functional model must not be built around a
    # layer that cannot run on its input.
    layer = cls(5, name="my_rnn")
    layer(np.zeros((3, 6, 4), "float32"))
    with pytest.raises(ValueError) as error:
        if symbolic:
            layer(keras.Input((6, 7)))
        else:
            layer(np.zeros((3, 6, 7), "float32"))
    message = str(error.value)
    assert "my_rnn" in message, message
    assert "(batch, timesteps, 4)" in message, message
    received = "(None, 6, 7)" if symbolic else "(3, 6, 7)"
    assert received in message, message


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_unknown_feature_size_raises(cls):
    layer = cls(5, name="my_rnn")
    with pytest.raises(ValueError) as error:
        layer(keras.Input((6, None)))
    message = str(error.value)
    assert "my_rnn" in message, message
    assert "(None, 6, None)" in message, message


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_stateful_without_static_batch_size_raises(cls):
    layer = cls(5, stateful=True, name="my_rnn")
    with pytest.raises(ValueError) as error:
        layer(keras.Input((6, 4)))
    message = str(error.value)
    assert "my_rnn" in message, message
    assert "stateful" in message, message
    assert "batch" in message, message


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_unroll_without_static_timesteps_raises(cls):
    layer = cls(5, unroll=True, name="my_rnn")
    with pytest.raises(ValueError) as error:
        layer(keras.Input((None, 4)))
    message = str(error.value)
    assert "my_rnn" in message, message
    assert "unroll" in message, message


@pytest.mark.parametrize(
    "cls, n_states",
    [(keras_gated.LSTM, 1), (keras_gated.LSTM, 3), (keras_gated.GRU, 2)],
    ids=["lstm-1", "lstm-3", "gru-2"],
)
def test_wrong_number_of_initial_states_raises(cls, n_states):
    layer = cls(5, name="my_rnn")
    states = [np.zeros((3, 5), "float32")] * n_states
    with pytest.raises(ValueError) as error:
        layer(np.zeros((3, 6, 4), "float32"), initial_state=states)
    message = str(error.value)
    assert "my_rnn" in message, message
    assert "initial_state" in message, message


@pytest.mark.parametrize("value", [None, 1, 7, np.int64(3)], ids=_name)
def test_optional_positive_int_accepts_none_and_positive_integers(value):
    assert _validation.check_optional_positive_int("freq", value) == value


@pytest.mark.parametrize("value", [0, -2, 1.5, True, "2"], ids=_name)
def test_optional_positive_int_rejects_the_rest(value):
    with pytest.raises(ValueError) as error:
        _validation.check_optional_positive_int("freq", value)
    assert "freq must be None or a positive integer" in str(error.value)
    assert_names_argument_and_value(error, "freq", value)


def test_float_between_returns_a_float_strictly_inside():
    checked = _validation.check_float_between("saturation", 0.25, 0, 0.5)
    assert checked == 0.25 and type(checked) is float
    assert _validation.check_float_between("rate", 1, 0, 2) == 1.0


@pytest.mark.parametrize("value", [0, 0.5, -0.1, True, "0.1", None], ids=_name)
def test_float_between_rejects_the_ends_and_non_numbers(value):
    with pytest.raises(ValueError) as error:
        _validation.check_float_between("saturation", value, 0, 0.5)
    assert "saturation must be a float in (0, 0.5)" in str(error.value)
    assert_names_argument_and_value(error, "saturation", value)


def test_writable_directory_is_created_and_left_empty(tmp_path):
    path = tmp_path / "a" / "b"
    assert _validation.check_writable_directory("out", path) == str(path)
    assert path.is_dir()
    assert os.listdir(path) == []


def test_a_path_under_a_file_is_not_a_writable_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = str(blocker / "logs")
    with pytest.raises(ValueError) as error:
        _validation.check_writable_directory("log_dir", path)
    message = str(error.value)
    assert message.startswith(
        "log_dir must be a directory that can be created and written."
    )
    assert_names_argument_and_value(error, "log_dir", path)
    assert "not a directory" in message.lower() and "\n" not in message


def _message(call):
    with pytest.raises(ValueError) as error:
        call()
    return str(error.value)


@pytest.mark.parametrize(
    "state_shape", [(2, 5), (3, 4)], ids=["batch", "width"]
)
@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_initial_state_of_another_shape_raises(cls, state_shape):
    layer = cls(5, name="my_rnn")
    count = 2 if cls is keras_gated.LSTM else 1
    states = [np.zeros(state_shape, "float32")] * count
    message = _message(
        lambda: layer(np.zeros((3, 6, 4), "float32"), initial_state=states)
    )
    assert "my_rnn" in message and "(batch, 5)" in message, message
    assert "(3, 6, 4)" in message and str(state_shape) in message, message


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_stateful_call_with_another_batch_size_raises(cls):
    layer = cls(5, stateful=True, name="my_rnn")
    layer(np.zeros((3, 6, 4), "float32"))
    states_before = [keras.ops.convert_to_numpy(s) for s in layer.states]
    message = _message(lambda: layer(np.ones((2, 6, 4), "float32")))
    assert "my_rnn" in message and "stateful" in message, message
    assert "batches of 3" in message and "(2, 6, 4)" in message, message
    # Nothing the layer carries is lost by the bad call.
    for before, after in zip(states_before, layer.states):
        np.testing.assert_array_equal(before, keras.ops.convert_to_numpy(after))


@pytest.mark.parametrize(
    "mask_shape", [(3, 5), (2, 6), (3, 6, 1)], ids=["time", "batch", "3d"]
)
@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_mask_of_another_shape_raises(cls, mask_shape):
    layer = cls(5, name="my_rnn")
    mask = np.ones(mask_shape, bool)
    message = _message(lambda: layer(np.zeros((3, 6, 4), "float32"), mask=mask))
    assert "my_rnn" in message, message
    assert "(3, 6)" in message and str(mask_shape) in message, message


@pytest.mark.parametrize("cls", LAYERS, ids=lambda c: c.__name__)
def test_zero_timesteps_raises(cls):
    layer = cls(5, name="my_rnn")
    message = _message(lambda: layer(np.zeros((3, 0, 4), "float32")))
    assert "my_rnn" in message and "at least one timestep" in message
    assert "(3, 0, 4)" in message, message
