"""Parameter objects as NumPy ``.npz`` and MATLAB ``.mat`` files.

For users who want the arrays without this library:

- ``.npz`` (``np.load(path)``): one entry per field; a per-dataset field has one entry per
  session named ``"<field>/<session>"``. The entry ``__config__`` (a string, JSON) says
  how to rebuild the object. No pickle: ``np.load(path, allow_pickle=False)`` opens it.
- ``.mat`` (MATLAB ``p = load(path)``): one variable per field; a per-dataset field is a
  cell array (``p.measurement_function{1}``) in the order of the ``dataset_names`` cell;
  1-D arrays are column vectors; ``lds_config`` holds the JSON configuration.

Both are written atomically and read back with :func:`from_npz` / :func:`from_mat`
(shapes and dtypes restored from the configuration). They carry no checksums; the
native HDF5 format (:mod:`lds.native`) is the one for archiving.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from . import native
from .containers import ParamsContainer
from .errors import FileFormatError, MissingFileError, ValidationError
from .fileio import atomic_path

__all__ = ["to_npz", "from_npz", "to_mat", "from_mat"]

_NPZ_CONFIG = "__config__"
_MAT_CONFIG = "lds_config"


def _config(obj: ParamsContainer, arrays: dict) -> str:
    config = native._class_config(obj, arrays)
    config["arrays"] = {
        name: ({ds: _describe(a) for ds, a in value.items()} if isinstance(value, dict) else _describe(value))
        for name, value in arrays.items()
    }
    return native._to_json(config, f"configuration of {type(obj).__name__}")


def _describe(array: np.ndarray) -> dict:
    return {"shape": list(array.shape), "dtype": array.dtype.str}


def _checked(obj) -> dict:
    if not isinstance(obj, ParamsContainer):
        raise ValidationError(f"expected a parameter object (e.g. KalmanParams), got {type(obj).__name__}")
    return native.container_arrays(obj)


def to_npz(obj: ParamsContainer, path, overwrite: bool = False) -> Path:
    """Write ``obj`` to a NumPy ``.npz`` file (atomically; no overwrite unless asked)."""
    arrays = _checked(obj)
    entries = {_NPZ_CONFIG: np.array(_config(obj, arrays))}
    for name, value in arrays.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for ds, array in items:
            entries[name if ds is None else f"{name}/{ds}"] = array
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **entries)
    return Path(path)


def to_mat(obj: ParamsContainer, path, overwrite: bool = False) -> Path:
    """Write ``obj`` to a MATLAB ``.mat`` file (v5 format, read by ``load`` in MATLAB)."""
    from scipy.io import savemat

    arrays = _checked(obj)
    variables: dict = {_MAT_CONFIG: _config(obj, arrays)}
    for name, value in arrays.items():
        if name.startswith("_") or not name.isidentifier() or len(name) > 63:
            raise ValidationError(f"field {name!r} cannot be a MATLAB variable name")
        variables[name] = _cell(list(value.values())) if isinstance(value, dict) else value
    names = getattr(obj, "dataset_names", None)
    if names is not None:
        variables["dataset_names"] = _cell(list(names))
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            savemat(f, variables, oned_as="column", long_field_names=True)
    return Path(path)


def _cell(values: list) -> np.ndarray:
    cell = np.empty((len(values), 1), dtype=object)
    for i, value in enumerate(values):
        cell[i, 0] = value
    return cell


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"parameter file {path} does not exist")
    return path


def _restore(array, description, where: str, path) -> np.ndarray:
    try:
        array = np.asarray(array).astype(np.dtype(description["dtype"]), copy=False)
        return array.reshape(description["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: {where} does not match its recorded shape and dtype ({exc})") from None


def _document(path, config_text, lookup):
    """Rebuild the arrays described by the configuration; ``lookup(field, session, index)`` fetches one."""
    config = native._from_json(config_text, "the configuration", path)
    if not isinstance(config, dict) or not isinstance(config.get("arrays"), dict):
        raise FileFormatError(f"{path}: the configuration does not describe the arrays")
    for key in ("class", "module"):
        if not isinstance(config.get(key), str):
            raise FileFormatError(f"{path}: the configuration lacks {key!r}")
    arrays: dict = {}
    for name, description in config["arrays"].items():
        if isinstance(description, dict) and "shape" not in description:
            arrays[name] = {
                ds: _restore(lookup(name, ds, i), d, f"{name}/{ds}", path)
                for i, (ds, d) in enumerate(description.items())
            }
        else:
            arrays[name] = _restore(lookup(name, None, None), description, name, path)
    return native.make_document(path, native.FORMAT_VERSION, config, {}, arrays)


def from_npz(path, cls=None, dtype=None, device=None):
    """Read a file written by :func:`to_npz` (no pickle is ever loaded)."""
    path = _existing(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if _NPZ_CONFIG not in data.files:
                raise FileFormatError(f"{path} has no {_NPZ_CONFIG} entry; it was not written by to_npz")
            entries = {key: data[key] for key in data.files}
    except FileFormatError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise FileFormatError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None

    def lookup(name, ds, _):
        key = name if ds is None else f"{name}/{ds}"
        if key not in entries:
            raise FileFormatError(f"{path} lacks the entry {key!r} its configuration lists")
        return entries[key]

    doc = _document(path, str(entries[_NPZ_CONFIG]), lookup)
    return native.rebuild(doc, cls=cls, dtype=dtype, device=device)


def from_mat(path, cls=None, dtype=None, device=None):
    """Read a file written by :func:`to_mat`."""
    from scipy.io import loadmat

    path = _existing(path)
    try:
        data = loadmat(path, chars_as_strings=True)
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError, ... on bad files
        raise FileFormatError(f"{path}: not a readable .mat file ({type(exc).__name__}: {exc})") from None
    if _MAT_CONFIG not in data:
        raise FileFormatError(f"{path} has no {_MAT_CONFIG} variable; it was not written by to_mat")

    def lookup(name, ds, index):
        if name not in data:
            raise FileFormatError(f"{path} lacks the variable {name!r} its configuration lists")
        value = data[name]
        if index is None:
            return value
        if value.dtype != object or value.size <= index:
            raise FileFormatError(f"{path}: {name} should be a cell array with an entry for {ds!r}")
        return value.reshape(-1)[index]

    config_text = data[_MAT_CONFIG]
    config_text = "".join(np.asarray(config_text).reshape(-1).tolist())
    doc = _document(path, config_text, lookup)
    return native.rebuild(doc, cls=cls, dtype=dtype, device=device)
