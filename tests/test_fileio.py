import pytest

from lds.errors import MissingFileError, OverwriteError
from lds.fileio import atomic_path, atomic_write_bytes


def test_atomic_write_refuses_overwrite_and_keeps_old_content(tmp_path):
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"one")
    with pytest.raises(OverwriteError, match="overwrite=True"):
        atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"one"
    atomic_write_bytes(target, b"two", overwrite=True)
    assert target.read_bytes() == b"two"


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "y.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        atomic_write_bytes(tmp_path / "nope" / "z.bin", b"")
