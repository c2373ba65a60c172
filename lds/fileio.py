"""Atomic, non-clobbering file writes used by every writer in the library.

A writer fills a temporary file in the target folder; only when it is complete is
it flushed, fsynced and moved into place in one step, so a crash never leaves a
half-written file under the final name. An existing file is replaced only with
``overwrite=True``. New files get the permissions of the user's umask (as ``open`` gives
them); a replaced file keeps its permissions.
"""

from __future__ import annotations

import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import MissingFileError, OverwriteError, ValidationError

__all__ = ["atomic_path", "atomic_write_bytes", "check_writable"]


def check_writable(path, overwrite: bool, *, label: str | None = None, option: str = "overwrite=True") -> Path:
    """Fail before any work if the file ``path`` cannot be written: it is a folder, or it exists and
    ``overwrite`` is false. ``label`` names it in the errors (default: the path), ``option`` is how
    to allow replacing it."""
    path = Path(path)
    label = label or str(path)
    if path.is_dir():
        raise ValidationError(f"{label} is a folder; give the name of the file to write")
    if path.exists() and not overwrite:
        raise OverwriteError(f"{label} already exists; pass {option} to replace it")
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _create_temporary(path: Path) -> Path:
    """Create an empty, unique temporary file beside ``path``.

    Its mode is 0o666 less the umask, applied by the OS as for ``open`` (``tempfile.mkstemp``
    would give 0o600 to every file written).
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextmanager
def atomic_path(path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place when the block ends.

    >>> with atomic_path("params.h5") as tmp:
    ...     with h5py.File(tmp, "w") as f: ...
    """
    path = check_writable(path, overwrite)
    if not path.parent.is_dir():
        raise MissingFileError(f"folder {path.parent} does not exist (writing {path.name})")
    tmp = _create_temporary(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            if path.is_file():
                os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))  # a replaced file keeps its mode
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if someone created path meanwhile
            except FileExistsError:
                raise OverwriteError(f"{path} already exists; pass overwrite=True to replace it") from None
            tmp.unlink()
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)
