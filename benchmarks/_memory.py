"""Peak memory of one step, counted at malloc, in a child process.

Why malloc: TensorFlow and PyTorch both take their CPU tensors from the C
allocator, so counting there measures the two frameworks alike.
TensorFlow's own counter (`tf.config.experimental.get_memory_info`) is no
good on CPU: it exists only with oneDNN's allocator, which does not count
allocations under 256 KiB (most per-timestep tensors of a recurrent layer)
and keeps the larger ones in a pool. The process' resident size (peak RSS)
is no better: glibc keeps freed memory and hands it out again, so a step
that follows another one barely moves it.

How: the child runs with a tiny C library preloaded (`LD_PRELOAD`) that
wraps malloc, calloc, realloc, memalign, aligned_alloc, posix_memalign and
free, and keeps a running total of the bytes held (`malloc_usable_size`,
so the allocator's rounding is included) and its peak. The child also sets
`TF_ONEDNN_USE_SYSTEM_ALLOCATOR=true`, so TensorFlow hands every
allocation, large ones included, straight to malloc and free instead of to
its pool; this changes where the bytes come from, not which kernels run.
`peak_bytes(step)` resets the peak to the current total, runs the step and
returns the peak minus the total just before it: the memory the step
itself needs on top of what already lives (weights, optimizer slots, the
input batch, compiled code), that is the activations kept for the
backward pass, the gradients, the temporaries and the step's outputs.

Needs Linux with glibc and a C compiler (`$CC`, else `cc`); where either
is missing, `preload_env` yields None and says why.
"""

import contextlib
import ctypes
import gc
import os
import signal
import subprocess
import sys
import tempfile

SHIM_SOURCE = r"""
#include <malloc.h>
#include <stdatomic.h>
#include <stddef.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static _Atomic long held = 0;
static _Atomic long peak = 0;

static void count(long change) {
    long now = atomic_fetch_add(&held, change) + change;
    long high = atomic_load(&peak);
    while (now > high && !atomic_compare_exchange_weak(&peak, &high, now)) {
    }
}

static void *counted(void *ptr) {
    if (ptr) count((long)malloc_usable_size(ptr));
    return ptr;
}

void *malloc(size_t size) { return counted(__libc_malloc(size)); }

void *calloc(size_t n, size_t size) {
    return counted(__libc_calloc(n, size));
}

void *memalign(size_t alignment, size_t size) {
    return counted(__libc_memalign(alignment, size));
}

void *aligned_alloc(size_t alignment, size_t size) {
    return memalign(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
    void *ptr = memalign(alignment, size);
    if (!ptr) return 12; /* ENOMEM */
    *out = ptr;
    return 0;
}

void free(void *ptr) {
    if (!ptr) return;
    count(-(long)malloc_usable_size(ptr));
    __libc_free(ptr);
}

void *realloc(void *old, size_t size) {
    long before = old ? (long)malloc_usable_size(old) : 0;
    void *ptr = __libc_realloc(old, size);
    if (ptr) {
        count((long)malloc_usable_size(ptr) - before);
    } else if (size == 0) {
        count(-before);
    }
    return ptr;
}

long malloc_peak_held(void) { return atomic_load(&peak); }

long malloc_reset_peak(void) {
    long now = atomic_load(&held);
    atomic_store(&peak, now);
    return now;
}
"""


@contextlib.contextmanager
def preload_env():
    """Builds the counting library; yields the child's environment or None.

    The library lives in a temporary directory for the duration of the
    block.
    """
    if not sys.platform.startswith("linux"):
        print("peak memory: needs Linux (LD_PRELOAD, glibc); skipped")
        yield None
        return
    with tempfile.TemporaryDirectory() as directory:
        source = os.path.join(directory, "malloc_peak.c")
        library = os.path.join(directory, "malloc_peak.so")
        with open(source, "w") as file:
            file.write(SHIM_SOURCE)
        compiler = os.environ.get("CC", "cc")
        command = [compiler, "-O2", "-shared", "-fPIC", "-o", library, source]
        try:
            subprocess.run(command, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"peak memory: cannot build the counter ({error}); skipped")
            yield None
            return
        env = dict(os.environ)
        env["LD_PRELOAD"] = " ".join(
            filter(None, [library, env.get("LD_PRELOAD")])
        )
        env["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] = "true"
        yield env


def exit_reason(code):
    """A child's exit status in words ("killed by SIGSEGV", "exit 1")."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def run_child(argv, env):
    """Runs `python argv` in `env`; returns the last line of its stdout."""
    result = subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"memory child failed ({exit_reason(result.returncode)}):\n"
            f"{result.stderr[-3000:]}"
        )
    return result.stdout.strip().splitlines()[-1]


def peak_bytes(step):
    """Peak bytes held during `step()` above those held just before it.

    Only in a process started with `preload_env`'s environment.
    """
    library = ctypes.CDLL(None)
    try:
        reset, peak = library.malloc_reset_peak, library.malloc_peak_held
    except AttributeError:
        raise RuntimeError(
            "the malloc counter is not loaded; run under preload_env()"
        ) from None
    reset.restype = peak.restype = ctypes.c_long
    gc.collect()
    before = reset()
    step()
    return peak() - before
