"""lds.data: NWB spike loading, Neural-Latents binning, transforms, trials, errors (offline)."""

from datetime import datetime, timezone

import h5py
import numpy as np
import pytest

from lds import data
from lds.errors import FileFormatError, MissingFileError, OverwriteError, SilentUnitsWarning, ValidationError

pynwb = pytest.importorskip("pynwb")
pytestmark = pytest.mark.filterwarnings("ignore::lds.errors.SilentUnitsWarning")  # SPIKES has one; tested below


def write_nwb(path, spike_times=None, trials=None, with_units=True):
    """A small NWB file written directly with pynwb (independent of lds.data)."""
    nwbfile = pynwb.NWBFile(
        session_description="test", identifier="test-file",
        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    )
    if with_units:
        nwbfile.units = pynwb.misc.Units(name="units", description="sorted units")
        for times in spike_times or []:
            nwbfile.add_unit(spike_times=np.asarray(times, dtype=float))
    for start, stop in trials or []:
        nwbfile.add_trial(start_time=start, stop_time=stop)
    with pynwb.NWBHDF5IO(str(path), "w") as io:
        io.write(nwbfile)
    return path


def reference_counts(spike_times, width):
    """Plain loop: spike at t goes to bin floor(t / width); bins up to the last spike."""
    t_max = max(max(t) for t in spike_times if len(t))
    n_bins = int(np.floor(t_max / width)) + 1
    out = np.zeros((n_bins, len(spike_times)), dtype=int)
    for unit, times in enumerate(spike_times):
        for t in times:
            out[int(np.floor(t / width)), unit] += 1
    return out


SPIKES = [[0.011, 0.013, 0.055, 0.301], [0.021, 0.145], [], [0.39]]


def test_nwb_binning_matches_plain_loop_and_sqrt_transform(tmp_path):
    path = write_nwb(tmp_path / "rec.nwb", SPIKES)
    with pytest.warns(SilentUnitsWarning, match=r"rec.nwb: 1 of 4 units never fire \(unit ids \[2\]\)") as caught:
        binned = data.load_nwb(path, bin_width=0.02)
    with pytest.warns(SilentUnitsWarning) as through_loader:
        data.load_observations(path, bin_width=0.02)
    for record in (*caught, *through_loader):  # attributed to this caller, not to lds
        assert record.filename == __file__
    expected = reference_counts(SPIKES, 0.02)  # no spike on a bin edge, so floor() is exact
    assert binned.counts.shape == (20, 4) == expected.shape  # edges 0..0.40 cover t_max = 0.39
    np.testing.assert_array_equal(binned.counts, expected)
    np.testing.assert_allclose(binned.observations, np.sqrt(expected + 0.5))
    assert binned.observations.dtype == np.float64
    assert binned.counts.sum() == 7
    assert binned.num_units == 4 and binned.bin_width == 0.02
    assert binned.trial_intervals is None and binned.trials() == []
    assert "20 bins x 4 units" in repr(binned) and "20 ms" in repr(binned)


def test_raw_counts_transform_and_other_width(tmp_path):
    path = write_nwb(tmp_path / "rec.nwb", SPIKES)
    binned = data.load_nwb(path, bin_width=0.05, transform="counts")
    expected = reference_counts(SPIKES, 0.05)
    np.testing.assert_array_equal(binned.observations, expected)
    assert binned.transform == "counts"


def test_trials_table_splits_bins(tmp_path):
    path = write_nwb(tmp_path / "rec.nwb", SPIKES, trials=[(0.0, 0.1), (0.2, 0.3), (5.0, 6.0)])
    binned = data.load_nwb(path)
    assert binned.num_trials == 3
    slices = binned.trial_slices()
    assert (slices[0].start, slices[0].stop) == (0, 5)
    assert (slices[1].start, slices[1].stop) == (10, 15)
    trials = binned.trials()  # the third trial lies after the last spike: no bins, dropped
    assert len(trials) == 2
    np.testing.assert_array_equal(trials[1], binned.observations[10:15])
    as_list = data.load_observations(path, split_trials=True)
    assert isinstance(as_list, list) and len(as_list) == 2


def test_save_and_load_binned_roundtrip(tmp_path):
    binned = data.load_nwb(write_nwb(tmp_path / "rec.nwb", SPIKES, trials=[(0.0, 0.1)]))
    out = binned.save(tmp_path / "train.npz")
    back = data.load_binned(out)
    np.testing.assert_array_equal(back.observations, binned.observations)
    np.testing.assert_array_equal(back.counts, binned.counts)
    np.testing.assert_array_equal(back.trial_intervals, binned.trial_intervals)
    assert back.bin_width == binned.bin_width and back.source == "rec.nwb"
    with pytest.raises(OverwriteError):
        binned.save(out)
    np.testing.assert_array_equal(data.load_observations(out), binned.observations)
    assert len(data.load_observations(out, split_trials=True)) == 1


@pytest.mark.parametrize("width", [0, -0.01, float("nan"), "abc"])
def test_bad_bin_width(tmp_path, width):
    with pytest.raises(ValidationError, match="bin_width"):
        data.load_nwb(tmp_path / "never-read.nwb", bin_width=width)


def test_clear_errors_for_bad_files(tmp_path):
    with pytest.raises(MissingFileError, match="missing.nwb does not exist"):
        data.load_nwb(tmp_path / "missing.nwb")
    (tmp_path / "text.nwb").write_text("not hdf5")
    with pytest.raises(FileFormatError, match="not an NWB file"):
        data.load_nwb(tmp_path / "text.nwb")
    with h5py.File(tmp_path / "plain.nwb", "w") as f:
        f["x"] = 1
    with pytest.raises(FileFormatError, match="could not be read as NWB"):
        data.load_nwb(tmp_path / "plain.nwb")
    with pytest.raises(FileFormatError, match="no units table"):
        data.load_nwb(write_nwb(tmp_path / "nounits.nwb", with_units=False))
    with pytest.raises(FileFormatError, match="units table is empty"):
        data.load_nwb(write_nwb(tmp_path / "empty.nwb", []))
    with pytest.raises(FileFormatError, match="none of the 2 units has any spike"):
        data.load_nwb(write_nwb(tmp_path / "silent.nwb", [[], []]))
    with pytest.raises(ValidationError, match="transform"):
        data.load_nwb(tmp_path / "silent.nwb", transform="log")
    with pytest.raises(ValidationError, match=r"gives 39,000,000 bins x 4 units"):
        data.load_nwb(write_nwb(tmp_path / "rec.nwb", SPIKES), bin_width=1e-8)
