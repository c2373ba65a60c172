"""``Dataset`` and ``DatasetCollection``: the recorded sessions that runs are trained on.

As in lfads-run-manager, a dataset is one file inside the collection's folder; its
name (the file stem, ``,`` replaced by ``_``) appears in every LFADS file name. Users
subclass :class:`Dataset` and override :meth:`Dataset.load_data` (and, if the data is
not a ``[T, N]`` / ``[B, T, N]`` array, :meth:`Dataset.load_info_from_data`).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Iterator

import numpy as np
from tabulate import tabulate

from lds.errors import MissingFileError, SearchError, ValidationError

__all__ = ["Dataset", "DatasetCollection", "select_indices"]


def select_indices(search, names: list[str], what: str, match=None) -> list[int]:
    """0-based positions chosen by ``search``: None (all), a name, an index, an object, a boolean mask or a list.

    ``match(item)`` turns an object into a position (or None). Anything not found is a
    :class:`SearchError` that lists the choices.
    """
    if search is None:
        return list(range(len(names)))
    if isinstance(search, np.ndarray) and search.dtype == bool or (
        isinstance(search, (list, tuple)) and search and all(isinstance(s, (bool, np.bool_)) for s in search)
    ):
        mask = np.asarray(search, dtype=bool)
        if mask.shape != (len(names),):
            raise SearchError(f"a mask over {what}s needs {len(names)} entries, got {mask.shape[0]}")
        return [int(i) for i in np.flatnonzero(mask)]
    items = list(search) if isinstance(search, (list, tuple, np.ndarray, range)) else [search]
    found, missing = [], []
    for item in items:
        position = None
        if isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            position = int(item) if -len(names) <= item < len(names) else None
            position = position % len(names) if position is not None else None
        elif isinstance(item, str):
            position = names.index(item) if item in names else None
        elif match is not None:
            position = match(item)
        if position is None:
            missing.append(item)
        else:
            found.append(position)
    if missing:
        choices = ", ".join(f"[{i}] {n}" for i, n in enumerate(names)) or "none"
        raise SearchError(f"no {what} matches {missing!r}; the {what}s are (0-based): {choices}")
    return found


class Dataset:
    """One recorded session: a file ``rel_path`` inside a :class:`DatasetCollection`.

    Metadata (``subject``, ``date``, ``save_tags``, ``n_trials``, ``n_channels``) may be
    given directly or filled by :meth:`load_info`.
    """

    def __init__(self, collection: "DatasetCollection | None" = None, rel_path=None, *, name: str | None = None,
                 subject: str = "", date: _dt.date | None = None, save_tags=(), n_trials: int | None = None,
                 n_channels: int | None = None, comment: str = ""):
        if name is None and rel_path is None:
            raise ValidationError("a Dataset needs a rel_path (its file in the collection) or a name")
        self.rel_path = None if rel_path is None else str(rel_path)
        self.name = name if name is not None else Path(self.rel_path).stem.replace(",", "_")
        self.subject, self.date, self.save_tags, self.comment = subject, date, tuple(save_tags), comment
        self.n_trials, self.n_channels = n_trials, n_channels
        self.collection = None
        if collection is not None:
            collection.add_dataset(self)

    @property
    def path(self) -> Path | None:
        """The data file: collection folder / rel_path (None when either is unknown)."""
        if self.rel_path is None or self.collection is None or self.collection.path is None:
            return None
        return self.collection.path / self.rel_path

    @property
    def info_loaded(self) -> bool:
        return self.n_trials is not None and self.n_channels is not None

    @property
    def single_run_name(self) -> str:
        """``single_<name>``: the usual name of a run spec holding only this dataset."""
        return f"single_{self.name}"

    def load_data(self):
        """The session's data. Default: observations from ``.npy``/``.npz``/``.nwb`` (override for other data)."""
        from lds.data import load_observations

        if self.path is None:
            raise MissingFileError(f"dataset {self.name!r} has no file (no collection folder or rel_path)")
        return load_observations(self.path)

    def load_info_from_data(self, data) -> None:
        """Fill ``n_trials`` and ``n_channels`` from ``[T, N]``, ``[B, T, N]`` or a list of ``[T_i, N]``."""
        if isinstance(data, (list, tuple)) and data:
            self.n_trials, self.n_channels = len(data), int(np.shape(data[0])[-1])
            return
        shape = np.shape(data)
        if len(shape) not in (2, 3):
            raise ValidationError(
                f"dataset {self.name!r}: cannot read trial and channel counts from data of shape {shape}; "
                f"override {type(self).__name__}.load_info_from_data"
            )
        self.n_trials = 1 if len(shape) == 2 else int(shape[0])
        self.n_channels = int(shape[-1])

    def load_info(self, reload: bool = False) -> None:
        """Load the data once to fill the metadata (skipped when already known, unless ``reload``)."""
        if reload or not self.info_loaded:
            self.load_info_from_data(self.load_data())

    def to_dict(self) -> dict:
        """What a run folder records about its datasets."""
        return {"name": self.name, "rel_path": self.rel_path, "n_trials": self.n_trials,
                "n_channels": self.n_channels, "subject": self.subject,
                "date": None if self.date is None else self.date.isoformat(), "save_tags": list(self.save_tags)}

    def __repr__(self) -> str:
        fields = [("name", repr(self.name)), ("rel_path", repr(self.rel_path)), ("path", str(self.path or "[]")),
                  ("subject", repr(self.subject)), ("date", str(self.date or "[]")),
                  ("save_tags", str(list(self.save_tags))),
                  ("n_trials", str(self.n_trials if self.n_trials is not None else "[]")),
                  ("n_channels", str(self.n_channels if self.n_channels is not None else "[]"))]
        width = max(len(k) for k, _ in fields) + 4
        return f"  {type(self).__name__} with properties:\n\n" + "\n".join(
            f"{k.rjust(width)}: {v}" for k, v in fields) + "\n"


class DatasetCollection:
    """A folder of datasets. ``dc[0]`` and ``dc['name']`` give a dataset; iteration is in order."""

    def __init__(self, path=None, name: str | None = None, comment: str = ""):
        self.path = None if path is None else Path(path)
        self.name = name if name is not None else (self.path.name if self.path is not None else "")
        self.comment = comment
        self.datasets: list[Dataset] = []

    @classmethod
    def from_folder(cls, path, pattern: str = "*", name: str | None = None, dataset_class=Dataset):
        """One dataset per file in ``path`` matching ``pattern``, in sorted order."""
        path = Path(path)
        if not path.is_dir():
            raise MissingFileError(f"dataset folder {path} does not exist")
        collection = cls(path, name)
        for file in sorted(p for p in path.glob(pattern) if p.is_file() and not p.name.startswith(".")):
            dataset_class(collection, file.relative_to(path))
        return collection

    def add_dataset(self, dataset: Dataset) -> None:
        """Add a dataset, replacing one with the same name."""
        dataset.collection = self
        for i, existing in enumerate(self.datasets):
            if existing.name == dataset.name:
                self.datasets[i] = dataset
                return
        self.datasets.append(dataset)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datasets]

    @property
    def n_datasets(self) -> int:
        return len(self.datasets)

    def __len__(self) -> int:
        return len(self.datasets)

    def __iter__(self) -> Iterator[Dataset]:
        return iter(self.datasets)

    def __getitem__(self, key) -> Dataset:
        return self.datasets[self.find_datasets(key)[0]]

    def find_datasets(self, search) -> list[int]:
        """Positions of datasets given by name, index, Dataset object, mask or a list of these."""
        names = self.names
        return select_indices(search, names, "dataset",
                              match=lambda d: names.index(d.name) if isinstance(d, Dataset) and d.name in names
                              else None)

    def filter_datasets(self, keep) -> None:
        """Keep only the datasets selected by ``keep`` (as :meth:`find_datasets` takes it)."""
        self.datasets = [self.datasets[i] for i in self.find_datasets(keep)]

    def filter_having_minimum_trials(self, min_trials: int) -> None:
        self.load_info()
        self.datasets = [d for d in self.datasets if d.n_trials >= min_trials]

    def load_info(self, reload: bool = False) -> None:
        for dataset in self.datasets:
            dataset.load_info(reload)

    def info_table(self, tablefmt: str = "simple") -> str:
        """One row per dataset: name, subject, date, save tags, trials, channels."""
        rows = [[d.name, d.subject, d.date or "", " ".join(map(str, d.save_tags)), d.n_trials, d.n_channels]
                for d in self.datasets]
        return tabulate(rows, headers=["name", "subject", "date", "save_tags", "n_trials", "n_channels"],
                        tablefmt=tablefmt, missingval="")

    def __repr__(self) -> str:
        head = f'{type(self).__name__} "{self.name}" ({self.n_datasets} datasets)\n  path: {self.path or "[]"}\n'
        return head + "\n".join("  " + line for line in self.info_table().splitlines()) + "\n"
