"""Speed of the plain (reference) LDS path on the flagship shape: K = 10, N = 142, T = 1000.

Times ``lds.kalman_filter``, ``lds.kalman_smoother`` and one EM iteration
(``lds.fit_em(max_iter=1)``) against the peer measured in the same run: a plain
per-time-step NumPy implementation in the style of lds_python (the test oracle,
``tests/oracle_numpy.py``: filter, and one EM step = filter + RTS smoother + lag-one
covariances + M-step). The plain path is the in-library oracle, not the fast path;
these numbers are the baseline a fast path is measured against.

Prints medians and ratios (lds / NumPy) and writes ``benchmarks/results/lds_plain_speed.json``.

    .venv/bin/python benchmarks/lds_plain_speed.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import lds  # noqa: E402
import oracle_numpy  # noqa: E402
from lds_threads import _openblas_libraries  # noqa: E402

K, N, T = 10, 142, 1000


def median_seconds(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenBLAS threads for both sides (tiny per-step ops favour 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for _, set_threads in _openblas_libraries():
        set_threads(args.threads)

    rng = np.random.default_rng(7)
    latent = np.cumsum(rng.normal(size=(T, 3)) * 0.1, axis=0)
    y = np.sqrt(rng.poisson(np.exp(0.5 + 0.3 * latent @ rng.normal(size=(3, N)) / np.sqrt(3))) + 0.5)
    np.random.seed(0)
    A = np.diag(np.random.normal(0, 0.1, K))
    C = np.random.normal(0, 0.1, (N, K))
    Q = np.diag(np.abs(np.random.normal(0, 0.1, K)))
    R = np.diag(np.abs(np.random.normal(0, 0.1, N)))
    m0 = np.random.normal(0, 0.1, K)
    V0 = np.diag(np.abs(np.random.normal(0, 0.1, K)))
    params = lds.KalmanParams(transition_matrix=A, measurement_function=C, process_noise_covariance=Q,
                              measurement_noise_covariance=R, initial_mean=m0, initial_covariance=V0)
    y_t = torch.from_numpy(y)

    rows = [
        ("Kalman filter", lambda: lds.kalman_filter(params, y_t),
         lambda: oracle_numpy.kalman_filter(y, A, Q, C, R, m0, V0)),
        ("RTS smoother (filter + smoother)", lambda: lds.kalman_smoother(params, y_t), None),
        ("one EM iteration", lambda: lds.fit_em(y_t, params, max_iter=1, progress=False),
         lambda: oracle_numpy.em_step(y, A, Q, C, R, m0, V0)),
    ]
    results = []
    for name, ours, peer in rows:
        ours_s = median_seconds(ours, args.repeats)
        peer_s = None if peer is None else median_seconds(peer, args.repeats)
        results.append(dict(operation=name, lds_plain_s=ours_s, numpy_per_step_s=peer_s,
                            ratio=None if peer_s is None else ours_s / peer_s))
    print(f"K={K}, N={N}, T={T}, float64, CPU, threads={args.threads} (torch and OpenBLAS), median of {args.repeats}")
    print(tabulate([[r["operation"], r["lds_plain_s"], r["numpy_per_step_s"], r["ratio"]] for r in results],
                   headers=["operation", "lds plain [s]", "NumPy per-step [s]", "ratio lds/NumPy"],
                   floatfmt=".3f", missingval="-"))
    out = ROOT / "benchmarks" / "results" / "lds_plain_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(shape=dict(K=K, N=N, T=T), repeats=args.repeats, threads=args.threads,
                   torch=torch.__version__, numpy=np.__version__, machine=platform.machine(),
                   python=platform.python_version(), results=results)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(out)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
