"""Argument checks shared by the cells, layers, callback, export and CLI.

Each check raises `ValueError` at construction, naming the argument, the value
received and what is expected, so a bad argument never surfaces later as a
TensorFlow trace. Checks that pass return the value, converted where the
caller stores a plain Python type.
"""

import numbers
import os
import uuid

import keras


def check_positive_int(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value <= 0
    ):
        raise ValueError(
            f"{name} must be a positive integer. Received: {name}={value!r}"
        )
    return int(value)


def check_optional_positive_int(name, value):
    """`None`, or a positive integer: a frequency that can be switched off."""
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value <= 0
    ):
        raise ValueError(
            f"{name} must be None or a positive integer. "
            f"Received: {name}={value!r}"
        )
    return value


def check_units(units):
    return check_positive_int("units", units)


def check_rate(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= value < 1.0
    ):
        raise ValueError(
            f"{name} must be a float in [0, 1). Received: {name}={value!r}"
        )
    return float(value)


def check_float_between(name, value, low, high):
    """A real number strictly between `low` and `high`, as a `float`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not low < value < high
    ):
        raise ValueError(
            f"{name} must be a float in ({low}, {high}). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(
            f"{name} must be True or False. Received: {name}={value!r}"
        )
    return value


def check_choice(name, value, choices):
    if not any(value is c or value == c for c in choices):
        raise ValueError(
            f"{name} must be one of {choices}. Received: {name}={value!r}"
        )
    return value


def check_seed(seed):
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
    ):
        raise ValueError(
            f"seed must be None or an integer. Received: seed={seed!r}"
        )
    return seed


def check_writable_directory(name, path):
    """Creates the directory `path` if needed and checks it can be written.

    A local path gets a small probe file written and removed; a URL
    (`s3://`, or fsspec's) is created through the file layer of TensorBoard
    that `keras_gated.summaries` writes with
    (`tensorboard.compat.tensorflow_stub.io.gfile`, imported here, on
    first use), without TensorFlow.

    Returns:
        `path` as a `str`.
    """
    path = str(path)
    try:
        if "://" in path:
            _make_remote_directory(path)
        else:
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, f".write_test_{uuid.uuid4().hex}")
            with open(probe, "w"):
                pass
            os.remove(probe)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{name} must be a directory that can be created and written. "
            f"Received: {name}={path!r} ({error})"
        ) from None
    return path


def _make_remote_directory(path):
    from tensorboard.compat.tensorflow_stub import errors
    from tensorboard.compat.tensorflow_stub.io import gfile

    try:
        gfile.makedirs(path)
    except errors.OpError as error:
        raise OSError(error.message) from None


def _resolve(name, value, getter, what):
    try:
        return getter(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{name} must be {what}. Received: {name}={value!r} ({error})"
        ) from None


def get_activation(name, value):
    return _resolve(
        name,
        value,
        keras.activations.get,
        "an activation name such as 'tanh' or 'sigmoid', a callable or None",
    )


def get_initializer(name, value):
    return _resolve(
        name,
        value,
        keras.initializers.get,
        "an initializer name such as 'glorot_uniform', or an Initializer",
    )


def get_regularizer(name, value):
    return _resolve(
        name, value, keras.regularizers.get, "None or a Regularizer"
    )


def get_constraint(name, value):
    return _resolve(name, value, keras.constraints.get, "None or a Constraint")


def check_int_between(name, value, low, high):
    """An integer in the closed range `[low, high]`, as an `int`."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or not low <= value <= high
    ):
        raise ValueError(
            f"{name} must be an integer in [{low}, {high}]. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def check_model(name, value):
    """A `keras.Model` (built or not)."""
    if not isinstance(value, keras.Model):
        hint = ""
        if isinstance(value, keras.layers.Layer):
            hint = " (a layer; wrap it in a keras.Model or keras.Sequential)"
        raise ValueError(
            f"{name} must be a keras.Model. Received: {name}={value!r} of "
            f"type {type(value).__name__}{hint}"
        )
    return value


def shape_fits(shape, model_shape, first_axis):
    """Whether `shape` has `model_shape`'s rank and its sizes from
    `first_axis` on (None on either side matches any size)."""
    if len(shape) != len(model_shape):
        return False
    return all(
        given is None or wanted is None or given == wanted
        for given, wanted in zip(
            shape[first_axis:], model_shape[first_axis:], strict=True
        )
    )
