"""Bonsai.ML.Lds.Torch parameter folders: TorchSharp tensor layout, byte examples, defaults."""

import re
import uuid
import warnings

import numpy as np
import pytest
import torch

import lds
from lds.bonsai import (
    FILE_NAMES,
    decode_uleb128,
    encode_uleb128,
    read_tensor,
    tensor_from_bytes,
    tensor_to_bytes,
)
from lds.errors import DefaultsUsedWarning, FileFormatError, MissingFileError, OverwriteError, ValidationError

CORE = ["TransitionMatrix.bin", "MeasurementFunction.bin", "ProcessNoiseCovariance.bin",
        "MeasurementNoiseCovariance.bin", "InitialMean.bin", "InitialCovariance.bin"]


def spec_bytes(code, shape, array):
    """A tensor file written by hand from the reference: code, ndim, sizes (all < 128), data."""
    return bytes([code, len(shape), *shape]) + np.ascontiguousarray(array).tobytes()


# ---- LEB128 and the byte examples of the reference -----------------------------------
@pytest.mark.parametrize("value, encoded", [(0, "00"), (10, "0A"), (127, "7F"), (128, "80 01"), (142, "8E 01"),
                                            (300, "AC 02"), (624485, "E5 8E 26")])
def test_uleb128_examples(value, encoded):
    assert encode_uleb128(value) == bytes.fromhex(encoded)
    assert decode_uleb128(bytes.fromhex(encoded) + b"\xff", 0) == (value, len(bytes.fromhex(encoded)))


def test_reference_byte_examples_float64():
    rng = np.random.default_rng(0)
    for shape, header in (((10, 10), "07 02 0A 0A"), ((142, 10), "07 02 8E 01 0A"), ((10,), "07 01 0A")):
        array = rng.normal(size=shape)
        data = tensor_to_bytes(torch.from_numpy(array))
        head = bytes.fromhex(header)
        assert data[: len(head)] == head
        assert data[len(head):] == array.astype("<f8").tobytes()  # row-major, little-endian
        assert len(data) == len(head) + array.size * 8  # 800, 11 360 and 80 data bytes
        assert torch.equal(tensor_from_bytes(data), torch.from_numpy(array))


def test_dtype_codes_and_layouts():
    cases = [(torch.float32, 6, "<f4"), (torch.float64, 7, "<f8"), (torch.int64, 4, "<i8"), (torch.uint8, 0, "u1"),
             (torch.int32, 3, "<i4"), (torch.int16, 2, "<i2"), (torch.int8, 1, "i1"), (torch.float16, 5, "<f2"),
             (torch.bool, 11, "?"), (torch.complex128, 10, "<c16")]
    for dtype, code, np_dtype in cases:
        tensor = (torch.arange(6) % 3).reshape(2, 3).to(dtype)
        data = tensor_to_bytes(tensor)
        assert data == bytes([code, 2, 2, 3]) + tensor.numpy().astype(np_dtype).tobytes()
        back = tensor_from_bytes(data)
        assert back.dtype == dtype and torch.equal(back, tensor)
    bf = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
    assert tensor_to_bytes(bf)[:3] == bytes([15, 1, 2]) and torch.equal(tensor_from_bytes(tensor_to_bytes(bf)), bf)
    scalar = tensor_to_bytes(torch.tensor(2.5, dtype=torch.float64))
    assert scalar == bytes([7, 0]) + np.float64(2.5).tobytes()
    non_contiguous = torch.arange(12, dtype=torch.float64).reshape(3, 4).T
    assert tensor_from_bytes(tensor_to_bytes(non_contiguous)).tolist() == non_contiguous.tolist()


def test_trailing_bytes_are_ignored_as_torchsharp_does():
    data = spec_bytes(7, (2,), np.array([1.0, 2.0])) + b"extra"
    assert tensor_from_bytes(data).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("data, message", [
    (b"", "truncated while reading the dtype code"),
    (b"\x07", "truncated while reading the number of dimensions"),
    (b"\x07\x02\x0a", "truncated while reading the size of dimension 1"),
    (b"\x07\x01\x0a" + bytes(79), "truncated: shape \\[10\\] of float64 needs 80 data bytes, the file has 79"),
    (b"\x08\x00", "unknown TorchSharp dtype code 8"),
    (b"\x07\x01" + b"\xff" * 11, "bad LEB128"),
    (b"\x07\x80\x80", "truncated"),
    (b"\x07\x02\x00" + encode_uleb128(2**64), "larger than a tensor can have"),
    (b"\x00\x03\x00" + encode_uleb128(2**40) + encode_uleb128(2**40), "larger than a tensor can have"),
    (b"\x07\x01\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "larger than a tensor can have"),
    (b"\x07\x01\xff\xff\xff\xff\x0f", "truncated: shape \\[4294967295\\] of float64 needs 34359738360"),
])
def test_bad_tensor_bytes_get_clear_errors(data, message):
    with pytest.raises(FileFormatError, match=message):
        tensor_from_bytes(data, source="X.bin")


# ---- parameter folders ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("offsets", [False, True])
def test_folder_round_trip(tmp_path, dtype, offsets):
    params = lds.random_stable_lds(3, 5, offsets=offsets, dtype=dtype, seed=2)
    folder = params.save_bonsai(tmp_path / "model")
    expected = set(CORE) | ({"StateOffset.bin", "ObservationOffset.bin"} if offsets else set())
    assert {p.name for p in folder.iterdir()} == expected
    A = (folder / "TransitionMatrix.bin").read_bytes()
    assert A == bytes([6 if dtype == torch.float32 else 7, 2, 3, 3]) + params.A.numpy().tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing defaulted
        back = lds.KalmanParams.load_bonsai(folder)
    assert back == params and back.dtype == dtype


def test_flagship_sized_file_matches_reference_bytes(tmp_path):
    params = lds.random_stable_lds(10, 142, seed=0)
    folder = params.save_bonsai(tmp_path)
    C = (folder / "MeasurementFunction.bin").read_bytes()
    assert C[:5] == bytes.fromhex("07 02 8E 01 0A") and len(C) == 5 + 11360
    assert (folder / "TransitionMatrix.bin").read_bytes()[:4] == bytes.fromhex("07 02 0A 0A")
    assert (folder / "InitialMean.bin").read_bytes()[:3] == bytes.fromhex("07 01 0A")
    assert len((folder / "InitialMean.bin").read_bytes()) == 83


def test_reading_hand_written_files_and_defaults(tmp_path):
    A = np.array([[0.9, 0.1], [0.0, 0.8]])
    C = np.arange(6.0).reshape(3, 2)
    (tmp_path / "TransitionMatrix.bin").write_bytes(spec_bytes(7, (2, 2), A))
    (tmp_path / "MeasurementFunction.bin").write_bytes(spec_bytes(7, (3, 2), C))
    (tmp_path / "MeasurementNoiseCovariance.bin").write_bytes(spec_bytes(7, (1,), np.array([0.25])))
    with pytest.warns(DefaultsUsedWarning) as record:
        params = lds.KalmanParams.load_bonsai(tmp_path)
    message = str(record[0].message)
    for name in ("ProcessNoiseCovariance.bin", "InitialMean.bin", "InitialCovariance.bin"):
        assert name in message
    assert "TransitionMatrix.bin" not in message and "StateOffset" not in message
    np.testing.assert_array_equal(params.A.numpy(), A)
    np.testing.assert_array_equal(params.C.numpy(), C)
    np.testing.assert_array_equal(params.R.numpy(), 0.25 * np.eye(3))  # one element means s * I
    np.testing.assert_array_equal(params.Q.numpy(), np.eye(2))
    np.testing.assert_array_equal(params.m0.numpy(), np.zeros(2))
    np.testing.assert_array_equal(params.V0.numpy(), np.eye(2))
    assert params.state_offset is None and params.observation_offset is None


def test_only_C_gives_rectangular_identity_defaults(tmp_path):
    (tmp_path / "MeasurementNoiseCovariance.bin").write_bytes(spec_bytes(6, (4, 4), np.eye(4, dtype="<f4")))
    (tmp_path / "InitialMean.bin").write_bytes(spec_bytes(6, (2,), np.zeros(2, dtype="<f4")))
    with pytest.warns(DefaultsUsedWarning, match="MeasurementFunction.bin"):
        params = lds.KalmanParams.load_bonsai(tmp_path, dtype=torch.float64)
    assert params.dtype == torch.float64 and torch.equal(params.C, torch.eye(4, 2, dtype=torch.float64))
    with pytest.warns(DefaultsUsedWarning):
        assert lds.KalmanParams.load_bonsai(tmp_path).dtype == torch.float32  # the files' dtype


def test_dtype_names_are_accepted_like_torch_dtypes(tmp_path):
    params = lds.random_stable_lds(2, 3, seed=0)
    params.save_bonsai(tmp_path)
    for name in ("float32", "torch.float32"):
        back = lds.KalmanParams.load_bonsai(tmp_path, dtype=name)
        assert back.dtype == torch.float32 and back == params.to(dtype=torch.float32)
    assert lds.bonsai.load_bonsai(tmp_path, dtype="float64", device="cpu") == params
    assert lds.KalmanParams(transition_matrix=params.A, num_observations=3, dtype="float32").dtype == torch.float32
    assert params.to(dtype="float32") == params.to(dtype=torch.float32)
    for bad in ("zeros", "banana", 32):  # torch.zeros is a function, not a dtype
        with pytest.raises(ValidationError, match=f"unknown dtype {bad!r}"):
            lds.KalmanParams.load_bonsai(tmp_path, dtype=bad)
        with pytest.raises(ValidationError, match=f"unknown dtype {bad!r}"):
            params.to(dtype=bad)


def test_overwrite_semantics_and_stale_offsets(tmp_path):
    with_offsets = lds.random_stable_lds(3, 5, offsets=True, seed=1)
    without = lds.random_stable_lds(3, 5, offsets=False, seed=2)
    with_offsets.save_bonsai(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(OverwriteError, match="overwrite=True"):
        without.save_bonsai(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    without.save_bonsai(tmp_path, overwrite=True)
    assert {p.name for p in tmp_path.iterdir()} == set(CORE)  # the stale offsets are gone
    assert lds.KalmanParams.load_bonsai(tmp_path) == without


def test_suffixes_make_subfolders(tmp_path):
    params = lds.random_stable_lds(2, 3, seed=0)
    dated = params.save_bonsai(tmp_path, suffix="datetime")
    assert dated.parent == tmp_path and re.fullmatch(r"\d{14}", dated.name)
    guid = params.save_bonsai(tmp_path, suffix="guid")
    assert str(uuid.UUID(guid.name)) == guid.name
    assert params.save_bonsai(tmp_path, suffix="guid") != guid
    with pytest.raises(ValidationError, match="suffix"):
        params.save_bonsai(tmp_path, suffix="time")


def test_one_offset_is_written_with_a_zero_partner(tmp_path):
    A = lds.random_stable_lds(2, 3, seed=0)
    params = lds.KalmanParams(transition_matrix=A.A, measurement_function=A.C, state_offset=[0.5, -0.5])
    params.save_bonsai(tmp_path)
    assert tensor_from_bytes((tmp_path / "ObservationOffset.bin").read_bytes()).tolist() == [0.0, 0.0, 0.0]
    assert read_tensor(tmp_path / "StateOffset.bin").tolist() == [0.5, -0.5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multi_session_saves_one_session_at_a_time(tmp_path, dtype):
    params = lds.random_stable_lds(3, [4, 6], seed=3, offsets=True, dtype=dtype)
    with pytest.raises(ValidationError, match=r"\['session_0', 'session_1'\].*pass session="):
        params.save_bonsai(tmp_path / "x")
    assert not (tmp_path / "x").exists()
    for name in params.dataset_names:
        params.save_bonsai(tmp_path / name, session=name)
    for name in params.dataset_names:
        back = lds.KalmanParams.load_bonsai(tmp_path / name)
        assert back == params.session(name) and back.dtype == dtype
    assert back.num_observations == 6


def test_missing_and_bad_folders(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        lds.KalmanParams.load_bonsai(tmp_path / "nope")
    with pytest.raises(FileFormatError, match="none of the Bonsai parameter files"):
        lds.KalmanParams.load_bonsai(tmp_path)
    (tmp_path / "TransitionMatrix.bin").write_bytes(spec_bytes(7, (2, 2), np.eye(2))[:-3])
    with pytest.raises(FileFormatError, match="TransitionMatrix.bin is truncated"):
        lds.KalmanParams.load_bonsai(tmp_path)
    (tmp_path / "TransitionMatrix.bin").write_bytes(spec_bytes(7, (2, 2), np.eye(2)))
    with pytest.warns(DefaultsUsedWarning), pytest.raises(FileFormatError, match="needs num_observations"):
        lds.KalmanParams.load_bonsai(tmp_path)  # N cannot be inferred without C, R or d
    (tmp_path / "MeasurementFunction.bin").write_bytes(spec_bytes(7, (3, 2), np.ones((3, 2))))
    (tmp_path / "InitialCovariance.bin").write_bytes(spec_bytes(7, (2, 2), -np.eye(2)))
    with pytest.warns(DefaultsUsedWarning), pytest.raises(FileFormatError, match="not positive definite"):
        lds.KalmanParams.load_bonsai(tmp_path)


def test_saving_into_a_file_is_a_clear_error(tmp_path):
    params = lds.random_stable_lds(2, 3, seed=0)
    (tmp_path / "afile").write_text("keep")
    for target in (tmp_path / "afile", tmp_path / "afile" / "below"):
        with pytest.raises(ValidationError, match="afile.*is a file"):
            params.save_bonsai(target)
    assert (tmp_path / "afile").read_text() == "keep"
    params.save_bonsai(tmp_path / "folder")
    with pytest.raises(OverwriteError, match=r"folder already holds Bonsai parameter files \(TransitionMatrix.bin"):
        params.save_bonsai(tmp_path / "folder")


def test_defaults_warning_points_at_the_caller(tmp_path):
    (tmp_path / "TransitionMatrix.bin").write_bytes(spec_bytes(7, (2, 2), np.eye(2)))
    (tmp_path / "MeasurementFunction.bin").write_bytes(spec_bytes(7, (3, 2), np.ones((3, 2))))
    for load in (lds.KalmanParams.load_bonsai, lds.bonsai.load_bonsai):
        with pytest.warns(DefaultsUsedWarning) as record:
            load(tmp_path)
        assert record[0].filename == __file__


def test_file_names_follow_bonsai():
    assert list(FILE_NAMES.values()) == CORE + ["StateOffset.bin", "ObservationOffset.bin"]
