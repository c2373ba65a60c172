"""``RunSpec`` and ``RunCollection``: the grid of runs (run specs x parameter sets).

A :class:`RunCollection` lives in ``<root_path>/<name>``; each parameter set has a
``param_<hash>`` folder and each run spec a folder inside it. Runs are found with
:meth:`RunCollection.find_runs` (0-based indices, names, hashes or objects) and listed
with :meth:`RunCollection.runs_table`. :meth:`RunCollection.from_disk` rebuilds a
collection from an existing tree without declaring anything again.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
from tabulate import tabulate
from tqdm.auto import tqdm

from lds.errors import FileFormatError, LfadsToolsError, LibraryWarning, MissingFileError, ValidationError, warn

from .datasets import Dataset, DatasetCollection, select_indices
from .run import ON_DISK, Run, data_hash_text
from .run_params import DEFAULT_VERSION, RunParams
from .run_records import (RUN_RECORD_FILE, dataset_names_from_lfads_hyperparameters, find_hyperparameters_file,
                          lfads_hyperparameter_items, params_from_lfads_hyperparameters, params_from_record,
                          pending_run_record, read_lfads_hyperparameters, read_run_record)

__all__ = ["RunSpec", "RunCollection", "RunList"]


def _is_single(search) -> bool:
    return search is not None and not isinstance(search, (list, tuple, np.ndarray, range))


class RunList(list):
    """The runs :meth:`RunCollection.find_runs` returns: a plain list that prints as a table."""

    def __repr__(self) -> str:
        rows = [[r.name, r.params_string, ", ".join(r.dataset_names), r.problem or ""] for r in self]
        return f"{type(self).__name__} of {len(self)} runs\n" + tabulate(
            rows, headers=["run spec", "params", "datasets", "problem"], disable_numparse=True) + "\n"


class RunSpec:
    """A named selection of datasets, trained together (one folder per parameter set).

    ``datasets`` are Dataset objects, or names / 0-based indices / a mask into
    ``dataset_collection``; their order is the run's dataset order.
    """

    def __init__(self, name: str, datasets, dataset_collection: DatasetCollection | None = None, comment: str = ""):
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or os.sep in name:
            raise ValidationError(f"a run spec name must be a non-empty folder name, got {name!r}")
        items = list(datasets) if isinstance(datasets, (list, tuple)) else [datasets]
        if all(isinstance(d, Dataset) for d in items):
            self.datasets = items
            dataset_collection = dataset_collection or (items[0].collection if items else None)
        elif dataset_collection is None:
            raise ValidationError(f"run spec {name!r}: datasets given by name or index need a dataset_collection")
        else:
            self.datasets = [dataset_collection.datasets[i] for i in dataset_collection.find_datasets(datasets)]
        self.name, self.dataset_collection, self.comment = name, dataset_collection, comment

    @property
    def dataset_names(self) -> list[str]:
        return [d.name for d in self.datasets]

    @property
    def n_datasets(self) -> int:
        return len(self.datasets)

    def __eq__(self, other):
        if not isinstance(other, RunSpec):
            return NotImplemented
        return self.name == other.name and self.dataset_names == other.dataset_names

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f'{type(self).__name__} "{self.name}" ({_datasets_text(self)})'


class RunCollection:
    """Run specs crossed with parameter sets, under ``<root_path>/<name>``.

    >>> rc = RunCollection("/data/runs", "exp1", dc)
    >>> rc.add_run_spec(RunSpec("single_dataset001", "dataset001", dc))
    >>> rc.add_params(RunParams(c_factors_dim=8))
    >>> run = rc.find_runs("single_dataset001", 0)       # MATLAB: rc.findRuns('single_dataset001', 1)
    """

    def __init__(self, root_path, name: str, dataset_collection: DatasetCollection | None = None,
                 version: int = DEFAULT_VERSION, comment: str = ""):
        self.root_path, self.name = Path(root_path), name
        self.dataset_collection, self.version, self.comment = dataset_collection, int(version), comment
        self.run_specs: list[RunSpec] = []
        self.params: list[RunParams] = []
        self._param_folders: list[str] = []
        self._found: dict[tuple[str, str], dict] = {}  # (run name, param folder) -> what from_disk found for Run
        self._runs = np.empty((0, 0), dtype=object)

    # ---- building the grid -----------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.root_path / self.name

    @property
    def param_hashes(self) -> list[str]:
        """The ``param_<hash>`` folder of each parameter set."""
        return list(self._param_folders)

    @property
    def n_run_specs(self) -> int:
        return len(self.run_specs)

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def n_runs(self) -> int:
        return self.n_run_specs * self.n_params

    @property
    def runs(self) -> np.ndarray:
        """All runs as an ``[n_run_specs, n_params]`` object array (``rc.runs[i_spec, i_param]``)."""
        return self._runs

    def add_run_spec(self, run_specs) -> None:
        """Add run specs; one with the name of an existing spec replaces it."""
        for spec in run_specs if isinstance(run_specs, (list, tuple)) else [run_specs]:
            if not isinstance(spec, RunSpec):
                raise ValidationError(f"add_run_spec takes RunSpec objects, got {type(spec).__name__}")
            if self.dataset_collection is not None and spec.dataset_collection not in (None, self.dataset_collection):
                raise ValidationError(f"run spec {spec.name!r} uses another dataset collection than {self.name!r}")
            names = [s.name for s in self.run_specs]
            if spec.name in names:
                old = self.run_specs[names.index(spec.name)]
                if old.dataset_names != spec.dataset_names:
                    warn(f"replacing run spec {spec.name!r} (datasets {old.dataset_names} -> {spec.dataset_names})",
                         LibraryWarning)
                self.run_specs[names.index(spec.name)] = spec
            else:
                self.run_specs.append(spec)
        self._generate_runs()

    def add_params(self, params) -> None:
        """Add parameter sets (copies carrying the collection's version); equal hashes replace."""
        for p in params if isinstance(params, (list, tuple)) else [params]:
            if not isinstance(p, RunParams):
                raise ValidationError(f"add_params takes RunParams objects, got {type(p).__name__}")
            p = p.copy(version=self.version)
            if p.param_hash in self._param_folders:
                self.params[self._param_folders.index(p.param_hash)] = p
            else:
                self.params.append(p)
                self._param_folders.append(p.param_hash)
        self._generate_runs()

    def _generate_runs(self) -> None:
        """Rebuild the run grid, keeping Run objects whose spec and params are unchanged."""
        old = {(r.name, r.params_string): r for r in self._runs.flat}
        grid = np.empty((self.n_run_specs, self.n_params), dtype=object)
        for i, spec in enumerate(self.run_specs):
            for j, (params, folder) in enumerate(zip(self.params, self._param_folders)):
                run = old.get((spec.name, folder))
                if run is None or run.run_spec is not spec or run.params is not params:
                    run = Run(spec, params, self, j, param_folder=folder, **self._found.get((spec.name, folder), {}))
                grid[i, j] = run
        self._runs = grid

    # ---- queries ---------------------------------------------------------------------
    def find_run_specs(self, search) -> list[int]:
        """0-based positions of run specs given by name, RunSpec, index, mask or a list (None = all)."""
        specs = self.run_specs
        return select_indices(search, [s.name for s in specs], "run spec",
                              match=lambda s: specs.index(s) if isinstance(s, RunSpec) and s in specs else None)

    def find_params(self, search) -> list[int]:
        """0-based positions of parameter sets given by RunParams, ``'param_XXXXXX'``, ``'XXXXXX'``, index or mask."""
        folders = self._param_folders

        def normalize(item):
            if isinstance(item, RunParams):
                return item.param_hash
            if isinstance(item, str) and not item.startswith("param_"):
                return "param_" + item
            return item

        if isinstance(search, np.ndarray) and search.dtype != bool:
            search = search.tolist()  # hashes or indices; a boolean mask stays an array
        if isinstance(search, (list, tuple)):
            search = [normalize(s) for s in search]
        elif search is not None and not isinstance(search, np.ndarray):
            search = normalize(search)
        return select_indices(search, folders, "parameter set")

    def find_runs(self, run_spec_search=None, param_search=None):
        """Runs matching both searches; ``None`` means all.

        A single Run when each search names one entry (MATLAB: ``rc.findRuns('all', 1)``
        is ``rc.find_runs('all', 0)``), else a :class:`RunList` ordered by params, then
        run spec (MATLAB's column-major ``rc.runs(:)`` order). Parameter sets are matched
        by their folder's hash, whatever the class of a RunParams given.
        """
        rows, cols = self.find_run_specs(run_spec_search), self.find_params(param_search)
        if _is_single(run_spec_search) and _is_single(param_search):
            return self._runs[rows[0], cols[0]]
        return RunList(self._runs[i, j] for j in cols for i in rows)

    # ---- listing ---------------------------------------------------------------------
    def runs_rows(self) -> list[dict]:
        """One dict per run (params-major order): indices, names, path and what is on disk."""
        rows, root = [], os.fspath(self.path)
        for j in range(self.n_params):
            for i in range(self.n_run_specs):
                run = self._runs[i, j]
                disk = run.on_disk()
                exists = disk.pop("folder")
                status = run.problem or ("" if exists else "no folder yet")
                rows.append({"spec": i, "param": j, "name": run.name, "params": run.params_string,
                             "path": os.path.join(root, run.params_string, run.name), **disk, "problem": status})
        return rows

    def runs_table(self, tablefmt: str = "simple", full_paths: bool = False) -> str:
        """Table of every run: name, params hash, path and which results exist (✓)."""
        headers = ["#", "run spec", "params", "path", "model_params", "lfads-torch ckpt", "posterior means",
                   "fit log", "LDS fit", "problem"]
        body = []
        for row in self.runs_rows():
            path = row["path"] if full_paths else os.path.join(row["params"], row["name"])
            body.append([f"({row['spec']},{row['param']})", row["name"], row["params"], path,
                         *("✓" if row[k] else "" for k in ON_DISK), row["problem"]])
        return tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)

    def prepare_folders(self, progress: bool = True) -> None:
        """Create every run folder and write its ``lfads_tools_run.json``.

        Every run is checked first (see :meth:`Run.prepare_folder`): if one cannot get its
        record, the error is raised before any folder is created.
        """
        runs = list(self._runs.flat)
        records = [pending_run_record(run) for run in runs]
        for run, record in tqdm(zip(runs, records), total=len(runs), desc="preparing runs", disable=not progress):
            run._make_folder(record, overwrite=False)

    # ---- rebuilding from disk --------------------------------------------------------
    @classmethod
    def from_disk(cls, root_path, name: str, dataset_collection: DatasetCollection | None = None,
                  params_class: type | None = None, progress: bool = True) -> "RunCollection":
        """Rebuild a collection from ``<root_path>/<name>``.

        Each run folder is described by its ``lfads_tools_run.json`` or, for folders made
        elsewhere, by LFADS's ``hyperparameters-*.txt``. A folder that cannot be read is
        kept in the listing with ``run.problem`` saying why. ``params_class`` is the
        user's RunParams subclass, if any (otherwise subclass parameters are rebuilt from
        the records).
        """
        rc = cls(root_path, name, dataset_collection)
        if not rc.path.is_dir():
            raise MissingFileError(f"run collection folder {rc.path} does not exist")
        folders = [(p, r) for p in _subfolders(rc.path) if p.startswith("param_")
                   for r in _subfolders(os.path.join(rc.path, p))]
        scanner = _FolderScanner(rc, params_class)
        for param_folder, run_name in tqdm(folders, desc=f"reading {name}", disable=not progress):
            scanner.read(param_folder, run_name)
        scanner.finish()
        return rc

    # ---- display ---------------------------------------------------------------------
    def __repr__(self) -> str:
        dc = self.dataset_collection
        lines = [f'{type(self).__name__} "{self.name}" ({self.n_run_specs} run specs x {self.n_params} params '
                 f"= {self.n_runs} runs)",
                 f"  path: {self.path}", f"  version: {self.version}",
                 f'  dataset collection: "{dc.name}" ({dc.n_datasets} datasets)' if dc else "  dataset collection: []",
                 "", "  Run specs:"]
        lines += [f"    [{i}] {s.name}  ({_datasets_text(s)})"
                  for i, s in enumerate(self.run_specs)] or ["    (none)"]
        lines += ["", "  Params:"]
        lines += [f"    [{j}] {folder} {data_hash_text(p, folder)}  {p.short_differences()}"
                  for j, (p, folder) in enumerate(zip(self.params, self._param_folders))] or ["    (none)"]
        broken = sum(1 for r in self._runs.flat if r.problem)
        if broken:
            lines += ["", f"  {broken} run(s) could not be read completely; see runs_table()"]
        return "\n".join(lines) + "\n"


def _subfolders(path) -> list[str]:
    """Sorted names of the visible subfolders."""
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


class _FolderScanner:
    """Reads run folders for :meth:`RunCollection.from_disk`, then fills the collection."""

    def __init__(self, rc: RunCollection, params_class):
        self.rc, self.params_class = rc, params_class
        self.root = os.fspath(rc.path)
        self.folders: dict[str, RunParams | None] = {}  # param folder -> the parameters that describe it best
        self.runs: dict[tuple[str, str], tuple | Exception] = {}  # (run name, folder) -> (params, datasets, source)
        self.collection_info: dict | None = None
        self._last_record: tuple | None = None  # (key, RunParams) of the previous record
        self._last_hps: tuple | None = None  # (key, RunParams) of the previous hyperparameters file

    def read(self, param_folder: str, run_name: str) -> None:
        self.folders.setdefault(param_folder, None)
        try:
            found = self._describe(param_folder, run_name)
        except (LfadsToolsError, OSError) as exc:
            self.runs[run_name, param_folder] = exc
            return
        self.runs[run_name, param_folder] = found
        known, params = self.folders[param_folder], found[0]
        if known is None or (known.param_hash != param_folder and params.param_hash == param_folder):
            self.folders[param_folder] = params  # parameters that hash to the folder describe it

    def _describe(self, param_folder: str, run_name: str) -> tuple[RunParams, list[dict], str]:
        folder = os.path.join(self.root, param_folder, run_name)
        record_file = os.path.join(folder, RUN_RECORD_FILE)
        try:
            record = read_run_record(record_file)
        except MissingFileError:
            record = None
        if record is not None:
            return self._record_params(record, record_file), _dataset_entries(record["datasets"], record_file), "record"
        hps_file = find_hyperparameters_file(os.path.join(folder, "lfadsOutput"))
        if hps_file is None:
            raise MissingFileError(f"neither {RUN_RECORD_FILE} nor lfadsOutput/hyperparameters-*.txt found")
        hps = read_lfads_hyperparameters(hps_file)
        names = dataset_names_from_lfads_hyperparameters(hps, hps_file)
        params = self._hps_params(hps, hps_file, len(names), param_folder)
        return params, [{"name": n} for n in names], "lfads hyperparameters"

    def _record_params(self, record: dict, record_file: Path) -> RunParams:
        """The record's parameters; runs of one folder usually share them, so an equal record reuses the object."""
        if self.collection_info is None and isinstance(record.get("dataset_collection"), dict):
            self.collection_info = record["dataset_collection"]
        key = (record["params"], record["params_class"], record["extra_parameters"])
        if self._last_record is None or self._last_record[0] != key:
            self._last_record = (key, params_from_record(record, record_file, self.params_class))
        return self._last_record[1]

    def _hps_params(self, hps: dict, hps_file: str, num_datasets: int, param_folder: str) -> RunParams:
        """The parameters LFADS recorded; equal values in one folder (its runs, read in turn) reuse the object."""
        cls = self.params_class or RunParams
        key = (param_folder, num_datasets, lfads_hyperparameter_items(hps, cls))
        if self._last_hps is None or self._last_hps[0] != key:
            self._last_hps = (key, params_from_lfads_hyperparameters(hps, hps_file, cls, num_datasets))
        return self._last_hps[1]

    def finish(self) -> None:
        rc = self.rc
        readable = {key: found for key, found in self.runs.items() if not isinstance(found, Exception)}
        if rc.dataset_collection is None:
            rc.dataset_collection = self._collection(entries for _, entries, _ in readable.values())
        dc = rc.dataset_collection
        by_name = {d.name: d for d in dc}
        first: dict[str, tuple[str, list[str]]] = {}  # run name -> (folder, dataset names) where first read
        for (run_name, folder), (_, entries, _) in readable.items():
            first.setdefault(run_name, (folder, [e["name"] for e in entries]))
        for run_name in sorted({name for name, _ in self.runs}):
            rc.run_specs.append(RunSpec(run_name, _datasets(by_name, first.get(run_name, ("", []))[1]), dc))
        for folder, params in self.folders.items():
            rc.params.append(params or (self.params_class or RunParams)())
            rc._param_folders.append(folder)
        for key, found in self.runs.items():
            rc._found[key] = self._run_details(key, found, first, by_name)
        rc._generate_runs()

    def _run_details(self, key, found, first, by_name: dict[str, Dataset]) -> dict:
        """What the Run gets from disk: its source, problems and (where they differ from the run spec's) datasets."""
        if isinstance(found, Exception):
            return {"problem": str(found), "source": "unreadable"}
        (run_name, folder), (params, entries, source) = key, found
        details, problems = {"source": source}, []
        folder_params = self.folders[folder]
        if source == "record" and params.param_hash != folder:
            problems.append(f"{RUN_RECORD_FILE} gives parameters hashing to {params.param_hash}, "
                            f"but the run lies in {folder}")
        if folder_params.param_hash not in (folder, params.param_hash):
            problems.append(f"its parameters ({params.param_hash}) differ from other runs in {folder}")
        names = [e["name"] for e in entries]
        spec_folder, spec_names = first[run_name]
        if names != spec_names:
            details["datasets"] = _datasets(by_name, names)
            problems.append(f"its datasets {names} differ from those of the run spec {run_name!r} ({spec_names}, "
                            f"read in {spec_folder}); the run keeps its own, in its own order")
        unknown = [n for n in names if n not in by_name]
        if unknown:
            problems.append(f"datasets {unknown} are not in the dataset collection {self.rc.dataset_collection.name!r}")
        if problems:
            details["problem"] = "; ".join(problems)
        return details

    def _collection(self, entry_lists) -> DatasetCollection:
        """The dataset collection the records describe (one Dataset per name, with its recorded metadata)."""
        info = self.collection_info or {}
        dc = DatasetCollection(info.get("path"), info.get("name", ""))
        names = set()
        for entries in entry_lists:
            for e in entries:
                if e["name"] not in names:
                    names.add(e["name"])
                    Dataset(dc, e.get("rel_path"), name=e["name"], n_trials=e.get("n_trials"),
                            n_channels=e.get("n_channels"), subject=e.get("subject") or "", date=e.get("date"),
                            save_tags=e.get("save_tags") or ())
        return dc


def _datasets(by_name: dict[str, Dataset], names: list[str]) -> list[Dataset]:
    """The collection's datasets (``by_name``) of these names (a bare Dataset for a name it lacks)."""
    return [by_name.get(n) or Dataset(name=n) for n in names]


def _dataset_entries(entries, where) -> list[dict]:
    """Check the ``datasets`` list of a run record; dates come back as ``datetime.date``."""
    if not all(isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"]
               and isinstance(e.get("save_tags", []), list) for e in entries):
        raise FileFormatError(f"run record {where}: every entry of 'datasets' needs a non-empty 'name' "
                              f"(and 'save_tags', if given, must be a list)")
    try:
        return [{**e, "date": None if e.get("date") is None else datetime.date.fromisoformat(e["date"])}
                for e in entries]
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"run record {where}: a dataset 'date' is not an ISO date (YYYY-MM-DD): {exc}") from None


def _datasets_text(run_spec) -> str:
    """``2 datasets: a, b`` or ``1 dataset: a``."""
    noun = "dataset" if run_spec.n_datasets == 1 else "datasets"
    return f"{run_spec.n_datasets} {noun}: {', '.join(run_spec.dataset_names)}"
