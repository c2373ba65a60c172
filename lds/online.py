"""Online (streaming) Kalman filtering, one sample at a time."""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import ShapeError, ValidationError
from .fast import Convergence, SessionKernel
from .kalman import cholesky, predict, session_models, update
from .observations import real_tensor
from .orthogonalize import orthogonalizing_transform
from .params import KalmanParams

__all__ = ["OnlineKalmanFilter"]


class OnlineKalmanFilter:
    """A Kalman filter that keeps its state between samples.

    ``step(y_t)`` predicts from the current state, updates with the sample ``[N]``
    (NaN entries are skipped; an all-NaN sample only predicts) and returns the
    filtered mean ``[K]`` and covariance ``[K, K]``, orthogonalized when
    ``orthogonalize=True`` (see :func:`lds.orthogonalize`), in the parameters' dtype
    and device whatever the sample's. The first step predicts from the prior
    ``(m0, V0)``, as the batch filter does. ``reset()`` returns to the prior;
    ``set_params(params)`` takes effect from the next step (and, before the first step
    or when K changes, also replaces the prior). ``mean`` and ``covariance`` are copies
    of the current state and ``log_likelihood`` sums the steps so far. For
    multi-session parameters, ``session`` picks the observation model.
    """

    def __init__(self, params: KalmanParams, orthogonalize: bool = False, session=None):
        self.orthogonalize = bool(orthogonalize)
        self.session = session
        self._params = None
        self.set_params(params)

    @property
    def params(self) -> KalmanParams:
        return self._params

    def set_params(self, params: KalmanParams) -> None:
        """Use ``params`` from the next step on."""
        if not isinstance(params, KalmanParams):
            raise ValidationError(f"params must be lds.KalmanParams, got {type(params).__name__}")
        params.validate()
        if params.is_multi_session:
            if self.session is None:
                raise ValidationError(f"the parameters have sessions {params.dataset_names}; pass session=")
            params = params.session(self.session)
        else:
            params = params.clone()
        fresh = self._params is None or self.num_steps == 0 or params.num_states != self._params.num_states
        self._params = params
        self._model = session_models(params)[0]
        self._leave_steady_state()
        self._transform = orthogonalizing_transform(params) if self.orthogonalize else None
        if fresh:
            self.reset()

    def reset(self) -> None:
        """Go back to the prior ``(m0, V0)`` one step before the next sample."""
        self._mean, self._covariance = self._model.m0.clone(), self._model.V0.clone()
        self.num_steps = 0
        self._log_likelihood = torch.zeros((), dtype=torch.float64, device=self._params.device)
        self._steady_log_likelihood = 0.0
        self._leave_steady_state()

    @property
    def mean(self) -> torch.Tensor:
        """The filtered mean after the last step (the prior mean before the first), a copy."""
        return self._mean.clone()

    @property
    def covariance(self) -> torch.Tensor:
        """The filtered covariance after the last step (the prior's before the first), a copy."""
        return self._covariance.clone()

    @property
    def log_likelihood(self) -> torch.Tensor:
        """Log-likelihood of the samples so far (0-dim float64)."""
        return self._log_likelihood + self._steady_log_likelihood

    @property
    def at_steady_state(self) -> bool:
        """True once the covariance has converged: steps are then a few small matrix-vector products."""
        return self._steady is not None

    def step(self, y_t):
        """Filter one sample; returns ``(mean, covariance)`` after the update.

        The tensors returned are not the filter's state: changing them leaves the
        filter as it was. At the steady state (complete samples, unchanged parameters)
        the covariance and gain are constant and the step only updates the mean (in
        NumPy on the CPU, where its per-call cost is lowest); the covariance returned is
        then a copy of one constant matrix. A sample with NaN entries leaves the steady state.
        """
        if self._steady is not None:
            mean = self._steady_step(y_t)
            if mean is not None:
                self.num_steps += 1
                if self._transform is not None:
                    mean = self._transform @ mean
                covariance = self._steady["covariance"]
                return mean, torch.from_numpy(covariance.copy()) if self._steady["on_cpu"] else covariance.clone()
            self._leave_steady_state()  # a full step handles the sample (its mean is not in the steady buffer)
        y = self._as_sample(y_t)
        complete = not bool(torch.isnan(y).any())
        previous = self._covariance
        mean, cov = predict(self._model, self._mean, self._covariance)
        self._mean, self._covariance, term = update(self._model, mean, cov, y, f"step {self.num_steps}")
        if term is not None:
            self._log_likelihood = self._log_likelihood + term.to(torch.float64)
        self.num_steps += 1
        if not complete:
            self._leave_steady_state()
        elif self._convergence.update(self._covariance, previous):
            self._enter_steady_state()
        if self._transform is None:
            return self._mean.clone(), self._covariance.clone()
        M = self._transform
        return M @ self._mean, M @ self._covariance @ M.T

    def _leave_steady_state(self) -> None:
        """Fold the steady steps' log-likelihood into the total and go back to full steps."""
        if getattr(self, "_steady_log_likelihood", 0.0):
            self._log_likelihood = self._log_likelihood + self._steady_log_likelihood
        self._steady_log_likelihood = 0.0
        self._steady, self._convergence = None, Convergence(self._params.dtype)

    def _enter_steady_state(self) -> None:
        """Precompute the steady step as ONE matrix acting on ``[y; x; 1]`` (information form, see :mod:`lds.fast`).

        With ``P = L Lᵀ`` the steady filtered covariance, the innovation
        ``e = y - d - C (A x + b)`` and ``v = Lᵀ Cᵀ R⁻¹ e``: the new mean is
        ``A x + b + L v`` and ``eᵀ S⁻¹ e = |R^{-1/2} e|² - |v|²``; the matrix gives
        ``[R^{-1/2} e; v; new mean]`` at once.
        """
        m = self._model
        kernel = SessionKernel(m)
        N, K = m.C.shape
        factor = cholesky(self._covariance, "the steady filtered covariance")
        predicted = cholesky(m.Q + m.A @ self._covariance @ m.A.T, "the steady predicted covariance")
        log_det_S = kernel.log_det_R + 2.0 * (torch.log(torch.diagonal(predicted)).sum()
                                              - torch.log(torch.diagonal(factor)).sum())
        innovation = torch.cat([torch.eye(N, dtype=m.A.dtype, device=m.A.device), -m.C @ m.A,
                                -(m.d + m.C @ m.b)[:, None]], 1)  # e = innovation @ [y; x; 1]
        whiten = kernel.whitening_matrix()
        whitened = whiten[:, None] * innovation if whiten.dim() == 1 else whiten @ innovation
        v = factor.T @ kernel.W.T @ innovation
        propagate = torch.cat([torch.zeros(K, N, dtype=m.A.dtype, device=m.A.device), m.A, m.b[:, None]], 1)
        matrix = torch.cat([whitened, v, propagate + factor @ v])
        # the state [y; x; 1] lives in one buffer: y is copied (and cast) into it, the new x written back
        state = torch.cat([torch.zeros(N, dtype=m.A.dtype, device=m.A.device), self._mean, m.A.new_ones(1)])
        on_cpu = m.A.device.type == "cpu"
        if on_cpu:
            matrix, state = matrix.numpy(), state.numpy()
        self._mean = torch.from_numpy(state[N:N + K]) if on_cpu else state[N:N + K]
        M = self._transform
        covariance = self._covariance.clone() if M is None else M @ self._covariance @ M.T
        self._steady = dict(matrix=matrix, state=state, N=N, K=K, on_cpu=on_cpu,
                            constant=-0.5 * (N * math.log(2 * math.pi) + float(log_det_S)),
                            covariance=covariance.numpy() if on_cpu else covariance)  # copied for each step

    def _steady_step(self, y_t):
        """One steady-state step: the new mean, or None for a sample with NaN (a full step handles it)."""
        s = self._steady
        N, K, state = s["N"], s["K"], s["state"]
        if not s["on_cpu"]:
            y = self._as_sample(y_t)
        else:  # the usual [N] arrays directly; any other form as a full step would take it
            if torch.is_tensor(y_t):
                y = y_t.detach().numpy() if y_t.device.type == "cpu" else None
            else:
                y = np.asarray(y_t)
            if y is None or y.shape != (N,) or y.dtype.kind not in "iuf":
                y = self._as_sample(y_t).numpy()
        state[:N] = y  # cast to the parameters' dtype on the way
        out = s["matrix"] @ state
        w, v = out[:N], out[N:N + K]
        quadratic = float(w @ w - v @ v)
        if not math.isfinite(quadratic):  # NaN in the sample: a full step handles it
            return None
        self._steady_log_likelihood += s["constant"] - 0.5 * quadratic
        state[N:N + K] = out[N + K:]
        return torch.from_numpy(out[N + K:]) if s["on_cpu"] else out[N + K:]

    def _as_sample(self, y_t) -> torch.Tensor:
        p = self._params
        y = real_tensor(f"sample {self.num_steps}", y_t, p.dtype, p.device)
        if y.dim() == 2 and y.shape[0] == 1:
            y = y[0]
        if y.shape != (p.num_observations,):
            raise ShapeError(
                f"a sample should have shape [{p.num_observations}] (N observations) but has shape {tuple(y.shape)}"
            )
        if bool(torch.isinf(y).any()):
            raise ValidationError(f"sample {self.num_steps} has infinite values; only NaN marks missing data")
        return y

    def __repr__(self) -> str:
        p = self._params
        return (f"OnlineKalmanFilter(K = {p.num_states} states, N = {p.num_observations} observations, "
                f"{self.num_steps} steps, orthogonalize={self.orthogonalize})")
