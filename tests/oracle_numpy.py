"""Independent NumPy oracle of the reference LDS algorithms (plain per-time-step loops).

Written from the equations of the reference notes (shared/reference/bonsai-lds.md,
sections 2, 3 and 5), in the lds_python style: observations ``y [T, N]``, explicit
matrix inverses, the Shumway-Stoffer lag-one covariance recursion (Property 6.3) and
the reference's EM sums. It shares no code with the ``lds`` package.

Also what tests and benchmarks share to feed it: :func:`numpy_params` (a parameter set as
the oracle's arrays) and :func:`sqrt_counts` (the seeded spike-count-like data).
"""

import numpy as np
import scipy.linalg

LOG_2PI = np.log(2 * np.pi)


PARAM_NAMES = ("A", "Q", "C", "R", "m0", "V0", "b", "d")  # the oracle's parameter arguments, in their order


def numpy_params(p):
    """The oracle's input from a parameter set (``lds.KalmanParams``, tensors on any device):
    a dict of NumPy arrays keyed and ordered as :data:`PARAM_NAMES`, ``None`` for an absent
    offset. ``kalman_filter(y, **numpy_params(p))`` filters with ``p``; its values unpack as
    ``A, Q, C, R, m0, V0, b, d``."""
    return {name: None if getattr(p, name) is None else getattr(p, name).cpu().numpy() for name in PARAM_NAMES}


def sqrt_counts(T, N, seed, trials=None):
    """Spike-count-like data ``[T, N]`` (or ``[trials, T, N]``), transformed as the reference
    does: sqrt(count + 0.5) of Poisson counts driven by a slow 3-D latent (a seeded
    ``default_rng``; the same numbers for the same arguments)."""
    rng = np.random.default_rng(seed)
    shape = (T, 3) if trials is None else (trials, T, 3)
    latent = np.cumsum(rng.normal(size=shape) * 0.1, axis=-2)
    rates = np.exp(0.5 + 0.3 * latent @ rng.normal(size=(3, N)) / np.sqrt(3))
    return np.sqrt(rng.poisson(rates) + 0.5)


def _sym(M):
    return (M + M.T) / 2


def _offsets(b, d, K, N):
    return (np.zeros(K) if b is None else np.asarray(b, float)), (np.zeros(N) if d is None else np.asarray(d, float))


def kalman_filter(y, A, Q, C, R, m0, V0, b=None, d=None):
    """Filter with NaN entries skipped; returns a dict of arrays and the log-likelihood."""
    T, N = y.shape
    K = A.shape[0]
    b, d = _offsets(b, d, K, N)
    out = dict(pred_means=np.zeros((T, K)), pred_covs=np.zeros((T, K, K)), means=np.zeros((T, K)),
               covs=np.zeros((T, K, K)), KC=np.zeros((T, K, K)), log_like=0.0)
    x, P = np.array(m0, float), np.array(V0, float)
    for t in range(T):
        x = A @ x + b
        P = A @ P @ A.T + Q
        out["pred_means"][t], out["pred_covs"][t] = x, P
        obs = ~np.isnan(y[t])
        if obs.any():
            Co, Ro, do = C[obs], R[np.ix_(obs, obs)], d[obs]
            S = _sym(Co @ P @ Co.T + Ro)
            lu = scipy.linalg.lu_factor(S)  # one LU for the gain, the quadratic form and log|S|
            gain = scipy.linalg.lu_solve(lu, Co @ P).T  # P Coᵀ S⁻¹ (S and P symmetric)
            innov = y[t, obs] - Co @ x - do
            x = x + gain @ innov
            out["KC"][t] = gain @ Co
            P = P - gain @ Co @ P
            logdet = np.sum(np.log(np.abs(np.diag(lu[0]))))
            out["log_like"] += -0.5 * (obs.sum() * LOG_2PI + logdet + innov @ scipy.linalg.lu_solve(lu, innov))
        out["means"][t], out["covs"][t] = x, P
    return out


def rts_smoother(A, filt, m0, V0):
    """RTS smoother; smoothed means, covariances, gains, and the smoothed prior state."""
    means, covs = filt["means"].copy(), filt["covs"].copy()
    T, K = means.shape
    J = np.zeros((T, K, K))
    for t in range(T - 2, -1, -1):
        J[t] = filt["covs"][t] @ A.T @ np.linalg.inv(filt["pred_covs"][t + 1])
        means[t] = filt["means"][t] + J[t] @ (means[t + 1] - filt["pred_means"][t + 1])
        covs[t] = filt["covs"][t] + J[t] @ (covs[t + 1] - filt["pred_covs"][t + 1]) @ J[t].T
    J0 = V0 @ A.T @ np.linalg.inv(filt["pred_covs"][0])
    m0_s = m0 + J0 @ (means[0] - filt["pred_means"][0])
    V0_s = V0 + J0 @ (covs[0] - filt["pred_covs"][0]) @ J0.T
    return dict(means=means, covs=covs, J=J, J0=J0, m0=m0_s, V0=V0_s)


def lag_one_covariances(A, filt, smooth, V0):
    """``L[t] = Cov(x_t, x_{t-1} | y)`` by the Shumway-Stoffer recursion; L[0] pairs x_0 with x_{-1}.

    Uses ``P_{-1|-1} = V0`` and ``J_{-1} = J0`` (the smoother gain of the prior state).
    """
    T, K = smooth["means"].shape
    filtered_cov = lambda t: V0 if t < 0 else filt["covs"][t]  # noqa: E731
    gain = lambda t: smooth["J0"] if t < 0 else smooth["J"][t]  # noqa: E731
    L = np.zeros((T, K, K))
    L[T - 1] = (np.eye(K) - filt["KC"][T - 1]) @ A @ filtered_cov(T - 2)
    for t in range(T - 2, -1, -1):
        L[t] = filtered_cov(t) @ gain(t - 1).T + gain(t) @ (L[t + 1] - A @ filtered_cov(t)) @ gain(t - 1).T
    return L


def em_step(y, A, Q, C, R, m0, V0, b=None, d=None, estimate_offsets=False):
    """One EM iteration in the reference form (complete data, one trial).

    Without offsets: the C#/lds_python M-step. With ``estimate_offsets`` (all eight
    parameters estimated): the reference's offset M-step with its two bugs corrected.
    With offsets given (``None`` counts as zero) but not estimated: the offsets stay
    fixed and A, Q, C, R maximize the expected log-likelihood given them (per-step sums).
    Returns the new parameters and the log-likelihood before the update.
    """
    T, N = y.shape
    filt = kalman_filter(y, A, Q, C, R, m0, V0, b, d)
    sm = rts_smoother(A, filt, m0, V0)
    L = lag_one_covariances(A, filt, sm, V0)
    X, P = sm["means"], sm["covs"]
    X_prev = np.vstack([sm["m0"][None], X[:-1]])
    P_prev = np.concatenate([sm["V0"][None], P[:-1]])
    Sxx11 = sum(P[t] + np.outer(X[t], X[t]) for t in range(T))
    Sxx00 = sum(P_prev[t] + np.outer(X_prev[t], X_prev[t]) for t in range(T))
    Sxx10 = sum(L[t] + np.outer(X[t], X_prev[t]) for t in range(T))
    new = dict(m0=sm["m0"], V0=sm["V0"])
    if not estimate_offsets and (b is not None or d is not None):
        b, d = _offsets(b, d, A.shape[0], N)
        An = sum(L[t] + np.outer(X[t] - b, X_prev[t]) for t in range(T)) @ np.linalg.inv(Sxx00)
        Cn = sum(np.outer(y[t] - d, X[t]) for t in range(T)) @ np.linalg.inv(Sxx11)
        Qn = sum(np.outer(X[t] - An @ X_prev[t] - b, X[t] - An @ X_prev[t] - b) + P[t] - An @ L[t].T - L[t] @ An.T
                 + An @ P_prev[t] @ An.T for t in range(T)) / T
        Rn = sum(np.outer(y[t] - Cn @ X[t] - d, y[t] - Cn @ X[t] - d) + Cn @ P[t] @ Cn.T for t in range(T)) / T
        new.update(A=An, C=Cn, Q=_sym(Qn), R=_sym(Rn))
        return new, filt["log_like"]
    if not estimate_offsets:
        YX = y.T @ X
        new["A"] = Sxx10 @ np.linalg.inv(Sxx00)
        new["C"] = YX @ np.linalg.inv(Sxx11)
        new["Q"] = _sym((Sxx11 - new["A"] @ Sxx10.T) / T)
        Cn = new["C"]
        new["R"] = _sym((y.T @ y - Cn @ YX.T - YX @ Cn.T + Cn @ Sxx11 @ Cn.T) / T)
        return new, filt["log_like"]
    Tx1 = X.sum(0)
    Tx0 = sm["m0"] + X[:-1].sum(0)
    Ty1 = y.sum(0)
    Tyx11 = y.T @ X
    Tyy11 = y.T @ y
    An = (Sxx10 - np.outer(Tx1, Tx0) / T) @ np.linalg.inv(Sxx00 - np.outer(Tx0, Tx0) / T)
    bn = (Tx1 - An @ Tx0) / T
    Cn = (Tyx11 - np.outer(Ty1, Tx1) / T) @ np.linalg.inv(Sxx11 - np.outer(Tx1, Tx1) / T)
    dn = (Ty1 - Cn @ Tx1) / T
    Qn = (Sxx11 - np.outer(Tx1, bn) - np.outer(bn, Tx1) + T * np.outer(bn, bn) - An @ Sxx10.T - Sxx10 @ An.T
          + An @ Sxx00 @ An.T + An @ np.outer(Tx0, bn) + np.outer(bn, Tx0) @ An.T) / T
    Rn = (Tyy11 - np.outer(Ty1, dn) - np.outer(dn, Ty1) + T * np.outer(dn, dn) - Cn @ Tyx11.T - Tyx11 @ Cn.T
          + Cn @ np.outer(Tx1, dn) + Cn @ Sxx11 @ Cn.T + np.outer(dn, Tx1) @ Cn.T) / T
    new.update(A=An, b=bn, C=Cn, d=dn, Q=_sym(Qn), R=_sym(Rn))
    return new, filt["log_like"]


def orthogonalize(means, covs, C):
    """``x' = S Vᵀ x`` with each left singular vector's largest-magnitude entry made positive."""
    U, S, Vt = np.linalg.svd(C, full_matrices=False)
    for i in range(U.shape[1]):
        if U[np.argmax(np.abs(U[:, i])), i] < 0:
            U[:, i], Vt[i] = -U[:, i], -Vt[i]
    M = np.diag(S) @ Vt
    return np.einsum("ij,tj->ti", M, means), np.einsum("ij,tjk,lk->til", M, covs, M)


def subspace_identification(y, K, max_lag, future_is_past=False):
    """The reference SSI core (section 4.2, steps 1-6) with explicit Hankel matrices.

    Returns ``A``, ``C`` and all singular values of the projection. ``future_is_past``
    reproduces the C# bug (the future block equal to the past block).
    """
    T, N = y.shape
    L = max_lag
    Yc = y - y.mean(0)
    j = T - 2 * L + 1
    past = np.vstack([Yc[i:i + j].T for i in range(L)])
    future = past if future_is_past else np.vstack([Yc[L + i:L + i + j].T for i in range(L)])
    O = future @ past.T @ np.linalg.inv(past @ past.T) @ past
    U, S, Vt = np.linalg.svd(O, full_matrices=False)
    C = U[:N, :K] * np.sqrt(S[:K])
    X = np.sqrt(S[:K])[:, None] * Vt[:K]
    A = (X[:, 1:] @ X[:, :-1].T) @ np.linalg.inv(X[:, :-1] @ X[:, :-1].T)
    return A, C, S
