"""Expectation-maximization for linear dynamical systems (Shumway & Stoffer).

The E-step (:func:`expected_statistics`) filters and smooths every trial and sums the
posterior moments the M-step needs into a :class:`SufficientStatistics`; the M-step
(:func:`m_step`) maximizes the expected complete-data log-likelihood in closed form;
:func:`fit_em` alternates them.

Deviations from Bonsai.ML.Lds.Torch, each a fix of a flaw the reference notes:

- the log-likelihood history is float64 and only holds values actually computed;
- convergence is tested *before* the M-step, on the relative change
  ``(LL_i - LL_{i-1}) / max(|LL_{i-1}|, 1) <= tol`` (with ``tol = 0``: once the likelihood
  stops increasing), so on convergence the returned parameters
  are those of the last history entry; a decrease beyond round-off (a relative drop above
  1000 eps of the dtype) raises a
  :class:`~lds.errors.LikelihoodDecreaseWarning`, stops EM and returns the best
  parameters seen (never reported as convergence);
- the offset updates use the correct sums (``sum_x_prev`` over ``x_{-1} .. x_{T-2}``,
  the C regression centered with ``sum_x``);
- Q and R are the exact maximizers given the current A, b (resp. C, d), whether or
  not those were re-estimated, and an offset that is not estimated stays fixed in the
  A and C updates;
- missing observations (NaN) are latent variables of the E-step, so EM stays exact.

Several trials share the prior: ``m0`` is the mean of the smoothed initial states and
``V0`` their covariance plus the mean smoothed initial covariance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from .containers import DatasetList
from .checkpoint import EMCheckpoints, data_fingerprint, start_fingerprint
from .errors import LikelihoodDecreaseWarning, NotPositiveDefiniteError, UnknownParameterError, ValidationError, warn
from .fast import SessionKernel, data_moments, padded_batch, split_trials
from .kalman import SessionModel, _check_method, cholesky, filter_trial, session_models, smooth_trial, symmetrize
from .observations import prepare
from .params import KalmanParams
from .results import ResultDisplay

__all__ = ["SessionStatistics", "SufficientStatistics", "EMResult", "expected_statistics", "m_step", "fit_em",
           "DEFAULT_ESTIMATE"]

_LONG_NAMES = {
    "transition_matrix": "A", "state_offset": "b", "process_noise_covariance": "Q",
    "measurement_function": "C", "observation_offset": "d", "measurement_noise_covariance": "R",
    "initial_mean": "m0", "initial_covariance": "V0",
}
ALL_PARAMETERS = ("A", "b", "C", "d", "Q", "R", "m0", "V0")
DEFAULT_ESTIMATE = frozenset({"A", "C", "Q", "R", "m0", "V0"})


@dataclass(repr=False)
class SessionStatistics(ResultDisplay):
    """Posterior sums over one session's trials and time steps (missing ``y`` imputed).

    ``sum_y = Σ E[y_t]``, ``sum_yy = Σ E[y_t y_tᵀ]``, ``sum_yx = Σ E[y_t x_tᵀ]``,
    ``sum_x = Σ E[x_t]``, ``sum_xx = Σ E[x_t x_tᵀ]`` over its ``num_steps`` time steps.
    """

    num_steps: int
    sum_y: torch.Tensor
    sum_yy: torch.Tensor
    sum_yx: torch.Tensor
    sum_x: torch.Tensor
    sum_xx: torch.Tensor


@dataclass(repr=False)
class SufficientStatistics(ResultDisplay):
    """What the M-step needs, summed over all trials and time steps ``t = 0 .. T-1``.

    Dynamics: ``sum_x = Σ E[x_t]``, ``sum_x_prev = Σ E[x_{t-1}]``,
    ``sum_xx = Σ E[x_t x_tᵀ]``, ``sum_xx_prev = Σ E[x_{t-1} x_{t-1}ᵀ]``,
    ``sum_xx_lag = Σ E[x_t x_{t-1}ᵀ]`` (``x_{-1}`` is the prior state).
    Prior: ``initial_means [num_trials, K]`` (smoothed ``x_{-1}`` of each trial) and
    ``sum_initial_covariance`` (sum of their smoothed covariances).
    Observations: one :class:`SessionStatistics` per session of the parameters.
    ``log_likelihood``: total over all trials (0-dim float64), under the parameters
    the statistics were computed with.
    """

    log_likelihood: torch.Tensor
    num_steps: int
    sum_x: torch.Tensor
    sum_x_prev: torch.Tensor
    sum_xx: torch.Tensor
    sum_xx_prev: torch.Tensor
    sum_xx_lag: torch.Tensor
    initial_means: torch.Tensor
    sum_initial_covariance: torch.Tensor
    sessions: list


@dataclass(repr=False)
class EMResult(ResultDisplay):
    """Outcome of :func:`fit_em`.

    ``log_likelihoods[i]`` (float64, CPU) is the log-likelihood under the parameters
    at the start of iteration ``i``. ``num_iterations`` counts the M-steps applied to
    the starting parameters. ``termination`` is ``"converged"``, ``"max_iter"`` or
    ``"likelihood_decreased"``.
    """

    params: KalmanParams
    log_likelihoods: torch.Tensor
    converged: bool
    num_iterations: int
    termination: str


# ---- E-step ------------------------------------------------------------------------
def expected_statistics(params: KalmanParams, data, method: str = "auto",
                        data_sums: dict | None = None) -> SufficientStatistics:
    """E-step: filter and smooth every trial and sum the posterior moments.

    ``data`` is any accepted form of ``y`` (or an already prepared
    :class:`~lds.observations.Observations`). ``method="auto"`` computes the moments
    of trials without missing data on the fast path (:mod:`lds.fast`), ``"plain"``
    filters and smooths every trial with the reference loops. ``data_sums``: a dict in
    which the fast path keeps sums of the data alone (``Σ y yᵀ``) between calls on the
    same prepared data, as :func:`fit_em` does (with the padded batches of the data).
    """
    _check_method(method)
    params, obs = prepare(params, data)
    models = session_models(params)
    K, dtype, device = params.num_states, params.dtype, params.device
    zeros = lambda *shape: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
    sessions = [SessionStatistics(0, zeros(m.C.shape[0]), zeros(m.C.shape[0], m.C.shape[0]),
                                  zeros(m.C.shape[0], K), zeros(K), zeros(K, K)) for m in models]
    totals = dict(sum_x=zeros(K), sum_x_prev=zeros(K), sum_xx=zeros(K, K), sum_xx_prev=zeros(K, K),
                  sum_xx_lag=zeros(K, K), sum_initial_covariance=zeros(K, K))
    initial_means, log_likelihood = [None] * obs.num_trials, torch.zeros((), dtype=torch.float64, device=device)
    plain = range(obs.num_trials)
    if method == "auto":
        groups, plain = split_trials(obs.trials, obs.sessions, obs.complete)
        kernels = {}
        for s, indices in groups:
            kernel = kernels[s] = kernels.get(s) or SessionKernel(models[s])
            key = (s, tuple(indices))
            if data_sums is None or key not in data_sums:
                Y, lengths = padded_batch(obs.trials, indices)
                batch = (Y, lengths, data_moments(Y))
                if data_sums is not None:
                    data_sums[key] = batch
            Y, lengths, sums = data_sums[key] if data_sums is not None else batch
            moments = kernel.moments(Y, lengths, sums)
            log_likelihood = log_likelihood + moments["log_likelihood"].sum()
            for key in totals:
                totals[key] += moments[key]
            for j, i in enumerate(indices):
                initial_means[i] = moments["initial_means"][j]
            session = sessions[s]
            session.num_steps += sum(obs.trials[i].shape[0] for i in indices)
            for key in ("sum_y", "sum_yy", "sum_yx", "sum_x", "sum_xx"):
                setattr(session, key, getattr(session, key) + moments[key])
    for i in plain:
        y, s, label = obs.trials[i], obs.sessions[i], f"trial {i}"
        smoothed = smooth_trial(models[s], filter_trial(models[s], y, label), label)
        log_likelihood = log_likelihood + smoothed.log_likelihood
        x, P = smoothed.means, smoothed.covariances
        x_prev = torch.cat([smoothed.initial_mean[None], x[:-1]])
        P_prev = torch.cat([smoothed.initial_covariance[None], P[:-1]])
        sum_xx = P.sum(0) + x.T @ x
        totals["sum_x"] += x.sum(0)
        totals["sum_x_prev"] += x_prev.sum(0)
        totals["sum_xx"] += sum_xx
        totals["sum_xx_prev"] += P_prev.sum(0) + x_prev.T @ x_prev
        totals["sum_xx_lag"] += smoothed.lag_one_covariances.sum(0) + x.T @ x_prev
        totals["sum_initial_covariance"] += smoothed.initial_covariance
        initial_means[i] = smoothed.initial_mean
        _add_observation_moments(sessions[s], models[s], y, x, P, sum_xx)
    return SufficientStatistics(log_likelihood, sum(t.shape[0] for t in obs.trials),
                                initial_means=torch.stack(initial_means), sessions=sessions, **totals)


def _add_observation_moments(stats: SessionStatistics, model: SessionModel, y, x, P, sum_xx) -> None:
    """Add one trial's ``E[y]``, ``E[y yᵀ]``, ``E[y xᵀ]`` (missing entries imputed) to ``stats``."""
    stats.num_steps += y.shape[0]
    stats.sum_x += x.sum(0)
    stats.sum_xx += sum_xx
    complete = ~torch.isnan(y).any(1)
    y_c, x_c = y[complete], x[complete]
    stats.sum_y += y_c.sum(0)
    stats.sum_yy += y_c.T @ y_c
    stats.sum_yx += y_c.T @ x_c
    for t in torch.nonzero(~complete).flatten().tolist():
        mean_y, cov_y, cov_yx = _missing_entry_moments(model, y[t], x[t], P[t])
        stats.sum_y += mean_y
        stats.sum_yy += cov_y + torch.outer(mean_y, mean_y)
        stats.sum_yx += cov_yx + torch.outer(mean_y, x[t])


def _missing_entry_moments(model: SessionModel, y, x, P):
    """Posterior mean of ``y_t`` and covariances ``Cov(y_t)``, ``Cov(y_t, x_t)`` given the data.

    Observed entries are known exactly; a missing block is ``G x_t + h + noise``
    with ``G = C_m - W C_o``, ``h = d_m + W (y_o - d_o)``, ``W = R_mo R_oo⁻¹`` and
    noise covariance ``R_mm - W R_om``.
    """
    observed = ~torch.isnan(y)
    o, m = torch.nonzero(observed).flatten(), torch.nonzero(~observed).flatten()
    C, d, R = model.C, model.d, model.R
    G, h, noise = C[m], d[m], R[m][:, m]
    if o.numel():
        factor = cholesky(R[o][:, o], "measurement_noise_covariance (observed block)")
        W = torch.cholesky_solve(R[o][:, m], factor).T
        G = G - W @ C[o]
        h = h + W @ (y[o] - d[o])
        noise = noise - W @ R[o][:, m]
    N = y.shape[0]
    mean_y = torch.where(observed, y, torch.zeros_like(y))
    mean_y[m] = G @ x + h
    cov_y = torch.zeros(N, N, dtype=y.dtype, device=y.device)
    cov_y[m[:, None], m[None, :]] = symmetrize(G @ P @ G.T + noise)
    cov_yx = torch.zeros(N, x.shape[0], dtype=y.dtype, device=y.device)
    cov_yx[m] = G @ P
    return mean_y, cov_y, cov_yx


# ---- M-step ------------------------------------------------------------------------
def _estimate_set(estimate) -> frozenset:
    """The symbols to estimate from ``None``, a name, names, or a mapping name -> bool (see :func:`fit_em`)."""
    if estimate is None:
        return DEFAULT_ESTIMATE
    if isinstance(estimate, Mapping):
        not_bool = {n: v for n, v in estimate.items() if not isinstance(v, (bool, np.bool_))}
        if not_bool:
            raise ValidationError(f"estimate as a mapping needs True or False for each parameter; got {not_bool}")
        flags = dict(zip(_symbols(list(estimate)), estimate.values()))
        return frozenset(s for s in ALL_PARAMETERS if flags.get(s, s in DEFAULT_ESTIMATE))
    return frozenset(_symbols([estimate] if isinstance(estimate, str) else list(estimate)))


def _symbols(names: list) -> list:
    """``A, b, C, ...`` for symbols or long field names; unknown names are an error."""
    symbols = [_LONG_NAMES.get(n, n) for n in names]
    unknown = [n for n, s in zip(names, symbols) if s not in ALL_PARAMETERS]
    if unknown:
        raise UnknownParameterError(
            f"estimate got unknown parameter names {unknown}; choose from {list(ALL_PARAMETERS)} "
            "or the long field names"
        )
    return symbols


def _right_solve(B, M, what):
    """``B M⁻¹`` for symmetric positive definite ``M`` (Cholesky solve)."""
    return torch.cholesky_solve(B.T, cholesky(M, what)).T


def _regression(sum_yx, sum_xx, sum_y, sum_x, n, gain, offset, fit_gain, fit_offset, what):
    """Maximize over ``y ≈ gain·x + offset`` from second moments; unfitted parts stay fixed."""
    if fit_gain and fit_offset:
        gain = _right_solve(sum_yx - torch.outer(sum_y, sum_x) / n, sum_xx - torch.outer(sum_x, sum_x) / n, what)
    elif fit_gain:
        gain = _right_solve(sum_yx - torch.outer(offset, sum_x), sum_xx, what)
    if fit_offset:
        offset = (sum_y - gain @ sum_x) / n
    return gain, offset


def _residual_covariance(sum_yy, sum_yx, sum_xx, sum_y, sum_x, n, gain, offset):
    """``Σ E[(y - gain x - offset)(…)ᵀ] / n``, symmetrized."""
    cross = gain @ sum_yx.T + torch.outer(offset, sum_y) - gain @ torch.outer(sum_x, offset)
    return symmetrize(sum_yy - cross - cross.T + gain @ sum_xx @ gain.T + n * torch.outer(offset, offset)) / n


def m_step(params: KalmanParams, stats: SufficientStatistics, estimate=None) -> KalmanParams:
    """M-step: new parameters maximizing the expected complete-data log-likelihood.

    ``estimate`` selects among ``A, b, C, d, Q, R, m0, V0`` as in :func:`fit_em`; the
    other parameters are kept. Default: all but the offsets ``b`` and ``d``.
    """
    est = _estimate_set(estimate)
    models = session_models(params)
    model = models[0]
    n = stats.num_steps
    A, b = _regression(stats.sum_xx_lag, stats.sum_xx_prev, stats.sum_x, stats.sum_x_prev, n, model.A, model.b,
                       "A" in est, "b" in est, "the expected second moment of the previous states")
    Q = model.Q
    if "Q" in est:
        Q = _residual_covariance(stats.sum_xx, stats.sum_xx_lag, stats.sum_xx_prev, stats.sum_x, stats.sum_x_prev,
                                 n, A, b)
    m0, V0 = model.m0, model.V0
    if "m0" in est:
        m0 = stats.initial_means.mean(0)
    if "V0" in est:
        spread = stats.initial_means - m0
        V0 = symmetrize(stats.sum_initial_covariance + spread.T @ spread) / stats.initial_means.shape[0]
    Cs, ds, Rs = [], [], []
    for name, s, m in zip(params.dataset_names or [None], stats.sessions, models):
        C, d, R = m.C, m.d, m.R
        if s.num_steps:
            C, d = _regression(s.sum_yx, s.sum_xx, s.sum_y, s.sum_x, s.num_steps, C, d, "C" in est, "d" in est,
                               "the expected second moment of the states" + (f" of session {name!r}" if name else ""))
            if "R" in est:
                R = _residual_covariance(s.sum_yy, s.sum_yx, s.sum_xx, s.sum_y, s.sum_x, s.num_steps, C, d)
                _check_estimated_noise(R, s.num_steps, name)
        Cs.append(C)
        ds.append(d)
        Rs.append(R)
    keep_b = params.b is not None or "b" in est
    keep_d = _has_observation_offset(params) or "d" in est
    single = not params.is_multi_session
    return KalmanParams(
        transition_matrix=A, state_offset=b if keep_b else None, process_noise_covariance=Q,
        measurement_function=Cs[0] if single else Cs, measurement_noise_covariance=Rs[0] if single else Rs,
        observation_offset=(ds[0] if single else ds) if keep_d else None,
        initial_mean=m0, initial_covariance=V0, dataset_names=params.dataset_names,
        dtype=params.dtype, device=params.device,
    )


def _check_estimated_noise(R: torch.Tensor, num_steps: int, name) -> None:
    """A clear error when the M-step's R is singular to working precision (too little data for a
    full R): its Cholesky factorization fails, or a pivot is below ``N eps`` of R's largest variance."""
    factor, info = torch.linalg.cholesky_ex(R)
    N = R.shape[0]
    floor = N * torch.finfo(R.dtype).eps * float(torch.diagonal(R).max())
    if int(info) != 0 or float(torch.diagonal(factor).square().min()) <= floor:
        where = f" of session {name!r}" if name else ""
        raise NotPositiveDefiniteError(
            f"the estimated measurement_noise_covariance{where} ({N} x {N}, from {num_steps} time steps) is not "
            f"positive definite: too few (non-missing) time steps, or observations that do not span all {N} "
            "dimensions, to estimate a full R; give more data or keep R fixed (leave 'R' out of estimate)"
        )


def _check_enough_steps(params: KalmanParams, data, est) -> None:
    """Refuse complete data too short for the estimated R: with C estimated, R's rank is at most the data's."""
    if not {"C", "R"} <= est:
        return
    Ns = params.num_observations if params.is_multi_session else [params.num_observations]
    for s, N in enumerate(Ns):
        trials = [(y, ok) for y, i, ok in zip(data.trials, data.sessions, data.complete) if i == s]
        if not trials or not all(ok for _, ok in trials):
            continue  # no data for this session, or imputed entries that may fill the rank
        steps, need = sum(y.shape[0] for y, _ in trials), N + ("d" in est)
        if steps < need:
            where = "y" if not params.is_multi_session else f"session {params.dataset_names[s]!r}"
            raise ValidationError(
                f"{where} has {steps} time steps, too few to estimate its {N} x {N} measurement_noise_covariance "
                f"with the measurement_function{' and observation_offset' if 'd' in est else ''}: that needs at "
                f"least {need}; give more data or keep R fixed (leave 'R' out of estimate)"
            )


def _has_observation_offset(params: KalmanParams) -> bool:
    d = params.observation_offset
    return d is not None and not (isinstance(d, DatasetList) and len(d) == 0)


# ---- EM loop -----------------------------------------------------------------------
def _likelihood_change(previous: float, current: float, dtype: torch.dtype) -> tuple[float, float]:
    """Relative change of the log-likelihood and the round-off level it is judged against."""
    scale = max(abs(previous), 1.0)
    return (current - previous) / scale, 1000.0 * torch.finfo(dtype).eps


def fit_em(y, params: KalmanParams | None = None, num_states: int | None = None, max_iter: int = 100,
           tol: float = 1e-4, estimate=None, progress: bool = True, checkpoint_dir=None,
           checkpoint_every: int = 1, keep_last: int = 3, keep_best: bool = True, resume: bool = True,
           method: str = "auto") -> EMResult:
    """Fit an LDS to ``y`` by EM; returns an :class:`EMResult`.

    ``y``: one sequence ``[T, N]``, a batch ``[B, T, N]``, a list of trials, or (several
    sessions) a dict of those. ``params``: the starting point (not modified); when
    None, a stochastic subspace identification with ``num_states`` states
    (:func:`lds.subspace_identification`) starts EM. ``estimate``: the parameters to
    update, as names (symbols ``A, b, C, d, Q, R, m0, V0`` or long field names), or as a
    mapping name -> bool that switches parameters on or off relative to the default,
    like the reference's ``ParametersToEstimate`` (``{"b": True, "R": False}``: all but
    ``d`` and ``R``); default all but the offsets. EM stops when the relative change of the
    log-likelihood, ``(LL_i - LL_{i-1}) / max(|LL_{i-1}|, 1)``, is at most ``tol`` (so
    ``tol=0`` runs until the likelihood stops increasing: an unchanged value, or a drop
    within round-off, is convergence), or after ``max_iter`` iterations (``max_iter=1``
    gives one history entry and the once-updated parameters). Complete data with fewer
    time steps than a session's N (N + 1 with ``d``) cannot give a positive definite R
    when C and R are estimated, and is refused.

    ``checkpoint_dir``: save the parameters at the start of every ``checkpoint_every``-th
    iteration there (atomic native files with the log-likelihood history and options,
    see :mod:`lds.checkpoint`), keeping the ``keep_last`` newest and (``keep_best``) the
    one of highest log-likelihood. With ``resume=True`` a fit continues from the latest
    valid checkpoint and ends with exactly the parameters of an uninterrupted run; a folder
    made with other data, starting parameters, ``estimate``, ``tol`` or ``method``, or
    holding checkpoints at or past ``max_iter``, is refused.

    ``method``: the E-step's path, ``"auto"`` (fast where exact, see :mod:`lds.fast`) or
    ``"plain"`` (the reference loops), as in :func:`expected_statistics`.
    """
    _check_method(method)
    if int(max_iter) < 1:
        raise ValidationError(f"max_iter must be a positive integer, got {max_iter}")
    if not (tol >= 0 and math.isfinite(tol)):
        raise ValidationError(f"tol must be a finite number >= 0, got {tol}")
    if params is not None and not isinstance(params, KalmanParams):
        raise ValidationError(f"params must be lds.KalmanParams (or None), got {type(params).__name__}")
    est = _estimate_set(estimate)
    checkpoints, restored = None, None
    if checkpoint_dir is not None:
        checkpoints = EMCheckpoints(checkpoint_dir, checkpoint_every, keep_last, keep_best,
                                    options={"data_sha256": data_fingerprint(y), "estimate": sorted(est),
                                             "tol": tol, "max_iter": int(max_iter), "method": method,
                                             "start": start_fingerprint(params, num_states)})
        restored = checkpoints.begin(resume, int(max_iter), device=None if params is None else params.device)
        if restored is not None:
            params = restored.params
    if params is None:
        params = _initial_params(y, num_states)
    elif num_states is not None and int(num_states) != params.num_states:
        raise ValidationError(f"num_states={num_states} disagrees with params.num_states={params.num_states}")
    params.validate()
    params, data = prepare(params.clone(), y)  # the caller's object is neither changed nor returned
    _check_enough_steps(params, data, est)
    log_likelihoods: list[float] = [] if restored is None else restored.log_likelihoods
    start = 0 if restored is None else restored.iteration
    termination, previous, num_updates, data_sums = "max_iter", None, start, {}
    # No tqdm object at all without a bar: tqdm takes a process-shared lock even when disabled,
    # and a forked or killed worker that holds it would hang its parent.
    bar = tqdm(total=int(max_iter), initial=start, desc="EM", unit="it", leave=False) if progress else None
    for iteration in range(start, int(max_iter)):
        stats = expected_statistics(params, data, method, data_sums)
        if len(log_likelihoods) == iteration:  # a resumed iteration has its entry already
            log_likelihoods.append(float(stats.log_likelihood))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(log_likelihood=f"{log_likelihoods[-1]:.6g}")
        if iteration > 0:
            change, roundoff = _likelihood_change(log_likelihoods[-2], log_likelihoods[-1], params.dtype)
            if change < -roundoff:
                warn(
                    f"EM lowered the log-likelihood at iteration {iteration}, from {log_likelihoods[-2]:.10g} "
                    f"to {log_likelihoods[-1]:.10g}; stopping and returning the previous parameters",
                    LikelihoodDecreaseWarning,
                )
                termination, params, num_updates = "likelihood_decreased", previous, num_updates - 1
                break
            if change <= tol:
                termination = "converged"
                break
        if checkpoints is not None:
            checkpoints.step(iteration, params, log_likelihoods)
        previous = params
        try:
            params = m_step(params, stats, est)
        except NotPositiveDefiniteError as exc:
            raise NotPositiveDefiniteError(f"EM iteration {iteration}, M-step: {exc}") from exc
        num_updates += 1
    if bar is not None:
        bar.close()
    history = torch.tensor(log_likelihoods, dtype=torch.float64)
    return EMResult(params, history, termination == "converged", num_updates, termination)


def _initial_params(y, num_states) -> KalmanParams:
    from .subspace import subspace_identification

    if num_states is None:
        raise ValidationError("fit_em needs params (a starting point) or num_states (to initialize by subspace "
                              "identification)")
    return subspace_identification(y, num_states)
