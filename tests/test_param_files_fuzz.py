"""Fuzzing the Bonsai and native readers: random or damaged bytes give library errors only."""

import io
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lds
from lds.bonsai import encode_uleb128, tensor_from_bytes, tensor_to_bytes
from lds.errors import FileFormatError, LfadsToolsError
from native_fixtures import MAGIC, break_global_heap, downgrade_to_format_2, global_heap_span, seal

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mutated(draw, base: bytes):
    """``base`` with a few bytes replaced, some inserted or deleted, or cut short."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if kind == "replace":
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        else:
            del data[i:]
    return bytes(data)


VALID_TENSOR = tensor_to_bytes(torch.arange(12, dtype=torch.float64).reshape(3, 4))


@FUZZ
@given(st.one_of(st.binary(max_size=80), mutated(VALID_TENSOR),
                 st.lists(st.integers(0, 2**70), max_size=6).map(lambda v: b"".join(map(encode_uleb128, v)))))
def test_tensor_reader_random_bytes(data):
    try:
        tensor = tensor_from_bytes(data, source="fuzz.bin")
    except FileFormatError as exc:
        assert "fuzz.bin" in str(exc)
        return
    encoded = tensor_to_bytes(tensor)
    assert tensor_to_bytes(tensor_from_bytes(encoded)) == encoded
    payload = encoded[len(encoded) - tensor.numel() * tensor.element_size():]
    assert payload in data


BONSAI_FILES = {}


def _bonsai_files():
    if not BONSAI_FILES:
        with tempfile.TemporaryDirectory() as folder:
            lds.random_stable_lds(2, 3, offsets=True, seed=0).save_bonsai(folder)
            BONSAI_FILES.update({p.name: p.read_bytes() for p in Path(folder).iterdir()})
    return BONSAI_FILES


@FUZZ
@given(st.data())
def test_bonsai_folder_reader_damaged_files(data):
    files = dict(_bonsai_files())
    names = data.draw(st.lists(st.sampled_from(sorted(files)), min_size=1, max_size=3, unique=True))
    for name in names:
        files[name] = data.draw(st.one_of(mutated(files[name]), st.binary(max_size=40)))
    with tempfile.TemporaryDirectory() as folder:
        for name, content in files.items():
            (Path(folder) / name).write_bytes(content)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                params = lds.KalmanParams.load_bonsai(folder)
            except LfadsToolsError:
                return
    assert isinstance(params, lds.KalmanParams)
    params.validate()


NATIVE = {}


def _native_file():
    """The bytes of a saved file (``data``), the same as format 2 (``format_2``), and its ``params``."""
    if not NATIVE:
        with tempfile.TemporaryDirectory() as folder:
            params = lds.random_stable_lds(2, [3, 4], offsets=True, seed=0)
            path = Path(folder) / "p.h5"
            params.save(path, metadata={"description": "fuzz"})
            NATIVE.update(params=params, data=path.read_bytes())
            downgrade_to_format_2(path)
            NATIVE.update(format_2=path.read_bytes())
    return NATIVE


def _load_bytes(content: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.h5"
        path.write_bytes(content)
        return lds.load_params(path)


@FUZZ
@given(st.data())
def test_native_reader_damaged_files(data):
    """Any damage to a file (bytes changed, inserted, removed, cut) is refused before HDF5 parsing."""
    base = _native_file()
    content = data.draw(st.one_of(mutated(base["data"]), st.binary(max_size=600),
                                  st.binary(max_size=600).map(lambda b: MAGIC + b)))
    try:
        loaded = _load_bytes(content)
    except FileFormatError as exc:
        assert "fuzz.h5" in str(exc)
        return
    assert loaded == base["params"]  # only padding bytes of the header were touched


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=0, max_size=2000))
def test_native_reader_sealed_non_hdf5_body(body):
    """A correct header over content that is not HDF5 is refused by the HDF5 layer, cleanly."""
    with pytest.raises(FileFormatError, match="cannot read the HDF5 content|fuzz.h5"):
        _load_bytes(seal(body.replace(b"\x89HDF", b"\x00HDF"), 3))


@FUZZ
@given(st.data())
def test_native_reader_resealed_damage(data):
    """Damage anywhere behind a recomputed header (a crafted file) reaches libhdf5: library errors only.

    The file has no global heap (libhdf5 2.0.0 can loop forever on a damaged one), and
    a variable-length string that damage might make is refused before it is read.
    """
    body = data.draw(mutated(_native_file()["data"][512:]))
    for content in (seal(body, 3), body):  # format 3, and the header-less path of format-1 files
        try:
            loaded = _load_bytes(content)
        except LfadsToolsError:
            continue
        assert isinstance(loaded, lds.KalmanParams)
        loaded.validate()


# The datatype message of the "sha256" attributes, after the name: in format 3 class 3
# (fixed-length string), version 1, then the class bits (null-padded, UTF-8); in format 2
# class 9 (variable length), version 1, then the class bits, 1 meaning "string".
STRING_ATTRIBUTE_TYPES = {3: b"sha256\x00\x00\x13\x11", 2: b"sha256\x00\x00\x19\x01"}


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("sealed", [True, False])
def test_attribute_of_damaged_type_is_refused_before_reading(version, sealed):
    """libhdf5 2.0 crashes reading a variable-length attribute whose class bits are invalid."""
    base = _native_file()["data" if version == 3 else "format_2"]
    pattern = STRING_ATTRIBUTE_TYPES[version]
    hits = [i for i in range(len(base)) if base.startswith(pattern, i)]
    assert len(hits) == 11  # one checksum per array: A, b, Q, m0, V0 and 2 sessions of C, d and R
    for hit in (hits[0], hits[-1]):
        data = bytearray(base)
        data[hit + len(pattern) - 2:hit + len(pattern)] = b"\x19\x0c"  # variable length, neither string nor sequence
        body = bytes(data[512:])
        expected = "attribute 'sha256' of .* should be a single string or integer" if version == 2 else \
            "fuzz.h5: cannot read the HDF5 content"  # format 3: the type message no longer fits
        with pytest.raises(FileFormatError, match=expected):
            _load_bytes(seal(body, version) if sealed else body)


# Loads files in a child process that stops itself (with a traceback) if a load hangs.
LOAD_EACH = """
import faulthandler, sys
import lds
from lds.errors import FileFormatError
faulthandler.dump_traceback_later(10, exit=True)
for path in sys.argv[1:]:
    print(path.rpartition("/")[2], "native" if lds.native.is_native_file(path) else "not native", end=": ")
    try:
        lds.load_params(path)
        print("loaded")
    except FileFormatError as exc:
        print(exc)
"""


def test_damaged_global_heap_cannot_hang_the_reader(tmp_path):
    """libhdf5 2.0.0 loops forever on a global heap with a free-space object of size 0.

    Format 3 has no global heap and refuses variable-length strings before reading them;
    formats 1 and 2 (which kept their strings there) get their heap checked first.
    """
    params = lds.random_stable_lds(2, [3, 4], offsets=True, seed=0)
    for version in (2, 3):
        params.save(tmp_path / f"v{version}.h5")
        downgrade_to_format_2(tmp_path / f"v{version}.h5", version)
        broken = break_global_heap((tmp_path / f"v{version}.h5").read_bytes()[512:])
        (tmp_path / f"claims_{version}.h5").write_bytes(seal(broken, version))
    (tmp_path / "no_header.h5").write_bytes(broken)  # the header-less path of format-1 files
    names = ["claims_3.h5", "claims_2.h5", "no_header.h5"]
    child = subprocess.run([sys.executable, "-c", LOAD_EACH, *(str(tmp_path / n) for n in names)],
                           cwd=Path(lds.__file__).parents[1], capture_output=True, text=True, timeout=120)
    assert child.returncode == 0, child.stdout + child.stderr
    lines = child.stdout.splitlines()
    assert len(lines) == 3, child.stdout
    assert lines[0].startswith("claims_3.h5 native: ") and \
        "claims_3.h5: attribute 'format' of / is a variable-length string" in lines[0]
    assert lines[1].startswith("claims_2.h5 native: ") and "claims_2.h5: damaged global heap" in lines[1]
    assert lines[2].startswith("no_header.h5 not native: ") and "no_header.h5: damaged global heap" in lines[2]


def test_global_heap_check(tmp_path):
    """What the check of formats 1 and 2 refuses: it mirrors libhdf5's walk, without calling it."""
    image = _native_file()["format_2"]
    broken = break_global_heap(image)
    zero_object = global_heap_span(image)[1] - 16  # where break_global_heap puts it
    with h5py.File(io.BytesIO(image), "r") as f:
        m0, V0 = (f[name].id.get_offset() for name in ("initial_mean", "initial_covariance"))
    in_m0 = image[:m0] + b"GCOL\x01\0\0\0" + (2**40).to_bytes(8, "little") + image[m0 + 16:]
    address = (m0 - 512).to_bytes(8, "little")  # of initial_mean's values (16 bytes), here written in V0's
    cases = {
        "valid": (image, None),
        "broken": (broken, "damaged global heap .the object at byte \\d+ has size 0"),
        # the zero-size object past the end of the file: libhdf5 reads zeros there too
        "cut": (broken[:zero_object - 100], "damaged global heap .the object at byte \\d+ has size 0"),
        "nested": (image[:zero_object] + b"GCOL\x01" + image[zero_object + 5:],
                   "damaged global heap .a collection at byte \\d+ inside another"),
        # array values that read as a collection are data, unless the file points at them as a heap ID would
        "in_array": (in_m0, None),
        "pointed_at": (in_m0[:V0] + address + in_m0[V0 + 8:], "damaged global heap .the object at byte \\d+"),
    }
    with h5py.File(io.BytesIO(image), "r") as f:
        for name, (content, refused) in cases.items():
            if refused is None:
                lds.native._check_global_heaps(content, f, name)
            else:
                with pytest.raises(FileFormatError, match=f"^{name}: {refused}"):
                    lds.native._check_global_heaps(content, f, name)
    path = tmp_path / "lengths.h5"  # 4-byte lengths: the check walks heaps of 8-byte lengths only
    create = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    create.set_sizes(8, 4)
    with h5py.File(h5py.h5f.create(str(path).encode(), fcpl=create), "r+") as f:
        f.attrs.update(format="lfads-tools-params", format_version=1)
    with pytest.raises(FileFormatError, match="lengths.h5: the HDF5 file stores lengths in other than 8 bytes"):
        lds.load_params(path)


def test_array_values_that_start_like_a_heap_collection_are_read(tmp_path):
    """A valid format-2 file whose initial_mean bytes are ``GCOL``, version 1 and a size: data, not a heap."""
    params = lds.random_stable_lds(2, 3, seed=0)
    params.m0 = np.frombuffer(b"GCOL\x01\0\0\0" + (2**40).to_bytes(8, "little"), "<f8").copy()
    path = tmp_path / "p.h5"
    params.save(path)
    downgrade_to_format_2(path)
    assert lds.load_params(path) == params
    (tmp_path / "no_header.h5").write_bytes(path.read_bytes()[512:])  # the header-less path of format-1 files
    assert lds.native.is_native_file(tmp_path / "no_header.h5")


def test_damage_inside_arrays_is_reported_as_checksum_error():
    base = _native_file()["data"]
    data = bytearray(base)
    values = np.asarray(_native_file()["params"].A).tobytes()
    at = bytes(data).find(values)
    assert at > 512
    data[at] ^= 0x01
    with pytest.raises(FileFormatError, match="SHA-256"):
        _load_bytes(bytes(data))
