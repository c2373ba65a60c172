"""Containers of named parameter arrays grouped in titled sections.

This is the one display and data layer shared by ``lds.KalmanParams`` and
``lfads_tools.ModelTrainedParams``:

- :class:`FieldSpec` describes a field: name, section title, one-line description,
  symbolic shape (e.g. ``("c_ic_enc_dim + c_factors_dim", "2*c_ic_enc_dim")``) and
  whether it may hold one array per dataset (recording session).
- :class:`DatasetList` is the cell-like per-dataset list (MATLAB ``{3x1 cell}``).
- :class:`ParamsContainer` gives every subclass the MATLAB-like grouped ``repr``,
  ``summary()``, ``_repr_html_``, ``to_dict()``/``from_dict()``, ``sections()`` and
  tolerant comparison (``allclose``).

Arrays may be NumPy arrays or torch tensors; statistics are computed in float64.
Missing values follow MATLAB: an absent single-array field is ``None`` (shown ``[]``),
an absent per-dataset field is an empty ``DatasetList`` (shown ``{}``).
"""

from __future__ import annotations

import ast
import functools
import html
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
from tabulate import tabulate

from .errors import DatasetNameError, ShapeError, UnknownParameterError, ValidationError

__all__ = [
    "FieldSpec",
    "DatasetList",
    "ParamsContainer",
    "as_numpy",
    "dataset_name_list",
    "format_value",
    "evaluate_shape",
]


@dataclass(frozen=True)
class FieldSpec:
    """Description of one parameter field.

    ``shape`` holds one symbolic expression per axis, evaluated against the
    container's ``dims`` (integers, ``+``, ``-``, ``*`` and dimension names).
    ``per_dataset`` marks fields that may hold a :class:`DatasetList`.
    """

    name: str
    section: str
    description: str
    shape: tuple[str, ...] = ()
    per_dataset: bool = False
    optional: bool = False

    @property
    def shape_text(self) -> str:
        return " x ".join(f"({s})" if any(op in s for op in "+-*") else s for s in self.shape)


def as_numpy(value) -> np.ndarray:
    """Return a NumPy view or copy of an array or torch tensor (on the CPU)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def dataset_name_list(names) -> list[str] | None:
    """Dataset names as a list of str; a single string is one name (not its characters)."""
    if names is None:
        return None
    return [names] if isinstance(names, str) else [str(n) for n in names]


def _dtype_name(value) -> str:
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return type(value).__name__
    return str(dtype).replace("torch.", "")


def _shape_text(value) -> str:
    shape = tuple(getattr(value, "shape", ()))
    return "x".join(str(s) for s in shape) if shape else "1x1"


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def format_value(value) -> str:
    """MATLAB-like one-cell rendering: ``[72x128 float32]``, ``{3x1 cell}``, ``[]``."""
    if value is None:
        return "[]"
    if isinstance(value, DatasetList):
        return "{}" if len(value) == 0 else f"{{{len(value)}x1 cell}}"
    if _is_array(value):
        if getattr(value, "ndim", 1) == 0:
            return repr(as_numpy(value).item())
        return f"[{_shape_text(value)} {_dtype_name(value)}]"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, (int, np.integer)) for v in value) and len(value) <= 8:
            return "[" + " ".join(str(v) for v in value) + "]"
        return f"{{{len(value)}x1 cell}}" if value else "{}"  # a column, like MATLAB's datasetNames
    return repr(value)


_ALLOWED_NODES = (ast.Expression, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Name, ast.Load, ast.Constant)


@functools.lru_cache(maxsize=1024)
def _parse_shape(expression: str) -> ast.Expression:
    """The checked syntax tree of a shape expression (parsed once: shapes are checked on every load)."""
    tree = ast.parse(expression, mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ValidationError(f"shape expression {expression!r} uses unsupported syntax")
    return tree


def evaluate_shape(expression: str, dims: Mapping[str, int]) -> int:
    """Evaluate a symbolic axis length such as ``'2*c_ic_enc_dim'`` with ``dims``."""
    tree = _parse_shape(expression)

    def visit(node):
        if isinstance(node, ast.Expression):
            return visit(node.body)
        if isinstance(node, ast.Constant):
            return int(node.value)
        if isinstance(node, ast.Name):
            if node.id not in dims:
                raise KeyError(node.id)
            return int(dims[node.id])
        left, right = visit(node.left), visit(node.right)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        return left * right

    return visit(tree)


class DatasetList(Sequence):
    """Cell-like list of one array per dataset, indexed by 0-based position or by name.

    >>> W = DatasetList([w1, w2], names=["dsA.h5", "dsB.h5"])
    >>> W[0] is W["dsA.h5"]
    True

    An empty ``DatasetList()`` stands for a per-dataset field that is missing.
    """

    __slots__ = ("_items", "_names")

    def __init__(self, items: Iterable = (), names: Iterable[str] | None = None):
        if isinstance(items, Mapping):
            if names is not None:
                raise ValidationError("give the names either as mapping keys or as names=, not both")
            names, items = list(items.keys()), list(items.values())
        self._items = list(items)
        self._names = dataset_name_list(names)
        if self._names is None:
            self._names = [f"session_{i}" for i in range(len(self._items))]
        if len(self._names) != len(self._items):
            raise ValidationError(
                f"DatasetList got {len(self._items)} arrays but {len(self._names)} names"
            )
        if len(set(self._names)) != len(self._names):
            raise ValidationError(f"dataset names must be unique, got {self._names}")

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def index_of(self, key) -> int:
        """0-based position of a dataset given by name or (possibly negative) index.

        A name matches exactly, else ignoring a trailing ``.h5`` on either side (the TF
        dataset name of lfads-run-manager's ``dataset001`` is ``dataset001.h5``).
        """
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            n = len(self._items)
            if -n <= key < n:
                return int(key) % n
            raise DatasetNameError(
                f"dataset index {key} is out of range for {n} datasets (0-based); "
                f"available: {self._names}"
            )
        if isinstance(key, str):
            if key in self._names:
                return self._names.index(key)
            stems, stem = [n.removesuffix(".h5") for n in self._names], key.removesuffix(".h5")
            if stem in stems:  # unambiguous: the exact name is absent, so one name at most has this stem
                return stems.index(stem)
            raise DatasetNameError(f"no dataset named {key!r}; available: {self._names}")
        raise DatasetNameError(f"datasets are indexed by name or 0-based position, not {key!r}")

    def __getitem__(self, key):
        if isinstance(key, slice):
            return DatasetList(self._items[key], self._names[key])
        return self._items[self.index_of(key)]

    def __setitem__(self, key, value):
        self._items[self.index_of(key)] = value

    def items(self) -> Iterator[tuple[str, Any]]:
        return zip(self._names, self._items)

    def to_dict(self) -> dict:
        return dict(zip(self._names, self._items))

    def map(self, fn) -> "DatasetList":
        return DatasetList([fn(v) for v in self._items], self._names)

    def concatenated(self, axis: int = 0):
        """Join the arrays along ``axis`` (``torch.cat`` for tensors, else NumPy)."""
        if not self._items:
            return None
        if hasattr(self._items[0], "detach"):
            import torch

            return torch.cat(list(self._items), dim=axis)
        return np.concatenate([np.asarray(v) for v in self._items], axis=axis)

    def __eq__(self, other):
        if not isinstance(other, DatasetList):
            return NotImplemented
        return self._names == other._names and all(
            _arrays_equal(a, b) for a, b in zip(self._items, other._items)
        )

    __hash__ = None

    def __repr__(self) -> str:
        if not self._items:
            return "{}"
        width = max(len(n) for n in self._names)
        lines = [f"{{{len(self)}x1 cell}}"]
        for i, (name, value) in enumerate(self.items()):
            lines.append(f"  [{i}] {name.ljust(width)}  {format_value(value)}")
        return "\n".join(lines)


def _dataset_dims(dims: Mapping, dataset: int | None) -> dict:
    """The integer dims for one dataset (a per-dataset dim is a list of values)."""
    picked = {k: (v[dataset] if isinstance(v, (list, tuple)) and dataset is not None else v) for k, v in dims.items()}
    return {k: v for k, v in picked.items() if isinstance(v, (int, np.integer))}


def _concrete_shape(spec: FieldSpec, dims: Mapping) -> tuple[int, ...] | None:
    try:
        return tuple(evaluate_shape(axis, dims) for axis in spec.shape)
    except KeyError:
        return None


def _arrays_equal(a, b) -> bool:
    if a is None or b is None:
        return a is b
    a, b = as_numpy(a), as_numpy(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def _arrays_close(a, b, rtol, atol) -> bool:
    if a is None or b is None:
        return a is b
    a, b = as_numpy(a), as_numpy(b)
    return a.shape == b.shape and np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


class ParamsContainer:
    """Base class for parameter objects made of named arrays in titled sections.

    Subclasses set ``FIELDS`` (a tuple of :class:`FieldSpec`, in display order) and
    store each field as an attribute of the same name. They may add display-only
    groups with ``EXTRA_GROUPS``: ``(title, (attribute, ...), "first"|"last")``.
    ``from_dict`` calls the subclass constructor with the field names (and
    ``dataset_names`` when present) as keywords. ``SIZE_KEYWORDS`` maps entries of
    ``dims`` to constructor keywords that set them, so a file's recorded dims can
    complete an object built from some of its fields.
    """

    FIELDS: tuple[FieldSpec, ...] = ()
    EXTRA_GROUPS: tuple[tuple[str, tuple[str, ...], str], ...] = ()
    SIZE_KEYWORDS: Mapping[str, str] = {}
    _REGISTRY: dict[str, type] = {}

    def __init_subclass__(cls, **kwargs):
        """Register every subclass so parameter files can name the class to rebuild."""
        super().__init_subclass__(**kwargs)
        ParamsContainer._REGISTRY[f"{cls.__module__}:{cls.__qualname__}"] = cls

    @staticmethod
    def registered_class(module: str, name: str):
        """The registered subclass ``name`` defined in ``module``, or None."""
        return ParamsContainer._REGISTRY.get(f"{module}:{name}")

    # ---- files (formats live in lds.native, lds.bonsai and lds.interop) ----------
    def save(self, path, metadata: Mapping | None = None, overwrite: bool = False):
        """Write the native HDF5 parameter file (see :mod:`lds.native`)."""
        from .native import save_params

        return save_params(self, path, metadata=metadata, overwrite=overwrite)

    @classmethod
    def load(cls, path, fields: Iterable[str] | None = None, **options):
        """Read a native parameter file written by :meth:`save` (see :func:`lds.native.load_params`)."""
        from .native import load_params

        return load_params(path, cls=cls, fields=fields, **options)

    def load_state(self, source, fields: Iterable[str] | None = None, strict: bool = False):
        """Copy fields from a file or another object into this one (see :func:`lds.partial.load_state`)."""
        from .partial import load_state

        return load_state(self, source, fields=fields, strict=strict)

    def to_npz(self, path, overwrite: bool = False):
        """Write a NumPy ``.npz`` file (see :mod:`lds.interop`)."""
        from .interop import to_npz

        return to_npz(self, path, overwrite=overwrite)

    def to_mat(self, path, overwrite: bool = False):
        """Write a MATLAB ``.mat`` file (see :mod:`lds.interop`)."""
        from .interop import to_mat

        return to_mat(self, path, overwrite=overwrite)

    @classmethod
    def from_npz(cls, path):
        from .interop import from_npz

        return from_npz(path, cls=cls)

    @classmethod
    def from_mat(cls, path):
        from .interop import from_mat

        return from_mat(path, cls=cls)

    # ---- structure -------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in cls.FIELDS]

    @classmethod
    def field_spec(cls, name: str) -> FieldSpec:
        for spec in cls.FIELDS:
            if spec.name == name:
                return spec
        raise UnknownParameterError(
            f"{cls.__name__} has no field {name!r}; fields: {cls.field_names()}"
        )

    @classmethod
    def section_titles(cls) -> list[str]:
        titles: list[str] = []
        for spec in cls.FIELDS:
            if spec.section not in titles:
                titles.append(spec.section)
        return titles

    def sections(self) -> Iterator[tuple[str, list[tuple[FieldSpec, Any]]]]:
        """Yield ``(title, [(spec, value), ...])`` for each section, in order."""
        for title in self.section_titles():
            yield title, [(s, getattr(self, s.name)) for s in self.FIELDS if s.section == title]

    def items(self) -> Iterator[tuple[str, Any]]:
        for spec in self.FIELDS:
            yield spec.name, getattr(self, spec.name)

    @property
    def dims(self) -> dict:
        """Dimension symbols used by the symbolic shapes (subclasses fill it in)."""
        return {}

    def expected_shape(self, spec: FieldSpec, dataset: int | None = None) -> tuple[int, ...] | None:
        """The concrete shape a field should have (of dataset number ``dataset``), or None when a symbol is unknown."""
        return _concrete_shape(spec, _dataset_dims(self.dims, dataset))

    def check_shapes(self) -> None:
        """Raise :class:`ShapeError` naming the first field whose shape is wrong."""
        dims = self.dims
        by_dataset: dict[int | None, dict] = {}  # the integer dims of each dataset, computed once
        for spec in self.FIELDS:
            value = getattr(self, spec.name)
            entries = (
                list(enumerate(value.items())) if isinstance(value, DatasetList) else [(None, (None, value))]
            )
            for index, (name, array) in entries:
                if array is None:
                    continue
                if index not in by_dataset:
                    by_dataset[index] = _dataset_dims(dims, index)
                expected = _concrete_shape(spec, by_dataset[index])
                actual = tuple(array.shape)
                if expected is not None and expected != actual:
                    where = spec.name if name is None else f"{spec.name}[{name!r}]"
                    raise ShapeError(
                        f"{type(self).__name__}.{where} should have shape {expected} "
                        f"({spec.shape_text}) but has shape {actual}"
                    )

    # ---- conversion ------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain dict: arrays as they are, per-dataset fields as ``{name: array}``."""
        out: dict[str, Any] = {}
        for name, value in self.items():
            out[name] = value.to_dict() if isinstance(value, DatasetList) else value
        names = getattr(self, "dataset_names", None)
        if names is not None:
            out["dataset_names"] = list(names)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        """Rebuild an object from :meth:`to_dict` output (unknown keys are an error)."""
        known = set(cls.field_names()) | {"dataset_names"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UnknownParameterError(
                f"{cls.__name__}.from_dict got unknown keys {unknown}; fields: {cls.field_names()}"
            )
        names = data.get("dataset_names")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, Mapping):
                value = DatasetList(value) if names is None else DatasetList(
                    [value[n] for n in names if n in value], [n for n in names if n in value]
                )
            kwargs[key] = value
        return cls(**kwargs)

    def map_arrays(self, fn):
        """A new object of the same class with ``fn`` applied to every array."""
        return type(self).from_dict(self._mapped_dict(fn))

    def _mapped_dict(self, fn) -> dict:
        data = self.to_dict()
        for key, value in data.items():
            if key == "dataset_names":
                continue
            if isinstance(value, dict):
                data[key] = {k: fn(v) for k, v in value.items()}
            elif value is not None:
                data[key] = fn(value)
        return data

    # ---- comparison ------------------------------------------------------------
    def _pairs(self, other):
        if type(other) is not type(self):
            return None
        pairs = []
        for name, a in self.items():
            b = getattr(other, name)
            if isinstance(a, DatasetList) or isinstance(b, DatasetList):
                if not (isinstance(a, DatasetList) and isinstance(b, DatasetList)) or a.names != b.names:
                    return None
                pairs.extend(zip(a, b))
            else:
                pairs.append((a, b))
        return pairs

    def __eq__(self, other):
        pairs = self._pairs(other)
        if pairs is None:
            return NotImplemented if type(other) is not type(self) else False
        return all(_arrays_equal(a, b) for a, b in pairs)

    __hash__ = None

    def allclose(self, other, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
        """True when both have the same fields, names and shapes, and values within tolerance."""
        pairs = self._pairs(other)
        return pairs is not None and all(_arrays_close(a, b, rtol, atol) for a, b in pairs)

    def differences(self, other, rtol: float = 1e-5, atol: float = 1e-8) -> list[str]:
        """Names of the fields that differ beyond tolerance (for error messages and reports)."""
        out = []
        for name, a in self.items():
            b = getattr(other, name, None)
            if isinstance(a, DatasetList) and isinstance(b, DatasetList):
                if a.names != b.names or not all(_arrays_close(x, y, rtol, atol) for x, y in zip(a, b)):
                    out.append(name)
            elif isinstance(a, DatasetList) or isinstance(b, DatasetList) or not _arrays_close(a, b, rtol, atol):
                out.append(name)
        return out

    # ---- display ---------------------------------------------------------------
    def _display_groups(self) -> list[tuple[str, list[tuple[str, Any]]]]:
        groups = [(title, [(s.name, v) for s, v in fields]) for title, fields in self.sections()]
        for title, names, where in self.EXTRA_GROUPS:
            group = (title, [(n, getattr(self, n)) for n in names])
            groups.insert(0, group) if where == "first" else groups.append(group)
        return groups

    def format(self, verbose: bool = False) -> str:
        """MATLAB-like grouped view; ``verbose`` adds one line per dataset."""
        groups = self._display_groups()
        width = max((len(n) for _, fields in groups for n, _ in fields), default=0) + 4
        lines = [f"  {type(self).__name__} with properties:", ""]
        for title, fields in groups:
            lines.append(f"   {title}")
            for name, value in fields:
                lines.append(f"{name.rjust(width)}: {format_value(value)}")
                if verbose and isinstance(value, DatasetList):
                    for ds_name, array in value.items():
                        lines.append(f"{'':>{width}}    {ds_name}: {format_value(array)}")
            lines.append("")
        return "\n".join(lines).rstrip() + "\n"

    def __repr__(self) -> str:
        return self.format()

    def summary_rows(self) -> list[dict]:
        """One row per array: section, field, shape, dtype, min, max, Frobenius norm."""
        rows = []
        for title, fields in self.sections():
            for spec, value in fields:
                entries = value.items() if isinstance(value, DatasetList) else [(None, value)]
                for ds_name, array in entries:
                    field = spec.name if ds_name is None else f"{spec.name}[{ds_name}]"
                    row = {"section": title, "field": field, "shape": "[]", "dtype": "",
                           "min": None, "max": None, "norm": None}
                    if array is not None:
                        data = as_numpy(array).astype(np.float64, copy=False)
                        row.update(shape=_shape_text(array), dtype=_dtype_name(array))
                        if data.size:
                            finite = data[np.isfinite(data)]
                            if finite.size:
                                row.update(min=float(finite.min()), max=float(finite.max()))
                            row["norm"] = float(np.linalg.norm(data.ravel()))
                    rows.append(row)
        return rows

    def summary(self, tablefmt: str = "simple") -> str:
        """Table of every array with its statistics, as text (``tablefmt`` as in tabulate)."""
        rows = self.summary_rows()
        headers = ["section", "field", "shape", "dtype", "min", "max", "norm"]
        body = [[r[h] for h in headers] for r in rows]
        return tabulate(body, headers=headers, tablefmt=tablefmt, floatfmt=".4g", missingval="")

    def _repr_html_(self) -> str:
        title = html.escape(f"{type(self).__name__}")
        return f"<div><strong>{title}</strong>{self.summary(tablefmt='html')}</div>"
