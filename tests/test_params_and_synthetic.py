"""KalmanParams construction, defaults, validation, and the synthetic data generators."""

import numpy as np
import pytest
import torch

import lds
from lds import DatasetList, KalmanParams
from lds.errors import NotPositiveDefiniteError, ShapeError, ValidationError


def test_defaults_match_reference():
    p = KalmanParams(num_states=3, num_observations=5)
    assert p.dtype == torch.float64
    assert torch.equal(p.A, torch.eye(3, dtype=torch.float64))
    assert torch.equal(p.C, torch.eye(5, 3, dtype=torch.float64))
    assert torch.equal(p.Q, torch.eye(3, dtype=torch.float64)) and torch.equal(p.R, torch.eye(5, dtype=torch.float64))
    assert torch.equal(p.m0, torch.zeros(3, dtype=torch.float64)) and torch.equal(p.V0, torch.eye(3, dtype=torch.float64))
    assert p.b is None and p.d is None and not p.offsets_provided


def test_one_element_noise_means_scaled_identity_and_sizes_inferred():
    p = KalmanParams(measurement_function=np.ones((4, 2)), process_noise_covariance=[0.5],
                     measurement_noise_covariance=torch.tensor(2.0))
    assert p.num_states == 2 and p.num_observations == 4
    assert torch.allclose(p.Q, 0.5 * torch.eye(2, dtype=torch.float64))
    assert torch.allclose(p.R, 2.0 * torch.eye(4, dtype=torch.float64))


def test_either_offset_alone():
    p = KalmanParams(num_states=2, num_observations=3, observation_offset=np.ones(3))
    assert p.b is None and p.offsets_provided and p.d.shape == (3,)


def test_shape_errors_name_field_expected_and_actual():
    with pytest.raises(ShapeError, match=r"measurement_function should have shape \(4, 3\).*\(4, 2\)"):
        KalmanParams(transition_matrix=np.eye(3), measurement_function=np.ones((4, 2)))


def test_non_positive_definite_covariance_is_refused():
    with pytest.raises(NotPositiveDefiniteError, match="process_noise_covariance"):
        KalmanParams(num_states=2, num_observations=2, process_noise_covariance=np.diag([1.0, -1.0]))
    with pytest.raises(ValidationError, match="non-finite"):
        KalmanParams(transition_matrix=np.array([[np.nan]]), num_observations=1)


def test_multi_session_fields_are_dataset_lists():
    p = KalmanParams(num_states=2, num_observations={"a": 3, "b": 5})
    assert p.is_multi_session and p.dataset_names == ["a", "b"] and p.num_observations == [3, 5]
    assert isinstance(p.C, DatasetList) and p.C["b"].shape == (5, 2) and p.R[0].shape == (3, 3)
    assert len(p.d) == 0
    s = p.session("b")
    assert not s.is_multi_session and s.num_observations == 5
    assert "{2x1 cell}" in repr(p)
    one = KalmanParams(num_states=2, num_observations=[3], dataset_names="sess")  # one name, not 4 letters
    assert one.dataset_names == ["sess"] and one.C.names == ["sess"]


def test_to_clone_aliases_and_dict_round_trip():
    p = lds.random_stable_lds(3, 4, offsets=True, seed=1)
    q = p.to(dtype=torch.float32)
    assert q.dtype == torch.float32 and q.A.dtype == torch.float32 and p.A.dtype == torch.float64
    c = p.clone()
    assert c == p and c.A is not p.A
    assert KalmanParams.from_dict(p.to_dict()) == p
    assert p.map_arrays(lambda t: t.float()).dtype == torch.float32
    p.A = torch.zeros(3, 3)
    assert torch.equal(p.transition_matrix, torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ShapeError):
        p.A = torch.zeros(2, 2)


def test_random_stable_lds_is_stable_and_seeded():
    p = lds.random_stable_lds(5, [7, 9], spectral_radius=0.9, seed=3)
    assert np.max(np.abs(np.linalg.eigvals(p.A.numpy()))) == pytest.approx(0.9)
    assert p.num_observations == [7, 9]
    assert lds.random_stable_lds(5, [7, 9], spectral_radius=0.9, seed=3) == p


def test_sample_lds_shapes_and_statistics():
    p = lds.random_stable_lds(2, 3, seed=0)
    s = lds.sample_lds(p, 4000, seed=0)
    assert s.states.shape == (4000, 2) and s.observations.shape == (4000, 3)
    resid = s.observations - s.states @ p.C.T
    cov = np.cov(resid.numpy().T)
    assert np.allclose(cov, p.R.numpy(), atol=0.1)
    batch = lds.sample_lds(p, 10, num_trials=6, observation="poisson", seed=1)
    assert batch.observations.shape == (6, 10, 3)
    assert torch.equal(batch.observations, batch.observations.round()) and (batch.observations >= 0).all()


def test_lorenz_spikes_sessions_and_rates():
    data = lds.lorenz_spikes((10, 20), trials_per_session=30, num_steps=40, seed=2)
    assert [c.shape for c in data.counts] == [(30, 40, 10), (30, 40, 20)]
    assert data.latents.shape[2] == 3 and np.allclose(data.latents.reshape(-1, 3).std(0), 1)
    for counts, rates in zip(data.counts, data.rates):
        assert counts.dtype == np.int64
        assert counts.mean() == pytest.approx(rates.mean() * data.bin_width, rel=0.1)
    again = lds.lorenz_spikes((10, 20), trials_per_session=30, num_steps=40, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(data.counts, again.counts))
    with pytest.raises(ValidationError):
        lds.lorenz_spikes((0,))


def test_a_failed_assignment_leaves_the_parameters_unchanged():
    p = lds.random_stable_lds(2, 3, offsets=True, seed=0)
    before = p.clone()
    with pytest.raises(ShapeError, match=r"measurement_function should have shape \(3, 2\).*\(2, 2\)"):
        p.C = np.zeros((2, 2))
    with pytest.raises(ShapeError, match=r"transition_matrix should have shape \(2, 2\).*\(3, 3\)"):
        p.transition_matrix = np.zeros((3, 3))  # long names are checked too
    with pytest.raises(ShapeError, match=r"measurement_noise_covariance should have shape \(3, 3\).*\(2,\)"):
        p.R = [0.5, 0.5]
    with pytest.raises(ValidationError, match="process_noise_covariance is required"):
        p.Q = None
    assert p == before
    p.b = [1.0, -1.0]  # later assignments still work
    assert torch.equal(p.b, torch.tensor([1.0, -1.0], dtype=torch.float64))
    multi = lds.random_stable_lds(2, [3, 4], seed=1)
    kept = multi.clone()
    with pytest.raises(ShapeError, match=r"measurement_function\['session_1'\] should have shape \(4, 2\)"):
        multi.C = [np.zeros((3, 2)), np.zeros((3, 2))]
    assert multi == kept


def test_assignment_converts_like_the_constructor():
    p = lds.random_stable_lds(2, 3, seed=0)
    p.R = 0.5  # one-element noise value: that variance times I
    p.process_noise_covariance = np.array([[0.2]])
    assert torch.equal(p.R, 0.5 * torch.eye(3, dtype=torch.float64))
    assert torch.equal(p.Q, 0.2 * torch.eye(2, dtype=torch.float64))
    p.transition_matrix = np.eye(2, dtype=np.float32)
    assert p.A.dtype == torch.float64 and torch.is_tensor(p.transition_matrix)
    p.validate()
    multi = lds.random_stable_lds(2, [3, 4], seed=1)
    multi.R = [np.array(0.5), np.array([[2.0]])]
    assert torch.equal(multi.R["session_1"], 2.0 * torch.eye(4, dtype=torch.float64))
    assert torch.equal(multi.R[0], 0.5 * torch.eye(3, dtype=torch.float64))


def test_per_session_assignment_follows_the_constructor_rules(tmp_path):
    multi = lds.random_stable_lds(2, [3, 4], offsets=True, seed=1)
    kept = multi.clone()
    for empty in (DatasetList(), {}):  # empty means absent, and C and R are required
        with pytest.raises(ValidationError, match="measurement_function is required"):
            multi.measurement_function = empty
        with pytest.raises(ValidationError, match="measurement_noise_covariance is required"):
            multi.R = empty
    with pytest.raises(ValidationError, match=r"measurement_function is required.*\['session_1'\]"):
        multi.C = {"session_0": np.ones((3, 2)), "session_1": None}
    assert multi == kept
    multi.observation_offset = {}
    assert multi.d == DatasetList() and multi.b is not None
    multi.b = None
    assert not multi.offsets_provided
    multi.d = {"session_0": [1.0, 2.0, 3.0], "session_1": None}  # a partial offset is zero-filled
    assert torch.equal(multi.d["session_1"], torch.zeros(4, dtype=torch.float64))
    multi.save(tmp_path / "p.h5")
    assert KalmanParams.load(tmp_path / "p.h5") == multi


def test_empty_arrays_are_refused_clearly():
    with pytest.raises(ShapeError, match=r"transition_matrix is empty \(shape \(0, 0\)\); num_states"):
        KalmanParams(transition_matrix=np.zeros((0, 0)), num_observations=2)
    with pytest.raises(ShapeError, match=r"measurement_function is empty \(shape \(0, 2\)\); num_observations"):
        KalmanParams(measurement_function=np.zeros((0, 2)))
    with pytest.raises(ShapeError, match=r"initial_mean is empty \(shape \(0,\)\)"):
        KalmanParams(initial_mean=np.zeros(0), num_observations=2)
    with pytest.raises(ShapeError, match=r"initial_mean should have shape \(2,\) .* \(0,\)"):
        KalmanParams(num_states=2, num_observations=2, initial_mean=np.zeros(0))
    with pytest.raises(ShapeError, match=r"measurement_noise_covariance should have shape \(2, 2\) .* \(0, 0\)"):
        KalmanParams(num_states=2, num_observations=2, measurement_noise_covariance=np.zeros((0, 0)))


def test_lorenz_spike_times_bin_back_to_the_counts():
    data = lds.lorenz_spikes((6, 9), trials_per_session=5, num_steps=20, bin_width=0.02, seed=1)
    times = data.spike_times("session_1", trials=slice(1, 4))
    assert len(times) == 9 and all(np.all(np.diff(t) >= 0) for t in times)
    stream = data.counts[1][1:4].reshape(-1, 9)  # trials 1-3 back to back: 60 bins
    counts, _ = lds.data.bin_spike_times(times, 0.02, t_max=60 * 0.02 - 1e-9)
    np.testing.assert_array_equal(counts, stream)
    np.testing.assert_array_equal(lds.data.bin_spike_times(data.spike_times(0), 0.02, t_max=2 - 1e-9)[0],
                                  data.counts[0].reshape(-1, 6))
    with pytest.raises(ValidationError, match=r"no session 'x'; the sessions are \['session_0', 'session_1'\]"):
        data.spike_times("x")


def test_reference_start_draws_what_the_reference_test_draws():
    np.random.seed(3)  # the reference test's order: A, C, Q, R, m0, V0 from the global legacy generator
    draws = [np.random.normal(0, 0.1, 2), np.random.normal(0, 0.1, (5, 2)), np.random.normal(0, 0.1, 2),
             np.random.normal(0, 0.1, 5), np.random.normal(0, 0.1, 2), np.random.normal(0, 0.1, 2)]
    p = lds.reference_start(2, 5, seed=3)
    np.testing.assert_array_equal(p.A.numpy(), np.diag(draws[0]))
    np.testing.assert_array_equal(p.C.numpy(), draws[1])
    np.testing.assert_array_equal(p.Q.numpy(), np.diag(np.abs(draws[2])))
    np.testing.assert_array_equal(p.R.numpy(), np.diag(np.abs(draws[3])))
    np.testing.assert_array_equal(p.m0.numpy(), draws[4])
    np.testing.assert_array_equal(p.V0.numpy(), np.diag(np.abs(draws[5])))
