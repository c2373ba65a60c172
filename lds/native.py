"""Native parameter files: one checksummed, versioned HDF5 file per parameter object.

Works for every :class:`~lds.containers.ParamsContainer` subclass (``KalmanParams``,
``ModelTrainedParams``, ...). Nothing here uses pickle: arrays are HDF5 datasets and
the configuration and metadata are JSON text.

Layout of format version 3 (the current one)
--------------------------------------------
- Bytes 0-511 are the HDF5 user block and hold our header: the magic
  ``b"\\x89LFADS-TOOLS\\r\\n\\x1a\\n"``, the format version (uint32, little-endian), the
  length of the HDF5 part (uint64) and the SHA-256 of the HDF5 part. The header is
  checked before the HDF5 library sees a byte, so a truncated or damaged file is refused
  with a clear error. The file stays plain HDF5: h5py, MATLAB's ``h5read`` and HDFView
  skip the user block.
- Root attributes: ``format`` (``"lfads-tools-params"``), ``format_version``, ``config``
  (JSON: ``class``, ``module``, ``dtype``, ``dims``, ``dataset_names``, ``fields``) and
  ``metadata`` (JSON: ``created`` in UTC, ``library_version``, ``user``: the caller's dict).
- Every array is a dataset named after its field. A per-dataset field is a group named
  after the field holding one dataset per session name; the group's ``names``
  attribute (JSON list) keeps the session order. Each dataset has a ``sha256``
  attribute (see :func:`array_sha256`), verified on load.
- Every string attribute is a fixed-length UTF-8 string (h5py reads it as ``bytes``),
  stored inline in its attribute message; nothing in the file is variable-length, so
  the file has no HDF5 global heap.

Older versions are upgraded on load by the steps registered with
:func:`register_migration`. Format 2 was format 3 with variable-length strings (h5py's
``str``, kept in the global heap); format 1 is described at :func:`_migrate_1_to_2`.

What the checks cover
---------------------
Accidental damage to a file with our header (formats 2 and 3: a flipped bit, a cut or
appended byte) is always caught by the header before libhdf5 parses anything (unless
loaded with ``verify=False``). Two kinds of file reach libhdf5's parser unchecked:
format-1 files (no header: damage is found only by libhdf5 itself, and their arrays
have no checksums), and crafted files, whose header was recomputed over edited HDF5
content. For those the reader accepts only what the writer produces, checked before any
value is read: attributes that are single integers or fixed-length strings, and arrays
of numbers stored contiguous, uncompressed and complete. That avoids a libhdf5 2.0.0
crash on damaged attribute types and large allocations from small files, and it keeps
libhdf5 away from the global heap, on which libhdf5 2.0.0 loops forever if it is
damaged: a format-3 file has none, and a variable-length value or a reference (what
libhdf5 would look up there) is refused unread.

Formats 1 and 2 kept their strings variable-length, in the global heap; they are read
as such only without a header (format 1) or when the header says format 2 and its
checksum verified (so not with ``verify=False``). Their heap is walked first the way
libhdf5 walks it, and refused where libhdf5 would loop (an object of size 0, objects
past the end of their collection, overlapping collections). That covers the one loop
known in libhdf5 2.0.0's heap reader, not every way a crafted format-1 or -2 file might
trip libhdf5; re-save such files to get format 3. libhdf5 is not hardened against every
crafted structure elsewhere either (random damage behind a recomputed header gives
library errors only in our fuzz tests, which is evidence, not proof): open parameter
files from untrusted sources in a process you can stop.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib
import json
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import h5py
import numpy as np

from .containers import DatasetList, ParamsContainer, as_numpy
from .errors import (
    ChecksumError,
    FileFormatError,
    LfadsToolsError,
    MissingFileError,
    ValidationError,
)
from .fileio import atomic_path, check_writable

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAGIC",
    "NativeFileInfo",
    "array_sha256",
    "is_native_file",
    "save_params",
    "load_params",
    "read_info",
    "read_arrays",
    "register_migration",
]

FORMAT_NAME = "lfads-tools-params"
FORMAT_VERSION = 3
MAGIC = b"\x89LFADS-TOOLS\r\n\x1a\n"
USER_BLOCK = 512
_HEADER = struct.Struct("<16sIQ32s")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ALLOWED_MODULE_ROOTS = ("lds", "lfads_tools")


# ---- small document model shared by the reader, the migrations and the parser ------
@dataclass
class Node:
    """An HDF5 group (``data is None``) or dataset read into memory."""

    attrs: dict = field(default_factory=dict)
    children: dict = field(default_factory=dict)
    data: np.ndarray | None = None


@dataclass(frozen=True)
class NativeFileInfo:
    """What a native file says about itself, without building the object."""

    path: Path
    format_version: int
    class_name: str
    module: str
    dtype: str | None
    dims: Any
    dataset_names: list | None
    fields: list
    metadata: dict

    def __repr__(self) -> str:
        user = self.metadata.get("user") or {}
        return (
            f"NativeFileInfo({self.path.name}: {self.class_name} ({self.module}), format "
            f"{self.format_version}, dtype {self.dtype}, fields {self.fields}, "
            f"created {self.metadata.get('created')}, user metadata keys {sorted(user)})"
        )


# ---- checksums and JSON ------------------------------------------------------------
def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and little-endian row-major bytes (hex)."""
    array = np.asarray(array)
    canonical = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    digest = hashlib.sha256(f"{canonical.dtype.str};{','.join(map(str, array.shape))};".encode())
    digest.update(canonical)  # the contiguous buffer itself, no copy
    return digest.hexdigest()


def _json_default(value):
    if hasattr(value, "detach") or isinstance(value, np.ndarray):
        return as_numpy(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _check_keys(value, where: str, depth: int = 0) -> None:
    """JSON objects have string keys: refuse others rather than convert them (1 and "1" would merge)."""
    if depth > 100:
        raise ValidationError(f"{where.partition('[')[0]} is nested more than 100 levels deep (or contains itself)")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{where} has the key {key!r} ({type(key).__name__}); keys must be strings")
            _check_keys(item, f"{where}[{key!r}]", depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_keys(item, f"{where}[{i}]", depth + 1)


def _to_json(value, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} must be JSON-serializable (numbers, strings, lists, dicts): {exc}") from None


def _from_json(text, what: str, path) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise FileFormatError(f"{path}: {what} is not valid JSON ({exc})") from None


# ---- writing -----------------------------------------------------------------------
def _class_config(obj: ParamsContainer, arrays: Mapping) -> dict:
    dtype = getattr(obj, "dtype", None)
    if dtype is None:
        first = next((a for a in _flat_arrays(arrays)), None)
        dtype = None if first is None else first.dtype
    names = getattr(obj, "dataset_names", None)
    return {
        "class": type(obj).__qualname__,
        "module": type(obj).__module__,
        "dtype": None if dtype is None else str(dtype).replace("torch.", ""),
        "dims": obj.dims,
        "dataset_names": None if names is None else list(names),
        "fields": list(arrays),
    }


def _flat_arrays(arrays: Mapping):
    for value in arrays.values():
        yield from (value.values() if isinstance(value, dict) else [value])


def _numpy_field(obj, name: str, value) -> np.ndarray:
    try:
        array = as_numpy(value)
    except (TypeError, RuntimeError) as exc:
        raise ValidationError(f"{type(obj).__name__}.{name} cannot be stored ({exc})") from None
    if array.dtype.kind not in "biufc":
        raise ValidationError(f"{type(obj).__name__}.{name} has dtype {array.dtype}; only numeric arrays are stored")
    return array


def _h5_name(name: str, what: str) -> str:
    if not name or "/" in name or name == ".":
        raise ValidationError(f"{what} {name!r} cannot be an HDF5 name (empty, '.' or containing '/')")
    return name


def container_arrays(obj: ParamsContainer) -> dict:
    """``{field: array or {session: array}}`` as NumPy arrays; absent fields left out."""
    arrays: dict[str, Any] = {}
    for name, value in obj.items():
        if isinstance(value, DatasetList):
            if len(value):
                arrays[name] = {
                    _h5_name(ds, f"session name of {name}"): _numpy_field(obj, f"{name}[{ds!r}]", a)
                    for ds, a in value.items()
                }
        elif value is not None:
            arrays[name] = _numpy_field(obj, name, value)
    return arrays


def save_params(obj: ParamsContainer, path, metadata: Mapping | None = None, overwrite: bool = False,
                verify: bool = False, **sections) -> Path:
    """Write ``obj`` to ``path`` in the native format, atomically.

    ``metadata`` is the caller's JSON-serializable dict (description, metrics, ...).
    Extra keyword sections (used by checkpoints) are stored beside it in the metadata.
    An existing file is replaced only with ``overwrite=True``. ``verify=True`` reads the
    written file back and checks it before it takes the final name.
    """
    if not isinstance(obj, ParamsContainer):
        raise ValidationError(f"save_params needs a ParamsContainer (e.g. KalmanParams), got {type(obj).__name__}")
    from . import __version__

    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValidationError(f"metadata must be a dict, got {type(metadata).__name__}")
    _check_keys(metadata or {}, "metadata")
    path = check_writable(path, overwrite)
    arrays = container_arrays(obj)
    config = _to_json(_class_config(obj, arrays), f"configuration of {type(obj).__name__}")
    meta = {"created": datetime.now(timezone.utc).isoformat(), "library_version": __version__,
            "user": dict(metadata or {}), **sections}
    meta_text = _to_json(meta, "metadata")
    with atomic_path(path, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w", userblock_size=USER_BLOCK, track_order=True) as f:
            _set_text(f, "format", FORMAT_NAME)
            f.attrs["format_version"] = FORMAT_VERSION
            _set_text(f, "config", config)
            _set_text(f, "metadata", meta_text)
            for name, value in arrays.items():
                if isinstance(value, dict):
                    group = f.create_group(name, track_order=True)
                    _set_text(group, "names", json.dumps(list(value)))
                    for ds_name, array in value.items():
                        _set_text(group.create_dataset(ds_name, data=array), "sha256", array_sha256(array))
                else:
                    _set_text(f.create_dataset(name, data=value), "sha256", array_sha256(value))
        _write_header(tmp)
        if verify:
            _read_document(tmp)
    return Path(path)


def _set_text(obj, name: str, text: str) -> None:
    """A string attribute, stored fixed-length UTF-8 (inline: no global heap, unlike h5py's ``str``)."""
    data = text.encode("utf-8")
    obj.attrs.create(name, data, dtype=h5py.string_dtype("utf-8", max(len(data), 1)))


def _write_header(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(USER_BLOCK)
        body = f.read()
        header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(body), hashlib.sha256(body).digest())
        f.seek(0)
        f.write(header.ljust(USER_BLOCK, b"\0"))


# ---- reading -----------------------------------------------------------------------
def is_native_file(path) -> bool:
    """True if ``path`` is a native parameter file of any format version (cheap check)."""
    try:
        with open(path, "rb") as f:
            start = f.read(len(MAGIC))
        if start == MAGIC:
            return True
        if start[: len(_HDF5_SIGNATURE)] != _HDF5_SIGNATURE:
            return False
        with h5py.File(path, "r") as f:  # other HDF5 files (e.g. TF LFADS) are not read whole
            if "format" not in f.attrs:
                return False
        data = Path(path).read_bytes()  # format 1: its strings are variable-length
        with h5py.File(h5py.h5f.open_file_image(data), "r") as f:
            _check_global_heaps(data, f, path)
            return _format_name(f, path, legacy=True) == FORMAT_NAME
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False


def _text(value) -> str | None:
    """A scalar string attribute's value: fixed-length ones read as bytes, variable-length ones as str."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value if isinstance(value, str) else None


def _check_header(data: bytes, path, verify: bool) -> int:
    """Check the header and checksum of a file's bytes; return the header's format version."""
    if not data.startswith(MAGIC):
        raise FileFormatError(
            f"{path} is not an lfads-tools parameter file (wrong magic: starts with {data[:16]!r})"
        )
    if len(data) < USER_BLOCK:
        raise FileFormatError(f"{path} is truncated: {len(data)} bytes, shorter than the {USER_BLOCK}-byte header")
    _, version, length, digest = _HEADER.unpack_from(data)
    body = memoryview(data)[USER_BLOCK:]
    if len(body) != length:
        raise FileFormatError(
            f"{path} is truncated or has extra bytes: the header promises {length} bytes of HDF5 data, "
            f"the file has {len(body)}"
        )
    if verify and hashlib.sha256(body).digest() != digest:
        raise ChecksumError(
            f"{path} is corrupt: the SHA-256 of its content does not match the header "
            f"(damaged, or edited by another program; load with verify=False to skip the checks)"
        )
    return version


def _read_tree(data: bytes, path, legacy: bool) -> Node:
    """Read a whole file (its bytes, the header already checked) into memory.

    ``legacy``: the file may hold variable-length strings, as formats 1 and 2 did (see
    :func:`_attribute`); its global heap is checked first.
    """
    try:
        with h5py.File(h5py.h5f.open_file_image(data), "r") as f:
            if legacy:
                _check_global_heaps(data, f, path)
            if _format_name(f, path, legacy) != FORMAT_NAME:
                raise FileFormatError(
                    f"{path} is an HDF5 file but not an lfads-tools parameter file (no format={FORMAT_NAME!r})"
                )
            return _read_group(f, path, legacy, depth=0)
    except LfadsToolsError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError, RuntimeError... on bad files
        raise FileFormatError(f"{path}: cannot read the HDF5 content ({type(exc).__name__}: {exc})") from None


def _read_group(group, path, legacy: bool, depth: int) -> Node:
    node = Node(attrs=_attributes(group, path, legacy))
    for key in group.keys():
        link = group.get(key, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise FileFormatError(f"{path}: {group.name}/{key} is a {type(link).__name__}; only plain entries are read")
        item = group[key]
        if isinstance(item, h5py.Group):
            if depth >= 2:
                raise FileFormatError(f"{path}: {item.name} is nested deeper than the format allows")
            node.children[key] = _read_group(item, path, legacy, depth + 1)
        else:
            node.children[key] = Node(attrs=_attributes(item, path, legacy), data=_read_array(item, path))
    return node


def _read_array(item, path) -> np.ndarray:
    """A dataset's values, read only if it is stored as the writer stores it.

    The writer stores every array contiguous, uncompressed and complete; anything else
    is refused before a byte is read, so a small file cannot make the reader allocate
    the memory of an array it does not hold (libhdf5 itself refuses contiguous storage
    beyond the end of the file).
    """
    if item.dtype.kind not in "biufc":
        raise FileFormatError(f"{path}: {item.name} has unsupported dtype {item.dtype}")
    plist = item.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CONTIGUOUS or plist.get_nfilters():
        raise FileFormatError(f"{path}: array {item.name} is stored chunked, compact or compressed "
                              f"(the format stores arrays contiguous and uncompressed)")
    stored, nbytes = item.id.get_storage_size(), item.size * item.dtype.itemsize
    if stored != nbytes:
        raise FileFormatError(f"{path}: array {item.name} is stored in {stored} bytes, but its shape "
                              f"{item.shape} of {item.dtype} needs {nbytes}")
    return np.asarray(item[()])


def _attributes(obj, path, legacy: bool) -> dict:
    return {name: _attribute(obj, name, path, legacy) for name in obj.attrs.keys()}


def _attribute(obj, name: str, path, legacy: bool):
    """One attribute, which the format allows only as a single string or integer.

    The type is checked before the value is read: libhdf5 2.0 crashes the process on
    some damaged types (a string attribute whose type class became variable-length),
    and reading a variable-length string means reading the global heap, on which it can
    loop forever. Format 3 stores strings fixed-length; only ``legacy`` files (format 1,
    and format 2 with a verified checksum) may hold variable-length ones.
    """
    attr = h5py.h5a.open(obj.id, name.encode())
    attr_type = attr.get_type()
    kind = attr_type.get_class()
    if kind not in (h5py.h5t.STRING, h5py.h5t.INTEGER) or \
            attr.get_space().get_simple_extent_type() != h5py.h5s.SCALAR:
        raise FileFormatError(f"{path}: attribute {name!r} of {obj.name} should be a single string or integer")
    if kind == h5py.h5t.STRING and attr_type.is_variable_str() and not legacy:
        raise FileFormatError(
            f"{path}: attribute {name!r} of {obj.name} is a variable-length string; this file's format stores "
            f"strings fixed-length (only format-1 files, and format-2 files loaded with verify=True, may hold them)"
        )
    value = obj.attrs[name]
    return _text(value) if kind == h5py.h5t.STRING else int(value)


def _format_name(f, path, legacy: bool) -> str | None:
    return _attribute(f, "format", path, legacy) if "format" in f.attrs else None


def _check_global_heaps(image: bytes, f, path) -> None:
    """Refuse a damaged global heap before libhdf5 reads one (formats 1 and 2 keep their strings there).

    A heap collection is the signature ``GCOL``, version 1, 3 reserved bytes and its size
    (8 bytes), then its objects: each a 16-byte header (index, reference count, reserved,
    size) and its data padded to 8 bytes; the free-space object (index 0) counts its own
    header. libhdf5 2.0.0 walks the objects by those sizes and loops forever on a
    free-space object of size 0. It reads a collection only at an address where it finds
    the signature, so each place that starts like one is walked here first: the objects must tile the
    collection (every step forward, none past its end; bytes past the end of the file read
    as zeros, as libhdf5 reads them), and collections must not overlap (valid ones never
    do; it also keeps this check linear in the file size). Where that fails, the walk is
    done again without array values that merely start like a collection
    (:func:`_array_values_like_heaps`).
    """
    if f.id.get_create_plist().get_sizes()[1] != 8:
        raise FileFormatError(f"{path}: the HDF5 file stores lengths in other than 8 bytes (h5py writes 8)")
    try:
        _walk_heaps(image, path)
    except FileFormatError:
        _walk_heaps(image, path, skip=_array_values_like_heaps(image, f))


def _walk_heaps(image: bytes, path, skip=frozenset()) -> None:
    """Walk every place that starts like a heap collection, but those in ``skip``."""
    checked_until = 0
    at = image.find(b"GCOL\x01")
    while at >= 0:
        if at in skip:
            at = image.find(b"GCOL\x01", at + 1)
            continue
        if at < checked_until:
            raise FileFormatError(f"{path}: damaged global heap (a collection at byte {at} inside another)")
        p, end = at + 16, at + int.from_bytes(image[at + 8:at + 16], "little")
        while p + 16 <= end:
            index, size = int.from_bytes(image[p:p + 2], "little"), int.from_bytes(image[p + 8:p + 16], "little")
            step = size if index == 0 else 16 + -(-size // 8) * 8
            if not 0 < step <= end - p:
                raise FileFormatError(f"{path}: damaged global heap (the object at byte {p} has size {size}, "
                                      f"in a collection from byte {at} to {end})")
            p += step
        checked_until = max(p, at + 16)
        at = image.find(b"GCOL\x01", at + 1)


def _array_values_like_heaps(image: bytes, f) -> set[int]:
    """Places in array values that start like a heap collection and that nothing points at.

    libhdf5 reads a collection at the address a heap ID holds, so one that a crafted
    file places inside an array still has its address written elsewhere in the file
    (an array's own header holds only its start). Only the first 8 places inside arrays
    are looked at, as each costs a scan of the file.
    """
    create = f.id.get_create_plist()
    base, address_size = create.get_userblock(), create.get_sizes()[0]
    arrays = sorted(_array_ranges(f))
    starts = [start for start, _ in arrays]
    found, looked = set(), 0
    at = image.find(b"GCOL\x01")
    while at >= 0 and looked < 8:
        i = bisect.bisect_right(starts, at) - 1
        if i >= 0 and at < arrays[i][1]:
            looked += 1
            if image.count((at - base).to_bytes(address_size, "little")) <= starts.count(at):
                found.add(at)
        at = image.find(b"GCOL\x01", at + 1)
    return found


def _array_ranges(f) -> list[tuple[int, int]]:
    """``(start, end)`` in the file of each contiguous dataset's values, from the headers alone.

    Low-level handles: opening a dataset reads neither its values nor the global heap
    (h5py's ``Dataset`` would, for a variable-length fill value).
    """
    ranges = []

    def visit(name):
        obj = h5py.h5o.open(f.id, name)
        if isinstance(obj, h5py.h5d.DatasetID) and obj.get_offset() is not None:
            ranges.append((obj.get_offset(), obj.get_offset() + obj.get_storage_size()))

    h5py.h5o.visit(f.id, visit)
    return ranges


# ---- migrations --------------------------------------------------------------------
_MIGRATIONS: dict[int, Callable[[Node], Node]] = {}


def register_migration(from_version: int):
    """Register ``fn(tree) -> tree`` that upgrades a file tree from ``from_version`` to the next."""

    def decorator(fn):
        _MIGRATIONS[from_version] = fn
        return fn

    return decorator


@register_migration(1)
def _migrate_1_to_2(tree: Node) -> Node:
    """Format 1 (plain HDF5, no header or checksums) to format 2.

    Format 1 kept the arrays in a ``/params`` group, per-dataset fields as groups of
    datasets named ``"0"``, ``"1"``, ... with the session names in the root attribute
    ``dataset_names`` (JSON), and the class in the root attributes ``class_name``,
    ``module``, ``dtype``, ``created`` and an optional ``description``. Its arrays had no
    checksums, so the migrated ones are recorded as read.
    """
    attrs = tree.attrs
    names = json.loads(attrs["dataset_names"]) if attrs.get("dataset_names") else None
    params = tree.children.get("params", Node())
    children = {}
    for key, child in params.children.items():
        if child.data is None:
            order = sorted(child.children, key=int)
            session_names = names if names is not None and len(names) == len(order) else order
            group = Node(attrs={"names": json.dumps(session_names)})
            for index, name in zip(order, session_names):
                data = child.children[index].data
                group.children[name] = Node(attrs={"sha256": array_sha256(data)}, data=data)
            children[key] = group
        else:
            children[key] = Node(attrs={"sha256": array_sha256(child.data)}, data=child.data)
    config = {"class": attrs["class_name"], "module": attrs["module"], "dtype": attrs.get("dtype"),
              "dims": None, "dataset_names": names, "fields": list(children)}
    user = {"description": attrs["description"]} if "description" in attrs else {}
    metadata = {"created": attrs.get("created"), "library_version": None, "user": user, "migrated_from": 1}
    new_attrs = {"format": FORMAT_NAME, "format_version": 2,
                 "config": json.dumps(config), "metadata": json.dumps(metadata)}
    return Node(attrs=new_attrs, children=children)


@register_migration(2)
def _migrate_2_to_3(tree: Node) -> Node:
    """Format 2 to format 3: the same content; format 2 stored its strings variable-length."""
    return Node(attrs={**tree.attrs, "format_version": 3}, children=tree.children)


def _migrate(tree: Node, version: int, path) -> Node:
    while version < FORMAT_VERSION:
        step = _MIGRATIONS.get(version)
        if step is None:
            raise FileFormatError(f"{path}: no migration from format version {version}")
        try:
            tree = step(tree)
        except LfadsToolsError:
            raise
        except Exception as exc:
            raise FileFormatError(
                f"{path}: cannot upgrade format version {version} ({type(exc).__name__}: {exc})"
            ) from None
        version += 1
    return tree


# ---- parsing the current version ----------------------------------------------------
@dataclass
class _Document:
    info: NativeFileInfo
    arrays: dict


def _read_document(path, verify: bool = True) -> _Document:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"parameter file {path} does not exist")
    data = path.read_bytes()
    if data.startswith(_HDF5_SIGNATURE):  # format 1: plain HDF5 without our header, nothing to check first
        header_version = 0
    else:
        header_version = _check_header(data, path, verify)
    legacy = header_version == 0 or (header_version == 2 and verify)  # may hold variable-length strings
    tree = _read_tree(data, path, legacy)  # parse the very bytes that were checked
    version = tree.attrs.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise FileFormatError(f"{path}: format_version should be a positive integer, found {version!r}")
    if version > FORMAT_VERSION:
        raise FileFormatError(
            f"{path} has format version {version}; this library reads up to {FORMAT_VERSION} (upgrade lfads-tools)"
        )
    if header_version == 0 and version != 1:
        raise FileFormatError(f"{path} has no lfads-tools header but says format version {version} "
                              f"(only format-1 files have none)")
    if header_version and header_version != version:
        raise FileFormatError(f"{path}: header says format version {header_version}, content says {version}")
    tree = _migrate(tree, version, path)
    return _parse(tree, version, path, verify)


def _parse(tree: Node, version: int, path, verify: bool) -> _Document:
    config = _from_json(tree.attrs.get("config"), "the configuration", path)
    metadata = _from_json(tree.attrs.get("metadata"), "the metadata", path)
    if not isinstance(config, dict) or not isinstance(metadata, dict):
        raise FileFormatError(f"{path}: configuration and metadata should be JSON objects")
    for key, kind in (("class", str), ("module", str)):
        if not isinstance(config.get(key), kind):
            raise FileFormatError(f"{path}: the configuration lacks {key!r} (found {config.get(key)!r})")
    arrays: dict[str, Any] = {}
    for name, node in tree.children.items():
        if node.data is not None:
            arrays[name] = _verified(node, name, path, verify)
            continue
        order = _from_json(node.attrs.get("names"), f"the session order of {name}", path)
        if not isinstance(order, list) or sorted(order) != sorted(node.children):
            raise FileFormatError(
                f"{path}: group {name} lists sessions {order} but holds {sorted(node.children)}"
            )
        arrays[name] = {}
        for ds in order:
            child = node.children[ds]
            if child.data is None:
                raise FileFormatError(f"{path}: {name}/{ds} should be an array, found a group")
            arrays[name][ds] = _verified(child, f"{name}/{ds}", path, verify)
    return make_document(path, version, config, metadata, arrays)


def make_document(path, version: int, config: dict, metadata: dict, arrays: dict) -> _Document:
    """A parsed file: its self-description and ``{field: array or {session: array}}``."""
    info = NativeFileInfo(
        path=Path(path), format_version=version, class_name=config["class"], module=config["module"],
        dtype=config.get("dtype"), dims=config.get("dims"), dataset_names=config.get("dataset_names"),
        fields=list(arrays), metadata=metadata,
    )
    return _Document(info=info, arrays=arrays)


def _verified(node: Node, where: str, path, verify: bool) -> np.ndarray:
    stored = node.attrs.get("sha256")
    if not isinstance(stored, str):
        raise FileFormatError(f"{path}: array {where} has no sha256 checksum")
    if verify and array_sha256(node.data) != stored:
        raise ChecksumError(f"{path}: array {where} does not match its SHA-256 checksum (the file is corrupt)")
    return node.data


def read_info(path, verify: bool = True) -> NativeFileInfo:
    """Format version, class, dims, fields and metadata of a native file (checks it too)."""
    return _read_document(path, verify).info


# ---- building objects --------------------------------------------------------------
def _resolve_class(info: NativeFileInfo, cls):
    found = ParamsContainer.registered_class(info.module, info.class_name)
    if found is None and cls in (None, ParamsContainer):
        root = info.module.split(".")[0]
        if root not in _ALLOWED_MODULE_ROOTS or not all(p.isidentifier() for p in info.module.split(".")):
            raise FileFormatError(
                f"{info.path} holds a {info.class_name} from module {info.module!r}; only classes of "
                f"lds and lfads_tools are imported automatically: call that class's load() instead"
            )
        try:
            importlib.import_module(info.module)
        except ImportError as exc:
            raise FileFormatError(
                f"{info.path}: cannot import module {info.module!r} of {info.class_name}: {exc}"
            ) from None
        found = ParamsContainer.registered_class(info.module, info.class_name)
        if found is None:
            raise FileFormatError(f"{info.path}: module {info.module} has no parameter class {info.class_name}")
    if cls in (None, ParamsContainer):
        return found
    if found is not None and issubclass(found, cls):
        return found
    if info.class_name != cls.__name__:
        raise FileFormatError(f"{info.path} holds a {info.class_name}, not a {cls.__name__}")
    return cls


def _build(cls, arrays: dict, info: NativeFileInfo, partial: bool):
    data = dict(arrays)
    if info.dataset_names is not None:
        data["dataset_names"] = list(info.dataset_names)
    if partial and isinstance(info.dims, dict):  # sizes the chosen fields may not tell, e.g. N for the dynamics
        data.update({keyword: info.dims[dim] for dim, keyword in cls.SIZE_KEYWORDS.items() if dim in info.dims})
    try:
        return cls.from_dict(data)
    except (LfadsToolsError, TypeError, ValueError, RuntimeError) as exc:
        hint = "; to update part of an existing object use its load_state(path, fields=...)" if partial else ""
        raise FileFormatError(f"{info.path}: the arrays do not form a valid {cls.__name__}: {exc}{hint}") from None


def _convert(obj, dtype, device):
    if dtype is None and device is None:
        return obj
    if hasattr(obj, "to"):
        return obj.to(device=device, dtype=dtype)  # KalmanParams reads dtype names too
    if device is not None:
        raise ValidationError(f"{type(obj).__name__} holds NumPy arrays; it has no device to move to")
    try:
        target = np.dtype(str(dtype).replace("torch.", ""))
    except TypeError:
        raise ValidationError(f"unknown dtype {dtype!r}; use e.g. 'float32' or np.float64") from None
    return obj.map_arrays(lambda a: np.asarray(a).astype(target))


def load_params(path, cls=None, fields: Iterable[str] | None = None, dtype=None, device=None,
                verify: bool = True):
    """Read a native parameter file and rebuild its object.

    ``cls`` (e.g. ``KalmanParams``) checks the file holds that class; without it the
    class named in the file is used (only modules of ``lds`` and ``lfads_tools`` are
    ever imported for that). ``fields`` loads only those fields (the class's defaults
    fill the others). ``dtype``/``device`` convert the result (``KalmanParams``).
    ``verify=False`` skips the checksums (for files edited by other programs).
    """
    return rebuild(_read_document(path, verify), cls=cls, fields=fields, dtype=dtype, device=device)


def rebuild(doc: _Document, cls=None, fields: Iterable[str] | None = None, dtype=None, device=None):
    """Build the parameter object of a parsed file (shared by every file format)."""
    target = _resolve_class(doc.info, cls)
    arrays = doc.arrays
    if fields is not None:
        fields = list(fields)
        for name in fields:
            target.field_spec(name)  # raises UnknownParameterError naming the class's fields
        absent = [f for f in fields if f not in arrays]
        if absent:
            raise FileFormatError(f"{doc.info.path} has no field(s) {absent}; it has {list(arrays)}")
        arrays = {f: arrays[f] for f in fields}
    else:
        unexpected = [f for f in arrays if f not in target.field_names()]
        if unexpected:
            raise FileFormatError(
                f"{doc.info.path} has fields {unexpected} that {target.__name__} does not know; "
                f"load the others with fields=... or load_state(..., strict=False)"
            )
    obj = _build(target, arrays, doc.info, partial=fields is not None)
    if fields is None and doc.info.dims is not None:
        found = json.loads(_to_json(obj.dims, "dims"))
        if found != doc.info.dims:
            raise FileFormatError(
                f"{doc.info.path}: the configuration says dims {doc.info.dims}, the arrays give {found}"
            )
    built_dtype = str(getattr(obj, "dtype", doc.info.dtype)).replace("torch.", "")
    if dtype is None and doc.info.dtype and built_dtype != doc.info.dtype:
        dtype = doc.info.dtype  # e.g. a float32 file loaded with fields= that omit the first array
    return _convert(obj, dtype, device)


def read_arrays(path, verify: bool = True) -> dict:
    """``{field: array or {session: array}}`` of a native file, checked, without building the object."""
    return _read_document(path, verify).arrays
