"""Kalman filter, RTS smoother and log-likelihood: the plain, exact reference path.

Conventions (as Bonsai.ML.Lds.Torch and lds_python): the prior ``N(m0, V0)`` is the
state one step *before* the first observation, so the filter predicts first. The code
loops over time in plain torch with Cholesky solves and symmetrized covariances; it is
the in-library oracle (``method="plain"``). The default ``method="auto"`` sends trials
without missing data through the fast exact path of :mod:`lds.fast`.

Missing data: NaN entries (or whole NaN rows) of ``y`` are left out of the update of
that time step, and the log-likelihood counts only the observed entries (an all-NaN
row contributes nothing and the filter only predicts).

Results follow the form of ``y`` (see :mod:`lds.observations`): one sequence gives one
result with ``means [T, K]``; a batch ``[B, T, N]`` gives one result whose tensors have
a leading ``B`` axis (``log_likelihood`` then has shape ``[B]``); a list of trials gives
a list of results; a dict of sessions gives a dict of those. :func:`log_likelihood`
always returns the total over all trials and sessions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .errors import NotPositiveDefiniteError, ValidationError
from .fast import NonFiniteTrials, SessionKernel, lag_one_covariances, padded_batch, smoothed_covariances, split_trials
from .observations import prepare
from .params import KalmanParams
from .results import Deferred, DeferredFields, ResultDisplay, stack_results

__all__ = [
    "FilterResult",
    "SmootherResult",
    "SessionModel",
    "kalman_filter",
    "kalman_smoother",
    "log_likelihood",
    "session_models",
    "predict",
    "update",
    "filter_trial",
    "smooth_trial",
]

_LOG_2PI = math.log(2.0 * math.pi)
METHODS = ("auto", "plain")


@dataclass(repr=False)
class FilterResult(DeferredFields, ResultDisplay):
    """Kalman filter output for one trial (``t = 0 .. T-1``).

    ``means``/``covariances`` are the filtered ``x_{t|t}``, ``P_{t|t}``;
    ``predicted_means``/``predicted_covariances`` the one-step predictions
    ``x_{t|t-1}``, ``P_{t|t-1}``; ``log_likelihood`` is ``log p(y_0..y_{T-1})``
    (a 0-dim float64 tensor). The fast path writes the ``[T, K, K]`` covariances when they
    are first read (:class:`lds.results.DeferredFields`): they do not depend on the data.
    """

    means: torch.Tensor
    covariances: torch.Tensor
    predicted_means: torch.Tensor
    predicted_covariances: torch.Tensor
    log_likelihood: torch.Tensor


@dataclass(repr=False)
class SmootherResult(DeferredFields, ResultDisplay):
    """RTS smoother output for one trial.

    ``means``/``covariances``: ``x_{t|T}``, ``P_{t|T}``. ``lag_one_covariances[t]`` is
    ``Cov(x_t, x_{t-1} | y)``; entry 0 pairs ``x_0`` with the prior state ``x_{-1}``.
    ``initial_mean``/``initial_covariance``: the smoothed prior state ``x_{-1}``.
    ``filtered`` is the :class:`FilterResult` the smoother started from. The fast path's
    ``[T, K, K]`` covariances are written when first read, as in :class:`FilterResult`.
    """

    means: torch.Tensor
    covariances: torch.Tensor
    lag_one_covariances: torch.Tensor
    initial_mean: torch.Tensor
    initial_covariance: torch.Tensor
    log_likelihood: torch.Tensor
    filtered: FilterResult


class SessionModel(NamedTuple):
    """The tensors of one session's model, with absent offsets as zero vectors."""

    A: torch.Tensor
    b: torch.Tensor
    Q: torch.Tensor
    C: torch.Tensor
    d: torch.Tensor
    R: torch.Tensor
    m0: torch.Tensor
    V0: torch.Tensor


def session_models(params: KalmanParams) -> list[SessionModel]:
    """One :class:`SessionModel` per session of ``params``."""
    zeros = lambda n: torch.zeros(n, dtype=params.dtype, device=params.device)  # noqa: E731
    b = zeros(params.num_states) if params.b is None else params.b
    return [
        SessionModel(params.A, b, params.Q, C, zeros(C.shape[0]) if d is None else d, R, params.m0, params.V0)
        for _, C, d, R in params.observation_models()
    ]


def symmetrize(matrix: torch.Tensor) -> torch.Tensor:
    return 0.5 * (matrix + matrix.transpose(-1, -2))


def cholesky(matrix: torch.Tensor, what: str) -> torch.Tensor:
    """Lower Cholesky factor, or :class:`NotPositiveDefiniteError` naming ``what``."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    if int(info) != 0:
        raise NotPositiveDefiniteError(f"{what} is not positive definite")
    return factor


def predict(model: SessionModel, mean: torch.Tensor, cov: torch.Tensor):
    """One prediction step: ``A m + b``, ``A P Aᵀ + Q``."""
    return model.A @ mean + model.b, symmetrize(model.A @ cov @ model.A.T + model.Q)


def update(model: SessionModel, mean: torch.Tensor, cov: torch.Tensor, y: torch.Tensor, where: str = "y"):
    """One measurement update with the non-NaN entries of ``y`` ``[N]``.

    Returns the updated mean and covariance and this step's log-likelihood term
    (None when nothing was observed: the prediction is returned unchanged).
    """
    observed = ~torch.isnan(y)
    if bool(observed.all()):
        C, d, R, y_obs = model.C, model.d, model.R, y
    else:
        idx = torch.nonzero(observed).flatten()
        if idx.numel() == 0:
            return mean, cov, None
        C, d, R, y_obs = model.C[idx], model.d[idx], model.R[idx][:, idx], y[idx]
    PCt = cov @ C.T
    factor = cholesky(
        symmetrize(C @ PCt + R),
        f"the innovation covariance C P Cᵀ + R at {where} (check measurement_noise_covariance)",
    )
    innovation = y_obs - C @ mean - d
    gain = torch.cholesky_solve(PCt.T, factor).T  # P Cᵀ S⁻¹
    new_mean = mean + gain @ innovation
    new_cov = symmetrize(cov - gain @ PCt.T)
    whitened = torch.linalg.solve_triangular(factor, innovation[:, None], upper=False)
    log_det = 2.0 * torch.log(torch.diagonal(factor)).sum()
    term = -0.5 * (y_obs.numel() * _LOG_2PI + log_det + (whitened**2).sum())
    return new_mean, new_cov, term


def filter_trial(model: SessionModel, y: torch.Tensor, where: str = "y") -> FilterResult:
    """Kalman filter over one trial ``y [T, N]`` (prior one step before ``y[0]``)."""
    mean, cov = model.m0, model.V0
    predicted_means, predicted_covs, means, covs, terms = [], [], [], [], []
    for t in range(y.shape[0]):
        mean, cov = predict(model, mean, cov)
        predicted_means.append(mean)
        predicted_covs.append(cov)
        mean, cov, term = update(model, mean, cov, y[t], f"{where}, time {t}")
        means.append(mean)
        covs.append(cov)
        if term is not None:
            terms.append(term.to(torch.float64))
    total = torch.stack(terms).sum() if terms else torch.zeros((), dtype=torch.float64, device=y.device)
    return FilterResult(torch.stack(means), torch.stack(covs), torch.stack(predicted_means),
                        torch.stack(predicted_covs), total)


def _smoother_gain(cov: torch.Tensor, A: torch.Tensor, predicted_cov: torch.Tensor, what: str) -> torch.Tensor:
    """``J = P Aᵀ P_pred⁻¹`` by a Cholesky solve."""
    return torch.cholesky_solve(A @ cov, cholesky(predicted_cov, what)).T


def smooth_trial(model: SessionModel, filtered: FilterResult, where: str = "y") -> SmootherResult:
    """Rauch-Tung-Striebel smoother over one filtered trial, with lag-one covariances.

    ``Cov(x_{t+1}, x_t | y) = P_{t+1|T} J_tᵀ`` and the smoothed prior state
    ``x_{-1}`` uses ``J_{-1} = V0 Aᵀ P_{0|-1}⁻¹``.
    """
    T = filtered.means.shape[0]
    means, covs, lag_one = [None] * T, [None] * T, [None] * T
    means[-1], covs[-1] = filtered.means[-1], filtered.covariances[-1]
    for t in range(T - 2, -1, -1):
        J = _smoother_gain(filtered.covariances[t], model.A, filtered.predicted_covariances[t + 1],
                           f"the predicted covariance at {where}, time {t + 1}")
        means[t] = filtered.means[t] + J @ (means[t + 1] - filtered.predicted_means[t + 1])
        covs[t] = symmetrize(filtered.covariances[t] + J @ (covs[t + 1] - filtered.predicted_covariances[t + 1]) @ J.T)
        lag_one[t + 1] = covs[t + 1] @ J.T
    J = _smoother_gain(model.V0, model.A, filtered.predicted_covariances[0],
                       f"the predicted covariance at {where}, time 0")
    initial_mean = model.m0 + J @ (means[0] - filtered.predicted_means[0])
    initial_cov = symmetrize(model.V0 + J @ (covs[0] - filtered.predicted_covariances[0]) @ J.T)
    lag_one[0] = covs[0] @ J.T
    return SmootherResult(torch.stack(means), torch.stack(covs), torch.stack(lag_one), initial_mean, initial_cov,
                          filtered.log_likelihood, filtered)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValidationError(f"method must be one of {METHODS}, got {method!r}")


def _trial_label(obs, i: int) -> str:
    return "y" if obs.num_trials == 1 and obs.names is None else f"trial {i}"


def _run(params: KalmanParams, y, method: str, smooth: bool):
    """Filter (and smooth) every trial; the observations and the flat per-trial results."""
    _check_method(method)
    params.validate()
    params, obs = prepare(params, y, check_values=method == "plain")  # the fast path checks its trials itself
    models = session_models(params)
    results = [None] * obs.num_trials
    plain = range(obs.num_trials)
    if method == "auto":
        groups, plain = split_trials(obs.trials, obs.sessions, obs.complete)
        kernels = {}
        for s, indices in groups:
            kernel = kernels[s] = kernels.get(s) or SessionKernel(models[s])
            out, indices, flagged = _fast_batch(kernel, obs, indices, smooth)
            plain += flagged
            for j, i in enumerate(indices):
                results[i] = _fast_result(out, j, obs.trials[i].shape[0], smooth)
    for i in plain:
        label = _trial_label(obs, i)
        s = obs.sessions[i]
        result = filter_trial(models[s], obs.trials[i], label)
        results[i] = smooth_trial(models[s], result, label) if smooth else result
    return obs, results


def _fast_batch(kernel: SessionKernel, obs, indices: list, smooth: bool):
    """The fast path's output for the trials ``indices``, the indices it covers and those flagged
    for the plain path. The kernel flags trials whose data sums are not finite; their values
    are then looked at (infinite values are an error), and the batch runs again without them."""
    flagged = []
    while indices:
        Y, lengths = padded_batch(obs.trials, indices)
        try:
            return (kernel.smooth(Y, lengths) if smooth else kernel.filter(Y, lengths)), indices, flagged
        except NonFiniteTrials as found:
            bad = {indices[j] for j in found.trials}
            for i in sorted(bad):
                obs.check_trial(i)  # NaN: missing data; finite values too large to square go plain too
            flagged += sorted(bad)
            indices = [i for i in indices if i not in bad]
    return None, [], flagged


def _fast_result(out: dict, j: int, T: int, smooth: bool):
    """Trial ``j`` (of length ``T``) of a fast-path batch as a plain result; its ``[T, K, K]``
    covariances are made from the compact ones when first read (each result its own)."""
    f = out["filtered"] if smooth else out
    ric, K, dtype = f["riccati"], f["means"].shape[-1], f["means"].dtype

    def deferred(make):
        return Deferred(make, (T, K, K), dtype)

    filtered = FilterResult(f["means"][j, :T], deferred(lambda: ric.expanded(ric.filtered, T)),
                            f["predicted_means"][j, :T], deferred(lambda: ric.expanded(ric.predicted, T)),
                            f["log_likelihood"][j])
    if not smooth:
        return filtered
    return SmootherResult(out["means"][j, :T], deferred(lambda: smoothed_covariances(out, T)),
                          deferred(lambda: lag_one_covariances(out, T)), out["initial_means"][j],
                          out["covariances"][T].initial_covariance.clone(), filtered.log_likelihood, filtered)


def kalman_filter(params: KalmanParams, y, *, method: str = "auto"):
    """Kalman filter of ``y`` under ``params``; a :class:`FilterResult` shaped like ``y``.

    ``method="auto"`` uses the fast exact path of :mod:`lds.fast` for trials without
    missing data (the plain per-step loop for the others); ``"plain"`` forces this
    reference implementation for all trials.
    """
    obs, results = _run(params, y, method, smooth=False)
    return obs.regroup(results, stack_results)


def kalman_smoother(params: KalmanParams, y, *, method: str = "auto"):
    """RTS smoother of ``y`` under ``params``; a :class:`SmootherResult` shaped like ``y``."""
    obs, results = _run(params, y, method, smooth=True)
    return obs.regroup(results, stack_results)


def log_likelihood(params: KalmanParams, y, *, method: str = "auto") -> torch.Tensor:
    """Total log-likelihood ``log p(y)`` over all trials and sessions (0-dim float64)."""
    _, results = _run(params, y, method, smooth=False)
    return torch.stack([r.log_likelihood for r in results]).sum()
