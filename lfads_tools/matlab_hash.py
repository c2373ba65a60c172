"""The MATLAB ``DataHash`` serialization and the 6-character hashes of lfads-run-manager.

lfads-run-manager names run folders ``param_XXXXXX`` / ``data_XXXXXX`` after an MD5 of
the ``DataHash`` byte stream of a struct (hash version 4, with integer down-sizing).
Reproducing it byte for byte lets Python find folders that MATLAB created.

Values are given with their MATLAB class (``'double'``, ``'uint16'``, ``'logical'``,
``'char'``, ``'cell'``, ``'struct'``, ...). Rules (see the reference, section 2.4):

- every value starts with its class name in ASCII, then ``ndims`` and each size as
  little-endian uint64 (a scalar is ``[2, 1, 1]``, ``''``/``[]``/``{}`` are ``[2, 0, 0]``);
- numbers follow as little-endian bytes in column-major order, ``uint32``/``int32``
  (and 64-bit) arrays first shrunk to the narrowest class that holds them;
- logicals are one byte each, chars one UTF-16 code unit each;
- a struct writes its field names sorted by code point, each followed by its value;
- a cell writes its elements in column-major order.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any, Mapping

import numpy as np

from lds.errors import ValidationError

__all__ = ["serialize", "short_hash", "struct_hash", "infer_matlab_class", "matlab_dims", "NUMERIC_CLASSES"]

NUMERIC_CLASSES = {
    "double": "<f8",
    "single": "<f4",
    "int8": "<i1",
    "uint8": "<u1",
    "int16": "<i2",
    "uint16": "<u2",
    "int32": "<i4",
    "uint32": "<u4",
    "int64": "<i8",
    "uint64": "<u8",
}


def infer_matlab_class(value) -> str:
    """The class MATLAB would give a plain Python value (used inside cells and untyped properties)."""
    if isinstance(value, (bool, np.bool_)):
        return "logical"
    if isinstance(value, str):
        return "char"
    if isinstance(value, Mapping):
        return "struct"
    if isinstance(value, np.ndarray):
        if value.dtype == bool:
            return "logical"
        for name, code in NUMERIC_CLASSES.items():
            if value.dtype == np.dtype(code):
                return name
        raise ValidationError(f"cannot hash an array of dtype {value.dtype}")
    if isinstance(value, (list, tuple)):
        return "cell"
    if value is None or isinstance(value, (int, float, np.number)):
        return "double"
    raise ValidationError(f"cannot hash a value of type {type(value).__name__}: {value!r}")


def matlab_dims(array: np.ndarray) -> tuple[int, ...]:
    """MATLAB size of an array: row vectors for 1-D input, at least 2 dims, no trailing singletons."""
    if array.size == 0:
        return (0, 0)
    shape = (1,) + array.shape if array.ndim == 1 else array.shape
    shape = shape if len(shape) >= 2 else (1, 1)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return tuple(int(s) for s in shape)


def _header(matlab_class: str, dims: tuple[int, ...]) -> bytes:
    return matlab_class.encode("ascii") + np.array((len(dims),) + dims, dtype="<u8").tobytes()


def _downsized_class(matlab_class: str, array: np.ndarray) -> str:
    """DataHash's ``AutoDownsizeIntegers``: the narrowest class for uint32/64 and int32/64 arrays."""
    if array.size == 0:
        return matlab_class
    lo, hi = int(array.min()), int(array.max())
    if matlab_class in ("uint32", "uint64"):
        if hi <= 65535:
            return "uint16"
        if hi <= 4294967295:
            return "uint32"
    elif matlab_class in ("int32", "int64"):
        if -32768 <= lo and hi <= 32767:
            return "int16"
        if -2147483648 <= lo and hi < 2147483647:  # strict upper bound, as in DataHash
            return "int32"
    return matlab_class


def _numeric_array(value, matlab_class: str) -> np.ndarray:
    if value is None:
        return np.zeros((0, 0))
    array = np.asarray(value)
    if np.iscomplexobj(array):
        raise ValidationError("complex values are not supported in run parameters")
    return array.astype(NUMERIC_CLASSES[matlab_class] if matlab_class in NUMERIC_CLASSES else bool)


def serialize(value: Any, matlab_class: str | None = None) -> bytes:
    """The ``DataHash`` byte stream of ``value`` seen as a MATLAB value of ``matlab_class``.

    A struct is a mapping of field name to ``(matlab_class, value)`` pairs; a cell is a
    sequence whose elements get their class from :func:`infer_matlab_class`.
    """
    matlab_class = matlab_class or infer_matlab_class(value)
    if matlab_class == "struct":
        out = [_header("struct", (1, 1))]
        for name in sorted(value):
            field_class, field_value = value[name]
            out.append(name.encode("ascii"))
            out.append(serialize(field_value, field_class))
        return b"".join(out)
    if matlab_class == "cell":
        items = list(value)
        dims = (1, len(items)) if items else (0, 0)
        return _header("cell", dims) + b"".join(serialize(item) for item in items)
    if matlab_class == "char":
        units = str(value).encode("utf-16-le")  # MATLAB chars are UTF-16 code units (two for U+10000 and up)
        dims = (1, len(units) // 2) if units else (0, 0)
        return _header("char", dims) + units
    if matlab_class == "logical":
        array = _numeric_array(value, "logical")
        return _header("logical", matlab_dims(array)) + array.flatten(order="F").astype("u1").tobytes()
    if matlab_class in NUMERIC_CLASSES:
        array = _numeric_array(value, matlab_class)
        matlab_class = _downsized_class(matlab_class, array)
        data = array.flatten(order="F").astype(NUMERIC_CLASSES[matlab_class]).tobytes()
        return _header(matlab_class, matlab_dims(array)) + data
    raise ValidationError(f"cannot hash MATLAB class {matlab_class!r}")


def short_hash(data: bytes) -> str:
    """MD5, base64 with ``-`` and ``_`` instead of ``+`` and ``/``, first 6 characters."""
    return base64.urlsafe_b64encode(hashlib.md5(data).digest()).decode("ascii")[:6]


def struct_hash(fields: Mapping[str, tuple[str, Any]]) -> str:
    """The 6-character hash of a 1x1 struct given as ``{name: (matlab_class, value)}``."""
    return short_hash(serialize(fields, "struct"))
