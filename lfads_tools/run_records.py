"""What a run folder records about itself, and how to read it back.

Two sources, in order of preference:

- ``<run.path>/lfads_tools_run.json``: written by this library when a run folder is
  prepared or an LDS is fitted in it. It holds the run name, the parameter class and
  every value, the declarations of subclass parameters (so their hashes are rebuilt
  without importing user code) and the datasets.
- ``<run.path>/lfadsOutput/hyperparameters-<step>.txt``: the single-line JSON that TF
  LFADS writes on every graph build (booleans as ``"true"``/``"false"``), used for
  folders made elsewhere. Only the ``c_`` hyperparameters can be recovered from it.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from lds.errors import FileFormatError, LfadsToolsError, MissingFileError, ValidationError
from lds.fileio import check_writable

from .run_params import Hyperparameter, RunParams, coerce_value, json_value

__all__ = [
    "RUN_RECORD_FILE",
    "run_record",
    "run_record_bytes",
    "pending_run_record",
    "read_run_record",
    "params_from_record",
    "find_hyperparameters_file",
    "read_lfads_hyperparameters",
    "params_from_lfads_hyperparameters",
    "lfads_hyperparameter_items",
    "dataset_names_from_lfads_hyperparameters",
]

RUN_RECORD_FILE = "lfads_tools_run.json"
_FORMAT = "lfads_tools.run"
_FORMAT_VERSION = 1
_REQUIRED_KEYS = ("format", "format_version", "run_name", "params_class", "params", "extra_parameters", "datasets")
_HPS_NAME = re.compile(r"hyperparameters-(\d+)\.txt$")
_SCALED_STEPS = {"kl_start_step": "scaleStartStepWithDatasets", "l2_start_step": "scaleStartStepWithDatasets",
                 "kl_increase_steps": "scaleIncreaseStepsWithDatasets",
                 "l2_increase_steps": "scaleIncreaseStepsWithDatasets"}


def run_record(run) -> dict:
    """The JSON-ready description of a run."""
    params = run.params
    collection = run.run_collection.dataset_collection if run.run_collection is not None else None
    return {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "run_name": run.name,
        "param_hash": params.param_hash,
        "data_hash": params.data_hash,
        "params_class": type(params).__name__,
        "params": params.to_dict(),
        "extra_parameters": [
            {"name": p.name, "matlab_class": p.matlab_class, "default": json_value(p.default),
             "group": p.group}
            for p in params.PARAMETERS if not p.root
        ],
        "dataset_collection": None if collection is None else {
            "name": collection.name, "path": None if collection.path is None else str(collection.path)},
        "datasets": [d.to_dict() for d in run.datasets],
    }


def run_record_bytes(run) -> bytes:
    """The record as written: one line of JSON with sorted keys (small and quick to parse)."""
    return json.dumps(run_record(run), sort_keys=True).encode("utf-8")


def pending_run_record(run, overwrite: bool = False) -> bytes | None:
    """The record to write into the run's folder, None when the folder already holds it.

    Raises if it must not be written: its parameters would contradict the folder (they
    do not hash to the run's ``param_<hash>``), or a different record exists and
    ``overwrite`` is false.
    """
    if not run.params_known:
        reason = run.problem or f"its parameters hash to {run.params.param_hash}, not to its folder"
        raise ValidationError(f"run {run.name} ({run.params_string}): {reason}; a {RUN_RECORD_FILE} of these "
                              f"parameters would contradict the folder")
    path = Path(run.path) / RUN_RECORD_FILE
    data = run_record_bytes(run)
    if path.exists() and path.read_bytes() == data:
        return None
    check_writable(path, overwrite)
    return data


def _read_json(path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise MissingFileError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{what} {path} could not be read: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileFormatError(f"{what} {path} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                              f"column {exc.colno})") from None


def read_run_record(path) -> dict:
    """Read and check a ``lfads_tools_run.json`` file."""
    record = _read_json(path, "run record")
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise FileFormatError(f"{path} is not an lfads_tools run record (expected \"format\": \"{_FORMAT}\")")
    if record.get("format_version") != _FORMAT_VERSION:
        raise FileFormatError(f"{path}: unsupported run record version {record.get('format_version')!r}; "
                              f"this library reads version {_FORMAT_VERSION}")
    missing = [k for k in _REQUIRED_KEYS if k not in record]
    if missing:
        raise FileFormatError(f"run record {path} lacks the keys {missing}")
    if not isinstance(record["params"], dict) or not isinstance(record["datasets"], list):
        raise FileFormatError(f"run record {path}: 'params' must be an object and 'datasets' a list")
    return record


_DYNAMIC_CLASSES: dict[str, type] = {}


def _params_class_for(record: dict, path) -> type:
    """RunParams, or a subclass rebuilt from the declarations in the record (no user code is imported)."""
    name, extras = record["params_class"], record["extra_parameters"]
    if name == "RunParams" and not extras:
        return RunParams
    key = json.dumps([name, extras], sort_keys=True)
    if key not in _DYNAMIC_CLASSES:
        try:
            declared = tuple(Hyperparameter(e["name"], e["matlab_class"], e["default"], e.get("group", ""))
                             for e in extras)
            _DYNAMIC_CLASSES[key] = type(str(name), (RunParams,), {"EXTRA_PARAMETERS": declared})
        except (KeyError, TypeError, LfadsToolsError) as exc:
            raise FileFormatError(f"run record {path}: bad extra_parameters entry: {exc}") from None
    return _DYNAMIC_CLASSES[key]


def params_from_record(record: dict, path, params_class: type | None = None) -> RunParams:
    """The run's parameters; ``params_class`` (the user's subclass) is used when given."""
    cls = params_class or _params_class_for(record, path)
    try:
        return cls(**record["params"])
    except LfadsToolsError as exc:
        raise FileFormatError(f"run record {path}: {exc}") from None


def find_hyperparameters_file(output_folder) -> str | None:
    """The LFADS ``hyperparameters-<step>.txt`` that describes training (lowest step first)."""
    try:
        names = [(int(m.group(1)), name) for name in os.listdir(output_folder) if (m := _HPS_NAME.match(name))]
    except (FileNotFoundError, NotADirectoryError):
        return None
    return os.path.join(output_folder, min(names)[1]) if names else None


def read_lfads_hyperparameters(path) -> dict:
    """Read one ``hyperparameters-*.txt`` (a JSON object)."""
    hps = _read_json(path, "LFADS hyperparameters file")
    if not isinstance(hps, dict):
        raise FileFormatError(f"LFADS hyperparameters file {path} holds {type(hps).__name__}; expected a JSON object")
    return hps


def dataset_names_from_lfads_hyperparameters(hps: dict, path) -> list[str]:
    """Dataset names without LFADS's ``.h5`` suffix (``dataset001.h5`` -> ``dataset001``)."""
    names = hps.get("dataset_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
        raise FileFormatError(f"LFADS hyperparameters file {path} has no list of dataset_names; "
                              f"found {names!r}")
    return [n[:-3] if n.endswith(".h5") else n for n in names]


@functools.lru_cache(maxsize=None)
def _lfads_keys(params_class: type) -> frozenset:
    return frozenset({"kind"} | {name[2:] for name in params_class._BY_NAME if name.startswith("c_")})


def lfads_hyperparameter_items(hps: dict, params_class: type = RunParams) -> tuple:
    """The ``(key, value)`` pairs of ``hps`` that :func:`params_from_lfads_hyperparameters` uses."""
    keys = _lfads_keys(params_class)
    return tuple((k, v) for k, v in hps.items() if k in keys)


def params_from_lfads_hyperparameters(hps: dict, path, params_class: type = RunParams,
                                      num_datasets: int = 1) -> RunParams:
    """The ``c_`` hyperparameters that LFADS recorded, back in RunParams form.

    Step counts that lfads-run-manager multiplied by the number of datasets on the
    command line are divided back. ``batch_size`` is taken only from a training build
    (posterior sampling records ``num_samples_posterior`` under that name).
    """
    params = params_class()
    for key, value in hps.items():
        name = f"c_{key}"
        if name not in params_class._BY_NAME or params_class.parameter(name).hidden:
            continue
        if key == "batch_size" and hps.get("kind", "train") != "train":
            continue
        spec = params_class.parameter(name)
        if value in ("true", "false") and (spec.matlab_class == "logical" or isinstance(spec.default, bool)):
            value = value == "true"
        if key in _SCALED_STEPS and num_datasets > 1 and getattr(params, _SCALED_STEPS[key]):
            if isinstance(value, int) and value % num_datasets == 0:
                value //= num_datasets
        try:
            setattr(params, name, coerce_value(spec, value))
        except LfadsToolsError as exc:
            raise FileFormatError(f"LFADS hyperparameters file {path}, key {key!r}: {exc}") from None
    return params
