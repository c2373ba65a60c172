"""``Run``: one run spec trained with one parameter set, and everything in its folder.

Paths follow lfads-run-manager (``rc.version >= 20171107``)::

    <rc.path>/param_<hash>/<run name>/          run.path
        lfadsInput/lfads_<ds>.h5                 (links into data_<hash>/<run name>/)
        lfadsOutput/model_params, fitlog.csv, hyperparameters-<step>.txt,
                    model_runs_<ds>.h5_{train,valid}_<posterior kind>,
                    lightning_checkpoints/*.ckpt, lfads_output_<session>.h5 (lfads-torch)
        lfads_tools_run.json                     what this library records about the run
        lds/kalman_params.h5, lds/em_history.json   an LDS fitted by Run.fit_lds
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import h5py
import numpy as np

from lds.containers import DatasetList
from lds.errors import FileFormatError, MissingFileError, ValidationError
from lds.fileio import atomic_write_bytes, check_writable

from .fit_log import FitLog
from .posterior_means import POSTERIOR_KINDS, PosteriorMeans
from .run_params import DEFAULT_VERSION
from .run_records import RUN_RECORD_FILE, pending_run_record

__all__ = ["Run"]

ON_DISK = ("model_params", "lfads_torch_checkpoint", "posterior_means", "fit_log", "lds_fit")


class Run:
    """One run: its name (the run spec's), parameters, datasets and folder.

    Made by :class:`~lfads_tools.RunCollection`; ``problem`` says why a run found on
    disk could not be read completely (None when all is well). ``datasets`` are the run
    spec's unless the run's folder says otherwise.
    """

    def __init__(self, run_spec, params, run_collection, param_index: int, param_folder: str | None = None,
                 problem: str | None = None, source: str = "declared", datasets: list | None = None):
        self.run_spec, self.params, self.run_collection = run_spec, params, run_collection
        self.param_index = param_index
        self.params_string = param_folder or params.param_hash
        self._disk_problem, self._datasets = problem, datasets
        self.source = source  # where the parameters came from: declared, record, lfads hyperparameters, unreadable

    @property
    def params_known(self) -> bool:
        """Whether ``params`` hash to the run's folder (not so when LFADS's hyperparameters left some unknown)."""
        return self.params.param_hash == self.params_string

    @property
    def problem(self) -> str | None:
        """Why the run could not be read completely, or why its parameters are not all known; None when all is well."""
        problems = [self._disk_problem] if self._disk_problem else []
        if not self.params_known and self.source in ("declared", "lfads hyperparameters"):
            problems.append(self._unknown_params_reason())
        return "; ".join(problems) or None

    def _unknown_params_reason(self) -> str:
        if self.source == "declared":
            return f"its parameters now hash to {self.params.param_hash}, not to its folder {self.params_string}"
        return (f"parameters that LFADS does not record (spikeBinMs, trainToTestRatio, useAlignmentMatrix, ..., a "
                f"RunParams subclass's) are unknown: with them at their defaults, the c_ values of its "
                f"hyperparameters-*.txt hash to {self.params.param_hash}, not {self.params_string}; declare the "
                f"RunParams with add_params to use them")

    # ---- identity ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.run_spec.name

    @property
    def datasets(self) -> list:
        return self.run_spec.datasets if self._datasets is None else self._datasets

    @property
    def dataset_names(self) -> list[str]:
        return [d.name for d in self.datasets]

    @property
    def n_datasets(self) -> int:
        return len(self.datasets)

    @property
    def version(self) -> int:
        return self.run_collection.version

    # ---- paths ------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.run_collection.path / self.params_string / self.name

    @property
    def path_common_data(self) -> Path:
        """``data_<hash>/<run name>``: the LFADS input files shared by params with the same data hash."""
        if not self.params_known:
            raise ValidationError(f"run {self.name} ({self.params_string}): its data hash is unknown ({self.problem})")
        data = self.run_collection.path / self.params.data_hash
        return data / self.name if self.version >= DEFAULT_VERSION else data

    @property
    def path_lfads_input(self) -> Path:
        return self.path / "lfadsInput"

    @property
    def path_lfads_output(self) -> Path:
        return self.path / "lfadsOutput"

    @property
    def lfads_input_file_names(self) -> list[str]:
        return [f"lfads_{name}.h5" for name in self.dataset_names]

    @property
    def lfads_input_info_file_names(self) -> list[str]:
        return [f"inputInfo_{name}.mat" for name in self.dataset_names]

    @property
    def file_model_params(self) -> Path:
        return self.path_lfads_output / "model_params"

    @property
    def file_fit_log(self) -> Path:
        return self.path_lfads_output / "fitlog.csv"

    @property
    def file_lfads_output(self) -> Path:
        return self.path / "lfads.out"

    @property
    def file_run_record(self) -> Path:
        return self.path / RUN_RECORD_FILE

    @property
    def path_lds(self) -> Path:
        return self.path / "lds"

    @property
    def file_kalman_params(self) -> Path:
        return self.path_lds / "kalman_params.h5"

    @property
    def file_lds_history(self) -> Path:
        return self.path_lds / "em_history.json"

    def posterior_mean_files(self, kind: str | None = None) -> list[tuple[Path, Path]]:
        """``(train, valid)`` posterior-mean files per dataset (the legacy ``_posterior_sample`` name if only it exists)."""
        kind = self._kind(kind)
        files = []
        for name in self.dataset_names:
            pair = tuple(self.path_lfads_output / f"model_runs_{name}.h5_{split}_{kind}"
                         for split in ("train", "valid"))
            legacy = tuple(self.path_lfads_output / f"model_runs_{name}.h5_{split}_posterior_sample"
                           for split in ("train", "valid"))
            use_legacy = kind == POSTERIOR_KINDS[0] and not pair[0].exists() and legacy[0].exists()
            files.append(legacy if use_legacy else pair)
        return files

    def lfads_torch_checkpoint(self) -> Path | None:
        """The lfads-torch checkpoint to load from ``lfadsOutput`` (or its ``lightning_checkpoints``).

        Lightning keeps the best model as ``<epoch>-<step>.ckpt`` beside ``last.ckpt``;
        the best one is preferred (the newest if there are several), else ``last.ckpt``.
        Hidden files (``.x.ckpt``) and dangling links are no checkpoints, as in :meth:`on_disk`.
        """
        output = os.fspath(self.path_lfads_output)
        candidates = (dict(_checkpoints(os.path.join(output, "lightning_checkpoints")))
                      or dict(_checkpoints(output)))
        best = {path: mtime for path, mtime in candidates.items() if os.path.basename(path) != "last.ckpt"}
        best = best or candidates
        return Path(max(best, key=best.get)) if best else None

    def _kind(self, kind: str | None) -> str:
        kind = kind or self.params.posterior_mean_kind
        if kind not in POSTERIOR_KINDS:
            raise ValidationError(f"posterior mean kind must be one of {POSTERIOR_KINDS}, got {kind!r}")
        return kind

    # ---- what is on disk --------------------------------------------------------
    def on_disk(self) -> dict[str, bool]:
        """Which results the folder holds, plus ``folder``: whether the run folder exists at all.

        Two directory listings (the run folder and ``lfadsOutput``; a third only for
        ``lightning_checkpoints``), so that listing thousands of runs stays fast.
        """
        base = os.path.join(os.fspath(self.run_collection.path), self.params_string, self.name)
        listing = _listing(base)
        run_names = listing or set()
        names = (_listing(os.path.join(base, "lfadsOutput")) or set()) if "lfadsOutput" in run_names else set()
        kinds = POSTERIOR_KINDS + ("posterior_sample",)

        def has_posterior(ds, split):
            return any(f"model_runs_{ds}.h5_{split}_{kind}" in names for kind in kinds)

        posterior = bool(self.dataset_names) and all(
            (has_posterior(ds, "train") and has_posterior(ds, "valid"))
            or f"lfads_output_lfads_{ds}.h5" in names or f"lfads_output_{ds}.h5" in names
            for ds in self.dataset_names)
        output = os.path.join(base, "lfadsOutput")
        checkpoint = any(_checkpoints(output, names)) or (
            "lightning_checkpoints" in names and any(_checkpoints(os.path.join(output, "lightning_checkpoints"))))
        return {
            "model_params": "model_params" in names,
            "lfads_torch_checkpoint": checkpoint,
            "posterior_means": posterior,
            "fit_log": "fitlog.csv" in names,
            "lds_fit": "lds" in run_names and os.path.isfile(os.path.join(base, "lds", "kalman_params.h5")),
            "folder": listing is not None,
        }

    def prepare_folder(self, overwrite: bool = False) -> Path:
        """Create the run folder (with ``lfadsInput``/``lfadsOutput``) and write its record.

        An existing record that differs is replaced only with ``overwrite=True``, else an
        :class:`~lds.errors.OverwriteError`; a run whose parameters do not hash to its folder
        raises a :class:`~lds.errors.ValidationError` (its record would contradict the
        folder). Both are checked before anything is created.
        """
        return self._make_folder(pending_run_record(self, overwrite), overwrite)

    def _make_folder(self, record: bytes | None, overwrite: bool) -> Path:
        """:meth:`prepare_folder` with the record :func:`pending_run_record` gave (None: already written)."""
        self.path_lfads_input.mkdir(parents=True, exist_ok=True)
        self.path_lfads_output.mkdir(exist_ok=True)
        if record is not None:
            atomic_write_bytes(self.file_run_record, record, overwrite=overwrite)
        return self.path

    # ---- results ----------------------------------------------------------------
    def load_model_trained_params(self, **options):
        """The trained LFADS weights (TF ``model_params``, else an lfads-torch checkpoint), in dataset order."""
        checkpoint = None if self.file_model_params.is_file() else self.lfads_torch_checkpoint()
        if self.file_model_params.is_file() or checkpoint is not None:
            from lfads_tools import ModelTrainedParams  # public name; its module belongs to another part

            if checkpoint is None:
                return ModelTrainedParams.from_tf_model_params(self.file_model_params,
                                                               dataset_names=self.dataset_names, **options)
            return ModelTrainedParams.from_lfads_torch(checkpoint, dataset_names=self.dataset_names, **options)
        raise MissingFileError(f"run {self.name} ({self.params_string}) has no trained model: neither "
                               f"{self.file_model_params} nor an lfads-torch checkpoint (*.ckpt) in "
                               f"{self.path_lfads_output}")

    def load_fit_log(self) -> FitLog:
        return FitLog(self.file_fit_log, run_name=self.name)

    def lfads_torch_output_file(self, index: int) -> Path | None:
        """lfads-torch's ``lfads_output_<session>.h5`` of one dataset (session = input file stem or dataset name)."""
        name = self.dataset_names[index]
        for candidate in (f"lfads_output_lfads_{name}.h5", f"lfads_output_{name}.h5"):
            if (self.path_lfads_output / candidate).is_file():
                return self.path_lfads_output / candidate
        return None

    def _input_info(self, index: int) -> dict:
        """The dataset's ``inputInfo_<ds>.mat`` (empty when there is none)."""
        info_file = self.path_lfads_input / self.lfads_input_info_file_names[index]
        return _read_input_info(info_file) if info_file.is_file() else {}

    def _spike_bin_ms(self, index: int, info: dict, output_file: Path, factors_key: str) -> float:
        """The LFADS bin width: ``spikeBinMs``, or, when the parameters are not all known, from the input info.

        lfads-run-manager sums ``spikeBinMs / seq_binSizeMs`` original bins into one and drops
        the leftover. The numbers of original and LFADS bins give that factor when only one
        fits; otherwise it is the one whose sums of inputInfo's ``counts`` are the input's
        ``train_data``.
        """
        if self.params_known:
            return float(self.params.spikeBinMs)
        where = f"run {self.name} ({self.params_string}), dataset {self.dataset_names[index]}: spikeBinMs is unknown"
        if "seq_binSizeMs" not in info or "seq_timeVector" not in info:
            raise ValidationError(f"{where} (LFADS does not record it) and {self.lfads_input_info_file_names[index]} "
                                  f"with seq_binSizeMs and seq_timeVector is not in {self.path_lfads_input}")
        shape = _shape(output_file, factors_key)
        if shape is None or len(shape) != 3 or shape[1] == 0:
            raise FileFormatError(f"{where}, and the number of LFADS bins cannot be read: {output_file} is missing "
                                  f"or lacks a [trials, T, factors] {factors_key!r}")
        n_original, n_bins = int(np.size(info["seq_timeVector"])), int(shape[1])
        factors = list(range(n_original // (n_bins + 1) + 1, n_original // n_bins + 1))
        if len(factors) > 1 and "counts" in info:
            input_file = self.path_lfads_input / self.lfads_input_file_names[index]
            factors = _factors_matching_input(np.asarray(info["counts"]), input_file, factors, n_bins)
        if len(factors) != 1:
            raise ValidationError(f"{where}: {n_original} original bins give {n_bins} LFADS bins when summed by any "
                                  f"of {list(factors) or 'no factor'}; declare the RunParams with add_params")
        return factors[0] * float(np.ravel(info["seq_binSizeMs"])[0])

    def _trial_split(self, index: int, info: dict, train_file: Path, valid_file: Path) -> dict:
        """0-based train/valid trial indices: from the LFADS input file, else inputInfo, else the split rule."""
        input_file = self.path_lfads_input / self.lfads_input_file_names[index]
        if input_file.is_file():
            return _read_split(input_file)
        if "trainInds" in info and "validInds" in info:
            return {"train_inds": np.ravel(info["trainInds"]).astype(np.int64) - 1,
                    "valid_inds": np.ravel(info["validInds"]).astype(np.int64) - 1}
        if not self.params_known:
            raise ValidationError(f"run {self.name} ({self.params_string}): neither {input_file.name} nor "
                                  f"{self.lfads_input_info_file_names[index]} gives the train/valid split, and "
                                  f"trainToTestRatio is unknown ({self.problem})")
        n = _rows(train_file) + _rows(valid_file)  # the run manager's rule: every (ratio+1)-th trial is valid
        valid = np.arange(0, n, int(self.params.trainToTestRatio) + 1)
        return {"train_inds": np.setdiff1d(np.arange(n), valid), "valid_inds": valid}

    def load_posterior_means(self, kind: str | None = None) -> DatasetList:
        """One :class:`PosteriorMeans` per dataset (a ``DatasetList`` by dataset name), rates in spikes/s.

        TF LFADS files of ``kind`` (default ``params.posterior_mean_kind``) are used when
        present, else lfads-torch's ``lfads_output_*.h5``.
        """
        kind = self._kind(kind)
        means = []
        for index, (train_file, valid_file) in enumerate(self.posterior_mean_files(kind)):
            info = self._input_info(index)
            torch_file = None if train_file.exists() else self.lfads_torch_output_file(index)
            spike_bin_ms = (self._spike_bin_ms(index, info, train_file, "factors") if torch_file is None
                            else self._spike_bin_ms(index, info, torch_file, "train_factors"))
            common = dict(spike_bin_ms=spike_bin_ms, dataset_name=self.dataset_names[index],
                          **_info_extras(info, spike_bin_ms))
            if torch_file is not None:
                means.append(PosteriorMeans.from_lfads_torch_file(torch_file, **common))
            else:
                split = self._trial_split(index, info, train_file, valid_file)
                means.append(PosteriorMeans.from_tf_files(train_file, valid_file, kind=kind, **split, **common))
        return DatasetList(means, names=self.dataset_names)

    # ---- linear dynamical systems -------------------------------------------------
    def fit_lds(self, overwrite: bool = False, **em_options):
        """Fit a ``KalmanParams`` by EM on the run's datasets and store it in ``lds/``.

        One dataset gives a single-session model; several give the multi-session model
        (shared dynamics, one observation model per dataset, named after the datasets).
        ``em_options`` go to :func:`lds.fit_em`; the EM history goes to ``em_history.json``.
        """
        import lds

        for file in (self.file_kalman_params, self.file_lds_history):
            check_writable(file, overwrite)
        record = pending_run_record(self, overwrite)  # whatever can fail is checked before the fit
        data = {d.name: d.load_data() for d in self.datasets}
        if not data:
            raise ValidationError(f"run {self.name} has no datasets to fit")
        result = lds.fit_em(data if len(data) > 1 else next(iter(data.values())), **em_options)
        self._make_folder(record, overwrite)
        self.path_lds.mkdir(exist_ok=True)
        history = {
            "run_name": self.name,
            "param_hash": self.params.param_hash,
            "datasets": self.dataset_names,
            "log_likelihoods": [float(v) for v in result.log_likelihoods],
            "converged": bool(result.converged),
            "num_iterations": int(result.num_iterations),
            "em_options": {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
                           for k, v in em_options.items()},
        }
        result.params.save(self.file_kalman_params, metadata={"run_name": self.name, "datasets": self.dataset_names,
                                                              "log_likelihood": history["log_likelihoods"][-1]},
                           overwrite=overwrite)
        atomic_write_bytes(self.file_lds_history, json.dumps(history, indent=1).encode("utf-8"), overwrite=overwrite)
        return result

    def load_kalman_params(self):
        """The LDS fitted by :meth:`fit_lds`."""
        from lds import KalmanParams

        if not self.file_kalman_params.is_file():
            raise MissingFileError(f"run {self.name} ({self.params_string}) has no LDS fit: "
                                   f"{self.file_kalman_params} does not exist (call fit_lds first)")
        return KalmanParams.load(self.file_kalman_params)

    def load_lds_history(self) -> dict:
        """The EM history of :meth:`fit_lds`: log-likelihoods, convergence, iterations, options."""
        from .run_records import _read_json

        return _read_json(self.file_lds_history, "LDS fit history")

    # ---- display -----------------------------------------------------------------
    def __eq__(self, other):
        if not isinstance(other, Run):
            return NotImplemented
        return (self.name == other.name and self.params_string == other.params_string
                and self.dataset_names == other.dataset_names and self.run_collection is other.run_collection)

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        disk = self.on_disk()
        fields = [
            ("name", repr(self.name)),
            ("params", f"{self.params_string} {data_hash_text(self.params, self.params_string)}"),
            ("differences", self.params.short_differences() + ("" if self.params_known else " (not all known)")),
            ("datasets", f"{{{self.n_datasets}x1 cell}}: " + ", ".join(self.dataset_names)),
            ("path", str(self.path)), ("params from", self.source),
            ("on disk", ", ".join(k for k in ON_DISK if disk[k]) or "nothing yet"),
        ]
        if self.problem:
            fields.append(("problem", self.problem))
        width = max(len(k) for k, _ in fields) + 4
        return f"  {type(self).__name__} with properties:\n\n" + "\n".join(
            f"{k.rjust(width)}: {v}" for k, v in fields) + "\n"


def data_hash_text(params, param_folder: str) -> str:
    """``data_<hash>`` of params that hash to their folder; otherwise the data hash is unknown."""
    return params.data_hash if params.param_hash == param_folder else "data_?????? (unknown)"


def _info_extras(info: dict, spike_bin_ms: float) -> dict:
    """The time (first original bin of each LFADS bin), conditions and counts that an input info gives."""
    extras = {}
    if "seq_timeVector" in info and "seq_binSizeMs" in info:
        step = max(1, int(round(spike_bin_ms / float(np.ravel(info["seq_binSizeMs"])[0]))))
        extras["time"] = np.ravel(info["seq_timeVector"])[::step]
    if "conditionId" in info:
        extras["condition_ids"] = np.ravel(info["conditionId"])
    if "counts" in info:
        extras["raw_counts"] = np.asarray(info["counts"])
    return extras


def _listing(folder: str) -> set[str] | None:
    """Names in a folder, or None when it does not exist (an unreadable folder lists as empty)."""
    try:
        return set(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return set()


def _checkpoints(folder: str, names: set | None = None):
    """``(path, modification time)`` of each checkpoint in ``folder`` (listed as ``names``), lazily.

    The one rule of :meth:`Run.on_disk` and :meth:`Run.lfads_torch_checkpoint`: a file
    named ``*.ckpt``, not hidden (``.x.ckpt``); dangling links and unreadable entries do
    not count.
    """
    for name in (_listing(folder) if names is None else names) or ():
        if not name.endswith(".ckpt") or name.startswith("."):
            continue
        path = os.path.join(folder, name)
        try:
            status = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(status.st_mode):
            yield path, status.st_mtime


def _shape(path: Path, key: str) -> tuple | None:
    """Shape of one dataset of an HDF5 file; None if it cannot be read (the loader reports why)."""
    try:
        with h5py.File(path, "r") as f:
            return f[key].shape if isinstance(f.get(key), h5py.Dataset) else None
    except (OSError, ValueError):
        return None


def _factors_matching_input(counts: np.ndarray, input_file: Path, factors: list, n_bins: int) -> list:
    """The ``factors`` for which summing that many original bins of ``counts`` (neurons x bins x trials)
    gives the input file's train_data (none when the file cannot be read); the file is read once."""
    try:
        with h5py.File(input_file, "r") as f:
            data = np.asarray(f["train_data"][()])
            inds = np.asarray(f["train_inds"][()]).ravel().astype(np.int64) - 1
    except (OSError, KeyError):
        return []
    counts = counts.reshape(counts.shape[0], counts.shape[1], -1)

    def matches(factor):
        try:
            summed = counts[:, :factor * n_bins].reshape(counts.shape[0], n_bins, factor, counts.shape[2]).sum(axis=2)
            return bool(np.array_equal(summed[:, :, inds].transpose(2, 1, 0), data))
        except (ValueError, IndexError):
            return False

    return [factor for factor in factors if matches(factor)]


def _rows(path: Path) -> int:
    """Number of trials in a posterior file (0 if it cannot be read)."""
    shape = _shape(path, "factors")
    return int(shape[0]) if shape else 0


def _read_split(path: Path) -> dict:
    """``train_inds`` / ``valid_inds`` (1-based in the file) of an LFADS input file, 0-based."""
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("train_inds", "valid_inds") if k not in f]
            if missing:
                raise FileFormatError(f"LFADS input file {path} lacks {missing}, needed to put trials back in order")
            return {key: np.asarray(f[key][()]).ravel().astype(np.int64) - 1 for key in ("train_inds", "valid_inds")}
    except OSError as exc:
        raise FileFormatError(f"LFADS input file {path} could not be read as HDF5: {exc}") from None


def _read_input_info(path: Path) -> dict:
    """The MATLAB ``inputInfo_<ds>.mat`` of lfads-run-manager (v5/v7 .mat files)."""
    import scipy.io

    try:
        return scipy.io.loadmat(path)
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise FileFormatError(f"input info file {path} could not be read as a MATLAB .mat file: {exc}") from None
