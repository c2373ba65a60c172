"""TF LFADS ``model_params`` files and the lfads-run-manager export layout.

``model_params`` is the flat HDF5 file ``run_lfads.py --kind=write_model_params``
writes: every TF variable at the root, ``/`` replaced by ``_``, the ``:0`` suffix kept
(e.g. ``LFADS_gen_gen_2_fac_W:0``). It also holds the optimizer state (Adam slots
``LFADS_LFADS_..._Adam:0``/``_Adam_1:0``, ``global_step``, ``learning_rate``,
``beta1_power``, ``beta2_power``) and, in some TF versions, all-zero bias variables of
bias-free layers; the reader skips those. Per-dataset keys carry the TF dataset name,
which lfads-run-manager makes ``<dataset name>.h5``.

The export layout is ``ModelTrainedParams.exportToHDF5``'s: one root dataset per
property (derived ones too), per-dataset properties as ``/<prop>/<dataset>`` and
``/dataset_names`` as strings. MATLAB writes vectors without reversing their dims, so a
``1xN`` property reads back in h5py as ``(N, 1)``; both writer and reader follow that.
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from lds.containers import as_numpy
from lds.errors import (
    DatasetNameError,
    DefaultsUsedWarning,
    FileFormatError,
    LfadsToolsError,
    MissingFileError,
    warn,
)
from lds.fileio import atomic_path

from .model_trained_params import ModelTrainedParams, build_checked, dataset_names_argument

__all__ = ["TF_KEYS", "read_tf_model_params", "save_tf_model_params", "export_hdf5", "read_export_hdf5",
           "file_kind"]

ZIP_SIGNATURE = b"PK\x03\x04"


def _encoder_keys(field: str, scope: str, gates: str) -> dict:
    direction = scope[-3:]
    return {
        f"{field}_t0": f"LFADS_{scope}_{scope[:2]}_enc_t0_{direction}",
        f"{field}_gru_xh_to_{gates}ru_W": f"LFADS_{scope}_GRU_Gates_xh_2_ru_W",
        f"{field}_gru_xh_to_{gates}ru_b": f"LFADS_{scope}_GRU_Gates_xh_2_ru_b",
        f"{field}_gru_xrh_to_c_W": f"LFADS_{scope}_GRU_Candidate_xrh_2_c_W",
        f"{field}_gru_xrh_to_c_b": f"LFADS_{scope}_GRU_Candidate_xrh_2_c_b",
    }


def _gengru_keys(field: str, scope: str) -> dict:
    return {
        f"{field}_x_to_ru_W": f"LFADS_{scope}_GenGRU_Gates_x_2_ru_W",
        f"{field}_h_to_ru_W": f"LFADS_{scope}_GenGRU_Gates_h_2_ru_W",
        f"{field}_h_to_ru_b": f"LFADS_{scope}_GenGRU_Gates_h_2_ru_b",
        f"{field}_x_to_c_W": f"LFADS_{scope}_GenGRU_Candidate_x_2_c_W",
        f"{field}_rh_to_c_W": f"LFADS_{scope}_GenGRU_Candidate_rh_2_c_W",
        f"{field}_rh_to_c_b": f"LFADS_{scope}_GenGRU_Candidate_rh_2_c_b",
    }


#: Field -> ``model_params`` key without ``:0`` (``{}``: the TF dataset name), as ``ModelTrainedParams.m`` reads them.
TF_KEYS = {
    "x_to_infac_W": "LFADS_x_2_infac_{}_W",
    "x_to_infac_b": "LFADS_x_2_infac_{}_b",
    **_encoder_keys("ic_enc_fwd", "ic_enc_fwd", "gates_"),
    **_encoder_keys("ic_enc_rev", "ic_enc_rev", "gates_"),
    "prior_g0_mean": "LFADS_z_prior_g0_mean",
    "prior_g0_logvar": "LFADS_z_prior_g0_logvar",
    "ic_enc_to_posterior_g0_mean_W": "LFADS_z_ic_enc_2_post_g0_mean_W",
    "ic_enc_to_posterior_g0_mean_b": "LFADS_z_ic_enc_2_post_g0_mean_b",
    "ic_enc_to_posterior_g0_logvar_W": "LFADS_z_ic_enc_2_post_g0_logvar_W",
    "ic_enc_to_posterior_g0_logvar_b": "LFADS_z_ic_enc_2_post_g0_logvar_b",
    "g0_to_gen_ic_W": "LFADS_gen_g0_2_gen_ic_W",
    "g0_to_gen_ic_b": "LFADS_gen_g0_2_gen_ic_b",
    **_encoder_keys("ci_enc_fwd", "ci_enc_fwd", ""),
    **_encoder_keys("ci_enc_rev", "ci_enc_rev", ""),
    **_gengru_keys("con_gengru", "con"),
    "prior_ar1_logevars": "LFADS_z_u_prior_ar1_logevars",
    "prior_ar1_logatau": "LFADS_z_u_prior_ar1_logatau",
    "con_co": "LFADS_con_c0",
    "con_to_posterior_co_mean_W": "LFADS_con_con_to_post_co_mean_W",
    "con_to_posterior_co_mean_b": "LFADS_con_con_to_post_co_mean_b",
    "con_to_posterior_co_logvar_W": "LFADS_con_con_to_post_co_logvar_W",
    "con_to_posterior_co_logvar_b": "LFADS_con_con_to_post_co_logvar_b",
    **_gengru_keys("gen_gengru", "gen"),
    "gen_to_factors_W": "LFADS_gen_gen_2_fac_W",
    "factors_to_logrates_W": "LFADS_glm_fac_2_logrates_{}_W",
    "factors_to_logrates_b": "LFADS_glm_fac_2_logrates_{}_b",
}
#: Read-in keys of the ``djoshea/models`` branch (read-in inside a ``readin`` scope), tried second.
_READIN_VARIANT = {"x_to_infac_W": "LFADS_readin_x_2_infac_{}_W", "x_to_infac_b": "LFADS_readin_x_2_infac_{}_b"}
_OPTIMIZER_KEYS = {"LFADS_global_step:0", "LFADS_learning_rate:0", "LFADS_beta1_power:0", "LFADS_beta2_power:0"}
#: Non-trainable all-zero biases of bias-free layers, written by some TF versions.
_ZERO_BIAS_KEYS = {"LFADS_gen_gen_2_fac_b:0", *(f"LFADS_{scope}_GenGRU_{layer}_b:0" for scope in ("con", "gen")
                                                 for layer in ("Gates_x_2_ru", "Candidate_x_2_c"))}
_DATASET_KEY = re.compile(r"^LFADS_(?:readin_)?(?:x_2_infac|glm_fac_2_logrates)_(?P<ds>.+)_[Wb]:0$")
#: Root attribute in which our writer keeps the dataset names and their order (TF files do not record it).
NAMES_ATTRIBUTE = "dataset_names"
#: What h5py raises on damaged content (a broken B-tree, heap or object header).
_H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


def _is_optimizer_key(key: str) -> bool:
    return key in _OPTIMIZER_KEYS or key.startswith("LFADS_LFADS_") or key.endswith(("_Adam:0", "_Adam_1:0"))


# ---- recognising files -----------------------------------------------------------------
def file_kind(path) -> str:
    """``"native"``, ``"tf"``, ``"export"`` or ``"torch"`` from the file's first bytes and root keys."""
    from lds import native

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    with open(path, "rb") as f:
        head = f.read(8)
    if native.is_native_file(path):
        return "native"
    if h5py.is_hdf5(path):
        with _open_hdf5(path) as f, _h5_calls(path):
            keys = _root_keys(f, path)
            return "export" if "dataset_names" in keys and not any(k.endswith(":0") for k in keys) else "tf"
    if head.startswith(ZIP_SIGNATURE) or head[:1] == b"\x80":
        return "torch"
    found = "an empty file" if not head else f"a file starting with bytes {head!r}"
    raise FileFormatError(f"{path} is {found}: expected an HDF5 file (TF LFADS model_params, an export or a native "
                          f"parameter file) or an lfads-torch checkpoint (zip)")


def _open_hdf5(path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise FileFormatError(f"{path} is not a readable HDF5 file (truncated or corrupt?): {exc}") from None


@contextmanager
def _h5_calls(path):
    """h5py's errors on damaged content, raised inside, become a :class:`FileFormatError` naming the file."""
    try:
        yield
    except LfadsToolsError:
        raise
    except _H5_ERRORS as exc:
        raise FileFormatError(f"{path} is damaged (truncated or corrupt?): {type(exc).__name__}: {exc}") from None


def _check_heaps(f: h5py.File, path: Path) -> None:
    """Refuse a damaged global heap (variable-length strings live there) before libhdf5 loops forever on it."""
    from lds import native

    native._check_global_heaps(path.read_bytes(), f, path)


def _root_keys(f: h5py.File, path) -> list[str]:
    keys = list(f.keys())
    damaged = next((k for k in keys if not isinstance(k, str)), None)  # h5py gives undecodable names as bytes
    if damaged is not None:
        raise FileFormatError(f"{path} is damaged (corrupt?): the root holds a name that is not text, {damaged!r}")
    return keys


def _read(group: h5py.Group, key: str, path) -> np.ndarray:
    """The dataset ``key`` of ``group``, read straight into a new array (no h5py ``Dataset`` object per key)."""
    try:
        dataset = h5py.h5d.open(group.id, key.encode())
        array = np.empty(dataset.shape, dataset.dtype)
        dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, array)
        return array
    except _H5_ERRORS as exc:
        raise FileFormatError(f"{path}: cannot read {key!r} (truncated or corrupt file?): {exc}") from None


# ---- dataset names ------------------------------------------------------------------
def _hyperparameter_names(path: Path) -> list[str] | None:
    """``dataset_names`` of the ``hyperparameters-<step>.txt`` beside ``path`` (highest step), if any."""
    files = sorted(path.parent.glob("hyperparameters-*.txt"),
                   key=lambda p: int(p.stem.split("-")[-1]) if p.stem.split("-")[-1].isdigit() else -1)
    if not files:
        return None
    try:
        names = json.loads(files[-1].read_text())["dataset_names"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        warn(f"{files[-1]} has no readable dataset_names ({exc}); datasets are taken from {path.name}",
             DefaultsUsedWarning)
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def _stored_names(f: h5py.File, path: Path) -> list[str] | None:
    """The names our writer keeps in a root attribute (variable-length strings), if any."""
    if NAMES_ATTRIBUTE not in f.attrs:
        return None
    _check_heaps(f, path)
    value = f.attrs[NAMES_ATTRIBUTE]
    return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)]


def _file_dataset_names(keys) -> list[str]:
    """The TF dataset names of the per-dataset keys, sorted."""
    return list(dict.fromkeys(m["ds"] for m in map(_DATASET_KEY.match, sorted(keys)) if m))


def _names_fit(names: list[str], found: list[str]) -> bool:
    """``names`` are the file's datasets; without per-dataset keys (identity read-in and read-out) it holds one."""
    return sorted(_tf_name(n, found) for n in names) == sorted(found) if found else len(names) == 1


def _default_names(stored: list[str] | None, found: list[str], path: Path) -> list[str]:
    """Names written by us (``stored``), else the order of ``hyperparameters-*.txt``, else the file's (sorted) names."""
    for names in (stored, _hyperparameter_names(path)):
        if names is not None and _names_fit(names, found):
            return names
        if names is not None:
            warn(f"the dataset names {names} kept in or beside {path} do not match its per-dataset keys "
                 f"{found}; using the names in the file", DefaultsUsedWarning)
    return found


def _tf_name(name: str, found) -> str:
    """The TF dataset name of ``name``: itself if the file uses it, else lfads-run-manager's ``<name>.h5``."""
    return name if name in found or name.endswith(".h5") else f"{name}.h5"


# ---- reading ----------------------------------------------------------------------------
def read_tf_model_params(path, dataset_names: str | Iterable[str] | None = None, verbose: bool = False
                         ) -> ModelTrainedParams:
    """Read a TF LFADS ``model_params`` file into a :class:`ModelTrainedParams`.

    ``dataset_names`` selects and orders the datasets, by the name lfads-run-manager
    uses (``dataset001``, looked up as ``dataset001.h5``) or the TF name itself. By default
    the names come from the file (kept there by :func:`save_tf_model_params`), else from a
    ``hyperparameters-*.txt`` beside it, else from the per-dataset keys. A single-dataset
    model with identity read-in and read-out has no per-dataset keys: it takes one name,
    and its per-dataset fields are empty. Optimizer state and all-zero bias variants are
    skipped; ``verbose=True`` prints every other key not used.
    """
    path, dataset_names = Path(path), dataset_names_argument(dataset_names)
    with _open_hdf5(path) as f:
        with _h5_calls(path):
            keys = _root_keys(f, path)  # a group under a weight name fails to read, with the key named
            stored = _stored_names(f, path)
        found = _file_dataset_names(keys)
        available = _default_names(stored, found, path)
        dataset_names = available if dataset_names is None else dataset_names
        missing = [n for n in dataset_names if _tf_name(n, found) not in found] if found else []
        if missing:
            raise DatasetNameError(f"{path} has no parameters for dataset(s) {missing}; "
                                   f"the datasets in the file are {available}")
        if not found and len(dataset_names) > 1:
            raise DatasetNameError(f"{path} has no per-dataset keys (identity read-in and read-out), so it holds a "
                                   f"single dataset; got the dataset names {dataset_names}")
        key_set, used, fields = set(keys), set(), {}
        for field, template in TF_KEYS.items():
            if "{}" not in template:
                if template + ":0" in key_set:
                    used.add(template + ":0")
                    fields[field] = _read(f, template + ":0", path)
                continue
            per_dataset = {}
            for name in dataset_names:
                tf_name = _tf_name(name, found)
                candidates = [t.format(tf_name) + ":0" for t in (template, _READIN_VARIANT.get(field)) if t]
                key = next((k for k in candidates if k in key_set), None)
                if key is not None:
                    used.add(key)
                    per_dataset[name] = _read(f, key, path)
            fields[field] = per_dataset
    if not used:
        raise FileFormatError(f"{path} is an HDF5 file without TF LFADS weights (no LFADS_...:0 keys of "
                              f"ModelTrainedParams); its root holds {keys[:8]}{' ...' if len(keys) > 8 else ''}")
    if verbose:
        _print_unused(path, [k for k in keys if k not in used])
    return build_checked(fields, dataset_names, path)


def _print_unused(path, unused: list[str]) -> None:
    ignored = [k for k in unused if _is_optimizer_key(k) or k in _ZERO_BIAS_KEYS]
    other = [k for k in unused if k not in ignored]
    print(f"{path}: skipped {len(ignored)} optimizer-state and zero-bias keys")
    print(f"{path}: {len(other)} other keys not used" + "".join(f"\n  {k}" for k in other))


# ---- writing ----------------------------------------------------------------------------
def save_tf_model_params(params: ModelTrainedParams, path, overwrite: bool = False) -> Path:
    """Write ``params`` as a flat TF LFADS ``model_params`` file (``<key>:0`` datasets at the root).

    Dataset ``name`` is written as TF dataset ``name.h5`` unless it already ends in ``.h5``,
    so MATLAB's ``ModelTrainedParams(file, {name, ...})`` finds it. The names and their
    order are also kept in a root attribute (invisible to MATLAB's reader).
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs[NAMES_ATTRIBUTE] = np.array(params.dataset_names, dtype=h5py.string_dtype())
            for field, template in TF_KEYS.items():
                value = getattr(params, field)
                if "{}" in template:
                    for name, array in value.items():
                        tf_name = name if name.endswith(".h5") else f"{name}.h5"
                        f.create_dataset(template.format(tf_name) + ":0", data=as_numpy(array))
                elif value is not None:
                    f.create_dataset(template + ":0", data=as_numpy(value))
    return Path(path)


def _matlab_vector_flip(array: np.ndarray) -> np.ndarray:
    """MATLAB's ``h5create`` view of an un-permuted vector: ``1xN`` <-> ``(N, 1)``; 1-D arrays are columns."""
    array = np.asarray(array)
    if array.ndim == 0:
        return array.reshape(1, 1)
    if array.ndim == 1:
        return array.reshape(1, -1)
    return array.T if array.ndim == 2 and 1 in array.shape else array


def export_hdf5(params: ModelTrainedParams, path, overwrite: bool = False) -> Path:
    """Write lfads-run-manager's export layout (``exportToHDF5``); empty properties are skipped.

    Derived properties are written as MATLAB does, as doubles, with
    ``dataset_idx_concatenated`` 1-based like MATLAB's.
    """
    derived = {
        "num_datasets": float(params.num_datasets),
        "num_channels_by_dataset": np.asarray(params.num_channels_by_dataset, dtype=np.float64),
        "num_channels_all_datasets": float(params.num_channels_all_datasets),
        "dataset_idx_concatenated": params.dataset_idx_concatenated.astype(np.float64) + 1,
        "factors_to_logrates_W_concatenated": params.factors_to_logrates_W_concatenated,
        "factors_to_logrates_b_concatenated": params.factors_to_logrates_b_concatenated,
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("dataset_names", data=np.array(params.dataset_names, dtype=h5py.string_dtype()))
            for name, value in [*params.items(), *derived.items()]:
                if hasattr(value, "items"):
                    for ds, array in value.items():
                        f.create_dataset(f"{name}/{ds}", data=_matlab_vector_flip(as_numpy(array)))
                elif value is not None and as_numpy(value).size:
                    f.create_dataset(name, data=_matlab_vector_flip(as_numpy(value)))
    return Path(path)


def read_export_hdf5(path, dataset_names: str | Iterable[str] | None = None) -> ModelTrainedParams:
    """Read the export layout back (derived properties are recomputed, not read)."""
    path, names = Path(path), dataset_names_argument(dataset_names)
    with _open_hdf5(path) as f:
        with _h5_calls(path):
            _check_heaps(f, path)  # /dataset_names holds variable-length strings
            has_names = "dataset_names" in f
        if not has_names:
            raise FileFormatError(f"{path} is not an lfads-run-manager export: it has no /dataset_names")
        available = [n.decode() if isinstance(n, bytes) else str(n) for n in np.ravel(_read(f, "dataset_names", path))]
        names = available if names is None else names
        missing = [n for n in names if n not in available]
        if missing:
            raise DatasetNameError(f"{path} has no dataset(s) {missing}; the datasets in the file are {available}")
        fields = {}
        for spec in ModelTrainedParams.FIELDS:
            with _h5_calls(path):
                entry = f.get(spec.name)
            if entry is None:
                continue
            if spec.per_dataset:
                held = _members(entry, names, path)
                fields[spec.name] = {n: _matlab_vector_flip(_read(entry, n, path)) for n in held}
            else:
                fields[spec.name] = _matlab_vector_flip(_read(f, spec.name, path))
    return build_checked(fields, names, path)


def _members(group, names: list[str], path) -> list[str]:
    """Those of ``names`` that the export's group of a per-dataset property holds."""
    if not isinstance(group, h5py.Group):
        raise FileFormatError(f"{path}: {group.name} should be a group of per-dataset arrays, not a "
                              f"{type(group).__name__}")
    with _h5_calls(path):
        return [n for n in names if n in group]
