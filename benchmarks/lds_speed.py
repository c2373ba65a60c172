"""Speed of the fast exact LDS path (lds.fast, the default method="auto") against peers.

One run, the same seeded data (float64, K = 10 states, N = 142 channels, sqrt-transformed
Poisson counts) and the same parameters (a model after two EM iterations from the
reference initialization, so R is a full matrix) for everybody:

- T = 2,000: Kalman filter, RTS smoother, one EM iteration and one online step of
  ``lds`` against the plain ``lds`` path (method="plain", the in-library oracle),
  pykalman and dynamax (JAX on the CPU, jit-compiled once before timing);
- our scaling at T = 10,000 and T = 100,000 (exponent of cost in T), for a batch of
  B = 100 trials of T = 140 and for a list of 100 trials of unequal length (100 to 180);
- the issue's targets at T = 10,000 with 1 torch thread and with every core, with the
  fast path's covariances left unread and read (see :func:`targets_at_10k`);
- peak resident memory of one EM iteration at T = 100,000 (a fresh subprocess, peak
  RSS mark reset after making the data; it includes the data, the interpreter and the
  imported libraries).

``lds`` runs with ``--threads`` torch threads (default 1) except in the targets table;
pykalman (NumPy's BLAS) and dynamax (XLA) keep their own defaults, which use every core.
Fast-path results write their ``[T, K, K]`` covariances when first read: the comparison
with the peers reads them all (the peers return them too), the scaling table does not,
the targets table shows both.

pykalman is very slow (seconds per pass), so it runs once per operation; with
``--quick`` it runs at T = 200 and its time is scaled linearly (its cost is linear in T)
to T = 2,000, which the table marks. Prints medians and ratios and writes
``benchmarks/results/lds_speed.json``.

    .venv/bin/python benchmarks/lds_speed.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np
import torch
from tabulate import tabulate

from common import K, N, ROOT, median_seconds, write_results
from common import flagship_observations as observations, reference_init

import lds  # noqa: E402 (after common, which puts the repository and tests/ on the path)
from oracle_numpy import numpy_params  # noqa: E402  (the peers' NumPy arrays of a parameter set)


def online_step_times(params, y, warm_steps=200):
    """Per-step times of OnlineKalmanFilter.step after ``warm_steps`` (at the steady state)."""
    online = lds.OnlineKalmanFilter(params)
    rows = [y[t] for t in range(len(y))]
    for t in range(warm_steps):
        online.step(rows[t])
    assert online.at_steady_state, "the online filter did not reach its steady state"
    times = []
    for row in rows[warm_steps:]:
        start = time.perf_counter()
        online.step(row)
        times.append(time.perf_counter() - start)
    return np.array(times)


# ---- peers -------------------------------------------------------------------------
def pykalman_ops(p, y):
    from pykalman import KalmanFilter

    n = numpy_params(p)
    # pykalman's initial state is x_0 (our prior is x_{-1}): predict once for the same model
    kf = KalmanFilter(transition_matrices=n["A"], observation_matrices=n["C"], transition_covariance=n["Q"],
                      observation_covariance=n["R"], initial_state_mean=n["A"] @ n["m0"],
                      initial_state_covariance=n["A"] @ n["V0"] @ n["A"].T + n["Q"])
    state = (np.zeros(K), np.eye(K))
    return {
        "filter": lambda: kf.filter(y),
        "smoother": lambda: kf.smooth(y),
        "EM iteration": lambda: kf.em(y, n_iter=1, em_vars=["transition_matrices", "observation_matrices",
                                                          "transition_covariance", "observation_covariance",
                                                          "initial_state_mean", "initial_state_covariance"]),
        "online step": lambda: kf.filter_update(state[0], state[1], y[0]),
    }


def dynamax_ops(p, y):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from dynamax.linear_gaussian_ssm import LinearGaussianSSM, lgssm_filter, lgssm_smoother

    n = numpy_params(p)
    model = LinearGaussianSSM(K, N)
    params, props = model.initialize(initial_mean=jnp.asarray(n["A"] @ n["m0"]),
                                     initial_covariance=jnp.asarray(n["A"] @ n["V0"] @ n["A"].T + n["Q"]),
                                     dynamics_weights=jnp.asarray(n["A"]), dynamics_covariance=jnp.asarray(n["Q"]),
                                     emission_weights=jnp.asarray(n["C"]), emission_covariance=jnp.asarray(n["R"]))
    emissions = jnp.asarray(y)
    filt = jax.jit(lgssm_filter)
    smooth = jax.jit(lgssm_smoother)
    m_step_state = model.initialize_m_step_state(params, props)

    @jax.jit
    def em_step(params, emissions, m_step_state):  # what LinearGaussianSSM.fit_em does per iteration
        stats, lls = jax.vmap(lambda e: model.e_step(params, e))(emissions[None])
        return model.m_step(params, props, stats, m_step_state)[0], lls

    step = jax.jit(lambda prm, row: lgssm_filter(prm, row[None]).filtered_means)
    done = lambda out: jax.block_until_ready(out)  # noqa: E731
    return {
        "filter": lambda: done(filt(params, emissions)),
        "smoother": lambda: done(smooth(params, emissions)),
        "EM iteration": lambda: done(em_step(params, emissions, m_step_state)),
        "online step": lambda: done(step(params, emissions[0])),
    }


# ---- memory ------------------------------------------------------------------------
def peak_memory_em(T, threads):
    """Peak RSS (MB) of a fresh process during one EM iteration at length ``T``, and its RSS before.

    The data are made first; then the kernel's peak-RSS mark (VmHWM) is reset through
    ``/proc/self/clear_refs`` so that the peak is that of EM (with the data, the
    interpreter and the libraries resident), not of making the data.
    """
    code = (
        "import sys, numpy as np, torch\n"
        f"sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "import lds, lds_speed\n"
        f"torch.set_num_threads({threads})\n"
        f"p = lds_speed.fitted_params(); y = torch.from_numpy(lds_speed.observations({T}, seed=3))\n"
        "status = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = status('VmRSS')\n"
        "lds.fit_em(y, p, max_iter=1, progress=False)\n"
        "print(before, status('VmHWM'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before_kb, peak_kb = (int(v) for v in out.stdout.split()[-2:])
    return peak_kb / 1024, before_kb / 1024


def fitted_params():
    """Two EM iterations from the reference start on the T = 2,000 data (R becomes a full matrix)."""
    y = torch.from_numpy(observations(2000))
    return lds.fit_em(y, reference_init(), max_iter=2, progress=False).params


# ---- main --------------------------------------------------------------------------
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; pykalman at T=200 scaled to 2,000")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for lds (default 1: the machine has 2 cores shared by several users)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    repeats = 3 if args.quick else 7
    T = 2000
    params = fitted_params()
    y_np = observations(T, seed=3)
    y = torch.from_numpy(y_np)

    ours = {  # with every covariance read: the peers return them all too
        "filter": lambda: filtered_covariances(lds.kalman_filter(params, y)),
        "smoother": lambda: smoothed_covariances(lds.kalman_smoother(params, y)),
        "EM iteration": lambda: lds.fit_em(y, params, max_iter=1, progress=False),
    }
    plain = {
        "filter": lambda: lds.kalman_filter(params, y, method="plain"),
        "smoother": lambda: lds.kalman_smoother(params, y, method="plain"),
        "EM iteration": lambda: lds.fit_em(y, params, max_iter=1, progress=False, method="plain"),
    }
    rows, results = [], {"comparison_T": T}
    step_times = online_step_times(params, y_np)
    online_median = float(np.median(step_times))
    results["online_step"] = dict(median_s=online_median, p99_s=float(np.percentile(step_times, 99)),
                                  steps=len(step_times))
    pyk_T = 200 if args.quick else T
    pyk = pykalman_ops(params, observations(pyk_T, seed=3) if args.quick else y_np)
    dyn = dynamax_ops(params, y_np)
    comparison = {}
    for op in ("filter", "smoother", "EM iteration", "online step"):
        entry = {}
        if op == "online step":
            entry["lds"] = online_median
            online_plain, rows_plain = lds.OnlineKalmanFilter(params), [y_np[t] for t in range(300)]
            full_steps = median_seconds(lambda: _full_steps(online_plain, rows_plain), 1, 0)
            entry["lds plain"] = full_steps / len(rows_plain)
        else:
            entry["lds"] = median_seconds(ours[op], repeats)
            entry["lds plain"] = median_seconds(plain[op], 1, 0)
        entry["dynamax"] = median_seconds(dyn[op], repeats if op != "online step" else 200)
        scale = T / pyk_T if op != "online step" else 1.0
        pyk_repeats, pyk_warmup = (1, 0) if op != "online step" else (200, 1)
        entry["pykalman"] = median_seconds(pyk[op], pyk_repeats, pyk_warmup) * scale
        comparison[op] = entry
        rows.append([f"{op} (T={T})" if op != "online step" else "online step (steady)",
                     *(_fmt(entry[k]) for k in ("lds", "lds plain", "dynamax", "pykalman")),
                     *(f"{entry[k] / entry['lds']:.0f}x" for k in ("lds plain", "dynamax", "pykalman"))])
    results["comparison"] = comparison
    print(f"K={K}, N={N}, float64, CPU, torch threads={args.threads}, {platform.machine()}, "
          f"median of {repeats} (pykalman and lds plain: 1 run"
          f"{'; pykalman at T=200 scaled x10' if args.quick else ''})")
    print(tabulate(rows, headers=["operation", "lds", "lds plain", "dynamax", "pykalman", "plain/lds", "dynamax/lds",
                                  "pykalman/lds"]))
    print(f"online step at the steady state: median {online_median * 1e6:.1f} us, "
          f"p99 {results['online_step']['p99_s'] * 1e6:.1f} us over {len(step_times)} steps")

    # ---- our scaling in T, and a batch of trials ---------------------------------------
    scaling, srows = {}, []
    for length in (2000, 10000, 100000):
        data = y if length == T else torch.from_numpy(observations(length, seed=3))
        reps = repeats if length < 100000 else max(1, repeats // 2)
        scaling[length] = {op: median_seconds(fn, reps) for op, fn in {
            "filter": lambda: lds.kalman_filter(params, data),
            "smoother": lambda: lds.kalman_smoother(params, data),
            "EM iteration": lambda: lds.fit_em(data, params, max_iter=1, progress=False)}.items()}
    for op in ("filter", "smoother", "EM iteration"):
        exponent = math.log(scaling[100000][op] / scaling[10000][op]) / math.log(10)
        srows.append([op, *(_fmt(scaling[n][op]) for n in (2000, 10000, 100000)), f"{exponent:.2f}"])
    at_10k = targets_at_10k(params, torch.from_numpy(observations(10000, seed=3)), 3 * repeats, args.threads)
    batch = torch.from_numpy(observations(140, seed=5, trials=100))
    batch_times = {op: median_seconds(fn, repeats) for op, fn in {
        "filter": lambda: lds.kalman_filter(params, batch),
        "smoother": lambda: lds.kalman_smoother(params, batch),
        "EM iteration": lambda: lds.fit_em(batch, params, max_iter=1, progress=False)}.items()}
    batch_plain = median_seconds(lambda: lds.kalman_filter(params, batch, method="plain"), 1, 0)
    lengths = np.random.default_rng(6).integers(100, 181, 100)
    unequal = [torch.from_numpy(observations(int(n), seed=100 + i)) for i, n in enumerate(lengths)]
    unequal_times = {op: median_seconds(fn, repeats) for op, fn in {
        "filter": lambda: lds.kalman_filter(params, unequal),
        "smoother": lambda: lds.kalman_smoother(params, unequal),
        "EM iteration": lambda: lds.fit_em(unequal, params, max_iter=1, progress=False)}.items()}
    print()
    print(tabulate(srows, headers=["lds (fast)", "T=2,000", "T=10,000", "T=100,000", "exponent (10k -> 100k)"]))
    thread_counts = list(next(iter(at_10k.values())))
    print()
    print(tabulate([[op, *(_fmt(times[n]) for n in thread_counts), TARGETS_10K.get(op, "")]
                    for op, times in at_10k.items()],
                   headers=["T=10,000", *(f"{n} thread{'s' * (n > 1)}" for n in thread_counts), "target"]))
    print(f"B=100 trials of T=140: filter {_fmt(batch_times['filter'])}, smoother {_fmt(batch_times['smoother'])}, "
          f"EM iteration {_fmt(batch_times['EM iteration'])} (plain filter {_fmt(batch_plain)})")
    print(f"list of 100 trials of T=100..180 ({int(lengths.sum())} steps): filter {_fmt(unequal_times['filter'])}, "
          f"smoother {_fmt(unequal_times['smoother'])}, EM iteration {_fmt(unequal_times['EM iteration'])}")
    peak, base = peak_memory_em(100000, args.threads)
    print(f"EM iteration at T=100,000: peak RSS {peak:.0f} MB (RSS just before EM, data included: {base:.0f} MB)")
    results.update(scaling={str(k): v for k, v in scaling.items()},
                   scaling_exponent={op: math.log(scaling[100000][op] / scaling[10000][op]) / math.log(10)
                                     for op in ("filter", "smoother", "EM iteration")},
                   batch_100x140=dict(batch_times, plain_filter=batch_plain), list_100_unequal=unequal_times,
                   T10000_by_threads={op: {str(n): t for n, t in times.items()} for op, times in at_10k.items()},
                   em_T100000_peak_rss_mb=peak, em_T100000_baseline_rss_mb=base)

    import jax
    import pykalman
    write_results("lds_speed", dict(shape=dict(K=K, N=N), quick=args.quick, repeats=repeats, threads=args.threads,
                                    pykalman_T=pyk_T, torch=torch.__version__, numpy=np.__version__,
                                    jax=jax.__version__, pykalman=getattr(pykalman, "__version__", "?"),
                                    results=results))


def filtered_covariances(result):
    """Read a filter result's covariances (the fast path writes them when first read)."""
    return result.covariances, result.predicted_covariances


def smoothed_covariances(result):
    """Read a smoother result's covariances, the filter's included."""
    return result.covariances, result.lag_one_covariances, filtered_covariances(result.filtered)


TARGETS_10K = {"filter": "<= 15 ms", "EM iteration": "<= 60 ms"}


def targets_at_10k(params, data, repeats, threads):
    """Medians at T = 10,000 with 1 torch thread and with every core (then ``threads`` again).

    Fast-path results write their ``[T, K, K]`` covariances when first read; the rows
    "covariances read" add reading all of them. "diagonal R" starts from the reference
    initialization, whose R is diagonal (then ``y_tᵀ R⁻¹ y_t`` costs O(N) per step, not O(N²)).
    """
    start = reference_init()

    ops = {
        "filter": lambda: lds.kalman_filter(params, data),
        "filter, covariances read": lambda: filtered_covariances(lds.kalman_filter(params, data)),
        "filter, diagonal R": lambda: lds.kalman_filter(start, data),
        "smoother": lambda: lds.kalman_smoother(params, data),
        "smoother, covariances read": lambda: smoothed_covariances(lds.kalman_smoother(params, data)),
        "EM iteration": lambda: lds.fit_em(data, params, max_iter=1, progress=False),
    }
    times = {op: {} for op in ops}
    for n in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(n)
        for op, fn in ops.items():
            times[op][n] = median_seconds(fn, repeats)
    torch.set_num_threads(threads)
    return times


def _full_steps(online, rows):
    """Full (non-steady) steps, each from the prior after ``reset()``: the plain per-step cost."""
    for r in rows:
        online.reset()
        online.step(r)


def _fmt(seconds):
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


if __name__ == "__main__":
    main()
