"""Shared fixtures: a quiet TensorFlow, fresh Keras state, a float32 policy."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

# Plain asserts in the shared harness report their values, as in tests.
pytest.register_assert_rewrite("harness")

if keras.backend.backend() == "jax":
    # Eager JAX compiles every call's scan anew; the tests repeat a few
    # shapes, so a compilation cache shared by the workers (and by later
    # runs on this machine) makes the suite several times faster.
    import tempfile

    import jax

    jax.config.update(
        "jax_compilation_cache_dir",
        os.path.join(tempfile.gettempdir(), "keras_gated_jax_cache"),
    )
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


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
    config.addinivalue_line(
        "markers",
        "backends: backend-neutral; also runs under KERAS_BACKEND=jax and "
        "KERAS_BACKEND=torch (the rest of the suite is TensorFlow's)",
    )
    config.addinivalue_line(
        "markers",
        "tensorflow_only: TensorFlow's alone, in a module marked backends",
    )
    # Keras' TensorFlow backend trips NumPy 2's `__array__(copy=...)`
    # deprecation when it converts variables; not ours to fix, only noise.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:__array__ implementation doesn't accept a copy keyword"
        ":DeprecationWarning:keras.*",
    )


def pytest_collection_modifyitems(config, items):
    """On a backend other than TensorFlow, only the tests marked
    `backends` (and not `tensorflow_only`) run; the others are
    deselected, not skipped: they are TensorFlow's by design."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    # On JAX every eager call compiles its scan, and the grid takes 12
    # minutes on 2 cores; its unroll=True half runs the same keras.ops
    # Python loop as on TensorFlow and PyTorch, so it is left to them
    # unless KERAS_GATED_FULL_GRID=1.
    thin = backend == "jax" and os.environ.get("KERAS_GATED_FULL_GRID") != "1"
    kept, deselected = [], []
    for item in items:
        neutral = item.get_closest_marker("backends") and not (
            item.get_closest_marker("tensorflow_only")
        )
        params = getattr(item, "callspec", None)
        unrolled = params is not None and params.params.get("unroll") is True
        (kept if neutral and not (thin and unrolled) else deselected).append(
            item
        )
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
