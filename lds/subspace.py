"""Stochastic subspace identification (SSI): a closed-form LDS estimate, EM's default start.

Method (as Bonsai.ML.Lds.Torch intends it, with its bug fixed): center the data;
stack ``max_lag`` consecutive observations into past and future Hankel columns
(future block row ``i`` is ``y[max_lag + i + col]``; the C# original used the past block
twice); project the future onto the row space of the past, ``O = F Pᵀ (P Pᵀ)⁺ P``;
take its SVD ``O = U S Vᵀ``; the observability matrix is ``U_n S_n^½`` (its first
block row is ``C``) and the states are ``X = S_n^½ V_nᵀ``; ``A`` is the least-squares
map between consecutive states.

Differences from the original, on purpose:

- the noise covariances come from covariance matching rather than from the residuals
  of the projected states (which mix the state-estimation error into ``R``): the lag-1
  data covariance ``Cov(y_{t+1}, y_t) = C A Σ Cᵀ`` holds no measurement noise and
  gives the state covariance ``Σ``; then ``Q = Σ - A Σ Aᵀ``, ``R = Cov(y_t) - C Σ Cᵀ``,
  and the prior is the stationary one, ``m0 = 0``, ``V0 = Σ``;
- the data mean is kept as the ``observation_offset`` (so the model describes the
  data, not the centered data);
- ``num_states``, when given, is used exactly (the singular-value ``threshold`` only
  chooses the order when it is None);
- covariances are floored (eigenvalues at least 1e-3 times their mean) to stay
  positive definite; Hankel windows never straddle two trials or a missing value.
"""

from __future__ import annotations

import math

import torch

from .errors import ValidationError
from .kalman import symmetrize
from .observations import trials_by_session
from .params import KalmanParams

__all__ = ["subspace_identification"]


def subspace_identification(y, num_states: int | None = None, max_lag: int | None = None,
                            threshold: float = 0.01) -> KalmanParams:
    """Estimate an LDS from ``y`` by stochastic subspace identification.

    ``y``: one sequence ``[T, N]``, a batch, a list of trials, or a dict of sessions.
    ``num_states``: the state dimension; None picks the number of singular values
    above ``threshold`` times the largest. ``max_lag``: Hankel block size (default the
    smallest lag ``>= 2`` with ``max_lag * N >= 2 * num_states``, or 20 when
    ``num_states`` is None). Several sessions are identified separately: the shared
    dynamics come from the first session, each session keeps its own ``C``, ``d``,
    ``R`` (EM then aligns them). Returns :class:`~lds.KalmanParams` on the data's
    device and dtype (float64 for NumPy input).
    """
    names, sessions = trials_by_session(y)
    if num_states is not None and int(num_states) < 1:
        raise ValidationError(f"num_states must be a positive integer, got {num_states}")
    if not 0 <= threshold < 1:
        raise ValidationError(f"threshold must be in [0, 1), got {threshold}")
    fits = [_identify(trials, num_states, max_lag, threshold, "y" if names is None else f"y[{name!r}]")
            for name, trials in zip(names or [None], sessions)]
    if names is not None and len({f["A"].shape[0] for f in fits}) > 1:
        fits = [_identify(trials, fits[0]["A"].shape[0], max_lag, threshold, f"y[{name!r}]")
                for name, trials in zip(names, sessions)]
    first = fits[0]
    dtype, device = first["A"].dtype, first["A"].device
    dynamics = dict(transition_matrix=first["A"], process_noise_covariance=first["Q"], initial_mean=first["m0"],
                    initial_covariance=first["V0"], dtype=dtype, device=device)
    if names is None:
        return KalmanParams(**dynamics, measurement_function=first["C"], observation_offset=first["d"],
                            measurement_noise_covariance=first["R"])
    return KalmanParams(**dynamics, dataset_names=names, measurement_function=[f["C"] for f in fits],
                        observation_offset=[f["d"] for f in fits],
                        measurement_noise_covariance=[f["R"] for f in fits])


def _identify(trials, num_states, max_lag, threshold, where) -> dict:
    """SSI of one session's trials: a dict of A, Q, C, d, R, m0, V0."""
    try:
        return _identify_session(trials, num_states, max_lag, threshold, where)
    except torch.linalg.LinAlgError as exc:
        raise ValidationError(f"subspace identification of {where} failed numerically ({exc}); check the data for "
                              "channels that never change, copies of one channel, or values of extreme scale") from exc


def _identify_session(trials, num_states, max_lag, threshold, where) -> dict:
    N = trials[0].shape[1]
    K = None if num_states is None else int(num_states)
    lag = int(max_lag) if max_lag is not None else (20 if K is None else max(2, math.ceil(2 * K / N)))
    if lag < 1:
        raise ValidationError(f"max_lag must be a positive integer, got {max_lag}")
    if K is not None and K > lag * N:
        raise ValidationError(
            f"subspace identification of {where} cannot find {K} states from {N} observations with "
            f"max_lag={lag}: it needs num_states <= max_lag * N = {lag * N}; increase max_lag"
        )
    mean = torch.nanmean(torch.cat(trials), dim=0)
    if bool(torch.isnan(mean).any()):
        raise ValidationError(f"{where} has observations that are missing (NaN) at every time step")
    pasts, futures, starts = [], [], []
    for trial in trials:
        if trial.shape[0] < 2 * lag:
            continue
        windows = (trial - mean).unfold(0, 2 * lag, 1).permute(0, 2, 1).reshape(-1, 2 * lag * N)
        complete = ~torch.isnan(windows).any(1)
        pasts.append(windows[complete, : lag * N].T)
        futures.append(windows[complete, lag * N:].T)
        starts.append(torch.nonzero(complete).flatten())
    count = sum(p.shape[1] for p in pasts)
    if count < (K or 1) + 2:
        raise ValidationError(
            f"{where} is too short for subspace identification with max_lag={lag}: it gives {count} complete "
            f"windows of {2 * lag} time steps; give more data or a smaller max_lag"
        )
    past_gram = sum(p @ p.T for p in pasts)
    cross_gram = sum(f @ p.T for f, p in zip(futures, pasts))
    if not bool(torch.isfinite(past_gram).all() and torch.isfinite(cross_gram).all()):
        peak = max(float(t.abs().nan_to_num(0).max()) for t in trials)
        raise ValidationError(f"{where} has values up to {peak:.3g}: their sums of squares overflow "
                              f"{str(past_gram.dtype).replace('torch.', '')}; rescale the data")
    projector = cross_gram @ torch.linalg.pinv(past_gram, hermitian=True)  # O = projector @ P
    eigvals, eigvecs = torch.linalg.eigh(symmetrize(projector @ cross_gram.T))  # O Oᵀ
    singular = eigvals.flip(0).clamp(min=0).sqrt()
    U = eigvecs.flip(1)
    if K is None:
        K = max(int((singular > threshold * singular[0]).sum()), 1)
    if float(singular[K - 1]) <= float(singular[0]) * torch.finfo(singular.dtype).eps * 10:
        raise ValidationError(f"{where} supports fewer than {K} states (the projection has rank < {K})")
    root = singular[:K].sqrt()
    C = U[:N, :K] * root
    states = [(U[:, :K].T @ projector @ p) / root[:, None] for p in pasts]  # S^-½ Uᵀ O
    consecutive = [(start[1:] - start[:-1]) == 1 for start in starts]
    X_prev = torch.cat([x[:, :-1][:, c] for x, c in zip(states, consecutive)], dim=1)
    X_next = torch.cat([x[:, 1:][:, c] for x, c in zip(states, consecutive)], dim=1)
    # SVD-based least squares on the CPU: the default QR-with-pivoting driver gives results that
    # differ in the last bits from call to call (so fits from the same data would too)
    driver = "gelsd" if X_prev.device.type == "cpu" else None
    A = torch.linalg.lstsq(X_prev.T, X_next.T, driver=driver).solution.T
    # Noise covariances by covariance matching: the lag-1 covariance of the data,
    # Cov(y_{t+1}, y_t) = C A Σ Cᵀ, holds no measurement noise and fixes the state
    # covariance Σ; then Q = Σ - A Σ Aᵀ and R = Cov(y_t) - C Σ Cᵀ.
    now = torch.cat([f[:N] for f in futures], dim=1)
    before = torch.cat([p[-N:] for p in pasts], dim=1)
    lag0, lag1 = now @ now.T / count, now @ before.T / count
    state_cov = _floor_spd(torch.linalg.pinv(C @ A) @ lag1 @ torch.linalg.pinv(C).T)
    return dict(
        A=A, C=C, d=mean,
        Q=_floor_spd(state_cov - A @ state_cov @ A.T),
        R=_floor_spd(lag0 - C @ state_cov @ C.T),
        m0=torch.zeros(K, dtype=A.dtype, device=A.device),
        V0=state_cov,
    )


def _floor_spd(matrix: torch.Tensor, relative: float = 1e-3) -> torch.Tensor:
    """The symmetric matrix with its eigenvalues raised to at least ``relative`` times their mean."""
    eigvals, eigvecs = torch.linalg.eigh(symmetrize(matrix))
    floor = max(float(eigvals.clamp(min=0).mean()), 1e-12) * relative
    return symmetrize((eigvecs * eigvals.clamp(min=floor)) @ eigvecs.T)
