"""EM checkpoints: atomic native files in a folder, resumable, with the best and last N kept.

A checkpoint is a native parameter file (:mod:`lds.native`) named
``checkpoint-<iteration>.h5`` holding the parameters at the start of that EM iteration,
whose log-likelihood is the last entry of the stored history. Its metadata section
``checkpoint`` holds the iteration, the log-likelihood history (exact: JSON keeps every
float64 digit) and the fit's options, among them fingerprints of the data and of the
starting parameters, so a folder is never resumed by a fit that would end differently.

Each file is written to a temporary name, fsynced, read back and checked, and only then
renamed into place, so a crash (even SIGKILL) leaves either the old set of checkpoints
or the old set plus one complete new file. Older files are removed only after the new
one is in place; the highest log-likelihood and the last ``keep_last`` stay.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .containers import as_numpy
from .errors import LfadsToolsError, LibraryWarning, OverwriteError, ValidationError, warn
from .native import _read_document, array_sha256, container_arrays, read_info, rebuild, save_params

__all__ = ["Checkpoint", "CheckpointStore", "EMCheckpoints", "data_fingerprint", "start_fingerprint"]

_NAME = re.compile(r"^checkpoint-(\d{6,})\.h5$")


def _iteration(path: Path) -> int:
    return int(_NAME.match(path.name).group(1))


@dataclass(repr=False)
class Checkpoint:
    """One loaded checkpoint."""

    path: Path
    params: object
    iteration: int
    log_likelihoods: list
    options: dict

    @property
    def log_likelihood(self) -> float:
        """Log-likelihood of the stored parameters (the last history entry)."""
        return self.log_likelihoods[-1]

    def __repr__(self) -> str:
        return (f"Checkpoint({self.path.name}: iteration {self.iteration}, "
                f"log-likelihood {self.log_likelihood:.10g}, {type(self.params).__name__})")


class CheckpointStore:
    """The checkpoints of one fit in ``folder``: save, find the latest or best, prune.

    >>> store = CheckpointStore("fit/checkpoints", keep_last=3, keep_best=True)
    >>> store.save(params, iteration=12, log_likelihoods=history, options={...})
    >>> store.latest()          # newest checkpoint that loads and verifies, or None
    """

    def __init__(self, folder, keep_last: int = 3, keep_best: bool = True):
        if int(keep_last) < 1:
            raise ValidationError(f"keep_last must be at least 1, got {keep_last}")
        self.folder = Path(folder)
        self.keep_last = int(keep_last)
        self.keep_best = bool(keep_best)
        self._scores: dict[Path, float] = {}

    def __repr__(self) -> str:
        return f"CheckpointStore({str(self.folder)!r}, keep_last={self.keep_last}, keep_best={self.keep_best}, " \
               f"{len(self.paths())} checkpoints)"

    def path_for(self, iteration: int) -> Path:
        return self.folder / f"checkpoint-{int(iteration):06d}.h5"

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest iteration first."""
        if not self.folder.is_dir():
            return []
        return sorted((p for p in self.folder.iterdir() if _NAME.match(p.name)), key=_iteration)

    def save(self, params, iteration: int, log_likelihoods, options: Mapping | None = None) -> Path:
        """Write the checkpoint of ``iteration`` atomically (replacing one of the same iteration), then prune."""
        self.folder.mkdir(parents=True, exist_ok=True)
        history = [float(v) for v in as_numpy(log_likelihoods).reshape(-1)]
        if not history:
            raise ValidationError("a checkpoint needs the log-likelihood of its parameters (empty history)")
        section = {"iteration": int(iteration), "log_likelihoods": history, "options": dict(options or {})}
        path = self.path_for(iteration)
        save_params(params, path, metadata={"description": f"EM checkpoint at iteration {iteration}"},
                    overwrite=True, verify=True, checkpoint=section)
        self._scores[path] = history[-1]
        self.prune()
        return path

    def load(self, path, dtype=None, device=None) -> Checkpoint:
        """Load and verify one checkpoint file (read once)."""
        path = Path(path)
        document = _read_document(path)
        section = document.info.metadata.get("checkpoint")
        if not isinstance(section, dict) or not isinstance(section.get("log_likelihoods"), list):
            raise ValidationError(f"{path} is a parameter file but not an EM checkpoint")
        params = rebuild(document, dtype=dtype, device=device)
        return Checkpoint(path, params, int(section["iteration"]), [float(v) for v in section["log_likelihoods"]],
                          dict(section.get("options") or {}))

    def latest(self, dtype=None, device=None) -> Checkpoint | None:
        """The newest checkpoint that loads; damaged ones are skipped."""
        for path in reversed(self.paths()):
            try:
                return self.load(path, dtype=dtype, device=device)
            except LfadsToolsError as exc:
                warn(f"skipping checkpoint {path.name}: {exc}", LibraryWarning)
        return None

    def best(self, dtype=None, device=None) -> Checkpoint | None:
        """The checkpoint with the highest log-likelihood (the latest among equals)."""
        scored = [(score, i, p) for i, p in enumerate(self.paths()) if (score := self._score(p)) is not None]
        return self.load(max(scored)[2], dtype=dtype, device=device) if scored else None

    def _score(self, path: Path) -> float | None:
        if path not in self._scores:
            try:
                self._scores[path] = float(read_info(path).metadata["checkpoint"]["log_likelihoods"][-1])
            except (LfadsToolsError, KeyError, TypeError, IndexError, ValueError):
                return None
        return self._scores[path]

    def prune(self) -> list[Path]:
        """Remove all but the last ``keep_last`` checkpoints and (``keep_best``) the best one."""
        paths = self.paths()
        keep = set(paths[-self.keep_last:])
        if self.keep_best:
            scored = [(score, i, p) for i, p in enumerate(paths) if (score := self._score(p)) is not None]
            if scored:
                keep.add(max(scored)[2])
        removed = [p for p in paths if p not in keep]
        for path in removed:
            path.unlink(missing_ok=True)
            self._scores.pop(path, None)
        for stale in self.folder.glob(".checkpoint-*.tmp"):  # left by a writer that was killed
            stale.unlink(missing_ok=True)
        return removed


def data_fingerprint(y) -> str:
    """SHA-256 over the shapes and float64 values of the data (arrays, lists, dicts of them)."""
    digest = hashlib.sha256()

    def visit(value):
        if hasattr(value, "trials") and hasattr(value, "sessions"):  # prepared lds.observations.Observations
            visit({"trials": list(value.trials), "sessions": list(value.sessions)})
        elif isinstance(value, Mapping):
            for key in value:
                digest.update(f"key:{key};".encode())
                visit(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"list:{len(value)};".encode())
            for item in value:
                visit(item)
        else:
            try:
                array = np.ascontiguousarray(as_numpy(value), dtype="<f8")
            except (TypeError, ValueError):
                raise ValidationError(f"cannot checkpoint a fit of data of type {type(value).__name__}") from None
            digest.update(f"array:{array.shape};".encode())
            digest.update(array.tobytes())

    visit(y)
    return digest.hexdigest()


def start_fingerprint(params, num_states) -> str:
    """What a fit starts from: a SHA-256 over the arrays of ``params``, or the subspace initialization."""
    if params is None:
        return f"subspace_identification(num_states={num_states})"
    digest = hashlib.sha256()
    for name, value in container_arrays(params).items():
        arrays = value.items() if isinstance(value, dict) else [("", value)]
        for session, array in arrays:
            digest.update(f"{name}/{session}:{array_sha256(array)};".encode())
    return f"params sha256 {digest.hexdigest()}"


class EMCheckpoints:
    """What :func:`lds.fit_em` needs: restore a fit's state, and save it every ``every`` iterations.

    ``options`` describe the fit. A folder whose checkpoints were made with options that
    change the result (:attr:`CHECKED_OPTIONS`: the data, the starting parameters, the
    estimated parameters, the tolerance, the E-step method) is refused rather than
    resumed, and so is one holding checkpoints at or after ``max_iter`` (a longer fit).
    A resumed fit thus always ends as the uninterrupted fit with the same arguments.
    """

    CHECKED_OPTIONS = {"data_sha256": "data", "start": "starting parameters", "estimate": "estimated parameters",
                       "tol": "tolerance", "method": "E-step method"}

    def __init__(self, folder, every: int = 1, keep_last: int = 3, keep_best: bool = True,
                 options: Mapping | None = None):
        if int(every) < 1:
            raise ValidationError(f"checkpoint_every must be at least 1, got {every}")
        self.store = CheckpointStore(folder, keep_last=keep_last, keep_best=keep_best)
        self.every = int(every)
        self.options = dict(options or {})

    def begin(self, resume: bool, max_iter: int, device=None) -> Checkpoint | None:
        """Start a fit: the checkpoint to resume from (``resume=True``), or None.

        The latest valid checkpoint is checked against this fit's options and
        ``max_iter``. Without ``resume`` a folder that already holds checkpoints is
        refused, so an earlier fit is never mixed with or overwritten by a new one.
        """
        paths = self.store.paths()
        if not resume:
            if paths:
                raise OverwriteError(
                    f"{self.store.folder} already holds checkpoints; pass resume=True to continue that fit "
                    f"or use another checkpoint_dir"
                )
            return None
        found = self.store.latest(device=device)
        if found is None:
            return None
        if found.iteration >= max_iter:
            raise ValidationError(
                f"{found.path} is past max_iter={max_iter}: {self.store.folder} holds a longer fit; raise max_iter, "
                f"use another checkpoint_dir, or load an earlier iteration's parameters with CheckpointStore.load"
            )
        for key, what in self.CHECKED_OPTIONS.items():
            if found.options.get(key) != self.options.get(key):
                raise ValidationError(
                    f"{found.path} was made with other {what} ({key}={found.options.get(key)!r}, this fit has "
                    f"{self.options.get(key)!r}), so resuming would not give the uninterrupted fit's result; "
                    f"use another checkpoint_dir"
                )
        if len(found.log_likelihoods) != found.iteration + 1:
            raise ValidationError(f"{found.path}: {len(found.log_likelihoods)} log-likelihoods for iteration "
                                  f"{found.iteration}; the checkpoint is inconsistent")
        return found

    def step(self, iteration: int, params, log_likelihoods) -> None:
        """Save the state at the start of ``iteration`` (its E-step done) when it is due."""
        if iteration % self.every == 0:
            self.store.save(params, iteration, log_likelihoods, self.options)
