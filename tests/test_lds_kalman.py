"""Kalman filter, RTS smoother and log-likelihood against the NumPy oracle; data forms; bad input."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import lds
import oracle_numpy as oracle
from lds_threads import one_thread  # noqa: F401  (autouse fixture)
from lds.errors import DatasetNameError, NotPositiveDefiniteError, ShapeError, ValidationError


def oracle_smooth(p, y):
    n = oracle.numpy_params(p)
    filt = oracle.kalman_filter(y, **n)
    smooth = oracle.rts_smoother(n["A"], filt, n["m0"], n["V0"])
    return filt, smooth, oracle.lag_one_covariances(n["A"], filt, smooth, n["V0"])


def with_missing(y, seed=0):
    y = np.array(y, dtype=float)
    rng = np.random.default_rng(seed)
    y[rng.random(y.shape) < 0.1] = np.nan  # scattered missing entries
    y[3] = np.nan  # a whole missing row
    y[-1, : y.shape[1] // 2] = np.nan  # a partly missing last row
    return y


@pytest.mark.parametrize("offsets", [(), ("b", "d"), ("b",), ("d",)], ids=["none", "both", "b", "d"])
@pytest.mark.parametrize("missing", [False, True])
def test_filter_and_smoother_match_oracle(offsets, missing):
    p = lds.random_stable_lds(3, 5, offsets=True, seed=2)
    for name in {"b", "d"} - set(offsets):  # either offset may be given alone
        setattr(p, name, None)
    y = lds.sample_lds(p, 60, seed=3).observations.numpy()
    if missing:
        y = with_missing(y)
    filt, smooth, lag = oracle_smooth(p, y)
    f = lds.kalman_filter(p, y)
    s = lds.kalman_smoother(p, y)
    close = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(f.predicted_means.numpy(), filt["pred_means"], **close)
    np.testing.assert_allclose(f.predicted_covariances.numpy(), filt["pred_covs"], **close)
    np.testing.assert_allclose(f.means.numpy(), filt["means"], **close)
    np.testing.assert_allclose(f.covariances.numpy(), filt["covs"], **close)
    np.testing.assert_allclose(s.means.numpy(), smooth["means"], **close)
    np.testing.assert_allclose(s.covariances.numpy(), smooth["covs"], **close)
    np.testing.assert_allclose(s.lag_one_covariances.numpy(), lag, **close)
    np.testing.assert_allclose(s.initial_mean.numpy(), smooth["m0"], **close)
    np.testing.assert_allclose(s.initial_covariance.numpy(), smooth["V0"], **close)
    for value in (f.log_likelihood, s.log_likelihood, lds.log_likelihood(p, y)):
        assert float(value) == pytest.approx(filt["log_like"], rel=1e-12)


def test_log_likelihood_is_the_gaussian_density_of_the_stacked_observations():
    """Independent of any recursion: y_0..y_{T-1} is jointly Gaussian; compare with scipy."""
    from scipy.stats import multivariate_normal

    p = lds.random_stable_lds(2, 3, offsets=True, seed=5)
    y = lds.sample_lds(p, 6, seed=1).observations.numpy()
    n = oracle.numpy_params(p)
    A, T = n["A"], 6
    power = lambda k: np.linalg.matrix_power(A, k)  # noqa: E731
    state_means, m = [], n["m0"]
    for _ in range(T):
        m = A @ m + n["b"]
        state_means.append(m)
    # x_t = A^(t+1) x_{-1} + sum_k A^(t-k) (b + w_k), so Cov(x_s, x_t) has a prior and a noise part
    blocks = [[None] * T for _ in range(T)]
    for s in range(T):
        for t in range(T):
            cov = power(s + 1) @ n["V0"] @ power(t + 1).T
            cov = cov + sum(power(s - k) @ n["Q"] @ power(t - k).T for k in range(min(s, t) + 1))
            blocks[s][t] = n["C"] @ cov @ n["C"].T + (n["R"] if s == t else 0)
    mean = np.concatenate([n["C"] @ m_t + n["d"] for m_t in state_means])
    joint = np.block(blocks)
    expected = multivariate_normal(mean, joint).logpdf(y.ravel())
    assert float(lds.log_likelihood(p, y)) == pytest.approx(expected, rel=1e-10)
    # missing entries are marginalized out of the joint Gaussian
    y[2, 1] = np.nan
    y[4] = np.nan
    keep = ~np.isnan(y.ravel())
    expected = multivariate_normal(mean[keep], joint[np.ix_(keep, keep)]).logpdf(y.ravel()[keep])
    assert float(lds.log_likelihood(p, y)) == pytest.approx(expected, rel=1e-10)


def test_prior_is_one_step_before_the_first_observation():
    p = lds.KalmanParams(transition_matrix=[[0.5]], measurement_function=[[1.0]], initial_mean=[4.0],
                         initial_covariance=[[1e-12]], process_noise_covariance=[1e-12],
                         measurement_noise_covariance=[1.0])
    f = lds.kalman_filter(p, np.full((1, 1), np.nan))
    assert f.predicted_means[0, 0].item() == pytest.approx(2.0)  # A m0, not m0
    assert float(f.log_likelihood) == 0.0  # nothing observed


def test_batch_list_and_dict_forms():
    p = lds.random_stable_lds(2, 4, seed=0)
    batch = lds.sample_lds(p, 20, num_trials=3, seed=1).observations
    single = [lds.kalman_smoother(p, batch[i]) for i in range(3)]
    stacked = lds.kalman_smoother(p, batch)
    assert stacked.means.shape == (3, 20, 2) and stacked.log_likelihood.shape == (3,)
    assert stacked.filtered.covariances.shape == (3, 20, 2, 2)
    for i in range(3):
        assert torch.allclose(stacked.means[i], single[i].means)
    trials = [batch[0], batch[1, :7]]
    as_list = lds.kalman_filter(p, trials)
    assert isinstance(as_list, list) and as_list[1].means.shape == (7, 2)
    total = lds.log_likelihood(p, trials)
    assert float(total) == pytest.approx(float(as_list[0].log_likelihood + as_list[1].log_likelihood))

    multi = lds.random_stable_lds(2, [3, 5], seed=1)
    data = {"session_1": lds.sample_lds(multi, 15, session=1).observations.numpy(),
            "session_0": [lds.sample_lds(multi, 9, session=0).observations]}
    out = lds.kalman_filter(multi, data)
    assert list(out) == ["session_1", "session_0"] and isinstance(out["session_0"], list)
    alone = lds.kalman_filter(multi.session("session_1"), data["session_1"])
    assert torch.allclose(out["session_1"].means, alone.means)
    assert float(lds.log_likelihood(multi, data)) == pytest.approx(
        float(out["session_1"].log_likelihood + out["session_0"][0].log_likelihood))


def test_results_follow_the_input_dtype_and_print_a_summary():
    p = lds.random_stable_lds(2, 3, seed=0)
    y = lds.sample_lds(p, 10, seed=0).observations
    f32 = lds.kalman_filter(p, y.float())
    assert f32.means.dtype == torch.float32 and f32.log_likelihood.dtype == torch.float64
    assert float(f32.log_likelihood) == pytest.approx(float(lds.log_likelihood(p, y)), rel=1e-4)
    assert lds.kalman_filter(p, y.numpy().astype(np.float32)).means.dtype == torch.float64
    text = repr(lds.kalman_smoother(p, y))
    assert "SmootherResult with properties" in text and "[10x2x2 float64]" in text
    with pytest.raises(ValidationError, match="method"):
        lds.kalman_filter(p, y, method="magic")
    assert torch.allclose(lds.kalman_filter(p, y, method="plain").means, lds.kalman_filter(p, y).means,
                          rtol=1e-10, atol=1e-12)  # "auto" is the fast path, equal up to round-off


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    p = lds.random_stable_lds(2, 3, seed=0)
    y = lds.sample_lds(p, 30, seed=0).observations
    gpu = lds.kalman_smoother(p, y.cuda())
    assert gpu.means.is_cuda
    assert torch.allclose(gpu.means.cpu(), lds.kalman_smoother(p, y).means)


def test_bad_input_gets_clear_errors():
    p = lds.random_stable_lds(2, 3, seed=0)
    y = lds.sample_lds(p, 10, seed=0).observations.numpy()
    with pytest.raises(ShapeError, match=r"N = 3 .*\(10, 4\)"):
        lds.kalman_filter(p, np.zeros((10, 4)))
    with pytest.raises(ShapeError, match=r"\[T, N\]"):
        lds.kalman_filter(p, np.zeros(10))
    with pytest.raises(ShapeError, match=r"y has no time steps \(shape \(0, 3\)\)"):
        lds.kalman_filter(p, np.zeros((0, 3)))
    with pytest.raises(ShapeError, match=r"empty batch \(shape \(0, 4, 3\)\)"):
        lds.kalman_filter(p, np.zeros((0, 4, 3)))
    with pytest.raises(ShapeError, match=r"y\[0\] has no time steps"):
        lds.kalman_smoother(p, torch.zeros(2, 0, 3))
    with pytest.raises(ShapeError, match=r"y\[1\] has no time steps"):
        lds.log_likelihood(p, [y, np.zeros((0, 3))])
    with pytest.raises(ShapeError, match="empty batch"):
        lds.fit_em(np.zeros((0, 4, 3)), num_states=2, progress=False)
    bad = y.copy()
    bad[4, 1] = np.inf
    with pytest.raises(ValidationError, match="infinite values.*time 4, observation 1"):
        lds.kalman_filter(p, bad)
    with pytest.raises(ValidationError, match=r"y\[1\] has infinite"):
        lds.log_likelihood(p, [y, bad])
    with pytest.raises(ValidationError, match="real numbers"):
        lds.kalman_filter(p, np.array([["a", "b", "c"]]))
    with pytest.raises(ValidationError, match="dict"):
        lds.kalman_filter(lds.random_stable_lds(2, [3, 3], seed=0), y)
    with pytest.raises(DatasetNameError, match="nope"):
        lds.kalman_filter(lds.random_stable_lds(2, [3, 3], seed=0), {"nope": y})
    with pytest.raises(ValidationError, match="single session"):
        lds.kalman_filter(p, {"a": y})
    broken = p.clone()
    broken.R = -torch.eye(3)
    with pytest.raises(NotPositiveDefiniteError, match="measurement_noise_covariance"):
        lds.kalman_smoother(broken, y)


@settings(max_examples=15, deadline=None)
@given(K=st.integers(1, 3), N=st.integers(1, 4), T=st.integers(1, 12), seed=st.integers(0, 10_000),
       missing=st.floats(0.0, 0.6))
def test_any_small_system_and_missing_pattern_matches_oracle(K, N, T, seed, missing):
    p = lds.random_stable_lds(K, N, offsets=True, seed=seed)
    y = lds.sample_lds(p, T, seed=seed).observations.numpy()
    y[np.random.default_rng(seed).random(y.shape) < missing] = np.nan
    filt, smooth, lag = oracle_smooth(p, y)
    s = lds.kalman_smoother(p, y)
    np.testing.assert_allclose(s.means.numpy(), smooth["means"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(s.covariances.numpy(), smooth["covs"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(s.lag_one_covariances.numpy(), lag, rtol=1e-9, atol=1e-10)
    assert float(s.log_likelihood) == pytest.approx(filt["log_like"], rel=1e-10, abs=1e-10)
