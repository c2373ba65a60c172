"""lds.data on plain arrays and saved arrays (no pynwb needed): binning limits, value checks, constant channels."""

import numpy as np
import pytest

from lds import data
from lds.errors import FileFormatError, ValidationError


def test_edges_follow_arange_semantics():
    # last spike exactly on an edge: arange(0, 0.1 + 0.05, 0.05) = [0, .05, .1] plus round-off
    counts, edges = data.bin_spike_times([[0.01, 0.07]], 0.05)
    np.testing.assert_allclose(edges, np.arange(0.0, 0.07 + 0.05, 0.05))
    assert counts.sum() == 2 and counts.shape == (len(edges) - 1, 1)


def test_a_tiny_bin_width_is_refused_before_allocating():
    spikes = [np.array([0.5, 17.5])] * 142
    width = 2.0**-23  # about 1e-7 s, exact in binary: 17.5 s are exactly 146,800,640 bins
    with pytest.raises(ValidationError) as info:  # the audit's 1e-7 s bins x 142 units were OOM-killed
        data.bin_spike_times(spikes, width)
    message = str(info.value)
    assert f"17.5 s of recording in {width:g} s bins gives 146,800,640 bins x 142 units" in message
    assert f"{146_800_640 * 142 * 16 / 2**30:,.1f} GiB" in message and "2 GiB allowed" in message
    assert "wider bin width" in message
    # the limit is the counts and observations of the bins asked for, and it can be raised
    counts, _ = data.bin_spike_times(spikes[:2], 0.001, max_bytes=17_500 * 2 * 16)
    assert counts.shape == (17_500, 2)
    with pytest.raises(ValidationError, match="17,500 bins x 2 units"):
        data.bin_spike_times(spikes[:2], 0.001, max_bytes=17_500 * 2 * 16 - 1)


def test_load_observations_npy_and_npz(tmp_path):
    y = np.random.default_rng(0).normal(size=(30, 5))
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "two.npz", a=y, b=y[:, :2])
    np.testing.assert_array_equal(data.load_observations(tmp_path / "y.npy"), y)
    np.testing.assert_array_equal(data.load_observations(tmp_path / "two.npz", key="b"), y[:, :2])
    with pytest.raises(FileFormatError, match=r"\['a', 'b'\].*key=NAME in Python, --key NAME on the command line"):
        data.load_observations(tmp_path / "two.npz")
    with pytest.raises(FileFormatError, match=r"has no array 'c'; it holds \['a', 'b'\]"):
        data.load_observations(tmp_path / "two.npz", key="c")
    np.save(tmp_path / "bad.npy", np.ones(4))
    with pytest.raises(FileFormatError, match=r"shape \(4,\).*\[T, N\]"):
        data.load_observations(tmp_path / "bad.npy")
    (tmp_path / "y.csv").write_text("1,2\n")
    with pytest.raises(FileFormatError, match="unsupported data file type '.csv'"):
        data.load_observations(tmp_path / "y.csv")


def test_values_whose_squares_overflow_are_refused(tmp_path):
    y = np.random.default_rng(0).normal(size=(200, 5))
    limit = np.sqrt(np.finfo(np.float64).max / y.size)
    np.save(tmp_path / "huge.npy", y / np.abs(y).max() * 1.01 * limit)
    with pytest.raises(ValidationError, match=r"huge.npy has values up to .* overflow float64.*rescale"):
        data.load_observations(tmp_path / "huge.npy")
    np.save(tmp_path / "large.npy", y / np.abs(y).max() * 0.99 * limit)
    assert np.isfinite(np.sum(data.load_observations(tmp_path / "large.npy") ** 2))


def test_drop_constant_channels():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(2, 40, 5))
    y[..., 1] = 0.0
    y[..., 4] = 3.5
    kept_y, kept = data.drop_constant_channels(y)
    assert kept.tolist() == [0, 2, 3] and kept_y.shape == (2, 40, 3)
    np.testing.assert_array_equal(kept_y, y[..., [0, 2, 3]])
    trials = [y[0, :10], y[1]]
    trials[0][:, 2] = 7.0  # constant in one trial only: it still varies over the data
    kept_trials, kept = data.drop_constant_channels(trials)
    assert kept.tolist() == [0, 2, 3] and [t.shape for t in kept_trials] == [(10, 3), (40, 3)]
    missing = y[0].copy()
    missing[5, 0] = missing[:, 3] = np.nan  # NaN marks missing values: channel 0 still varies, 3 has no value
    assert data.drop_constant_channels(missing)[1].tolist() == [0, 2]
    same, kept = data.drop_constant_channels(y[0][:, [0, 2]])
    assert kept.tolist() == [0, 1] and same.shape == (40, 2)
    with pytest.raises(ValidationError, match="all 2 channels are constant"):
        data.drop_constant_channels(y[0][:, [1, 4]])


def test_select_units():
    counts = np.arange(12).reshape(4, 3)
    binned = data.BinnedSpikes(observations=data.transform_counts(counts), counts=counts, bin_width=0.02,
                               unit_ids=np.array([7, 3, 9]), source="rec.nwb")
    picked = binned.select_units([9, 7])
    assert picked.unit_ids.tolist() == [9, 7]
    np.testing.assert_array_equal(picked.counts, counts[:, [2, 0]])
    np.testing.assert_array_equal(picked.observations, np.sqrt(counts[:, [2, 0]] + 0.5))
    with pytest.raises(ValidationError, match=r"rec.nwb has no units with ids \[5\]; its 3 unit ids are \[7, 3, 9\]"):
        binned.select_units([7, 5])
