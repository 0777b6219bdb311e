"""numpy's BLAS on one thread for the runtime's own small products: ONNX Runtime owns the cores.

OpenBLAS (numpy's BLAS in the PyPI wheels and on Jetson) splits a large enough matrix product over
every core, and its worker threads then keep spinning for a while. The tokenizer's nearest-palette
search for a batch of 16 images is large enough; ONNX Runtime's call right after it, on the same
cores, ran at half speed (``Recognizer.predict_batch``, 2 threads, the shipped model's fp32 file:
5.4 ms an image against 2.8 ms; docs/performance.md). :func:`one_thread` runs a block with
OpenBLAS on one thread and gives the process its setting back afterwards. The setting is
process-wide: numpy work in another thread during such a block also runs on one thread. Where no
OpenBLAS with its own threads is loaded (another BLAS, an OpenMP or sequential build, another OS)
it does nothing.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_PREFIXES = ("openblas_", "scipy_openblas_")  # numpy >= 2 wheels: scipy_openblas*, 64-bit ints
_SUFFIXES = ("", "64_")
_lock = threading.RLock()
_found: list[tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]] | None = None  # (get, set) per library


def _libraries() -> list[tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]]:
    """(get_num_threads, set_num_threads) of every OpenBLAS this process has loaded (Linux)."""
    global _found
    if _found is None:
        import numpy  # noqa: F401  (loads its BLAS)

        found = []
        try:
            with open("/proc/self/maps") as f:
                paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
        except OSError:
            paths = []
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            spellings = [(p, x) for p in _PREFIXES for x in _SUFFIXES if hasattr(lib, f"{p}get_parallel{x}")]
            if not spellings:
                continue
            p, x = spellings[0]  # the first spelling this library exports
            parallel = getattr(lib, f"{p}get_parallel{x}")
            parallel.restype = ctypes.c_int
            # 1: OpenBLAS's own pthreads, whose workers spin. 0 (sequential) has none; 2 (OpenMP)
            # would also reset the caller's OpenMP thread count (torch's): leave both alone.
            if parallel() != 1:
                continue
            get, put = getattr(lib, f"{p}get_num_threads{x}"), getattr(lib, f"{p}set_num_threads{x}")
            get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
            found.append((get, put))
        _found = found
    return _found


def threads() -> list[int]:
    """OpenBLAS's thread count, per loaded library (empty: none loaded)."""
    return [get() for get, _ in _libraries()]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with OpenBLAS on one thread; the previous counts come back after it."""
    libs = _libraries()
    if not libs:
        yield
        return
    with _lock:  # a process-wide setting: one block at a time changes it
        before = [get() for get, _ in libs]
        try:
            for _, put in libs:
                put(1)
            yield
        finally:
            for (_, put), n in zip(libs, before, strict=True):
                put(n)
