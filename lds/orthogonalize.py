"""Orthogonalized latent coordinates (GPFA-style), as Bonsai.ML.Lds.Torch defines them.

With the SVD ``C = U S Vᵀ`` of the measurement function, ``C x = U (S Vᵀ x)``: the
coordinates ``x' = S Vᵀ x`` express the predicted observations in the orthonormal
basis ``U`` of C's column space, ordered by singular value. Means become
``M x`` and covariances ``M P Mᵀ`` with ``M = S Vᵀ`` (``K x K``; needs ``N >= K``).

Sign convention (the SVD fixes each pair ``(u_i, v_i)`` only up to sign): every left
singular vector ``u_i`` is flipped so that its entry of largest magnitude (the first
one, on a tie) is positive, i.e. latent ``i`` grows with the observation that loads
most on it. The result is therefore the same whatever the LAPACK used.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from .errors import ShapeError, ValidationError
from .kalman import FilterResult, SmootherResult
from .params import KalmanParams

__all__ = ["orthogonalize", "orthogonalizing_transform"]


def orthogonalizing_transform(params: KalmanParams, session=None, *, dtype=None, device=None) -> torch.Tensor:
    """The ``K x K`` matrix ``M = S Vᵀ`` (sign convention above) of one session's C."""
    C = _measurement_function(params, session)
    N, K = C.shape
    if N < K:
        raise ValidationError(
            f"orthogonalize needs at least as many observations as states, but the measurement "
            f"function is {N} x {K} (N = {N} < K = {K})"
        )
    C = C.to(dtype=dtype or C.dtype, device=device or C.device)
    U, S, Vh = torch.linalg.svd(C, full_matrices=False)
    peak = U.abs().argmax(dim=0)
    signs = torch.sign(U[peak, torch.arange(K, device=C.device)])
    signs[signs == 0] = 1
    return (S * signs)[:, None] * Vh


def orthogonalize(params: KalmanParams, means, covariances=None, *, session=None):
    """Means ``[..., K]`` and covariances ``[..., K, K]`` in orthogonalized coordinates.

    Accepts single arrays (``[K]``, ``[T, K]``, ``[B, T, K]``...), lists of them, a
    :class:`~lds.kalman.FilterResult` or :class:`~lds.kalman.SmootherResult` (or a list or
    session dict of those) in place of ``means`` (its means and covariances are
    used), and for multi-session parameters a dict keyed by session name. Returns
    ``(means, covariances)`` in the same structure (``covariances`` None when neither
    given nor part of the results).
    Torch input keeps its dtype and device; NumPy input gives tensors in the
    parameters' dtype and device.
    """
    if isinstance(means, (FilterResult, SmootherResult)):
        if covariances is not None:
            raise ValidationError("give either a filter/smoother result or means and covariances, not both")
        return _transform(params, means.means, means.covariances, session)
    if isinstance(means, Mapping):
        pairs = {name: orthogonalize(params, value, None if covariances is None else covariances[name],
                                     session=name) for name, value in means.items()}
        covs = {n: p[1] for n, p in pairs.items()}
        return {n: p[0] for n, p in pairs.items()}, None if _all_none(covs.values()) else covs
    if isinstance(means, (list, tuple)):
        if covariances is not None and len(covariances) != len(means):
            raise ShapeError(f"got {len(means)} mean arrays but {len(covariances)} covariance arrays")
        pairs = [orthogonalize(params, m, None if covariances is None else covariances[i], session=session)
                 for i, m in enumerate(means)]
        covs = [p[1] for p in pairs]
        return [p[0] for p in pairs], None if _all_none(covs) else covs
    return _transform(params, means, covariances, session)


def _all_none(covariances) -> bool:
    """True when no covariances came back (none given, nor any filter/smoother result)."""
    return all(c is None for c in covariances)


def _transform(params, means, covariances, session):
    means = _as_tensor(means, params)
    K = params.num_states
    if means.shape[-1:] != (K,):
        raise ShapeError(f"means should have shape [..., {K}] (K = {K} states) but has shape {tuple(means.shape)}")
    M = orthogonalizing_transform(params, session, dtype=means.dtype, device=means.device)
    new_means = means @ M.T
    if covariances is None:
        return new_means, None
    covariances = _as_tensor(covariances, params)
    if covariances.shape[-2:] != (K, K) or covariances.shape[:-2] != means.shape[:-1]:
        raise ShapeError(
            f"covariances should have shape {tuple(means.shape[:-1]) + (K, K)} to match means "
            f"{tuple(means.shape)} but have shape {tuple(covariances.shape)}"
        )
    return new_means, M @ covariances.to(M.dtype) @ M.T


def _as_tensor(value, params):
    if torch.is_tensor(value):
        return value if value.is_floating_point() else value.to(params.dtype)
    return torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=params.dtype, device=params.device)


def _measurement_function(params: KalmanParams, session) -> torch.Tensor:
    if not params.is_multi_session:
        if session not in (None, 0, -1):
            raise ValidationError(f"these parameters have a single session; got session={session!r}")
        return params.measurement_function
    if session is None:
        raise ValidationError(
            f"the parameters have sessions {params.dataset_names}; say which C to use with session="
        )
    return params.measurement_function[session]
