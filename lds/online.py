"""Online (streaming) Kalman filtering, one sample at a time."""

from __future__ import annotations

import numpy as np
import torch

from .errors import ShapeError, ValidationError
from .kalman import predict, session_models, update
from .orthogonalize import orthogonalizing_transform
from .params import KalmanParams

__all__ = ["OnlineKalmanFilter"]


class OnlineKalmanFilter:
    """A Kalman filter that keeps its state between samples.

    ``step(y_t)`` predicts from the current state, updates with the sample ``[N]``
    (NaN entries are skipped; an all-NaN sample only predicts) and returns the
    filtered mean ``[K]`` and covariance ``[K, K]``, orthogonalized when
    ``orthogonalize=True`` (see :func:`lds.orthogonalize`). The first step predicts
    from the prior ``(m0, V0)``, as the batch filter does. ``reset()`` returns to the
    prior; ``set_params(params)`` takes effect from the next step (and, before the
    first step or when K changes, also replaces the prior). ``log_likelihood`` sums the
    steps so far. For multi-session parameters, ``session`` picks the observation model.
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
        self._transform = orthogonalizing_transform(params) if self.orthogonalize else None
        if fresh:
            self.reset()

    def reset(self) -> None:
        """Go back to the prior ``(m0, V0)`` one step before the next sample."""
        self.mean, self.covariance = self._model.m0.clone(), self._model.V0.clone()
        self.num_steps = 0
        self.log_likelihood = torch.zeros((), dtype=torch.float64, device=self._params.device)

    def step(self, y_t):
        """Filter one sample; returns ``(mean, covariance)`` after the update."""
        y = self._as_sample(y_t)
        mean, cov = predict(self._model, self.mean, self.covariance)
        self.mean, self.covariance, term = update(self._model, mean, cov, y, f"step {self.num_steps}")
        if term is not None:
            self.log_likelihood = self.log_likelihood + term.to(torch.float64)
        self.num_steps += 1
        if self._transform is None:
            return self.mean, self.covariance
        M = self._transform
        return M @ self.mean, M @ self.covariance @ M.T

    def _as_sample(self, y_t) -> torch.Tensor:
        p = self._params
        if torch.is_tensor(y_t):
            y = y_t.detach().to(dtype=p.dtype, device=p.device)
        else:
            y = torch.as_tensor(np.asarray(y_t, dtype=np.float64), dtype=p.dtype, device=p.device)
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
