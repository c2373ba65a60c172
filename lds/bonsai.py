"""Bonsai.ML.Lds.Torch parameter folders, byte for byte.

``SaveKalmanFilterParameters`` writes one file per parameter into a folder, with fixed
names (:data:`FILE_NAMES`); ``LoadKalmanFilterParameters`` reads them back, missing files
meaning "use the default". Each file is TorchSharp's tensor layout::

    [ULEB128 dtype code][ULEB128 ndim][ULEB128 size_0] ... [raw little-endian row-major data]

with no magic number and no version. Trailing bytes after the data are ignored, as
TorchSharp does.

Choices that differ from the C# original (documented deviations):

- Writing is atomic per file; all files are written to temporary files first, so a
  failed save leaves the folder as it was. With ``overwrite=True`` stale parameter files
  (e.g. offsets the new parameters do not have) are removed after the new ones are in place.
- Bonsai needs both offsets once either exists; when ``KalmanParams`` has only one, the
  other is written as zeros (the same model).
- Bonsai's format holds one observation model. Multi-session parameters are saved one
  session at a time with ``session=`` (name or 0-based index).
- On load the requested dtype and device are really applied (Bonsai silently ignores them).
"""

from __future__ import annotations

import math
import uuid
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from .errors import (
    DefaultsUsedWarning,
    FileFormatError,
    LfadsToolsError,
    MissingFileError,
    OverwriteError,
    ValidationError,
    warn,
)
from .fileio import atomic_path

__all__ = [
    "FILE_NAMES",
    "DTYPE_CODES",
    "encode_uleb128",
    "decode_uleb128",
    "tensor_to_bytes",
    "tensor_from_bytes",
    "write_tensor",
    "read_tensor",
    "check_bonsai_writable",
    "save_bonsai",
    "load_bonsai",
]

#: KalmanParams field -> Bonsai file name, in Bonsai's order.
FILE_NAMES = {
    "transition_matrix": "TransitionMatrix.bin",
    "measurement_function": "MeasurementFunction.bin",
    "process_noise_covariance": "ProcessNoiseCovariance.bin",
    "measurement_noise_covariance": "MeasurementNoiseCovariance.bin",
    "initial_mean": "InitialMean.bin",
    "initial_covariance": "InitialCovariance.bin",
    "state_offset": "StateOffset.bin",
    "observation_offset": "ObservationOffset.bin",
}
_DEFAULTS = {
    "transition_matrix": "A = I",
    "measurement_function": "C = eye(N, K)",
    "process_noise_covariance": "Q = I",
    "measurement_noise_covariance": "R = I",
    "initial_mean": "m0 = 0",
    "initial_covariance": "V0 = I",
}

#: TorchSharp / c10 ScalarType codes.
DTYPE_CODES = {
    torch.uint8: 0, torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.int64: 4, torch.float16: 5,
    torch.float32: 6, torch.float64: 7, torch.complex64: 9, torch.complex128: 10, torch.bool: 11,
    torch.bfloat16: 15,
}
_CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
_MAX_NDIM = 64
_MAX_LEB128_BYTES = 10  # enough for any 64-bit value


# ---- LEB128 and single tensors ------------------------------------------------------
def encode_uleb128(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, low bits first, high bit set on all but the last."""
    if value < 0:
        raise ValidationError(f"ULEB128 encodes non-negative integers only, got {value}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_uleb128(data: bytes, pos: int, what: str = "value", source="data") -> tuple[int, int]:
    """Decode one ULEB128 integer at ``pos``; return ``(value, next position)``."""
    value = 0
    for i in range(_MAX_LEB128_BYTES):
        if pos + i >= len(data):
            raise FileFormatError(f"{source}: truncated while reading the {what} (bad LEB128 at byte {pos})")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise FileFormatError(f"{source}: bad LEB128 for the {what} at byte {pos} (more than {_MAX_LEB128_BYTES} bytes)")


def tensor_to_bytes(tensor) -> bytes:
    """TorchSharp's serialization of one tensor (CPU copy, row-major, little-endian)."""
    tensor = torch.as_tensor(tensor).detach().cpu().contiguous()
    if tensor.dtype not in DTYPE_CODES:
        raise ValidationError(f"dtype {tensor.dtype} has no TorchSharp code")
    header = encode_uleb128(DTYPE_CODES[tensor.dtype]) + encode_uleb128(tensor.dim())
    header += b"".join(encode_uleb128(s) for s in tensor.shape)
    return header + _raw_bytes(tensor)


def _raw_bytes(tensor: torch.Tensor) -> bytes:
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().astype("<i2").tobytes()
    array = tensor.numpy()
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def tensor_from_bytes(data: bytes, source="data") -> torch.Tensor:
    """Parse TorchSharp's serialization of one tensor; trailing bytes are ignored."""
    code, pos = decode_uleb128(data, 0, "dtype code", source)
    if code not in _CODE_DTYPES:
        raise FileFormatError(f"{source}: unknown TorchSharp dtype code {code} (known: {sorted(_CODE_DTYPES)})")
    dtype = _CODE_DTYPES[code]
    ndim, pos = decode_uleb128(data, pos, "number of dimensions", source)
    if ndim > _MAX_NDIM:
        raise FileFormatError(f"{source}: {ndim} dimensions is more than a tensor can have ({_MAX_NDIM})")
    shape = []
    for axis in range(ndim):
        size, pos = decode_uleb128(data, pos, f"size of dimension {axis}", source)
        if size >= 2**63:
            raise FileFormatError(f"{source}: size {size} of dimension {axis} is larger than a tensor can have")
        shape.append(size)
    element_size = torch.empty((), dtype=dtype).element_size()
    if math.prod(max(size, 1) for size in shape) * element_size >= 2**63:  # strides overflow, even with a 0 size
        raise FileFormatError(f"{source}: shape {shape} is larger than a tensor can have")
    nbytes = math.prod(shape) * element_size
    if len(data) - pos < nbytes:
        raise FileFormatError(
            f"{source} is truncated: shape {shape} of {str(dtype).replace('torch.', '')} needs {nbytes} data "
            f"bytes, the file has {len(data) - pos}"
        )
    payload = data[pos:pos + nbytes]
    if dtype == torch.bfloat16:
        raw = np.frombuffer(payload, dtype="<i2").astype(np.int16)
        return torch.from_numpy(raw.copy()).view(torch.bfloat16).reshape(shape)
    np_dtype = torch.empty((), dtype=dtype).numpy().dtype.newbyteorder("<")
    return torch.from_numpy(np.frombuffer(payload, dtype=np_dtype).astype(np_dtype.newbyteorder("="))).reshape(shape)


def write_tensor(path, tensor, overwrite: bool = False) -> Path:
    """Write one tensor file atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(tensor_to_bytes(tensor))
    return Path(path)


def read_tensor(path) -> torch.Tensor:
    """Read one tensor file (a CPU tensor in the file's dtype)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"tensor file {path} does not exist")
    return tensor_from_bytes(path.read_bytes(), source=path)


# ---- parameter folders --------------------------------------------------------------
def _target_folder(folder, suffix) -> Path:
    folder = Path(folder) if str(folder) else Path.cwd()
    if suffix is None:
        return folder
    if suffix == "datetime":
        return folder / datetime.now().strftime("%Y%m%d%H%M%S")
    if suffix == "guid":
        return folder / str(uuid.uuid4())
    raise ValidationError(f"suffix must be None, 'datetime' or 'guid', got {suffix!r}")


def _single_session(params, session):
    if params.is_multi_session:
        if session is None:
            raise ValidationError(
                f"Bonsai's format holds one observation model but these KalmanParams have sessions "
                f"{params.dataset_names}; pass session=<name or 0-based index> (one folder per session)"
            )
        return params.session(session)
    if session not in (None, 0, -1):
        raise ValidationError(f"these KalmanParams have a single session; got session={session!r}")
    return params


def check_bonsai_writable(folder, overwrite: bool, *, label: str | None = None,
                          option: str = "overwrite=True") -> Path:
    """Fail before any work if ``folder`` cannot take Bonsai parameter files: it is a file, or it
    holds some and ``overwrite`` is false. ``label`` names it in the errors (default: the path),
    ``option`` is how to allow replacing them."""
    folder = Path(folder)
    label = label or str(folder)
    if folder.exists() and not folder.is_dir():
        raise ValidationError(f"{label} is a file; give a folder (new, or one to add the parameter files to)")
    existing = [name for name in FILE_NAMES.values() if (folder / name).exists()]
    if existing and not overwrite:
        raise OverwriteError(f"{label} already holds Bonsai parameter files ({', '.join(existing)}); "
                             f"pass {option} to replace them")
    return folder


def save_bonsai(params, folder, suffix: str | None = None, overwrite: bool = False, session=None) -> Path:
    """Write ``params`` as a Bonsai.ML.Lds.Torch parameter folder; return the folder.

    ``suffix``: None, ``'datetime'`` (subfolder ``yyyyMMddHHmmss``, local time) or
    ``'guid'`` (a random GUID subfolder), as Bonsai's ``AddSuffix``. Existing parameter
    files are replaced only with ``overwrite=True``. Tensors keep their dtype.
    """
    params = _single_session(params, session)
    target = _target_folder(folder, suffix)
    check_bonsai_writable(target, overwrite)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValidationError(f"cannot save Bonsai parameters in {target}: it or a folder above it is a file") from None
    tensors = {field: getattr(params, field) for field in FILE_NAMES}
    b, d = tensors["state_offset"], tensors["observation_offset"]
    if (b is None) != (d is None):  # Bonsai needs both once either exists
        like = tensors["transition_matrix"]
        if b is None:
            tensors["state_offset"] = torch.zeros(params.num_states, dtype=like.dtype)
        else:
            tensors["observation_offset"] = torch.zeros(params.num_observations, dtype=like.dtype)
    written = {FILE_NAMES[f]: t for f, t in tensors.items() if t is not None}
    with ExitStack() as stack:
        for name, tensor in written.items():
            tmp = stack.enter_context(atomic_path(target / name, overwrite=overwrite))
            tmp.write_bytes(tensor_to_bytes(tensor))
    for name in FILE_NAMES.values():
        if name not in written and (target / name).exists():
            (target / name).unlink()
    return target


def load_bonsai(folder, dtype: torch.dtype | None = None, device=None):
    """Read a Bonsai.ML.Lds.Torch parameter folder into :class:`~lds.KalmanParams`.

    Missing files get Bonsai's defaults (A = I, C = eye(N, K), Q = I, R = I, m0 = 0,
    V0 = I) with a :class:`~lds.errors.DefaultsUsedWarning` naming them; absent offsets
    are simply absent. ``dtype`` (a torch dtype or its name, e.g. ``"float32"``) defaults
    to the dtype of the files (float64 if none is floating), ``device`` to the CPU.
    """
    from .params import KalmanParams, as_dtype

    dtype = as_dtype(dtype)
    if not str(folder):
        raise ValidationError("the Bonsai parameter folder is not specified")
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingFileError(f"Bonsai parameter folder {folder} does not exist")
    tensors = {f: read_tensor(folder / name) for f, name in FILE_NAMES.items() if (folder / name).is_file()}
    for f, tensor in tensors.items():
        if tensor.numel() == 0 or tensor.is_complex():
            raise FileFormatError(
                f"{folder / FILE_NAMES[f]} holds a {'complex' if tensor.is_complex() else 'empty'} tensor "
                f"of shape {list(tensor.shape)}; a parameter needs real values"
            )
    if not tensors:
        raise FileFormatError(f"{folder} holds none of the Bonsai parameter files {list(FILE_NAMES.values())}")
    defaulted = [f for f in _DEFAULTS if f not in tensors]
    if defaulted:
        warn(f"{folder} lacks {[FILE_NAMES[f] for f in defaulted]}; using Bonsai's defaults "
             f"{', '.join(_DEFAULTS[f] for f in defaulted)}", DefaultsUsedWarning)
    if dtype is None:
        floating = [t.dtype for t in tensors.values() if t.is_floating_point()]
        dtype = floating[0] if floating else torch.float64
    try:
        return KalmanParams(**tensors, dtype=dtype, device=device)
    except (LfadsToolsError, RuntimeError, TypeError, ValueError) as exc:
        raise FileFormatError(f"{folder}: the parameter files do not form a valid KalmanParams: {exc}") from None
