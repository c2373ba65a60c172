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
- the log-likelihood's quadratic form ``Σ eᵀ R⁻¹ e`` is ``Σ (y-d)ᵀ R⁻¹ (y-d)`` minus
  O(T·K) terms of the data terms and the predictions, so no T×N innovations are formed;
  ``dᵀ R⁻¹ y_t`` comes with ``h_t`` from the same product; EM keeps the data's sums
  between iterations, the filter takes each trial's own ``Σ y_tᵀ R⁻¹ y_t`` (for a full R
  the O(T·N²) cost of that term itself, halved by using R's symmetry);
- all data terms come from one pass over the data, 1024 steps at a time, so that every
  product reads them from cache; a non-finite ``Σ y_tᵀ R⁻¹ y_t`` flags NaN or infinite
  values, so the data need no separate check;
- the EM moments are sums over time written as matrix products; nothing of size
  T×N×N or T×K×K×K is allocated (T×K×K is);
- trials of unequal length are padded with zeros into one batch (:func:`split_trials`
  keeps the padding under a quarter of the data) and masked: the filter is causal, so
  padding after a trial's end changes nothing before it, and the smoother's backward
  recursions start at each trial's own end. The smoothed covariances depend only on a
  trial's length; long trials share one computed run (front, steady part, back), the
  short ones are computed together, one batched step per time step.

Missing data (NaN) makes the covariances data-dependent: such trials go through the
plain path (:mod:`lds.kalman`), which :func:`split_trials` arranges.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import torch

from .errors import NotPositiveDefiniteError, ValidationError
from .results import stack_tensors

__all__ = ["SessionKernel", "Convergence", "NonFiniteTrials", "split_trials", "padded_batch", "linear_scan",
           "smoothed_covariances", "lag_one_covariances", "data_moments"]

_LOG_2PI = math.log(2.0 * math.pi)
# Data terms are summed over blocks of about _BLOCK_ROWS time steps (they stay in cache for every
# product) and, for Σ y yᵀ-like products, over column blocks _BLOCK_WIDTH wide on and above the
# diagonal (symmetry halves the work); both were fastest for N = 142 on a 2-core x86 CPU (MKL).
_BLOCK_ROWS, _BLOCK_WIDTH = 1024, 48


class NonFiniteTrials(ValidationError):
    """:meth:`SessionKernel.filter` found trials whose data sums are not finite (NaN, infinite
    values, or values too large to square), before any other work; ``trials`` are their batch
    indices. :mod:`lds.kalman` then looks at those trials' values and sends them to the plain path."""

    def __init__(self, trials: list[int]):
        super().__init__(f"the trials {trials} of the batch have non-finite data sums (NaN or infinite values)")
        self.trials = trials


def _sym(matrix: torch.Tensor) -> torch.Tensor:
    return 0.5 * (matrix + matrix.transpose(-1, -2))


def linear_scan(F: torch.Tensor, u: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """All ``x_k = x_{k-1} Fᵀ + u_k`` (``x_{-1} = 0``) for ``u [..., L, K]`` in log2(L) matrix products.

    ``reverse=True`` runs backwards: ``x_k = x_{k+1} Fᵀ + u_k`` with ``x_L = 0``.
    Pass ``k`` adds the terms of ``F^(2^k)``; it stops once that power is below
    ``eps²`` (for a stable F the remaining terms are below round-off, and it avoids
    slow subnormal arithmetic).
    """
    return _scan_in_place(F, u.clone(), reverse)


def _product_into(out: torch.Tensor, X: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """``X [B, T, K] @ W`` written into ``out`` (a view of a result): no T×K temporary."""
    return torch.bmm(X, W.expand(X.shape[0], -1, -1), out=out)


def _scan_in_place(F: torch.Tensor, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """:func:`linear_scan`, overwriting ``x`` (the ``u``) with the result."""
    power, shift, length = F, 1, x.shape[-2]
    negligible = torch.finfo(F.dtype).eps ** 2
    while shift < length and float(power.abs().max()) > negligible:
        later, earlier = x[..., shift:, :], x[..., :-shift, :]
        if reverse:
            earlier += later @ power.T  # the right side is evaluated before the add
        else:
            later += earlier @ power.T
        power, shift = power @ power, 2 * shift
    return x


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
        """``values`` (one entry per computed step) for ``T`` steps, repeating the last when steady (a new tensor)."""
        n = values.shape[0]
        if T <= n:
            return values[:T].clone()
        out = values.new_empty(T, *values.shape[1:])
        out[:n], out[n:] = values, values[-1]
        return out


@dataclass
class _Piecewise:
    """A ``[T, K, K]`` sequence stored as ``front [f, K, K]``, a ``constant (value, count)`` run, ``back [b, K, K]``."""

    front: torch.Tensor
    constant: tuple | None
    back: torch.Tensor

    def __len__(self) -> int:
        return self.front.shape[0] + (self.constant[1] if self.constant else 0) + self.back.shape[0]

    def at(self, t: int) -> torch.Tensor:
        if t < self.front.shape[0]:
            return self.front[t]
        if self.constant and t < self.front.shape[0] + self.constant[1]:
            return self.constant[0]
        return self.back[t - len(self) + self.back.shape[0]]

    def pieces(self, start: int = 0, stop: int | None = None):
        """``(first index, [n, K, K] tensor)`` pieces of the entries ``start .. stop-1`` (to the end by
        default), the constant run as an expanded view (stride 0)."""
        stop = len(self) if stop is None else stop
        f, count = self.front.shape[0], self.constant[1] if self.constant else 0
        runs = [(0, self.front), (f, self.constant[0].expand(count, -1, -1) if count else self.front[:0]),
                (f + count, self.back)]
        for first, run in runs:
            lo, hi = max(start, first), min(stop, first + run.shape[0])
            if lo < hi:
                yield lo, run[lo - first:hi - first]

    def dense(self, stop: int | None = None) -> torch.Tensor:
        """Entries ``0 .. stop-1`` (all by default) as one tensor."""
        return torch.cat([self.front[:0], *(piece for _, piece in self.pieces(0, stop))])

    def sum(self) -> torch.Tensor:
        total = self.front.sum(0) + self.back.sum(0)
        return total + self.constant[1] * self.constant[0] if self.constant else total

    def with_length(self, T: int) -> "_Piecewise | None":
        """The same run for a trial of length ``T`` (the steady part shortened or lengthened), or
        None when ``T`` is too short to keep a steady part."""
        if self.constant is None:
            return None
        count = T - self.front.shape[0] - self.back.shape[0]
        return _Piecewise(self.front, (self.constant[0], count), self.back) if count >= 1 else None


@dataclass
class _Smoothed:
    """The smoother's covariances of a trial of one length, and its smoothed prior covariance."""

    covariances: _Piecewise
    initial_covariance: torch.Tensor


def smoothed_covariances(out: dict, T: int) -> torch.Tensor:
    """Dense smoothed covariances ``[T, K, K]`` (a new tensor) of a trial of length ``T`` from
    :meth:`SessionKernel.smooth` output."""
    return out["covariances"][T].covariances.dense()


def lag_one_covariances(out: dict, T: int) -> torch.Tensor:
    """Dense lag-one covariances ``[T, K, K]`` of a trial of length ``T`` from :meth:`SessionKernel.smooth`
    output: ``P_{t|T} G_{t-1}ᵀ``, with the initial gain at ``t = 0``."""
    smoothed, gains = out["covariances"][T].covariances, out["gains"]
    K = gains.shape[-1]
    lag_one = gains.new_empty(T, K, K)
    lag_one[0] = smoothed.at(0) @ out["initial_gain"].T
    head = min(gains.shape[0], T - 1)  # t = 1 .. head: each with its own gain
    lag_one[1:head + 1] = smoothed.dense(head + 1)[1:] @ gains[:head].transpose(-1, -2)
    for start, piece in smoothed.pieces(head + 1):  # the others share the last gain
        target = lag_one[start:start + piece.shape[0]]
        if piece.stride(0) == 0:  # the steady run: one product
            target.copy_((piece[0] @ gains[-1].T).expand_as(target))
        else:  # one matrix product over the rows of all its P_{t|T}
            torch.mm(piece.reshape(-1, K), gains[-1].T, out=target.view(-1, K))
    return lag_one


def _lag_one_sum(smoothed: _Piecewise, gains: torch.Tensor, initial_gain: torch.Tensor) -> torch.Tensor:
    """``Σ_t Cov(x_t, x_{t-1} | y)`` of one trial without the dense sequence: ``Σ_t P_{t|T} G_{t-1}ᵀ``."""
    T, g = len(smoothed), gains.shape[0]
    head = smoothed.dense(min(g, T - 1) + 1)  # t = 0 .. g: each with its own gain
    total = smoothed.at(0) @ initial_gain.T + (head[1:] @ gains[:head.shape[0] - 1].transpose(-1, -2)).sum(0)
    if T - 1 > g:  # t = g+1 .. T-1 share the last gain
        total = total + (smoothed.sum() - head.sum(0)) @ gains[-1].T
    return total


class SessionKernel:
    """The fast path for one session's model: filter, smoother and EM moments of complete trials.

    ``model`` is a :class:`lds.kalman.SessionModel`. The covariance recursion is
    computed once (for the longest trial asked for) and shared by all calls. Trials
    come as a zero-padded batch ``Y [B, T, N]`` with their ``lengths`` (None: all ``T``).
    """

    def __init__(self, model):
        self.model = model
        A, C, R = model.A, model.C, model.R
        K, N = A.shape[0], C.shape[0]
        self.eye = torch.eye(K, dtype=A.dtype, device=A.device)
        diagonal = bool(torch.count_nonzero(R) == torch.count_nonzero(torch.diagonal(R)))
        if diagonal:
            variances = torch.diagonal(R)
            if bool((variances <= 0).any()):
                raise NotPositiveDefiniteError("measurement_noise_covariance is not positive definite")
            self._inv_std = variances.rsqrt()
            self.log_det_R = torch.log(variances).sum()
            self._inv_R = torch.diag(1.0 / variances)
        else:
            factor, info = torch.linalg.cholesky_ex(R)
            _check_factor(info, "measurement_noise_covariance")
            self._inv_std, self._factor = None, factor
            self._inv_R = _sym(torch.cholesky_inverse(factor))
            self.log_det_R = 2.0 * torch.log(torch.diagonal(factor)).sum()
            self._weight_blocks = _upper_blocks(self._inv_R)
        C_and_d = torch.cat([C, model.d[:, None]], 1)
        # R⁻¹ [C, d]: y ↦ (Cᵀ R⁻¹ y, dᵀ R⁻¹ y) in one product
        self._projection = C_and_d / variances[:, None] if diagonal else torch.cholesky_solve(C_and_d, factor)
        self.W = self._projection[:, :K]  # R⁻¹ C
        self._d_projected = model.d @ self.W  # Cᵀ R⁻¹ d
        self._d_quadratic = model.d @ self._projection[:, K]  # dᵀ R⁻¹ d
        self.J = _sym(C.T @ self.W)
        self.num_observations = N
        self._riccati = None
        self._smoothed = {}  # trial length -> _Smoothed

    # ---- covariances (data independent) -----------------------------------------
    def whitening_matrix(self) -> torch.Tensor:
        """``R^{-1/2}`` as a vector of inverse standard deviations (diagonal R) or the matrix ``L⁻¹``."""
        if self._inv_std is not None:
            return self._inv_std
        eye = torch.eye(self.num_observations, dtype=self._factor.dtype, device=self._factor.device)
        return torch.linalg.solve_triangular(self._factor, eye, upper=False)

    def whitened(self, Y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``R^{-1/2} (y - d)`` (``L⁻¹ (y - d)`` with ``R = L Lᵀ``) for every row of ``Y [..., N]``, zero
        where ``mask`` is; one new array (large arrays cost page faults on first touch)."""
        centered = Y - self.model.d
        if mask is not None:
            centered.mul_(mask)
        if self._inv_std is not None:
            return centered.mul_(self._inv_std)
        return torch.linalg.solve_triangular(self._factor, centered.transpose(-1, -2), upper=False).transpose(-1, -2)

    def riccati(self, T: int) -> _Riccati:
        """Filter covariances for ``T`` steps, stopping early at the steady state."""
        cached = self._riccati
        if cached is not None and (cached.steady or cached.length >= T):
            return cached
        m = self.model
        predicted, filtered, gain_factors, infos = [], [], [], []
        P, convergence, steady = m.V0, Convergence(m.A.dtype), False
        for t in range(T):
            P_pred = _sym(m.A @ P @ m.A.T + m.Q)
            L, info_p = torch.linalg.cholesky_ex(P_pred)
            U, info_g = torch.linalg.cholesky_ex(self.eye + L.T @ self.J @ L)
            Z = torch.linalg.solve_triangular(U, L.T, upper=False)  # U⁻¹ Lᵀ, so P = Zᵀ Z
            new_P = _sym(Z.T @ Z)
            predicted.append(P_pred)
            filtered.append(new_P)
            gain_factors.append(U)
            infos += (info_p, info_g)
            if t > 0 and convergence.update(new_P, P):  # one host read per transient step
                steady = True
                break
            P = new_P
        _check_factor(torch.stack(infos), "the predicted covariance (check process_noise_covariance)")
        log_dets = 2.0 * torch.log(torch.diagonal(torch.stack(gain_factors), dim1=-2, dim2=-1)).sum(-1)
        self._riccati = _Riccati(torch.stack(predicted), torch.stack(filtered), log_dets, steady)
        self._smoothed = {}
        return self._riccati

    # ---- filter -----------------------------------------------------------------
    def filter(self, Y: torch.Tensor, lengths: list | None = None, data_sums: tuple | None = None) -> dict:
        """Filter the trials ``Y [B, T, N]`` (no NaN); covariances are shared by the trials.

        Returns ``means``/``predicted_means`` ``[B, T, K]`` (meaningless after a trial's
        end), ``log_likelihood [B]`` (float64) and the covariances as ``riccati`` (see
        :meth:`_Riccati.expanded`). Without ``data_sums`` (EM's sums of checked data), each
        trial's ``Σ yᵀ R⁻¹ y`` comes first: if one is not finite, :class:`NonFiniteTrials` is
        raised, so the values need no separate pass to be checked.
        """
        m = self.model
        B, T, _ = Y.shape
        projected, raw = self._data_pass(Y, quadratic=data_sums is None)
        if raw is not None:  # a NaN or inf in y_t makes its Σ y² entry and so this sum non-finite
            finite = torch.isfinite(raw)
            if not bool(finite.all()):
                raise NonFiniteTrials(torch.nonzero(~finite).flatten().tolist())
        ric = self.riccati(T)
        n = min(ric.length, T)
        K = m.A.shape[0]
        H = projected[..., :K].sub_(self._d_projected)  # Cᵀ R⁻¹ (y_t - d), in place (column K stays)
        means = torch.empty(B, T, K, dtype=Y.dtype, device=Y.device)
        mean = m.m0.expand(B, -1)
        for t in range(n):  # transient: time-varying gain
            pred = mean @ m.A.T + m.b
            mean = pred + (H[:, t] - pred @ self.J) @ ric.filtered[t]
            means[:, t] = mean
        if n < T:  # steady state: x_t = F x_{t-1} + u_t with constant F
            P = ric.filtered[-1]
            gain = self.eye - P @ self.J
            F = gain @ m.A
            u = _product_into(means[:, n:], H[:, n:], P)  # the inputs u_t, then the means in place
            u += m.b @ gain.T
            u[:, 0] += mean @ F.T
            _scan_in_place(F, u)
        predicted_means = torch.empty_like(means)  # (few T×K temporaries: they are most of what is left)
        predicted_means[:, 0] = m.A @ m.m0
        _product_into(predicted_means[:, 1:], means[:, :-1], m.A.T)
        predicted_means += m.b
        if data_sums is None:  # each trial's own data terms
            data_terms = raw, projected[..., K].sum(-1)
        else:
            sum_y, sum_yy = data_sums
            data_terms = (sum_yy * self._inv_R).sum(), sum_y @ self._projection[:, K]
        log_likelihood = self._log_likelihood(Y, H, means, predicted_means, ric, lengths or [T] * B,
                                              _mask(lengths, T, Y.device), data_terms)
        return dict(means=means, predicted_means=predicted_means, riccati=ric, log_likelihood=log_likelihood)

    def _data_pass(self, Y: torch.Tensor, quadratic: bool) -> tuple:
        """All data terms of ``Y [B, T, N]`` in one pass, ``_BLOCK_ROWS`` time steps at a time (a
        block stays in cache for every product): ``Y R⁻¹ [C, d]`` ``[B, T, K+1]`` and, if
        ``quadratic``, each trial's ``Σ_t y_tᵀ R⁻¹ y_t`` (else None). That sum is O(T·N) for a
        diagonal R, else made from the products ``Y_iᵀ Y_j`` of the column blocks on and above
        the diagonal only (half of ``Yᵀ Y``)."""
        B, T, N = Y.shape
        projected = Y.new_empty(B, T, self._projection.shape[1])
        diagonal = self._inv_std is not None
        if quadratic:  # Σ y² per channel (diagonal R) or the block products, per trial
            sums = [Y.new_empty(B, N)] if diagonal else [Y.new_empty(B, stop - start, N - start)
                                                        for start, stop, _ in self._weight_blocks]
        for trials, steps in _row_blocks(B, T):
            chunk = Y[trials, steps]
            _product_into(projected[trials, steps], chunk, self._projection)
            if quadratic and diagonal:
                part = chunk.square().sum(-2)
                sums[0][trials] = part if steps.start == 0 else sums[0][trials] + part
            elif quadratic:
                for total, (start, stop, _) in zip(sums, self._weight_blocks):
                    left, right = chunk[..., start:stop].mT, chunk[..., start:]
                    if steps.start == 0:
                        torch.bmm(left, right, out=total[trials])
                    else:
                        total[trials].baddbmm_(left, right)
        if not quadratic:
            return projected, None
        if diagonal:
            return projected, sums[0] @ self._inv_std.square()
        return projected, sum(total.flatten(1) @ weights for total, (_, _, weights) in zip(sums, self._weight_blocks))

    def _log_likelihood(self, Y, H, means, predicted_means, ric, lengths, mask, data_terms):
        """``Σ_t log N(y_t; C x_{t|t-1} + d, S_t)`` per trial, or its total over the trials (0-dim)
        when the ``data_terms`` ``(Σ yᵀ R⁻¹ y, Σ dᵀ R⁻¹ y)`` are totals.

        ``eᵀ S⁻¹ e = |R^{-1/2} e|² - rᵀ P r`` with ``r = h - J p = Cᵀ R⁻¹ e``, ``P r = m - p``
        (Woodbury; ``p``, ``m`` the predicted and filtered means) and ``log|S| = log|R| +
        log|I + Lᵀ J L|``. Every sum over time is a dot product or a K×K Gram matrix, so no
        T×K array is made but the masked means. ``mask [B, T, 1]`` (None when no trial is
        padded) leaves out the steps after each trial's end.
        """
        if mask is not None:
            predicted_means, means = predicted_means * mask, means * mask
        steps = torch.tensor(lengths, device=Y.device)
        count = steps if data_terms[0].dim() else steps.sum()
        pH, mH = (torch.diagonal(a.mT @ H, dim1=-2, dim2=-1).sum(-1) for a in (predicted_means, means))  # Σ p·h
        pJp = (predicted_means.mT @ predicted_means * self.J).sum((-1, -2))  # Σ pᵀ J p
        pJm = (predicted_means.mT @ means * self.J).sum((-1, -2))  # Σ pᵀ J m
        quadratic = self._quadratic_from_terms(data_terms, count, pH, pJp)  # per trial, or the total
        if quadratic is None:
            quadratic = self._quadratic(self.whitened(Y, mask), predicted_means)
            quadratic = quadratic.sum() if count.dim() == 0 else quadratic
        correction = self._correction(H, means, predicted_means, (mH, pJm, pH, pJp))
        constant = steps * (self.num_observations * _LOG_2PI + self.log_det_R) + _log_det_sums(ric, steps)
        if count.dim() == 0:
            correction, constant = correction.sum(), constant.sum()
        return (-0.5 * constant - 0.5 * (quadratic - correction)).to(torch.float64)

    def _correction(self, H, means, predicted_means, sums) -> torch.Tensor:
        """``Σ_t r_t·(m_t - p_t)`` per trial with ``r = h - J p``, from the ``sums`` ``(Σ m·h, Σ pᵀ J m,
        Σ p·h, Σ pᵀ J p)``; from ``r`` itself (two T×K temporaries) when the sums cancel by more
        than 2 digits, as for states far from zero. Each term ``rᵀ P_{t|t} r`` is non-negative."""
        correction = sums[0] - sums[1] - sums[2] + sums[3]
        if _keeps_digits(correction, sum(term.abs() for term in sums)):
            return correction
        return torch.linalg.vecdot(H - predicted_means @ self.J, means - predicted_means).sum(-1)

    def _quadratic(self, white, predicted_means) -> torch.Tensor:
        """``Σ_t |R^{-1/2} e_t|²`` per trial from the whitened innovations ``R^{-1/2} (y - d) - R^{-1/2} C x_{t|t-1}``."""
        C = self.model.C  # R^{-1/2} C below, so that J = (R^{-1/2} C)ᵀ (R^{-1/2} C)
        C_white = C * self._inv_std[:, None] if self._inv_std is not None else torch.linalg.solve_triangular(
            self._factor, C, upper=False)
        innovations = white - predicted_means @ C_white.T
        return torch.linalg.vector_norm(innovations, dim=(-2, -1)).square()

    def _quadratic_from_terms(self, data_terms, count, pH, pJp):
        """:meth:`_quadratic` per trial without the innovations, from the data terms over ``count`` steps
        (per trial, or totals) and the per-trial ``Σ p·h`` and ``Σ pᵀ J p``:
        ``Σ |R^{-1/2} (y - d - C p)|² = Σ yᵀ R⁻¹ y - 2 Σ dᵀ R⁻¹ y + count dᵀ R⁻¹ d - 2 Σ p·h + Σ pᵀ J p``
        with ``h = Cᵀ R⁻¹ (y - d)``. None when cancellation could cost more than 2 digits (the
        data's own terms exceed the result 100-fold), which keeps the error far below the
        round-off level at which :func:`lds.fit_em` judges a likelihood decrease.
        """
        raw, cross = data_terms
        explained = 2 * pH - pJp
        quadratic = raw - 2 * cross + count * self._d_quadratic - (explained.sum() if count.dim() == 0 else explained)
        return quadratic if _keeps_digits(quadratic, raw + count * self._d_quadratic) else None

    # ---- smoother ---------------------------------------------------------------
    def _smoother_gains(self, T: int):
        """Smoother gains (compact: entry ``min(t, g-1)`` is ``G_t``), the prior's gain and the
        filter's transient length ``n`` for trials of up to ``T`` steps.

        ``G_t = P_t Aᵀ P_pred_{t+1}⁻¹`` does not depend on the trial's length; it is
        time-varying for ``t < n-1`` and constant after.
        """
        m, ric = self.model, self.riccati(T)
        n = min(ric.length, T)
        g = max(min(n, T - 1), 1)
        factors, info = torch.linalg.cholesky_ex(ric.expanded(ric.predicted, g + 1)[1:])
        _check_factor(info, "the predicted covariance")
        gains = torch.cholesky_solve(m.A @ ric.expanded(ric.filtered, g), factors).transpose(-1, -2)
        factor, info = torch.linalg.cholesky_ex(ric.predicted[0])
        _check_factor(info, "the predicted covariance at time 0")
        initial_gain = torch.cholesky_solve(m.A @ m.V0, factor).T
        return gains, initial_gain, n

    def _backward_run(self, T: int, gains: torch.Tensor) -> _Piecewise:
        """Smoothed covariances ``P_{t|T}`` of one trial of length ``T``: the backward recursion
        starts at the steady state and runs until it converges too, then until the filter's
        transient."""
        ric, m = self._riccati, self.model
        n, last, g = min(ric.length, T), ric.length - 1, gains.shape[0]
        filtered = lambda t: ric.filtered[min(t, last)]  # noqa: E731
        predicted = lambda t: ric.predicted[min(t, last)]  # noqa: E731
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
        return _Piecewise(self._stacked(front[::-1]), constant, self._stacked(back[::-1]))

    def _stacked(self, values: list) -> torch.Tensor:
        return torch.stack(values) if values else self.eye.new_zeros(0, *self.eye.shape)

    def _short_runs(self, lengths: list, gains: torch.Tensor) -> list:
        """:meth:`_backward_run` for several short lengths at once: one batched step per time step,
        indexed by the distance from each trial's end (no masks, so no host reads on a GPU)."""
        ric = self._riccati
        ends = torch.tensor(lengths, device=gains.device) - 1
        longest = max(lengths)
        filtered = ric.expanded(ric.filtered, longest)
        predicted = ric.expanded(ric.predicted, longest + 1)
        step_gains = gains[torch.arange(longest, device=gains.device).clamp(max=gains.shape[0] - 1)]
        value = filtered[ends]
        by_distance = [value]
        for k in range(1, longest):  # a trial that has reached its start computes on; that part is never used
            t = (ends - k).clamp(min=0)
            G = step_gains[t]
            value = _sym(filtered[t] + G @ (value - predicted[t + 1]) @ G.transpose(-1, -2))
            by_distance.append(value)
        runs = torch.stack(by_distance, 1)  # [lengths, distance from the end, K, K]
        empty = self._stacked([])
        return [_Piecewise(runs[i, :T].flip(0), None, empty) for i, T in enumerate(lengths)]

    def smoothed(self, lengths, gains: torch.Tensor, initial_gain: torch.Tensor) -> dict:
        """:class:`_Smoothed` per distinct trial length (cached: they do not depend on the data).

        The longest new length gets its own backward run; every length that the steady part
        of a run covers reuses it, the others are computed together by :meth:`_short_runs`.
        """
        missing = sorted(set(lengths) - set(self._smoothed), reverse=True)
        template = next((r.covariances for r in self._smoothed.values() if r.covariances.constant), None)
        if missing and template is None:
            template = self._backward_run(missing[0], gains)
            self._smoothed[missing.pop(0)] = self._with_prior(template, initial_gain)
        short = []
        for T in missing:
            run = template.with_length(T)
            if run is None:
                short.append(T)
            else:
                self._smoothed[T] = self._with_prior(run, initial_gain)
        if short:
            for T, run in zip(short, self._short_runs(short, gains)):
                self._smoothed[T] = self._with_prior(run, initial_gain)
        return {T: self._smoothed[T] for T in set(lengths)}

    def _with_prior(self, run: _Piecewise, initial_gain: torch.Tensor) -> _Smoothed:
        m, P0 = self.model, self._riccati.predicted[0]
        return _Smoothed(run, _sym(m.V0 + initial_gain @ (run.at(0) - P0) @ initial_gain.T))

    def smooth(self, Y: torch.Tensor, lengths: list | None = None, data_sums: tuple | None = None) -> dict:
        """RTS smoother of ``Y [B, T, N]`` (no NaN); the :meth:`filter` output under ``"filtered"``.

        Adds ``means [B, T, K]`` (zero after each trial's end), ``initial_means [B, K]`` (the
        smoothed prior states), the smoother ``gains`` (compact), ``initial_gain`` and
        ``covariances``: a :class:`_Smoothed` per trial length (see :func:`smoothed_covariances`).
        """
        m = self.model
        filt = self.filter(Y, lengths, data_sums)
        B, T, _ = Y.shape
        gains, initial_gain, n = self._smoother_gains(T)
        smoothed = self.smoothed(lengths or [T], gains, initial_gain)
        fm, pm = filt["means"], filt["predicted_means"]
        ends = None if lengths is None else torch.tensor(lengths, device=Y.device)[:, None] - 1
        means = torch.empty_like(fm)
        start = max(n - 1, 0)  # the gains are constant from here on: backward linear recurrence
        G = gains[-1]
        u = means[:, start:]  # u_t = x_{t|t} - x_{t+1|t} Gᵀ before a trial's last step, x_{t|t} at it
        u.copy_(fm[:, start:])
        u[:, :-1] -= pm[:, start + 1:] @ G.T
        if ends is not None:
            times = torch.arange(start, T, device=Y.device)
            at_end = torch.where((times == ends)[..., None], fm[:, start:], 0.0)
            u.copy_(torch.where((times < ends)[..., None], u, at_end))
        _scan_in_place(G, u, reverse=True)  # the smoothed means, in place
        for t in range(start - 1, -1, -1):
            step = fm[:, t] + (means[:, t + 1] - pm[:, t + 1]) @ gains[t].T
            if ends is not None:
                step = torch.where(t < ends, step, torch.where(t == ends, fm[:, t], 0.0))
            means[:, t] = step
        initial_means = m.m0 + (means[:, 0] - pm[:, 0]) @ initial_gain.T
        return dict(means=means, covariances=smoothed, gains=gains, initial_gain=initial_gain,
                    initial_means=initial_means, log_likelihood=filt["log_likelihood"], filtered=filt)

    # ---- EM moments -------------------------------------------------------------
    def moments(self, Y: torch.Tensor, lengths: list | None = None, data_sums: tuple | None = None) -> dict:
        """The E-step sums of :class:`lds.em.SufficientStatistics` over the trials ``Y [B, T, N]``.

        Sums over time are matrix products; the covariances, shared by the trials of one
        length, are summed once per length and weighted by its trial count. ``data_sums``:
        ``(Σ y, Σ y yᵀ)`` of ``Y`` when already known (they do not change between EM
        iterations).
        """
        if data_sums is None:
            data_sums = data_moments(Y)
        s = self.smooth(Y, lengths, data_sums)
        B, T, _ = Y.shape
        K = s["means"].shape[-1]
        x = s["means"].reshape(B * T, K)
        x_prev = torch.cat([s["initial_means"][:, None], s["means"][:, :-1]], 1)
        if lengths is not None:
            x_prev = x_prev * _mask(lengths, T, Y.device)
        x_prev = x_prev.reshape(B * T, K)
        zeros = torch.zeros(K, K, dtype=Y.dtype, device=Y.device)
        covariance_sum, previous_sum, lag_sum, initial_sum = zeros, zeros, zeros, zeros
        for length, count in (Counter(lengths) if lengths is not None else {T: B}).items():
            run = s["covariances"][length]
            total = run.covariances.sum()
            covariance_sum = covariance_sum + count * total
            previous_sum = previous_sum + count * (run.initial_covariance + total - run.covariances.at(length - 1))
            lag_sum = lag_sum + count * _lag_one_sum(run.covariances, s["gains"], s["initial_gain"])
            initial_sum = initial_sum + count * run.initial_covariance
        flat_y = Y.reshape(B * T, -1)
        return dict(
            log_likelihood=s["log_likelihood"], initial_means=s["initial_means"],
            sum_x=x.sum(0), sum_x_prev=x_prev.sum(0), sum_xx=covariance_sum + x.T @ x,
            sum_xx_prev=previous_sum + x_prev.T @ x_prev, sum_xx_lag=lag_sum + x.T @ x_prev,
            sum_initial_covariance=initial_sum,
            sum_y=data_sums[0], sum_yy=data_sums[1], sum_yx=flat_y.T @ x,
        )


def _mask(lengths: list | None, T: int, device) -> torch.Tensor | None:
    """``[B, T, 1]`` with 1 before each trial's end and 0 after (None when ``lengths`` is None)."""
    if lengths is None:
        return None
    steps = torch.arange(T, device=device)
    return (steps < torch.tensor(lengths, device=device)[:, None])[..., None]


def _keeps_digits(result: torch.Tensor, terms: torch.Tensor) -> bool:
    """Whether a result summed from terms of total size ``terms`` lost at most 2 digits to
    cancellation (per trial): far below the round-off at which :func:`lds.fit_em` judges a
    likelihood decrease."""
    return bool((terms <= 100 * result.abs()).all())


def _row_blocks(B: int, T: int, rows: int = _BLOCK_ROWS):
    """``(trials, steps)`` slices that cover ``[B, T]`` in blocks of about ``rows`` time steps:
    a run of whole trials when they are short, else a run of steps of one trial."""
    steps = min(T, rows)
    per_block = max(1, rows // steps)
    for b in range(0, B, per_block):
        for t in range(0, T, steps):
            yield slice(b, b + per_block), slice(t, t + steps)


def _upper_blocks(M: torch.Tensor, width: int = _BLOCK_WIDTH) -> list:
    """``[(start, stop, weights)]`` with
    ``Σ_t y_tᵀ M y_t = Σ (Y[:, start:stop]ᵀ Y[:, start:]).flatten() @ weights``
    for a symmetric ``M``: block rows of ``M``'s upper triangle with the off-diagonal entries doubled
    (they stand for the lower triangle, as the products are symmetric too)."""
    upper = torch.triu(2 * M - torch.diag(torch.diagonal(M)))
    return [(start, min(start + width, M.shape[0]), upper[start:start + width, start:].flatten())
            for start in range(0, M.shape[0], width)]


def _log_det_sums(ric: _Riccati, lengths: torch.Tensor) -> torch.Tensor:
    """``Σ_{t < T_i} log|I + Lᵀ J L|`` for each trial length ``T_i``."""
    cumulative = torch.cumsum(ric.log_det_gain, 0)
    computed = lengths.clamp(max=ric.length)
    return cumulative[computed - 1] + (lengths - computed) * ric.log_det_gain[-1]


def data_moments(Y: torch.Tensor, rows: int = _BLOCK_ROWS, width: int = _BLOCK_WIDTH) -> tuple:
    """``(Σ y, Σ y yᵀ)`` over all rows of ``Y [..., N]``, in one pass a block of ``rows`` rows at a
    time; ``Σ y yᵀ`` from its column blocks on and above the diagonal (about half of the work)."""
    N = Y.shape[-1]
    flat = Y.reshape(-1, N)
    total, gram = flat.new_zeros(N), flat.new_zeros(N, N)
    for row in range(0, flat.shape[0], rows):
        chunk = flat[row:row + rows]
        total += chunk.sum(0)
        for start in range(0, N, width):
            gram[start:start + width, start:].addmm_(chunk[:, start:start + width].T, chunk[:, start:])
    upper = torch.triu(gram)
    return total, upper + torch.triu(gram, 1).T


def split_trials(trials, sessions, complete, max_padding: float = 0.25):
    """Batches ``[(session, [trial indices])]`` of the ``complete`` trials (no NaN, or None: not
    looked at yet), and the indices of the others.

    The trials of a session are sorted by length (longest first) and cut into batches whose
    zero padding (to the batch's longest trial) stays below ``max_padding`` of their data.
    """
    by_session, incomplete = {}, []
    for i, (s, ok) in enumerate(zip(sessions, complete)):
        if ok is not False:
            by_session.setdefault(s, []).append(i)
        else:
            incomplete.append(i)
    groups = []
    for s, indices in by_session.items():
        batch, steps = [], 0
        for i in sorted(indices, key=lambda i: -trials[i].shape[0]):
            T = trials[i].shape[0]
            if batch and (len(batch) + 1) * trials[batch[0]].shape[0] > (1 + max_padding) * (steps + T):
                groups.append((s, batch))
                batch, steps = [], 0
            batch.append(i)
            steps += T
        groups.append((s, batch))
    return groups, incomplete


def padded_batch(trials, indices) -> tuple:
    """``Y [B, T, N]`` of the trials ``indices`` (zeros after each one's end) and their lengths
    (None when all have the same length)."""
    lengths = [trials[i].shape[0] for i in indices]
    if len(set(lengths)) == 1:
        return stack_tensors([trials[i] for i in indices]), None
    first = trials[indices[0]]
    Y = first.new_zeros(len(indices), max(lengths), first.shape[1])
    for j, i in enumerate(indices):
        Y[j, :lengths[j]] = trials[i]
    return Y, lengths
