import os
import stat

import pytest

import lds
from lds.errors import MissingFileError, OverwriteError, ValidationError
from lds.fileio import atomic_path, atomic_write_bytes, check_writable


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


def test_a_folder_in_the_way_is_a_clear_error(tmp_path):
    (tmp_path / "taken").mkdir()
    for overwrite in (False, True):
        with pytest.raises(ValidationError, match="taken is a folder"):
            atomic_write_bytes(tmp_path / "taken", b"", overwrite=overwrite)
    atomic_write_bytes(tmp_path / "x.bin", b"one")
    with pytest.raises(OverwriteError, match="--out x.bin already exists; pass --overwrite"):
        check_writable(tmp_path / "x.bin", False, label="--out x.bin", option="--overwrite")
    assert (tmp_path / "taken").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["taken", "x.bin"]


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_new_files_get_the_umask_permissions(tmp_path, umask, mask):
    umask(mask)
    atomic_write_bytes(tmp_path / "x.bin", b"x")
    params = lds.random_stable_lds(2, 3, seed=0)
    params.save(tmp_path / "p.h5")
    params.to_npz(tmp_path / "p.npz")
    params.save_bonsai(tmp_path / "bonsai")
    for path in (tmp_path / "x.bin", tmp_path / "p.h5", tmp_path / "p.npz", tmp_path / "bonsai" / "InitialMean.bin"):
        assert mode(path) == 0o666 & ~mask, path.name


def test_overwritten_file_keeps_its_permissions(tmp_path, umask):
    target = tmp_path / "x.bin"
    atomic_write_bytes(target, b"one")
    target.chmod(0o640)
    atomic_write_bytes(target, b"two", overwrite=True)
    assert target.read_bytes() == b"two" and mode(target) == 0o640
    target.chmod(0o444)  # read-only: replaced all the same (overwrite=True), still read-only
    atomic_write_bytes(target, b"three", overwrite=True)
    assert target.read_bytes() == b"three" and mode(target) == 0o444
