"""Binned spike counts from NWB files and saved arrays, ready for an LDS fit.

The binning follows the Neural Latents Benchmark recipe used by the Bonsai.ML.Lds.Torch
examples (MC_Maze_Small, DANDI 000140): bin edges ``0, w, 2w, ...`` up to the last
spike of any unit (NumPy ``arange(0, t_max + w, w)``), one ``np.histogram`` per unit,
then ``sqrt(count + 0.5)``. Arrays are time-major ``[T, N]`` as everywhere in ``lds``.

- :func:`bin_spike_times` and :func:`transform_counts`: the two steps on plain arrays.
  Bin widths whose bins would not fit in memory (more than :data:`MAX_BINNED_BYTES`,
  2 GiB, for the counts and their transform) are refused with an error saying why.
- :func:`load_nwb`: the NWB ``units`` table (and ``trials`` table, when present) to
  :class:`BinnedSpikes`.
- :func:`load_observations`: ``.npy``, ``.npz`` or ``.nwb`` to an observation array
  (or a list of trials) for :func:`lds.fit_em` and the ``lfads-tools fit-lds`` command.
- :func:`drop_constant_channels`: leave out channels that never change (units that
  never fire), which an LDS cannot model (their noise variance would be 0).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FileFormatError, MissingFileError, SilentUnitsWarning, ValidationError, require, warn
from .fileio import atomic_path

__all__ = [
    "BinnedSpikes",
    "MAX_BINNED_BYTES",
    "TRANSFORMS",
    "bin_spike_times",
    "transform_counts",
    "load_nwb",
    "load_binned",
    "load_observations",
    "drop_constant_channels",
]

TRANSFORMS = ("sqrt", "counts")
#: Binning refuses to allocate more than this for the counts (int64) and their float64 transform.
MAX_BINNED_BYTES = 2 * 2**30


def _check_bin_width(bin_width) -> float:
    try:
        width = float(bin_width)
    except (TypeError, ValueError):
        raise ValidationError(f"bin_width must be a number of seconds, got {bin_width!r}") from None
    if not math.isfinite(width) or width <= 0:
        raise ValidationError(f"bin_width must be a positive number of seconds, got {bin_width!r}")
    return width


def bin_spike_times(spike_times, bin_width: float = 0.02, t_max: float | None = None,
                    max_bytes: int = MAX_BINNED_BYTES):
    """Counts ``[n_bins, n_units]`` (int64) and edges ``[n_bins + 1]`` (seconds).

    ``spike_times`` is one array of spike times (seconds) per unit. Edges run from 0 in
    steps of ``bin_width`` up to ``t_max`` (default: the last spike of any unit), with
    NumPy ``arange`` semantics as in the Neural Latents Benchmark recipe. A bin width so
    small that the counts and their float64 transform would need more than
    ``max_bytes`` (default 2 GiB) is refused before anything is allocated.
    """
    width = _check_bin_width(bin_width)
    units = [np.asarray(t, dtype=np.float64).ravel() for t in spike_times]
    if not units:
        raise ValidationError("no units to bin: spike_times is empty")
    if t_max is None:
        nonempty = [t.max() for t in units if t.size]
        if not nonempty:
            raise ValidationError(f"none of the {len(units)} units has any spike to bin")
        t_max = max(nonempty)
    if not math.isfinite(t_max) or t_max < 0:
        raise ValidationError(f"the last spike time must be a finite time >= 0 s, got {t_max}")
    num_bins = max(math.ceil((t_max + width) / width) - 1, 1)  # the length of arange(0, t_max + width, width), less 1
    needed = num_bins * len(units) * 16  # int64 counts and float64 observations
    if needed > max_bytes:
        raise ValidationError(
            f"binning {t_max:g} s of recording in {width:g} s bins gives {num_bins:,} bins x {len(units)} units; "
            f"the counts and observations would need {needed / 2**30:,.1f} GiB, more than the "
            f"{max_bytes / 2**30:g} GiB allowed: use a wider bin width"
        )
    edges = np.arange(0.0, t_max + width, width)
    if edges.size < 2:
        edges = np.array([0.0, width])
    counts = np.stack([np.histogram(t, bins=edges)[0] for t in units], axis=1).astype(np.int64)
    return counts, edges


def transform_counts(counts, transform: str = "sqrt") -> np.ndarray:
    """``sqrt(count + 0.5)`` (``"sqrt"``, variance-stabilizing) or raw counts (``"counts"``), float64."""
    counts = np.asarray(counts, dtype=np.float64)
    if transform == "sqrt":
        return np.sqrt(counts + 0.5)
    if transform == "counts":
        return counts
    raise ValidationError(f"transform must be one of {TRANSFORMS}, got {transform!r}")


@dataclass
class BinnedSpikes:
    """Binned spikes of one recording.

    ``observations`` ``[T, N]`` float64 (the transformed counts the model sees),
    ``counts`` ``[T, N]`` int64, ``bin_width`` in seconds, ``unit_ids`` ``[N]``,
    ``trial_intervals`` ``[n_trials, 2]`` (start, stop in seconds) or None.
    """

    observations: np.ndarray
    counts: np.ndarray
    bin_width: float
    unit_ids: np.ndarray
    transform: str = "sqrt"
    trial_intervals: np.ndarray | None = None
    source: str = ""

    @property
    def num_bins(self) -> int:
        return int(self.observations.shape[0])

    @property
    def num_units(self) -> int:
        return int(self.observations.shape[1])

    @property
    def num_trials(self) -> int:
        return 0 if self.trial_intervals is None else len(self.trial_intervals)

    @property
    def bin_edges(self) -> np.ndarray:
        return np.arange(self.num_bins + 1) * self.bin_width

    def trial_slices(self) -> list[slice]:
        """Bins of each trial: those whose left edge lies in ``[start, stop)``, clipped to the data."""
        if self.trial_intervals is None:
            return []
        left = self.bin_edges[:-1]
        out = []
        for start, stop in self.trial_intervals:
            first, last = np.searchsorted(left, [start, stop], side="left")
            out.append(slice(int(first), int(last)))
        return out

    def trials(self) -> list[np.ndarray]:
        """Observations of each trial that has at least one bin (a list for :func:`lds.fit_em`)."""
        return [self.observations[s] for s in self.trial_slices() if s.stop > s.start]

    def select_units(self, unit_ids) -> "BinnedSpikes":
        """The same recording with only the units ``unit_ids``, in that order."""
        position = {u: i for i, u in enumerate(np.asarray(self.unit_ids).tolist())}
        wanted = np.asarray(unit_ids).tolist()
        missing = [u for u in wanted if u not in position]
        if missing:
            raise ValidationError(f"{self.source or 'the recording'} has no units with ids {missing}; "
                                  f"its {self.num_units} unit ids are {list(position)}")
        columns = [position[u] for u in wanted]
        return dataclasses.replace(self, observations=self.observations[:, columns], counts=self.counts[:, columns],
                                   unit_ids=np.asarray(self.unit_ids)[columns])

    def __repr__(self) -> str:
        trials = f", {self.num_trials} trials" if self.trial_intervals is not None else ""
        src = f" from {self.source}" if self.source else ""
        return (
            f"BinnedSpikes({self.num_bins} bins x {self.num_units} units, "
            f"{self.bin_width * 1000:g} ms bins, {self.transform}{trials}{src})"
        )

    def save(self, path, overwrite: bool = False) -> Path:
        """Write an ``.npz`` file (atomically) that :func:`load_binned` reads back."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValidationError(f"binned spikes are saved as .npz, got {path.name}")
        arrays = dict(
            observations=self.observations,
            counts=self.counts,
            bin_width=np.float64(self.bin_width),
            unit_ids=np.asarray(self.unit_ids),
            transform=np.str_(self.transform),
            source=np.str_(self.source),
        )
        if self.trial_intervals is not None:
            arrays["trial_intervals"] = np.asarray(self.trial_intervals, dtype=np.float64)
        with atomic_path(path, overwrite=overwrite) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return path


def _check_exists(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} does not exist")
    if path.is_dir():
        raise FileFormatError(f"{path} is a folder; expected a file")
    return path


def _read_nwb_units(path: Path):
    """Spike times per unit, unit ids and trial intervals (or None) from an NWB file."""
    pynwb = require("pynwb", "nwb")
    import h5py

    if not h5py.is_hdf5(path):
        raise FileFormatError(f"{path} is not an NWB file (NWB files are HDF5; this one is not)")
    try:
        with pynwb.NWBHDF5IO(str(path), "r", load_namespaces=True) as io:
            nwbfile = io.read()
            units = nwbfile.units
            if units is None:
                raise FileFormatError(f"{path} has no units table (nwbfile.units); it holds no sorted spikes")
            if len(units) == 0:
                raise FileFormatError(f"{path}: the units table is empty (0 units)")
            if "spike_times" not in units.colnames:
                raise FileFormatError(f"{path}: the units table has no spike_times column; columns: {units.colnames}")
            spike_times = [np.asarray(units["spike_times"][i], dtype=np.float64) for i in range(len(units))]
            unit_ids = np.asarray(units.id[:])
            trials = None
            if nwbfile.trials is not None and len(nwbfile.trials) > 0:
                trials = np.stack(
                    [np.asarray(nwbfile.trials["start_time"][:]), np.asarray(nwbfile.trials["stop_time"][:])],
                    axis=1,
                ).astype(np.float64)
    except (FileFormatError, ValidationError):
        raise
    except Exception as exc:  # pynwb/hdmf raise many kinds of errors for files that are not valid NWB
        raise FileFormatError(f"{path} could not be read as NWB: {type(exc).__name__}: {exc}") from exc
    return spike_times, unit_ids, trials


def load_nwb(path, bin_width: float = 0.02, transform: str = "sqrt",
             max_bytes: int = MAX_BINNED_BYTES) -> BinnedSpikes:
    """Bin the spikes of an NWB file's ``units`` table (needs the ``nwb`` extra).

    Warns (:class:`~lds.errors.SilentUnitsWarning`) about units without a spike;
    ``max_bytes`` as in :func:`bin_spike_times`.

    >>> data = lds.data.load_nwb("sub-Jenkins_ses-small_desc-train_behavior+ecephys.nwb")
    >>> data.observations.shape        # [T, 142], 20 ms bins, sqrt(count + 0.5)
    >>> trials = data.trials()         # one [T_i, 142] array per row of the trials table
    """
    width = _check_bin_width(bin_width)
    if transform not in TRANSFORMS:
        raise ValidationError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    path = _check_exists(path)
    spike_times, unit_ids, trials = _read_nwb_units(path)
    if not any(t.size for t in spike_times):
        raise FileFormatError(f"{path}: none of the {len(spike_times)} units has any spike")
    counts, _ = bin_spike_times(spike_times, width, max_bytes=max_bytes)
    silent = unit_ids[counts.sum(axis=0) == 0].tolist()
    if silent:
        warn(f"{path.name}: {len(silent)} of {len(unit_ids)} units never fire (unit ids {silent}); an LDS cannot "
             "model a channel that never changes (lds.data.drop_constant_channels leaves such channels out)",
             SilentUnitsWarning)
    return BinnedSpikes(
        observations=transform_counts(counts, transform),
        counts=counts,
        bin_width=width,
        unit_ids=unit_ids,
        transform=transform,
        trial_intervals=trials,
        source=path.name,
    )


_BINNED_KEYS = ("observations", "counts", "bin_width", "unit_ids", "transform")


def load_binned(path) -> BinnedSpikes:
    """Read an ``.npz`` file written by :meth:`BinnedSpikes.save`."""
    path = _check_exists(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in _BINNED_KEYS if k not in npz.files]
            if missing:
                raise FileFormatError(f"{path} is not a binned-spikes file: it lacks {missing}; it has {npz.files}")
            return BinnedSpikes(
                observations=npz["observations"],
                counts=npz["counts"],
                bin_width=float(npz["bin_width"]),
                unit_ids=npz["unit_ids"],
                transform=str(npz["transform"]),
                trial_intervals=npz["trial_intervals"] if "trial_intervals" in npz.files else None,
                source=str(npz["source"]) if "source" in npz.files else path.name,
            )
    except FileFormatError:
        raise
    except Exception as exc:
        raise FileFormatError(f"{path} could not be read as .npz: {exc}") from exc


def _check_observations(array, where: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise FileFormatError(f"{where} holds {array.dtype} values; expected numbers")
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise FileFormatError(
            f"{where} has shape {array.shape}; expected time-major [T, N] or trials [B, T, N]"
        )
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise FileFormatError(f"{where} contains NaN or infinite values")
    peak, limit = float(np.max(np.abs(array))), math.sqrt(np.finfo(np.float64).max / array.size)
    if peak > limit:  # the sums of squares that every fit forms would overflow
        raise ValidationError(f"{where} has values up to {peak:.3g}, too large to fit: their squares summed over its "
                              f"{array.size} entries overflow float64 (|values| must stay below {limit:.3g}); "
                              "rescale the data")
    return array


def load_observations(path, *, key: str | None = None, bin_width: float = 0.02, transform: str = "sqrt",
                      split_trials: bool = False):
    """Observations for an LDS fit from ``.npy``, ``.npz`` or ``.nwb``.

    ``.npy``: the array itself (``[T, N]`` or ``[B, T, N]``). ``.npz``: the binned
    spikes file of :meth:`BinnedSpikes.save`, or the array under ``key`` (default: the
    only array, or ``observations``). ``.nwb``: :func:`load_nwb`. ``split_trials``
    returns a list of per-trial arrays when the data has trials.
    """
    path = _check_exists(path)
    suffix = path.suffix.lower()
    if suffix == ".nwb":
        binned = load_nwb(path, bin_width=bin_width, transform=transform)
        return binned.trials() if split_trials and binned.num_trials else binned.observations
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise FileFormatError(f"{path} could not be read as .npy: {exc}") from exc
        return _check_observations(array, str(path))
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                names = list(npz.files)
                is_binned = all(k in names for k in _BINNED_KEYS)
                if key is None:
                    key = "observations" if "observations" in names else (names[0] if len(names) == 1 else None)
                if key is None:
                    raise FileFormatError(f"{path} holds several arrays, {names}, and none is called 'observations': "
                                          "say which one to use (key=NAME in Python, --key NAME on the command line)")
                if key not in names:
                    raise FileFormatError(f"{path} has no array {key!r}; it holds {names}")
                array = npz[key]
        except FileFormatError:
            raise
        except Exception as exc:
            raise FileFormatError(f"{path} could not be read as .npz: {exc}") from exc
        if is_binned and key == "observations" and split_trials:
            binned = load_binned(path)
            if binned.num_trials:
                return [_check_observations(t, f"{path} trial") for t in binned.trials()]
        return _check_observations(array, f"{path}[{key!r}]")
    raise FileFormatError(f"{path}: unsupported data file type {suffix!r}; expected .npy, .npz or .nwb")


def drop_constant_channels(y):
    """``(y without its constant channels, kept channel indices)`` for an LDS fit.

    ``y``: ``[T, N]``, ``[B, T, N]`` or a list of ``[T_i, N]`` trials (as
    :func:`load_observations` returns). A channel is constant when it takes one value
    over every time step of every trial (missing values, NaN, aside), e.g. a unit that
    never fires: an LDS would give it zero noise variance, which no fit can handle.
    """
    trials = list(y) if isinstance(y, list) else [np.asarray(y)]
    rows = np.concatenate([np.asarray(t).reshape(-1, np.shape(t)[-1]) for t in trials])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN channel: constant too
        kept = np.flatnonzero(np.nanmax(rows, axis=0) - np.nanmin(rows, axis=0) > 0)
    if kept.size == 0:
        raise ValidationError(f"all {rows.shape[1]} channels are constant (the same value at every time step); "
                              "there is nothing to fit")
    if kept.size == rows.shape[1]:
        return y, kept
    if isinstance(y, list):
        return [np.asarray(t)[..., kept] for t in y], kept
    return np.asarray(y)[..., kept], kept
