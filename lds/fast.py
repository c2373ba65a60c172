"""Fast exact Kalman filter, RTS smoother and EM moments for trials without missing data.

Same model and conventions as :mod:`lds.kalman` (prior one step before the first
observation); same results up to round-off. What makes it fast, all of it exact:

- the observation model is used in information form, ``J = Cᵀ R⁻¹ C`` and
  ``h_t = Cᵀ R⁻¹ (y_t - d)``, so no N×N matrix is factorized per step (the K×K update
  is ``P = L (I + Lᵀ J L)⁻¹ Lᵀ`` with ``P_pred = L Lᵀ``) and all ``h_t`` of all trials
  come from one matrix product;
- the covariance (Riccati) recursion does not depend on the data: it runs once per
  session, shared by every trial, and stops when it has reached its steady state
  (estimated distance to the fixed point below 2e-12 relative, or round-off); from then on
  the covariances and gains are constant;
- with a constant gain the mean recursions are linear recurrences
  ``x_t = F x_{t-1} + u_t``, evaluated for all steps and trials at once by a
  log-depth scan (:func:`linear_scan`); only the transient before the steady state
  is a time loop (over all trials together);
- the EM moments are sums over time written as matrix products; nothing of size
  T×N×N or T×K×K×K is allocated (T×K×K is).

Missing data (NaN) makes the covariances data-dependent: such trials go through the
plain path (:mod:`lds.kalman`), which :func:`split_trials` arranges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import NotPositiveDefiniteError

__all__ = ["SessionKernel", "Convergence", "split_trials", "linear_scan", "covariances", "smoothed_covariances",
           "data_moments"]

_LOG_2PI = math.log(2.0 * math.pi)


def _sym(matrix: torch.Tensor) -> torch.Tensor:
    return 0.5 * (matrix + matrix.transpose(-1, -2))


def linear_scan(F: torch.Tensor, u: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """All ``x_k = x_{k-1} Fᵀ + u_k`` (``x_{-1} = 0``) for ``u [..., L, K]`` in log2(L) matrix products.

    ``reverse=True`` runs backwards: ``x_k = x_{k+1} Fᵀ + u_k`` with ``x_L = 0``.
    Pass ``k`` adds the terms of ``F^(2^k)``; it stops once that power is below
    ``eps²`` (for a stable F the remaining terms are below round-off, and it avoids
    slow subnormal arithmetic).
    """
    x = u.flip(-2) if reverse else u.clone()
    power, shift, length = F, 1, x.shape[-2]
    negligible = torch.finfo(F.dtype).eps ** 2
    while shift < length and float(power.abs().max()) > negligible:
        x[..., shift:, :] += x[..., :-shift, :] @ power.T  # right side is evaluated before the add
        power, shift = power @ power, 2 * shift
    return x.flip(-2) if reverse else x


class Convergence:
    """Detects that a contracting matrix sequence has reached its fixed point.

    The distance left is estimated from successive changes ``δ`` and their ratio
    ``r`` as ``δ r / (1 - r)``; the sequence counts as converged when that is below
    ``1e4`` float64 eps (2e-12) of its size, or when the change itself is at the
    round-off level of ``dtype``.
    """

    def __init__(self, dtype: torch.dtype):
        self.tol, self.floor = 1e4 * torch.finfo(torch.float64).eps, 8 * torch.finfo(dtype).eps
        self.previous = None

    def update(self, new: torch.Tensor, old: torch.Tensor) -> bool:
        scale = float(new.abs().max())
        delta = float((new - old).abs().max())
        done = delta <= self.floor * scale
        if not done and self.previous:
            ratio = delta / self.previous
            done = ratio < 1 and delta * ratio / (1 - ratio) <= self.tol * scale
        self.previous = delta
        return done


def _check_factor(info: torch.Tensor, what: str) -> None:
    if bool((info != 0).any()):
        raise NotPositiveDefiniteError(f"{what} is not positive definite")


@dataclass
class _Riccati:
    """Filter covariances for steps ``0 .. n-1``; when ``steady`` they stay at entry ``n-1`` afterwards."""

    predicted: torch.Tensor  # [n, K, K]
    filtered: torch.Tensor  # [n, K, K]
    log_det_gain: torch.Tensor  # [n]  log|I + Lᵀ J L|
    steady: bool

    @property
    def length(self) -> int:
        return self.filtered.shape[0]

    def expanded(self, values: torch.Tensor, T: int) -> torch.Tensor:
        """``values`` (one entry per computed step) for ``T`` steps, repeating the last when steady."""
        n = values.shape[0]
        if T <= n:
            return values[:T]
        return torch.cat([values, values[-1:].expand(T - n, *values.shape[1:])])


@dataclass
class _Piecewise:
    """A ``[T, K, K]`` sequence stored as ``front`` entries, a ``constant (value, count)`` run, ``back`` entries."""

    front: list
    constant: tuple | None
    back: list

    def __len__(self) -> int:
        return len(self.front) + (self.constant[1] if self.constant else 0) + len(self.back)

    def at(self, t: int) -> torch.Tensor:
        if t < len(self.front):
            return self.front[t]
        if self.constant and t < len(self.front) + self.constant[1]:
            return self.constant[0]
        return self.back[t - len(self) + len(self.back)]

    def dense(self, stop: int | None = None) -> torch.Tensor:
        """Entries ``0 .. stop-1`` (all by default) as one tensor."""
        stop = len(self) if stop is None else stop
        parts = self.front[:stop]
        if self.constant and stop > len(self.front):
            value, count = self.constant
            parts = parts + [value.expand(min(count, stop - len(self.front)), -1, -1)]
        parts = [p[None] if p.dim() == 2 else p for p in parts]
        rest = stop - len(self.front) - (self.constant[1] if self.constant else 0)
        if rest > 0:
            parts.append(torch.stack(self.back[:rest]))
        return torch.cat(parts)

    def sum(self) -> torch.Tensor:
        total = sum(self.front) + sum(self.back)
        return total + self.constant[1] * self.constant[0] if self.constant else total


def smoothed_covariances(out: dict) -> tuple:
    """Dense smoothed and lag-one covariances ``[T, K, K]`` from :meth:`SessionKernel.smooth` output."""
    smoothed = out["covariances"].dense()
    gains = out["gains"]
    T, g = smoothed.shape[0], gains.shape[0]
    full_gains = gains if g >= T - 1 else torch.cat([gains, gains[-1:].expand(T - 1 - g, -1, -1)])
    lag_one = torch.empty_like(smoothed)
    lag_one[1:] = smoothed[1:] @ full_gains[:T - 1].transpose(-1, -2)
    lag_one[0] = smoothed[0] @ out["initial_gain"].T
    return smoothed, lag_one


def _lag_one_sum(out: dict) -> torch.Tensor:
    """``Σ_t Cov(x_t, x_{t-1} | y)`` without the dense sequence: ``Σ_t P_{t|T} G_{t-1}ᵀ``."""
    smoothed, gains = out["covariances"], out["gains"]
    T, g = len(smoothed), gains.shape[0]
    head = smoothed.dense(min(g, T - 1) + 1)  # t = 0 .. g: each with its own gain
    total = smoothed.at(0) @ out["initial_gain"].T + (head[1:] @ gains[:head.shape[0] - 1].transpose(-1, -2)).sum(0)
    if T - 1 > g:  # t = g+1 .. T-1 share the last gain
        total = total + (smoothed.sum() - head.sum(0)) @ gains[-1].T
    return total


class SessionKernel:
    """The fast path for one session's model: filter, smoother and EM moments of complete trials.

    ``model`` is a :class:`lds.kalman.SessionModel`. The covariance recursion is
    computed once (for the longest trial asked for) and shared by all calls.
    """

    def __init__(self, model):
        self.model = model
        A, C, R = model.A, model.C, model.R
        K, N = A.shape[0], C.shape[0]
        self.eye = torch.eye(K, dtype=A.dtype, device=A.device)
        diagonal = bool((R == torch.diag(torch.diagonal(R))).all())
        if diagonal:
            variances = torch.diagonal(R)
            if bool((variances <= 0).any()):
                raise NotPositiveDefiniteError("measurement_noise_covariance is not positive definite")
            self._inv_std = variances.rsqrt()
            self.log_det_R = torch.log(variances).sum()
            self.W = C / variances[:, None]  # R⁻¹ C
        else:
            factor, info = torch.linalg.cholesky_ex(R)
            _check_factor(info, "measurement_noise_covariance")
            self._inv_std = None
            self._inv_factor = torch.linalg.solve_triangular(factor, torch.eye(N, dtype=R.dtype, device=R.device),
                                                             upper=False)  # L⁻¹
            self._inv_R = self._inv_factor.T @ self._inv_factor
            self.log_det_R = 2.0 * torch.log(torch.diagonal(factor)).sum()
            self.W = torch.cholesky_solve(C, factor)
        self.J = _sym(C.T @ self.W)
        self.num_observations = N
        self._riccati = None

    # ---- covariances (data independent) -----------------------------------------
    def whitening_matrix(self) -> torch.Tensor:
        """``R^{-1/2}`` as a vector of inverse standard deviations (diagonal R) or the matrix ``L⁻¹``."""
        return self._inv_std if self._inv_std is not None else self._inv_factor

    def riccati(self, T: int) -> _Riccati:
        """Filter covariances for ``T`` steps, stopping early at the steady state."""
        cached = self._riccati
        if cached is not None and (cached.steady or cached.length >= T):
            return cached
        m = self.model
        predicted, filtered, log_dets, infos = [], [], [], []
        P, convergence, steady = m.V0, Convergence(m.A.dtype), False
        for t in range(T):
            P_pred = _sym(m.A @ P @ m.A.T + m.Q)
            L, info_p = torch.linalg.cholesky_ex(P_pred)
            U, info_g = torch.linalg.cholesky_ex(self.eye + L.T @ self.J @ L)
            Z = torch.linalg.solve_triangular(U, L.T, upper=False)  # U⁻¹ Lᵀ, so P = Zᵀ Z
            new_P = _sym(Z.T @ Z)
            predicted.append(P_pred)
            filtered.append(new_P)
            log_dets.append(2.0 * torch.log(torch.diagonal(U)).sum())
            infos.append(info_p | info_g)
            if t > 0 and convergence.update(new_P, P):  # one host read per transient step
                steady = True
                break
            P = new_P
        _check_factor(torch.stack(infos), "the predicted covariance (check process_noise_covariance)")
        self._riccati = _Riccati(torch.stack(predicted), torch.stack(filtered), torch.stack(log_dets), steady)
        return self._riccati

    # ---- filter -----------------------------------------------------------------
    def filter(self, Y: torch.Tensor, data_sums: tuple | None = None) -> dict:
        """Filter the trials ``Y [B, T, N]`` (no NaN); covariances are shared by the trials.

        Returns ``means``/``predicted_means`` ``[B, T, K]``, ``log_likelihood [B]`` (float64)
        and the covariances as ``riccati`` (see :func:`covariances`).
        """
        m = self.model
        B, T, _ = Y.shape
        ric = self.riccati(T)
        n = min(ric.length, T)
        H = Y @ self.W - m.d @ self.W  # all data terms Cᵀ R⁻¹ (y_t - d) at once
        means = torch.empty(B, T, m.A.shape[0], dtype=Y.dtype, device=Y.device)
        mean = m.m0.expand(B, -1)
        for t in range(n):  # transient: time-varying gain
            pred = mean @ m.A.T + m.b
            mean = pred + (H[:, t] - pred @ self.J) @ ric.filtered[t]
            means[:, t] = mean
        if n < T:  # steady state: x_t = F x_{t-1} + u_t with constant F
            P = ric.filtered[-1]
            gain = self.eye - P @ self.J
            F = gain @ m.A
            u = H[:, n:] @ P + m.b @ gain.T
            u[:, 0] += mean @ F.T
            means[:, n:] = linear_scan(F, u)
        predicted_means = torch.empty_like(means)
        predicted_means[:, 0] = m.A @ m.m0 + m.b
        predicted_means[:, 1:] = means[:, :-1] @ m.A.T + m.b
        log_likelihood = self._log_likelihood(Y, H, means, predicted_means, ric, T, data_sums)
        return dict(means=means, predicted_means=predicted_means, riccati=ric, log_likelihood=log_likelihood)

    def _log_likelihood(self, Y, H, means, predicted_means, ric, T, data_sums=None) -> torch.Tensor:
        """``Σ_t log N(y_t; C x_{t|t-1} + d, S_t)`` per trial (0-dim total over the trials when
        ``data_sums`` are given and safe to use, see :meth:`_quadratic_from_sums`).

        ``eᵀ S⁻¹ e = |R^{-1/2} e|² - rᵀ P r`` with ``r = Cᵀ R⁻¹ e``, ``P r = x_{t|t} - x_{t|t-1}``
        (Woodbury) and ``log|S| = log|R| + log|I + Lᵀ J L|``.
        """
        quadratic = None if data_sums is None else self._quadratic_from_sums(Y, predicted_means, data_sums)
        if quadratic is None:
            quadratic = self._quadratic(Y, predicted_means)
        r = H - predicted_means @ self.J
        correction = (r * (means - predicted_means)).sum((-1, -2))
        quadratic = quadratic - (correction.sum() if quadratic.dim() == 0 else correction)
        log_dets = ric.log_det_gain[:T].sum()
        if T > ric.length:
            log_dets = log_dets + (T - ric.length) * ric.log_det_gain[-1]
        N, trials = self.num_observations, (Y.shape[0] if quadratic.dim() == 0 else 1)
        total = -0.5 * (T * (N * _LOG_2PI + self.log_det_R) + log_dets) * trials - 0.5 * quadratic
        return total.to(torch.float64)

    def _weighted_trace(self, scatter: torch.Tensor) -> torch.Tensor:
        """``tr(R⁻¹ M)`` for (a batch of) N×N matrices ``M``."""
        if self._inv_std is not None:
            return (torch.diagonal(scatter, dim1=-2, dim2=-1) * self._inv_std.square()).sum(-1)
        return (scatter * self._inv_R).sum((-1, -2))

    def _quadratic(self, Y, predicted_means) -> torch.Tensor:
        """``Σ_t eᵀ R⁻¹ e`` per trial from the innovations ``e = y - C x_{t|t-1} - d``."""
        m, (B, _, N) = self.model, Y.shape
        innovations = torch.addmm(Y.reshape(-1, N), predicted_means.reshape(-1, m.C.shape[1]), m.C.T, alpha=-1)
        innovations = innovations.sub_(m.d).reshape(B, -1, N)
        if self._inv_std is not None:  # diagonal R: scale in place, then one dot product per trial
            whitened = innovations.mul_(self._inv_std).reshape(B, 1, -1)
            return (whitened @ whitened.transpose(-1, -2)).reshape(B)
        # full R: Σ eᵀ R⁻¹ e = tr(R⁻¹ Σ e eᵀ), an N×N product instead of a T×N one
        return self._weighted_trace(innovations.transpose(-1, -2) @ innovations)

    def _quadratic_from_sums(self, Y, predicted_means, data_sums):
        """The total of :meth:`_quadratic` over the trials from the data's own sums (Σ y, Σ y yᵀ, kept
        between EM iterations) and O(T·N·K) products; None when cancellation could cost more than
        2 digits (the data's own term exceeds the result 100-fold), which keeps the error far below
        the round-off level at which :func:`lds.fit_em` judges a likelihood decrease."""
        m, N = self.model, Y.shape[-1]
        count = Y.shape[0] * Y.shape[1]
        sum_y, sum_yy = data_sums
        p = predicted_means.reshape(-1, m.C.shape[1])
        sum_p = p.sum(0)
        centered = sum_yy - torch.outer(m.d, sum_y) - torch.outer(sum_y, m.d) + count * torch.outer(m.d, m.d)
        cross = Y.reshape(-1, N).T @ p - torch.outer(m.d, sum_p)  # Σ (y - d) pᵀ
        CXt = m.C @ cross.T
        scatter = centered - CXt - CXt.T + m.C @ (p.T @ p) @ m.C.T
        data_term, quadratic = self._weighted_trace(centered), self._weighted_trace(scatter)
        if not bool(data_term <= 100 * quadratic.abs()):
            return None
        return quadratic

    # ---- smoother ---------------------------------------------------------------
    def _smoother_covariances(self, T: int):
        """Smoother gains (compact: entry ``min(t, g-1)`` is ``G_t``), smoothed covariances
        (a :class:`_Piecewise`), the prior's gain and the filter's transient length ``n``.

        ``G_t = P_t Aᵀ P_pred_{t+1}⁻¹`` is time-varying for ``t < n-1`` and constant after;
        the backward covariance recursion starts at the steady state and is run until it
        converges too, then until the filter's transient.
        """
        m, ric = self.model, self.riccati(T)
        n, last = min(ric.length, T), ric.length - 1
        filtered = lambda t: ric.filtered[min(t, last)]  # noqa: E731
        predicted = lambda t: ric.predicted[min(t, last)]  # noqa: E731
        g = max(min(n, T - 1), 1)
        factors, info = torch.linalg.cholesky_ex(ric.expanded(ric.predicted, g + 1)[1:])
        _check_factor(info, "the predicted covariance")
        gains = torch.cholesky_solve(m.A @ ric.expanded(ric.filtered, g), factors).transpose(-1, -2)
        back, front, constant = [filtered(T - 1)], [], None
        convergence, t, previous = Convergence(m.A.dtype), T - 2, back[0]
        while t >= 0:
            G = gains[min(t, g - 1)]
            value = _sym(filtered(t) + G @ (previous - predicted(t + 1)) @ G.T)
            previous = value
            if constant is None and t >= n and convergence.update(value, back[-1]):
                constant, t = (value, t - n + 2), n - 2  # the same for t = n-1 .. t
                continue
            (back if constant is None else front).append(value)
            t -= 1
        factor, info = torch.linalg.cholesky_ex(predicted(0))
        _check_factor(info, "the predicted covariance at time 0")
        initial_gain = torch.cholesky_solve(m.A @ m.V0, factor).T
        smoothed = _Piecewise(front[::-1], constant, back[::-1])
        return gains, smoothed, initial_gain, n

    def smooth(self, Y: torch.Tensor, data_sums: tuple | None = None) -> dict:
        """RTS smoother of ``Y [B, T, N]`` (no NaN); the :meth:`filter` output under ``"filtered"``.

        Adds ``means [B, T, K]``, ``initial_means [B, K]``, ``initial_covariance [K, K]``
        (the smoothed prior state), the smoother ``gains`` (compact) and
        ``covariances`` (a :class:`_Piecewise`; see :func:`smoothed_covariances`).
        """
        m = self.model
        filt = self.filter(Y, data_sums)
        B, T, _ = Y.shape
        gains, smoothed, initial_gain, n = self._smoother_covariances(T)
        fm, pm = filt["means"], filt["predicted_means"]
        means = torch.empty_like(fm)
        means[:, T - 1] = fm[:, T - 1]
        start = max(n - 1, 0)
        if start < T - 1:  # constant gain: backward linear recurrence
            G = gains[-1]
            u = fm[:, start:T - 1] - pm[:, start + 1:] @ G.T
            u[:, -1] += fm[:, T - 1] @ G.T
            means[:, start:T - 1] = linear_scan(G, u, reverse=True)
        for t in range(min(start, T - 1) - 1, -1, -1):
            means[:, t] = fm[:, t] + (means[:, t + 1] - pm[:, t + 1]) @ gains[t].T
        initial_means = m.m0 + (means[:, 0] - pm[:, 0]) @ initial_gain.T
        P0 = filt["riccati"].predicted[0]
        initial_covariance = _sym(m.V0 + initial_gain @ (smoothed.at(0) - P0) @ initial_gain.T)
        return dict(means=means, covariances=smoothed, gains=gains, initial_gain=initial_gain,
                    initial_means=initial_means, initial_covariance=initial_covariance,
                    log_likelihood=filt["log_likelihood"], filtered=filt)

    # ---- EM moments -------------------------------------------------------------
    def moments(self, Y: torch.Tensor, data_sums: tuple | None = None) -> dict:
        """The E-step sums of :class:`lds.em.SufficientStatistics` over the trials ``Y [B, T, N]``.

        Sums over time are matrix products; the covariances, shared by the trials,
        are summed once and weighted by ``B``. ``data_sums``: ``(Σ y, Σ y yᵀ)`` of ``Y``
        when already known (they do not change between EM iterations).
        """
        if data_sums is None:
            data_sums = data_moments(Y)
        s = self.smooth(Y, data_sums)
        B, T, _ = Y.shape
        K = s["means"].shape[-1]
        x = s["means"].reshape(B * T, K)
        x_prev = torch.cat([s["initial_means"][:, None], s["means"][:, :-1]], 1).reshape(B * T, K)
        covariance_sum = s["covariances"].sum()
        previous_sum = s["initial_covariance"] + covariance_sum - s["covariances"].at(T - 1)
        flat_y = Y.reshape(B * T, -1)
        sum_xx = B * covariance_sum + x.T @ x
        return dict(
            log_likelihood=s["log_likelihood"], initial_means=s["initial_means"],
            sum_x=x.sum(0), sum_x_prev=x_prev.sum(0), sum_xx=sum_xx, sum_xx_prev=B * previous_sum + x_prev.T @ x_prev,
            sum_xx_lag=B * _lag_one_sum(s) + x.T @ x_prev,
            sum_initial_covariance=B * s["initial_covariance"],
            sum_y=data_sums[0], sum_yy=data_sums[1], sum_yx=flat_y.T @ x,
        )


def data_moments(Y: torch.Tensor) -> tuple:
    """``(Σ y, Σ y yᵀ)`` over all rows of ``Y [..., N]``."""
    flat = Y.reshape(-1, Y.shape[-1])
    return flat.sum(0), flat.T @ flat


def covariances(riccati: _Riccati, T: int) -> tuple:
    """Filtered and predicted covariances ``[T, K, K]`` from the compact :meth:`SessionKernel.filter` output."""
    return riccati.expanded(riccati.filtered, T), riccati.expanded(riccati.predicted, T)


def split_trials(trials, sessions):
    """Groups ``[(session, length, [trial indices])]`` of complete trials, and the indices of trials with NaN."""
    groups, incomplete = {}, []
    for i, (y, s) in enumerate(zip(trials, sessions)):
        if not bool(torch.isfinite(y.sum())):  # y has no inf (checked), so NaN (or a sum overflow)
            incomplete.append(i)
        else:
            groups.setdefault((s, y.shape[0]), []).append(i)
    return [(s, T, idx) for (s, T), idx in groups.items()], incomplete
