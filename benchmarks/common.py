"""What the benchmarks share: timing, the flagship LDS data and start, and writing results as JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the repository's lds, and the tests' NumPy oracle and helpers

import lds  # noqa: E402
import oracle_numpy  # noqa: E402

K, N = 10, 142  # the flagship shape: 10 states, 142 neurons of MC_Maze_Small


def timings(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    return statistics.median(timings(fn, repeats, warmup))


def flagship_observations(T: int, seed: int = 7, trials: int | None = None) -> np.ndarray:
    """Spike-count-like data ``[T, N]`` (or ``[trials, T, N]``): sqrt(count + 0.5) of Poisson
    counts driven by a slow 3-D latent (``oracle_numpy.sqrt_counts``, the tests' data too)."""
    return oracle_numpy.sqrt_counts(T, N, seed, trials=trials)


def reference_init() -> lds.KalmanParams:
    """The Bonsai reference test's start on the flagship shape (seed 0)."""
    return lds.reference_start(K, N, seed=0)


def write_results(name: str, payload: dict) -> Path:
    """``benchmarks/results/<name>.json`` with the machine's description, written atomically."""
    out = ROOT / "benchmarks" / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(benchmark=name, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   python=platform.python_version(), machine=platform.machine(), platform=platform.platform(),
                   cpus=os.cpu_count(), **payload)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(out)
    print(f"wrote {out.relative_to(ROOT)}")
    return out
