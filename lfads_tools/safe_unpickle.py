"""Read PyTorch ``torch.save`` files (Lightning ``.ckpt``, bare state_dicts) without running their code.

A ``torch.save`` file is a zip holding ``<name>/data.pkl`` (a pickle) and one raw
storage per tensor in ``<name>/data/<key>``. :class:`SafeUnpickler` rebuilds the pickle
with a fixed allow-list: tensors (as NumPy arrays read straight from the storages), plain
containers and ``collections.OrderedDict``. Every other class or function the pickle
names becomes an inert :class:`Stand-in <StandIn>` that only records its arguments and
state: no module named in the file is ever imported and nothing in it is called, so a
``__reduce__`` that asks for ``os.system`` yields a harmless object. Neither torch nor
lfads-torch is needed.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
import re
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from lds.errors import FileFormatError, MissingFileError, UnsafeCheckpointError

__all__ = ["StandIn", "SafeUnpickler", "read_torch_file"]

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}
_TORCH_DTYPES = {"float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
                 "float16": "float16", "half": "float16", "bfloat16": "bfloat16", "int64": "int64",
                 "long": "int64", "int32": "int32", "int": "int32", "int16": "int16", "int8": "int8",
                 "uint8": "uint8", "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "bool": "bool",
                 "complex64": "complex64", "complex128": "complex128"}
_KEY = re.compile(r"^[A-Za-z0-9_.-]+$")
#: What zipfile, pickle and the allowed rebuild functions raise on a damaged or hostile file.
_READ_ERRORS = (pickle.UnpicklingError, zipfile.BadZipFile, zlib.error, struct.error, EOFError, OSError, ValueError,
                TypeError, AttributeError, IndexError, KeyError, RuntimeError)


class StandIn:
    """Inert object standing for an instance of a class the safe reader does not rebuild.

    ``module``/``name`` say what the file asked for; ``args``, ``state`` and ``items``
    keep what the pickle gave it, so plain data inside stays readable.
    """

    module = name = ""

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.state, self.items = args, None, {}
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.items[len(self.items)] = value

    def extend(self, values):
        for value in values:
            self.append(value)

    def __repr__(self):
        return f"<stand-in for {self.module}.{self.name}>"


def _named(value) -> str:
    """``module.name`` of a stand-in class (what the pickle asked for), else the value's repr."""
    return f"{value.module}.{value.name}" if isinstance(value, type) and issubclass(value, StandIn) else repr(value)


class _Dtype(str):
    """A torch storage type or dtype named by the pickle, reduced to a NumPy dtype name."""

    def __call__(self, *args):  # the pickle may "call" a dtype marker; it stays a marker
        return self


def _numpy_dtype(name: str, byteorder: str) -> np.dtype:
    dtype = np.dtype("uint16" if name == "bfloat16" else name)
    return dtype.newbyteorder("<" if byteorder == "little" else ">") if dtype.itemsize > 1 else dtype


class _Storage:
    """Raw bytes of one storage with the dtype the pickle gives them."""

    def __init__(self, key: str, data: bytes, dtype_name: str, byteorder: str):
        self.key, self.data, self.dtype_name, self.byteorder = key, data, dtype_name, byteorder
        dtype = _numpy_dtype(dtype_name, byteorder)
        if len(data) % dtype.itemsize:
            raise FileFormatError(f"storage {key!r} has {len(data)} bytes, not a whole number of {dtype_name} "
                                  "elements (damaged checkpoint?)")
        self.array = np.frombuffer(data, dtype=dtype)

    def viewed_as(self, dtype_name: str) -> "_Storage":
        """The same bytes as elements of another dtype."""
        return self if dtype_name == self.dtype_name else _Storage(self.key, self.data, dtype_name, self.byteorder)


def _rebuild_tensor(storage, offset, size, stride, *rest):
    """``torch._utils._rebuild_tensor_v2``'s job, done with NumPy (bounds checked)."""
    if not isinstance(storage, _Storage):
        raise UnsafeCheckpointError(f"a tensor refers to {storage!r} instead of a storage of the file")
    try:
        offset, size, stride = int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride)
    except (TypeError, ValueError):
        raise UnsafeCheckpointError(f"a tensor has a malformed layout (offset {offset!r}, size {size!r})") from None
    flat = storage.array
    if len(size) != len(stride) or min((offset, *size, *stride), default=0) < 0:
        raise UnsafeCheckpointError(f"a tensor has a malformed layout (size {size}, stride {stride})")
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if all(size) else offset
    if extent > flat.size or int(np.prod(size, dtype=np.int64)) > flat.size:
        raise FileFormatError(f"a tensor of size {size} needs {extent} elements but its storage {storage.key!r} "
                              f"has {flat.size} (truncated file?)")
    if not all(size):
        array = np.zeros(size, dtype=flat.dtype)
    else:
        array = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                                strides=[s * flat.itemsize for s in stride]).copy()
    array = array.astype(array.dtype.newbyteorder("="))
    if storage.dtype_name == "bfloat16":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *rest):
    """``_rebuild_tensor_v3``: dtypes without a typed storage (``uint16``, ...) come as bytes plus their dtype."""
    if not isinstance(dtype, _Dtype):
        raise FileFormatError(f"a tensor has dtype {_named(dtype)}, which this reader does not support (no NumPy "
                              "equivalent)")
    if isinstance(storage, _Storage):
        storage = storage.viewed_as(str(dtype))
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_parameter(data, *rest):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,
    ("torch.storage", "UntypedStorage"): _Dtype("uint8"),
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
}


class SafeUnpickler(pickle.Unpickler):
    """Unpickler of ``torch.save`` data that rebuilds only tensors and plain containers.

    ``file`` is a seekable binary stream; ``storage_bytes(key)`` returns the raw bytes of
    storage ``key``. Python 2 names of protocol 0-2 pickles are renamed as pickle does,
    then looked up in the allow-list. Every class the pickle names outside the allow-list
    is recorded in ``stand_ins`` and replaced by a :class:`StandIn` subclass.
    """

    def __init__(self, file, storage_bytes, byteorder: str = "little"):
        super().__init__(file)
        self._python2_names = _protocol(file) < 3
        self._storage_bytes, self._byteorder = storage_bytes, byteorder
        self._storages: dict[str, _Storage] = {}
        self._stand_in_classes: dict[tuple[str, str], type] = {}
        self.stand_ins: set[str] = set()

    def find_class(self, module, name):
        if self._python2_names:  # protocols 0-2 (torch.save's) name things as Python 2 did; rename as pickle does
            module, name = _python3_name(module, name)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _Dtype(_STORAGE_DTYPES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _Dtype(_TORCH_DTYPES[name])
        self.stand_ins.add(f"{module}.{name}")
        key = (str(module), str(name))
        if key not in self._stand_in_classes:
            self._stand_in_classes[key] = type(f"StandIn_{name}", (StandIn,), {"module": key[0], "name": key[1]})
        return self._stand_in_classes[key]

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafeCheckpointError(f"unsupported persistent id {pid!r:.80} (not a tensor storage)")
        dtype, key = pid[1], pid[2]
        if not isinstance(dtype, _Dtype):
            raise UnsafeCheckpointError(f"storage {key!r:.80} has type {_named(dtype)}, which is not a tensor storage "
                                        "this reader supports")
        if not isinstance(key, str) or not _KEY.match(key):
            raise UnsafeCheckpointError(f"storage key {key!r:.80} is not a plain name")
        if key not in self._storages:
            self._storages[key] = _Storage(key, self._storage_bytes(key), str(dtype), self._byteorder)
        return self._storages[key].viewed_as(str(dtype))  # the same bytes may be viewed as another dtype (rare)


def _protocol(file) -> int:
    """The protocol of the pickle about to be read from a seekable ``file`` (0 without a PROTO opcode)."""
    start = file.tell()
    head = file.read(2)
    file.seek(start)
    return head[1] if len(head) == 2 and head[0] == pickle.PROTO[0] else 0


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """``(module, name)`` of a Python 2 global, renamed by the tables ``pickle.Unpickler.find_class`` uses."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def read_torch_file(path) -> tuple[object, set[str]]:
    """``(object, stand_ins)``: what ``torch.save`` stored in ``path``, rebuilt safely (tensors as NumPy)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        archive = zipfile.ZipFile(path)
    except _READ_ERRORS as exc:
        with open(path, "rb") as f:
            legacy = f.read(1) == b"\x80"
        hint = ("it looks like torch's legacy (pre-1.6) serialization, which is not read; re-save it with "
                "torch.save in a current torch" if legacy else "truncated or not a torch.save file?")
        raise FileFormatError(f"{path} is not a readable PyTorch zip checkpoint ({exc}); {hint}") from None
    try:
        with archive:
            return _unpickle(archive)
    except FileFormatError as exc:  # raised while rebuilding, without the file's name
        raise type(exc)(f"{path}: {exc}") from None
    except _READ_ERRORS as exc:
        raise FileFormatError(f"{path}: the checkpoint cannot be read safely ({type(exc).__name__}: {exc}); "
                              "truncated or damaged?") from None


def _unpickle(archive: zipfile.ZipFile) -> tuple[object, set[str]]:
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise FileFormatError("not a torch.save checkpoint: the zip file has no <name>/data.pkl")
    prefix = pickles[0][: -len("data.pkl")]
    names = set(archive.namelist())

    def storage_bytes(key: str) -> bytes:
        if f"{prefix}data/{key}" not in names:
            raise FileFormatError(f"no storage {key!r} in the zip file (truncated or damaged checkpoint)")
        return archive.read(f"{prefix}data/{key}")

    byteorder = archive.read(f"{prefix}byteorder").decode().strip() if f"{prefix}byteorder" in names else "little"
    unpickler = SafeUnpickler(io.BytesIO(archive.read(pickles[0])), storage_bytes, byteorder)
    return unpickler.load(), unpickler.stand_ins
