"""Shared fixtures: a quiet TensorFlow, fresh Keras state, a float32 policy."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

# Plain asserts in the shared harness report their values, as in tests.
pytest.register_assert_rewrite("harness")


@pytest.fixture(autouse=True)
def fresh_keras_state():
    """Every test starts from the same seeds and the float32 policy.

    Layer names and global seeds would otherwise depend on which tests ran
    before; a test that changes the dtype policy and fails half-way must
    not leak it into the next one.
    """
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(params=["mixed_float16", "mixed_bfloat16"])
def mixed_policy(request):
    """Sets a mixed precision policy for one test, then restores float32."""
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


def pytest_configure(config):
    # Keras' TensorFlow backend trips NumPy 2's `__array__(copy=...)`
    # deprecation when it converts variables; not ours to fix, only noise.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:__array__ implementation doesn't accept a copy keyword"
        ":DeprecationWarning:keras.*",
    )
