"""Orthogonalization (against the NumPy oracle, sign convention, forms) and the online filter."""

import numpy as np
import pytest
import torch

import lds
import oracle_numpy as oracle
from lds_threads import one_thread  # noqa: F401  (autouse fixture)
from lds.errors import ShapeError, ValidationError


def data(K=3, N=6, T=40, seed=0, **kwargs):
    p = lds.random_stable_lds(K, N, seed=seed, **kwargs)
    return p, lds.sample_lds(p, T, seed=seed + 1).observations


def test_orthogonalize_matches_oracle_and_the_sign_convention():
    p, y = data()
    s = lds.kalman_smoother(p, y)
    means, covs = lds.orthogonalize(p, s.means, s.covariances)
    expected_means, expected_covs = oracle.orthogonalize(s.means.numpy(), s.covariances.numpy(), p.C.numpy())
    np.testing.assert_allclose(means.numpy(), expected_means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(covs.numpy(), expected_covs, rtol=1e-12, atol=1e-12)
    # x' are the coordinates of C x in the sign-fixed orthonormal basis U of C's columns
    U = np.linalg.svd(p.C.numpy(), full_matrices=False)[0]
    U *= np.sign(U[np.abs(U).argmax(0), np.arange(3)])
    np.testing.assert_allclose(means.numpy(), (s.means.numpy() @ p.C.numpy().T) @ U, atol=1e-12)
    # the convention does not depend on the SVD's own signs: flipping C's columns together
    # with the states (an equivalent model) gives the same orthogonalized latents
    flip = torch.diag(torch.tensor([-1.0, 1.0, -1.0], dtype=torch.float64))
    flipped = p.clone()
    flipped.C = p.C @ flip
    same, _ = lds.orthogonalize(flipped, s.means @ flip)
    assert torch.allclose(same, means, atol=1e-12)


def test_orthogonalize_accepts_results_batches_lists_and_sessions():
    p, y = data()
    single = lds.orthogonalize(p, lds.kalman_filter(p, y))
    f = lds.kalman_filter(p, y)
    assert torch.allclose(single[0], lds.orthogonalize(p, f.means, f.covariances)[0])
    vector, none = lds.orthogonalize(p, f.means[0])
    assert vector.shape == (3,) and none is None and torch.allclose(vector, single[0][0])
    batch = lds.kalman_smoother(p, torch.stack([y, y]))
    m, c = lds.orthogonalize(p, batch)
    smoothed = lds.orthogonalize(p, lds.kalman_smoother(p, y))
    assert m.shape == (2, 40, 3) and c.shape == (2, 40, 3, 3)
    assert torch.allclose(m[1], smoothed[0], atol=1e-12) and torch.allclose(c[0], smoothed[1], atol=1e-12)
    listed = lds.orthogonalize(p, [f.means, f.means[:5]], [f.covariances, f.covariances[:5]])
    assert len(listed[0]) == 2 and listed[1][1].shape == (5, 3, 3)
    assert lds.orthogonalize(p, f.means.numpy())[0].dtype == torch.float64
    assert lds.orthogonalize(p, f.means.float())[0].dtype == torch.float32

    multi = lds.random_stable_lds(2, [4, 5], seed=1)
    ys = {name: lds.sample_lds(multi, 10, session=name).observations for name in multi.dataset_names}
    out_means, out_covs = lds.orthogonalize(multi, lds.kalman_smoother(multi, ys))
    for name in multi.dataset_names:
        one = multi.session(name)
        expected = lds.orthogonalize(one, lds.kalman_smoother(one, ys[name]))[0]
        assert torch.allclose(out_means[name], expected)
    with pytest.raises(ValidationError, match="session="):
        lds.orthogonalize(multi, out_means["session_0"])


def assert_orthogonalized_like_the_oracle(results, means, covs, C):
    for r, m, c in zip(results, means, covs, strict=True):
        expected_means, expected_covs = oracle.orthogonalize(r.means.numpy(), r.covariances.numpy(), C.numpy())
        np.testing.assert_allclose(m.numpy(), expected_means, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c.numpy(), expected_covs, rtol=1e-12, atol=1e-12)


def test_orthogonalize_keeps_the_covariances_of_lists_of_results():
    p, y = data()
    for result in (lds.kalman_smoother(p, [y, y[:4]]), lds.kalman_filter(p, [y, y[:4]])):
        assert_orthogonalized_like_the_oracle(result, *lds.orthogonalize(p, result), p.C)
    multi = lds.random_stable_lds(2, [4, 5], seed=1)
    ys = {name: [lds.sample_lds(multi, T, session=name, seed=T).observations for T in (6, 9)]
          for name in multi.dataset_names}
    smoothed = lds.kalman_smoother(multi, ys)
    means, covs = lds.orthogonalize(multi, smoothed)
    for name in multi.dataset_names:
        assert [c.shape for c in covs[name]] == [(6, 2, 2), (9, 2, 2)]
        assert_orthogonalized_like_the_oracle(smoothed[name], means[name], covs[name], multi.C[name])


def test_orthogonalize_errors():
    p, y = data()
    f = lds.kalman_filter(p, y)
    with pytest.raises(ValidationError, match="N = 2 < K = 3"):
        lds.orthogonalize(lds.KalmanParams(num_states=3, num_observations=2), f.means)
    with pytest.raises(ShapeError, match=r"\[\.\.\., 3\]"):
        lds.orthogonalize(p, f.means[:, :2])
    with pytest.raises(ShapeError, match="covariances"):
        lds.orthogonalize(p, f.means, f.covariances[:3])


def test_online_filter_equals_the_batch_filter_with_missing_samples():
    p, y = data(offsets=True)
    y = y.clone()
    y[4] = float("nan")
    y[9, 1] = float("nan")
    batch = lds.kalman_filter(p, y)
    online = lds.OnlineKalmanFilter(p)
    for t in range(len(y)):
        mean, cov = online.step(y[t])
        assert torch.allclose(mean, batch.means[t], atol=1e-12)
        assert torch.allclose(cov, batch.covariances[t], atol=1e-12)
    assert float(online.log_likelihood) == pytest.approx(float(batch.log_likelihood), rel=1e-12)
    assert online.num_steps == len(y) and "40 steps" in repr(online)
    online.reset()
    again, _ = online.step(y[0].numpy())
    assert torch.allclose(again, batch.means[0]) and online.num_steps == 1


def test_online_missing_sample_only_predicts():
    p, y = data()
    online = lds.OnlineKalmanFilter(p)
    online.step(y[0])
    before_mean, before_cov = online.mean, online.covariance
    mean, cov = online.step(np.full(6, np.nan))
    assert torch.allclose(mean, p.A @ before_mean) and torch.allclose(cov, p.A @ before_cov @ p.A.T + p.Q)


def test_online_set_params_takes_effect_from_the_next_step():
    p, y = data()
    q = lds.random_stable_lds(3, 6, seed=7)
    online = lds.OnlineKalmanFilter(p)
    for t in range(10):
        online.step(y[t])
    state_mean, state_cov = online.mean.clone(), online.covariance.clone()
    online.set_params(q)
    assert torch.equal(online.mean, state_mean)  # the state is kept
    continued = torch.stack([online.step(y[t])[0] for t in range(10, 40)])
    # equivalent batch run: q's dynamics from the state reached under p
    handover = q.clone()
    handover.m0, handover.V0 = state_mean, state_cov
    assert torch.allclose(continued, lds.kalman_filter(handover, y[10:]).means, atol=1e-12)
    fresh = lds.OnlineKalmanFilter(p)
    fresh.set_params(q)  # before the first step, the new prior is used
    assert torch.allclose(fresh.step(y[0])[0], lds.kalman_filter(q, y[:1]).means[0])


def test_online_orthogonalized_output_sessions_and_errors():
    p, y = data()
    online = lds.OnlineKalmanFilter(p, orthogonalize=True)
    outputs = [online.step(y[t]) for t in range(5)]
    expected_means, expected_covs = lds.orthogonalize(p, lds.kalman_filter(p, y[:5]))
    assert torch.allclose(torch.stack([m for m, _ in outputs]), expected_means, atol=1e-12)
    assert torch.allclose(torch.stack([c for _, c in outputs]), expected_covs, atol=1e-12)
    multi = lds.random_stable_lds(3, [6, 4], seed=2)
    with pytest.raises(ValidationError, match="session="):
        lds.OnlineKalmanFilter(multi)
    on_b = lds.OnlineKalmanFilter(multi, session="session_1")
    assert on_b.step(np.zeros(4))[0].shape == (3,)
    with pytest.raises(ShapeError, match=r"\[6\]"):
        online.step(np.zeros(5))
    with pytest.raises(ValidationError, match="infinite"):
        online.step(np.full(6, np.inf))
    with pytest.raises(ValidationError, match="real numbers"):
        online.step(["a"] * 6)
    with pytest.raises(ValidationError, match="KalmanParams"):
        lds.OnlineKalmanFilter({"A": 1})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_orthogonalize_and_online_filter_on_cuda():
    p, y = data(T=80)
    y = y.clone()
    y[70, 1] = float("nan")  # at the steady state
    on_gpu = p.to("cuda")
    online = lds.OnlineKalmanFilter(on_gpu, orthogonalize=True)
    means, steady = [], []
    for t in range(80):
        means.append(online.step(y[t].cuda() if t % 2 else y[t].numpy())[0])
        steady.append(online.at_steady_state)
    means = torch.stack(means)
    assert means.is_cuda and steady[69]
    expected = lds.orthogonalize(p, lds.kalman_filter(p, y))[0]
    assert torch.allclose(means.cpu(), expected, atol=1e-10)
    assert lds.orthogonalize(on_gpu, expected.cuda())[0].is_cuda
    single = lds.OnlineKalmanFilter(on_gpu.to(dtype=torch.float32))
    assert all(single.step(y[t].cuda())[0].dtype == torch.float32 for t in range(80))


@pytest.mark.parametrize("orthogonalize", [False, True])
def test_online_float32_parameters_with_float64_samples(orthogonalize):
    """Float64 samples (torch and NumPy) are cast: float32 results, through the steady state and a NaN."""
    p, y = data(T=120, offsets=True)
    y = y.clone()
    y[100, 2] = float("nan")
    single = lds.OnlineKalmanFilter(p.to(dtype=torch.float32), orthogonalize=orthogonalize)
    double = lds.OnlineKalmanFilter(p, orthogonalize=orthogonalize)
    for t in range(len(y)):
        if t == 100:
            assert single.at_steady_state  # the NaN sample arrives at the steady state
        mean, cov = single.step(y[t].numpy() if t % 2 else y[t])
        expected_mean, expected_cov = double.step(y[t])
        assert mean.dtype == cov.dtype == torch.float32
        np.testing.assert_allclose(mean.numpy(), expected_mean.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(cov.numpy(), expected_cov.numpy(), rtol=1e-4, atol=1e-6)
    assert single.mean.dtype == single.covariance.dtype == torch.float32
    assert float(single.log_likelihood) == pytest.approx(float(double.log_likelihood), rel=1e-5)


def test_online_results_and_state_copies_do_not_change_the_filter():
    p, y = data(T=80)
    y = y.clone()
    y[70] = float("nan")  # a full step after the steady state, from the kept state
    online, untouched = lds.OnlineKalmanFilter(p), lds.OnlineKalmanFilter(p)
    for t in range(len(y)):
        if t == 70:
            assert online.at_steady_state
        mean, cov = online.step(y[t])
        expected_mean, expected_cov = untouched.step(y[t])
        assert torch.equal(mean, expected_mean) and torch.equal(cov, expected_cov)
        mean.add_(100.0)
        online.mean.add_(100.0)
        online.covariance.mul_(3.0)
        if not online.at_steady_state:  # the steady covariance is one constant tensor (see step)
            cov.mul_(3.0)
    assert torch.equal(online.mean, untouched.mean) and torch.equal(online.covariance, untouched.covariance)
    assert float(online.log_likelihood) == float(untouched.log_likelihood)
