"""Stochastic subspace identification against the NumPy oracle of the reference, and its bug fix."""

import numpy as np
import pytest
import torch

import lds
import oracle_numpy as oracle
from lds_threads import one_thread  # noqa: F401  (autouse fixture)
from lds.errors import ShapeError, ValidationError

A_TRUE = np.array([[0.95, 0.15], [-0.15, 0.95]]) @ np.diag([1.0, 0.7])


def known_system(N=5, seed=0):
    C = np.random.default_rng(seed).normal(size=(N, 2))
    return lds.KalmanParams(transition_matrix=A_TRUE, measurement_function=C, process_noise_covariance=[0.1],
                            measurement_noise_covariance=[0.05], observation_offset=np.arange(N, dtype=float))


def projector(M):
    return M @ np.linalg.pinv(M)


def test_matches_the_reference_core_with_the_future_block_fixed():
    truth = known_system()
    y = lds.sample_lds(truth, 3000, seed=1).observations.numpy()
    params = lds.subspace_identification(y, 2, max_lag=6)
    A, C, _ = oracle.subspace_identification(y, 2, 6)
    # the state basis is arbitrary: compare similarity invariants
    np.testing.assert_allclose(np.sort_complex(np.linalg.eigvals(params.A.numpy())),
                               np.sort_complex(np.linalg.eigvals(A)), atol=1e-8)
    assert np.linalg.norm(projector(params.C.numpy()) - projector(C), 2) < 1e-8
    # the identified system is the true one, and the C# bug (future == past) is not reproduced
    np.testing.assert_allclose(np.sort_complex(np.linalg.eigvals(A)), np.sort_complex(np.linalg.eigvals(A_TRUE)),
                               atol=0.035)
    buggy, _, _ = oracle.subspace_identification(y, 2, 6, future_is_past=True)
    assert np.abs(np.sort_complex(np.linalg.eigvals(buggy)) - np.sort_complex(np.linalg.eigvals(A))).max() > 0.05
    # the data mean is kept as the observation offset; noise covariances are sensible
    np.testing.assert_allclose(params.d.numpy(), y.mean(0))
    np.testing.assert_allclose(np.diag(params.R.numpy()), 0.05, rtol=0.3)
    assert torch.allclose(params.m0, torch.zeros(2, dtype=torch.float64))


def test_order_from_the_singular_value_threshold():
    y = lds.sample_lds(known_system(), 800, seed=2).observations.numpy()
    _, _, S = oracle.subspace_identification(y, 1, 4)
    for threshold in (0.05, 0.3, 0.9):
        expected = max(int((S > threshold * S[0]).sum()), 1)
        assert lds.subspace_identification(y, max_lag=4, threshold=threshold).num_states == expected


def test_trials_missing_values_and_sessions():
    truth = known_system(N=4)
    batch = lds.sample_lds(truth, 200, num_trials=4, seed=3).observations.numpy()
    batch[1, 50:55] = np.nan
    params = lds.subspace_identification(batch, 2)
    assert params.num_states == 2 and params.num_observations == 4
    eig = np.sort(np.abs(np.linalg.eigvals(params.A.numpy())))
    assert np.all(np.abs(eig - np.sort(np.abs(np.linalg.eigvals(A_TRUE)))) < 0.1)
    multi = lds.subspace_identification({"b": list(batch[:2]), "a": torch.from_numpy(batch[2:, :, :3].copy())}, 2)
    assert multi.dataset_names == ["b", "a"] and multi.num_observations == [4, 3]
    assert lds.subspace_identification(torch.from_numpy(batch).float(), 2).dtype == torch.float32


def test_bad_input():
    y = lds.sample_lds(known_system(N=3), 100, seed=0).observations.numpy()
    with pytest.raises(ValidationError, match=r"num_states <= max_lag \* N = 6"):
        lds.subspace_identification(y, 7, max_lag=2)
    with pytest.raises(ValidationError, match="too short"):
        lds.subspace_identification(y[:12], 2, max_lag=5)
    bad = y.copy()
    bad[3, 0] = -np.inf
    with pytest.raises(ValidationError, match="infinite"):
        lds.subspace_identification(bad, 2)
    with pytest.raises(ShapeError):
        lds.subspace_identification(y[:, 0], 1)
    with pytest.raises(ValidationError, match="threshold"):
        lds.subspace_identification(y, threshold=1.5)


def test_numerical_failures_are_library_errors(monkeypatch):
    y = lds.sample_lds(known_system(N=3), 100, seed=0).observations.numpy()
    with pytest.raises(ValidationError, match=r"values up to 3e\+200: their sums of squares overflow float64"):
        lds.fit_em(y / np.abs(y).max() * 3e200, num_states=2, progress=False)
    assert lds.subspace_identification(y * 1e150, 2).num_states == 2  # large but finite squares are fine

    def failing_pinv(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "pinv", failing_pinv)
    with pytest.raises(ValidationError, match=r"subspace identification of y failed numerically \(linalg.eigh"):
        lds.subspace_identification(y, 2)


def test_the_same_data_give_the_same_bits():
    # fits from the same data must not differ in the last bits (a resumed fit is compared bit for bit)
    y = lds.sample_lds(lds.random_stable_lds(2, 3, seed=0), 30, seed=1).observations
    first = lds.subspace_identification(y, 2).to_dict()
    allocations = []
    for i in range(100):
        allocations.append(torch.empty(i % 7 + 1))  # memory laid out differently for each call
        again = lds.subspace_identification(y.clone(), 2).to_dict()
        for name, value in first.items():
            if torch.is_tensor(value):
                assert torch.equal(again[name], value), f"{name} differs in call {i}"
