"""Run the LDS tests' many tiny linear-algebra calls on one thread.

On a busy 2-core machine, multi-threaded BLAS (torch's and NumPy's OpenBLAS) spins
on small matrices and makes per-time-step loops many times slower. The fixture
``one_thread`` limits both for the duration of a test and restores them afterwards.
The OpenBLAS limit is best effort (Linux, symbols looked up as threadpoolctl does).
"""

import ctypes

import pytest
import torch


def _openblas_libraries():
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
    except OSError:
        return []
    found = []
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get, set_ = f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}"
                if hasattr(lib, get) and hasattr(lib, set_):
                    found.append((getattr(lib, get), getattr(lib, set_)))
                    break
    return found


@pytest.fixture(autouse=True)
def one_thread():
    blas = [(get, set_, get()) for get, set_ in _openblas_libraries()]
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for _, set_, _ in blas:
        set_(1)
    yield
    torch.set_num_threads(torch_threads)
    for _, set_, before in blas:
        set_(before)
