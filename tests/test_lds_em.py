"""EM: one step against the NumPy oracle (incl. the flagship shape), monotonicity, recovery, API."""

import warnings

import numpy as np
import pytest
import torch

import lds
import oracle_numpy as oracle
from lds_threads import one_thread  # noqa: F401  (autouse fixture)
from lds.errors import LikelihoodDecreaseWarning, NotPositiveDefiniteError, UnknownParameterError, ValidationError

ALL = ["A", "b", "C", "d", "Q", "R", "m0", "V0"]


def relative_error(actual, expected):
    return float(np.abs(np.asarray(actual) - expected).max() / np.abs(expected).max())


def start_with_offsets(K, N, seed, **offsets):
    """``lds.reference_start`` (the reference test's start: seeded normal draws with sd 0.1,
    diagonal positive noise) with the given offsets set."""
    params = lds.reference_start(K, N, seed=seed)
    for name, value in offsets.items():
        setattr(params, name, value)
    return params


@pytest.mark.parametrize("offsets, estimated", [((), False), (("b", "d"), True), (("b",), True), (("d",), True),
                                                (("b", "d"), False), (("b",), False), (("d",), False)],
                         ids=["none", "both", "b", "d", "both-fixed", "b-fixed", "d-fixed"])
def test_one_em_step_matches_oracle(offsets, estimated):
    """Without offsets, with both or either alone (a missing one is zero), estimated or kept fixed."""
    truth = lds.random_stable_lds(3, 6, offsets=True, seed=4)
    y = lds.sample_lds(truth, 150, seed=5).observations.numpy()
    given = dict(b=("state_offset", 0.1 * np.random.default_rng(3).normal(size=3)),
                 d=("observation_offset", y.mean(0)))
    extra = dict(given[name] for name in offsets)
    params = start_with_offsets(3, 6, seed=1, **extra)
    start = oracle.numpy_params(params)
    expected, ll = oracle.em_step(y, start["A"], start["Q"], start["C"], start["R"], start["m0"], start["V0"],
                                  extra.get("state_offset"), extra.get("observation_offset"),
                                  estimate_offsets=estimated)
    result = lds.fit_em(y, params, max_iter=1, estimate=ALL if estimated else None, progress=False)
    assert result.log_likelihoods.shape == (1,) and result.num_iterations == 1 and not result.converged
    assert float(result.log_likelihoods[0]) == pytest.approx(ll, rel=1e-9)
    for name, value in expected.items():
        assert relative_error(getattr(result.params, name).numpy(), value) < 1e-9, name
    if not estimated:  # fixed offsets are kept as they are, absent ones stay absent
        for name in ("b", "d"):
            kept = getattr(result.params, name)
            assert kept is None if name not in offsets else np.array_equal(kept.numpy(), given[name][1])


def test_flagship_shape_one_em_step_and_orthogonalized_smoothing_match_oracle():
    """K=10, N=142, T=1000 from the reference test's initialization: parameters, LL, latents."""
    K, N, T = 10, 142, 1000
    y = oracle.sqrt_counts(T, N, seed=7)  # the benchmarks' flagship data (benchmarks/common.py)
    params = lds.reference_start(K, N, seed=0)
    start = oracle.numpy_params(params)
    expected, ll = oracle.em_step(y, start["A"], start["Q"], start["C"], start["R"], start["m0"], start["V0"])
    result = lds.fit_em(torch.from_numpy(y), params, num_states=K, max_iter=1, progress=False)
    assert float(result.log_likelihoods[0]) == pytest.approx(ll, rel=1e-9)
    for name, value in expected.items():
        assert relative_error(getattr(result.params, name).numpy(), value) < 1e-9, name

    filt = oracle.kalman_filter(y, expected["A"], expected["Q"], expected["C"], expected["R"], expected["m0"],
                                expected["V0"])
    smooth = oracle.rts_smoother(expected["A"], filt, expected["m0"], expected["V0"])
    oracle_means, oracle_covs = oracle.orthogonalize(smooth["means"], smooth["covs"], expected["C"])
    means, covs = lds.orthogonalize(result.params, lds.kalman_smoother(result.params, y))
    assert means.shape == (T, K) and covs.shape == (T, K, K)
    np.testing.assert_allclose(means.numpy(), oracle_means, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(covs.numpy(), oracle_covs, rtol=1e-5, atol=1e-8)


def _missing(y, rng):
    y = np.array(y)
    y[rng.random(y.shape) < 0.15] = np.nan
    y[..., 5, :] = np.nan
    return y


CASES = {
    "plain": dict(offsets=False, multi=False, missing=False),
    "offsets": dict(offsets=True, multi=False, missing=False),
    "multi-session": dict(offsets=True, multi=True, missing=False),
    "missing": dict(offsets=False, multi=False, missing=True),
    "offsets-missing": dict(offsets=True, multi=False, missing=True),
    "multi-session-missing": dict(offsets=False, multi=True, missing=True),
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", list(CASES))
def test_em_never_decreases_the_log_likelihood(case, seed):
    cfg = CASES[case]
    K, rng = 2, np.random.default_rng(seed)
    Ns = [3, 4] if cfg["multi"] else 4
    truth = lds.random_stable_lds(K, Ns, offsets=cfg["offsets"], seed=seed)
    start = lds.random_stable_lds(K, Ns, offsets=cfg["offsets"], seed=seed + 50, spectral_radius=0.5)
    if cfg["multi"]:
        y = {name: lds.sample_lds(truth, 12, num_trials=2, session=name, seed=seed + i).observations.numpy()
             for i, name in enumerate(truth.dataset_names)}
        if cfg["missing"]:
            y = {name: _missing(v, rng) for name, v in y.items()}
    else:
        y = lds.sample_lds(truth, 30, seed=seed).observations.numpy()
        if cfg["missing"]:
            y = _missing(y, rng)
    estimate = ALL if cfg["offsets"] else None
    with warnings.catch_warnings():
        warnings.simplefilter("error", LikelihoodDecreaseWarning)
        result = lds.fit_em(y, start, max_iter=50, tol=0.0, estimate=estimate, progress=False)
    history = result.log_likelihoods.numpy()
    assert len(history) >= 30  # EM kept improving (tol=0 stops only once the likelihood stops increasing)
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[:-1]))
    assert history[-1] > history[0] + 1.0


def test_em_recovers_a_known_system():
    A = np.array([[0.9, 0.2], [-0.2, 0.9]]) @ np.diag([1.0, 0.8])
    C = np.random.default_rng(0).normal(size=(8, 2))
    truth = lds.KalmanParams(transition_matrix=A, measurement_function=C, process_noise_covariance=[0.1],
                             measurement_noise_covariance=[0.01])
    y = lds.sample_lds(truth, 500, num_trials=2, seed=1).observations
    result = lds.fit_em(y, num_states=2, max_iter=6, progress=False)
    history = result.log_likelihoods.numpy()
    assert np.all(np.diff(history) > -1e-9 * abs(history[0]))
    true_eig = np.sort_complex(np.linalg.eigvals(A))
    est_eig = np.sort_complex(np.linalg.eigvals(result.params.A.numpy()))
    np.testing.assert_allclose(est_eig, true_eig, atol=0.03)
    # the column space of C, compared through its orthogonal projector
    proj = lambda M: M @ np.linalg.pinv(M)  # noqa: E731
    assert np.linalg.norm(proj(result.params.C.numpy()) - proj(C), 2) < 0.03
    np.testing.assert_allclose(np.diag(result.params.R.numpy()), 0.01, rtol=0.5)


def test_max_iter_one_gives_one_entry_and_the_once_updated_parameters():
    truth = lds.random_stable_lds(2, 3, seed=0)
    y = lds.sample_lds(truth, 30, seed=0).observations
    start = lds.random_stable_lds(2, 3, seed=9)
    result = lds.fit_em(y, start, max_iter=1, progress=False)
    stats = lds.expected_statistics(start, y)
    assert torch.equal(result.log_likelihoods, stats.log_likelihood.reshape(1))
    assert result.params.allclose(lds.m_step(start, stats), rtol=1e-12, atol=0)
    assert start == lds.random_stable_lds(2, 3, seed=9)  # the starting point is not modified


def test_convergence_is_relative_and_returns_the_parameters_of_the_last_entry():
    truth = lds.random_stable_lds(2, 3, seed=0)
    y = lds.sample_lds(truth, 40, seed=0).observations
    result = lds.fit_em(y, lds.random_stable_lds(2, 3, seed=3), max_iter=200, tol=1e-4, progress=False)
    history = result.log_likelihoods.numpy()
    assert result.converged and result.termination == "converged"
    assert result.num_iterations == len(history) - 1
    assert (history[-1] - history[-2]) / abs(history[-2]) < 1e-4
    assert np.all((np.diff(history[:-1]) / np.abs(history[:-2])) >= 1e-4)
    assert float(lds.log_likelihood(result.params, y)) == pytest.approx(history[-1], rel=1e-12)


def test_a_decrease_warns_stops_and_keeps_the_best_parameters(monkeypatch):
    truth = lds.random_stable_lds(2, 3, seed=0)
    y = lds.sample_lds(truth, 30, seed=0).observations
    real_m_step = lds.em.m_step
    calls = []

    def sabotaged(params, stats, estimate):
        calls.append(params)
        new = real_m_step(params, stats, estimate)
        if len(calls) == 3:
            new.R = new.R * 50.0
        return new

    monkeypatch.setattr(lds.em, "m_step", sabotaged)
    with pytest.warns(LikelihoodDecreaseWarning, match="iteration 3"):
        result = lds.fit_em(y, lds.random_stable_lds(2, 3, seed=3), max_iter=20, progress=False)
    assert not result.converged and result.termination == "likelihood_decreased"
    assert len(result.log_likelihoods) == 4 and result.num_iterations == 2
    assert result.params is calls[2]  # the parameters at the start of iteration 2, the best seen


def test_a_decrease_at_the_first_update_returns_a_copy_of_the_start(monkeypatch):
    truth = lds.random_stable_lds(2, 3, seed=0)
    y = lds.sample_lds(truth, 30, seed=0).observations
    start = lds.random_stable_lds(2, 3, seed=3)
    kept = start.clone()
    real_m_step = lds.em.m_step

    def sabotaged(params, stats, estimate):
        new = real_m_step(params, stats, estimate)
        new.R = new.R * 50.0
        return new

    monkeypatch.setattr(lds.em, "m_step", sabotaged)
    library = {"__name__": "lds.some_wrapper", "fit_em": lds.fit_em}  # as if lds itself called fit_em
    exec("def fit_for_the_user(*args, **kwargs):\n    return fit_em(*args, **kwargs)", library)
    with pytest.warns(LikelihoodDecreaseWarning, match="iteration 1") as record:
        result = library["fit_for_the_user"](y, start, max_iter=5, progress=False)
    assert record[0].filename == __file__  # the warning names the caller outside the library
    assert result.termination == "likelihood_decreased" and result.num_iterations == 0
    assert result.params is not start and result.params == kept
    result.params.A.zero_()
    assert start == kept


def test_tol_zero_converges_once_the_likelihood_stops_changing():
    truth = lds.random_stable_lds(2, 3, seed=0)
    y = lds.sample_lds(truth, 30, seed=0).observations
    result = lds.fit_em(y, lds.random_stable_lds(2, 3, seed=3), max_iter=20, tol=0.0, estimate=[], progress=False)
    history = result.log_likelihoods.numpy()
    assert result.converged and len(history) == 2 and history[1] == history[0]


def test_too_few_time_steps_for_the_estimated_measurement_noise():
    truth = lds.random_stable_lds(2, 4, seed=0)
    y = lds.sample_lds(truth, 30, seed=1).observations.numpy()
    start = lds.random_stable_lds(5, 4, seed=0)
    with pytest.raises(ValidationError, match=r"y has 3 time steps, .* 4 x 4 measurement_noise_covariance.*at least 4"):
        lds.fit_em(y[:3], start, max_iter=3, progress=False)
    with pytest.raises(ValidationError, match=r"4 time steps, .* and observation_offset: that needs at least 5"):
        lds.fit_em(y[:4], start, estimate=ALL, max_iter=3, progress=False)
    with pytest.raises(ValidationError, match=r"session 'session_1' has 3 time steps.*at least 4"):
        lds.fit_em({"session_0": y[:, :3], "session_1": y[:3]}, lds.random_stable_lds(2, [3, 4], seed=0),
                   max_iter=3, progress=False)
    fixed_R = lds.fit_em(y[:3], start, estimate=["A", "C", "Q"], max_iter=3, progress=False)
    assert torch.equal(fixed_R.params.R, start.R) and not torch.equal(fixed_R.params.C, start.C)
    # enough time steps, but observations confined to 3 of the 4 dimensions: the M-step's R is singular
    flat = y.copy()
    flat[:, 3] = flat[:, 2]
    with pytest.raises(NotPositiveDefiniteError, match=r"EM iteration 0, M-step: .*measurement_noise_covariance "
                                                       r"\(4 x 4, from 30 time steps\).*span all 4"):
        lds.fit_em(flat, lds.random_stable_lds(2, 4, seed=3), max_iter=3, progress=False)


def test_estimate_subsets_and_offsets():
    truth = lds.random_stable_lds(2, 3, offsets=True, seed=0)
    y = lds.sample_lds(truth, 40, seed=0).observations
    start = lds.random_stable_lds(2, 3, seed=3)
    only = lds.fit_em(y, start, max_iter=2, estimate=["C", "measurement_noise_covariance"], progress=False).params
    for name in ("A", "Q", "m0", "V0"):
        assert torch.equal(getattr(only, name), getattr(start, name))
    assert not torch.equal(only.C, start.C) and not torch.equal(only.R, start.R)
    assert only.b is None and only.d is None
    with_d = lds.fit_em(y, start, max_iter=3, estimate=["C", "d", "R"], progress=False).params
    assert with_d.b is None and with_d.d.shape == (3,)
    # the observation offset absorbs the data mean
    assert np.allclose(with_d.d.numpy(), (y - (with_d.C @ lds.kalman_smoother(with_d, y).means.T).T).mean(0).numpy(),
                       atol=0.2)
    with pytest.raises(UnknownParameterError, match="'Z'"):
        lds.fit_em(y, start, estimate=["A", "Z"], progress=False)
    # a mapping name -> bool switches parameters on or off relative to the default (all but b, d)
    flags = {"A": True, "b": False, "C": False, "measurement_noise_covariance": False, "d": True}
    switched = lds.fit_em(y, start, max_iter=2, estimate=flags, progress=False).params
    assert torch.equal(switched.C, start.C) and torch.equal(switched.R, start.R) and switched.b is None
    assert not torch.equal(switched.A, start.A) and not torch.equal(switched.Q, start.Q) and switched.d.shape == (3,)
    assert switched == lds.fit_em(y, start, max_iter=2, estimate=["A", "d", "Q", "m0", "V0"], progress=False).params
    with pytest.raises(ValidationError, match="True or False.*'A': 1"):
        lds.fit_em(y, start, estimate={"A": 1}, progress=False)
    with pytest.raises(UnknownParameterError, match="'Z'"):
        lds.fit_em(y, start, estimate={"Z": True}, progress=False)


def test_initialization_batches_lists_sessions_and_progress_bar(capsys):
    truth = lds.random_stable_lds(2, [3, 4], seed=0)
    data = {"session_1": lds.sample_lds(truth, 30, num_trials=2, session=1, seed=1).observations,
            "session_0": [lds.sample_lds(truth, 25, session=0, seed=2).observations,
                          lds.sample_lds(truth, 18, session=0, seed=3).observations]}
    result = lds.fit_em(data, num_states=2, max_iter=4, progress=True)
    assert result.params.dataset_names == ["session_1", "session_0"]
    assert result.params.num_observations == [4, 3]
    assert np.all(np.diff(result.log_likelihoods.numpy()) > 0)
    err = capsys.readouterr().err
    assert "EM" in err and "log_likelihood" in err
    stats = lds.expected_statistics(result.params, data)
    assert [s.num_steps for s in stats.sessions] == [60, 43] and stats.num_steps == 103
    assert stats.initial_means.shape == (4, 2)
    assert "EMResult with properties" in repr(result) and "[1x1 KalmanParams]" in repr(result)


def test_bad_arguments():
    y = np.zeros((10, 3))
    with pytest.raises(ValidationError, match="num_states"):
        lds.fit_em(y, progress=False)
    with pytest.raises(ValidationError, match="max_iter"):
        lds.fit_em(y, num_states=1, max_iter=0, progress=False)
    with pytest.raises(ValidationError, match="tol"):
        lds.fit_em(y, num_states=1, tol=-1, progress=False)
    with pytest.raises(ValidationError, match="disagrees"):
        lds.fit_em(y, lds.KalmanParams(num_states=2, num_observations=3), num_states=3, progress=False)
    with pytest.raises(ValidationError, match="params must be lds.KalmanParams .*got dict"):
        lds.fit_em(y, {"A": 1}, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_em_and_subspace_identification_run_on_cuda():
    truth = lds.random_stable_lds(2, 4, seed=0)
    y = lds.sample_lds(truth, 60, seed=0).observations
    y[7, 1] = float("nan")
    gpu = lds.fit_em(y.cuda(), num_states=2, max_iter=3, progress=False)
    cpu = lds.fit_em(y, num_states=2, max_iter=3, progress=False)
    assert gpu.params.device.type == "cuda" and gpu.params.A.is_cuda
    assert gpu.params.to("cpu").allclose(cpu.params, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gpu.log_likelihoods.numpy(), cpu.log_likelihoods.numpy(), rtol=1e-9)


def joint_gaussian(p, T):
    """Mean and covariance of z = [x_{-1}, x_0..x_{T-1}, y_0..y_{T-1}] by direct construction."""
    n = {k: getattr(p, k).numpy() for k in ("A", "b", "C", "d", "Q", "R", "m0", "V0")}
    K, N = n["C"].shape[1], n["C"].shape[0]
    dim = K + T * K + T * N  # independent sources: x_{-1} - m0, w_0..w_{T-1}, v_0..v_{T-1}
    source_cov = np.zeros((dim, dim))
    source_cov[:K, :K] = n["V0"]
    for t in range(T):
        source_cov[K + t * K:K + (t + 1) * K, K + t * K:K + (t + 1) * K] = n["Q"]
        o = K + T * K + t * N
        source_cov[o:o + N, o:o + N] = n["R"]
    mean_x, map_x = [n["m0"]], [np.eye(K, dim)]
    for t in range(T):
        noise = np.zeros((K, dim))
        noise[:, K + t * K:K + (t + 1) * K] = np.eye(K)
        mean_x.append(n["A"] @ mean_x[-1] + n["b"])
        map_x.append(n["A"] @ map_x[-1] + noise)
    mean_y, map_y = [], []
    for t in range(T):
        noise = np.zeros((N, dim))
        noise[:, K + T * K + t * N:K + T * K + (t + 1) * N] = np.eye(N)
        mean_y.append(n["C"] @ mean_x[t + 1] + n["d"])
        map_y.append(n["C"] @ map_x[t + 1] + noise)
    mean = np.concatenate(mean_x + mean_y)
    linear = np.vstack(map_x + map_y)
    return mean, linear @ source_cov @ linear.T


def test_expected_statistics_equal_brute_force_gaussian_conditioning_with_missing_data():
    """Every E-step sum (missing y imputed) against conditioning the joint Gaussian directly."""
    from scipy.stats import multivariate_normal

    p = lds.random_stable_lds(2, 3, offsets=True, seed=11)
    T, K, N = 4, 2, 3
    trials = [lds.sample_lds(p, T, seed=s).observations.numpy() for s in (1, 2)]
    trials[0][1, 0] = np.nan
    trials[0][2] = np.nan
    trials[1][3, 1:] = np.nan
    stats = lds.expected_statistics(p, trials)
    mean, cov = joint_gaussian(p, T)
    x_slice = lambda t: slice(K * (t + 1), K * (t + 2))  # noqa: E731  (t = -1 .. T-1)
    y_slice = lambda t: slice(K * (T + 1) + N * t, K * (T + 1) + N * (t + 1))  # noqa: E731
    expected = dict(sum_x=0, sum_x_prev=0, sum_xx=0, sum_xx_prev=0, sum_xx_lag=0, sum_initial_covariance=0,
                    sum_y=0, sum_yy=0, sum_yx=0, log_likelihood=0.0)
    initial_means = []
    for y in trials:
        observed = np.flatnonzero(~np.isnan(y.ravel())) + K * (T + 1)
        gain = cov[:, observed] @ np.linalg.inv(cov[np.ix_(observed, observed)])
        post_mean = mean + gain @ (y.ravel()[observed - K * (T + 1)] - mean[observed])
        post_cov = cov - gain @ cov[observed]
        second = lambda a, b: post_cov[a, b] + np.outer(post_mean[a], post_mean[b])  # noqa: E731
        for t in range(T):
            expected["sum_x"] = expected["sum_x"] + post_mean[x_slice(t)]
            expected["sum_x_prev"] = expected["sum_x_prev"] + post_mean[x_slice(t - 1)]
            expected["sum_xx"] = expected["sum_xx"] + second(x_slice(t), x_slice(t))
            expected["sum_xx_prev"] = expected["sum_xx_prev"] + second(x_slice(t - 1), x_slice(t - 1))
            expected["sum_xx_lag"] = expected["sum_xx_lag"] + second(x_slice(t), x_slice(t - 1))
            expected["sum_y"] = expected["sum_y"] + post_mean[y_slice(t)]
            expected["sum_yy"] = expected["sum_yy"] + second(y_slice(t), y_slice(t))
            expected["sum_yx"] = expected["sum_yx"] + second(y_slice(t), x_slice(t))
        initial_means.append(post_mean[x_slice(-1)])
        expected["sum_initial_covariance"] = expected["sum_initial_covariance"] + post_cov[x_slice(-1), x_slice(-1)]
        expected["log_likelihood"] += multivariate_normal(mean[observed], cov[np.ix_(observed, observed)]).logpdf(
            y.ravel()[observed - K * (T + 1)])
    session = stats.sessions[0]
    assert stats.num_steps == session.num_steps == 2 * T
    np.testing.assert_allclose(stats.initial_means.numpy(), np.array(initial_means), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(session.sum_x.numpy(), expected["sum_x"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(session.sum_xx.numpy(), expected["sum_xx"], rtol=1e-9, atol=1e-12)
    for name, value in expected.items():
        actual = getattr(session if name in ("sum_y", "sum_yy", "sum_yx") else stats, name)
        np.testing.assert_allclose(np.asarray(actual), value, rtol=1e-9, atol=1e-12, err_msg=name)
