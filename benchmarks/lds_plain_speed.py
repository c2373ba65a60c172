"""Speed of the plain (reference) LDS path on the flagship shape: K = 10, N = 142, T = 1000.

Times ``lds.kalman_filter``, ``lds.kalman_smoother`` and one EM iteration
(``lds.fit_em(max_iter=1)``), all with ``method="plain"``, against the peer measured in
the same run: a plain per-time-step NumPy implementation in the style of lds_python (the test oracle,
``tests/oracle_numpy.py``: filter; filter + RTS smoother, without the lag-one covariances
that ``lds.kalman_smoother`` also returns; and one EM step = filter + RTS smoother + lag-one
covariances + M-step). The plain path is the in-library oracle, not the fast path;
these numbers are the baseline a fast path is measured against.

Prints medians and ratios (lds / NumPy) and writes ``benchmarks/results/lds_plain_speed.json``.

    .venv/bin/python benchmarks/lds_plain_speed.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tabulate import tabulate

from common import K, N, flagship_observations, median_seconds, reference_init, write_results

import lds  # noqa: E402 (after common, which puts the repository and tests/ on the path)
import oracle_numpy  # noqa: E402
from lds_threads import _openblas_libraries  # noqa: E402

T = 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenBLAS threads for both sides (tiny per-step ops favour 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for _, set_threads in _openblas_libraries():
        set_threads(args.threads)

    y = flagship_observations(T)
    params = reference_init()
    n = oracle_numpy.numpy_params(params)  # no offsets: b and d are None
    y_t = torch.from_numpy(y)

    def numpy_smoother():
        return oracle_numpy.rts_smoother(n["A"], oracle_numpy.kalman_filter(y, **n), n["m0"], n["V0"])

    rows = [
        ("Kalman filter", lambda: lds.kalman_filter(params, y_t, method="plain"),
         lambda: oracle_numpy.kalman_filter(y, **n)),
        ("RTS smoother (filter + smoother)", lambda: lds.kalman_smoother(params, y_t, method="plain"),
         numpy_smoother),
        ("one EM iteration", lambda: lds.fit_em(y_t, params, max_iter=1, progress=False, method="plain"),
         lambda: oracle_numpy.em_step(y, **n)),
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
    write_results("lds_plain_speed", dict(shape=dict(K=K, N=N, T=T), repeats=args.repeats, threads=args.threads,
                                          torch=torch.__version__, numpy=np.__version__, results=results))


if __name__ == "__main__":
    main()
