"""Atomic, non-clobbering file writes used by every writer in the library.

A writer fills a temporary file in the target folder; only when it is complete is
it flushed, fsynced and moved into place in one step, so a crash never leaves a
half-written file under the final name. An existing file is replaced only with
``overwrite=True``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import MissingFileError, OverwriteError

__all__ = ["atomic_path", "atomic_write_bytes", "check_writable"]


def check_writable(path, overwrite: bool) -> Path:
    """Raise :class:`OverwriteError` if ``path`` exists and ``overwrite`` is false."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OverwriteError(f"{path} already exists; pass overwrite=True to replace it")
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


@contextmanager
def atomic_path(path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place when the block ends.

    >>> with atomic_path("params.h5") as tmp:
    ...     with h5py.File(tmp, "w") as f: ...
    """
    path = check_writable(path, overwrite)
    if not path.parent.is_dir():
        raise MissingFileError(f"folder {path.parent} does not exist (writing {path.name})")
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
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
