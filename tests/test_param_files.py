"""Native HDF5 parameter files, .npz/.mat export, partial loading and format migration."""

import hashlib
import json
import struct
import sys
from datetime import datetime

import h5py
import numpy as np
import pytest
import scipy.io
import torch

import lds
from lds.containers import DatasetList, FieldSpec, ParamsContainer
from lds.errors import (
    ChecksumError,
    FileFormatError,
    MissingFileError,
    OverwriteError,
    ShapeError,
    UnknownParameterError,
    ValidationError,
)
from lds.native import is_native_file, read_info
from native_fixtures import MAGIC, array_digest, assert_fixed_length_only, downgrade_to_format_2, reseal


class Readout(ParamsContainer):
    """A NumPy-based container with a per-dataset field, like ModelTrainedParams."""

    FIELDS = (
        FieldSpec("W", "Weights", "a matrix", ("n", "m")),
        FieldSpec("b", "Weights", "an optional bias", ("m",), optional=True),
        FieldSpec("readout", "Per session", "one per session", ("m", "N"), per_dataset=True),
    )

    def __init__(self, W=None, b=None, readout=None, dataset_names=None):
        self.W, self.b = W, b
        self.readout = readout if isinstance(readout, DatasetList) else (
            DatasetList() if readout is None else DatasetList([readout[n] for n in dataset_names], dataset_names))
        self.dataset_names = dataset_names

    @property
    def dims(self):
        return {"n": int(self.W.shape[0]), "m": int(self.W.shape[1]), "N": [int(r.shape[1]) for r in self.readout]}


def make_readout(dtype=np.float32):
    rng = np.random.default_rng(1)
    names = ["dsA.h5", "dsB.h5", "dsC.h5"]
    readout = DatasetList([rng.normal(size=(2, n)).astype(dtype) for n in (4, 6, 5)], names)
    return Readout(W=rng.normal(size=(3, 2)).astype(dtype), readout=readout, dataset_names=names)


def kalman(multi=False, dtype=torch.float64, offsets=True, seed=0):
    return lds.random_stable_lds(3, [4, 6] if multi else 5, offsets=offsets, seed=seed, dtype=dtype)


# ---- native round trips --------------------------------------------------------------
@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kalman_round_trip_is_exact(tmp_path, multi, dtype):
    params = kalman(multi, dtype)
    params.save(tmp_path / "p.h5", metadata={"description": "test fit", "log_likelihood": -12.5})
    back = lds.KalmanParams.load(tmp_path / "p.h5")
    assert back == params and back.dtype == dtype and back.dataset_names == params.dataset_names
    assert lds.load_params(tmp_path / "p.h5") == params  # class found from the file


def test_file_layout_is_plain_hdf5_with_header(tmp_path):
    params = kalman(multi=True)
    params.save(tmp_path / "p.h5", metadata={"description": "layout"})
    data = (tmp_path / "p.h5").read_bytes()
    magic, version, length, digest = struct.unpack_from("<16sIQ32s", data)
    assert magic == MAGIC and version == 3 and length == len(data) - 512
    assert hashlib.sha256(data[512:]).digest() == digest
    assert_fixed_length_only(tmp_path / "p.h5")  # strings stored inline: no global heap
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert f.attrs["format"] == b"lfads-tools-params" and f.attrs["format_version"] == 3
        config = json.loads(f.attrs["config"])
        assert config["class"] == "KalmanParams" and config["module"] == "lds.params"
        assert config["dtype"] == "float64" and config["dims"] == {"K": 3, "N": [4, 6]}
        assert config["dataset_names"] == ["session_0", "session_1"]
        np.testing.assert_array_equal(f["transition_matrix"][()], params.A.numpy())
        for dataset in (f["transition_matrix"], f["measurement_function"]["session_0"]):
            plist = dataset.id.get_create_plist()  # what the reader accepts: contiguous, unfiltered
            assert plist.get_layout() == h5py.h5d.CONTIGUOUS and plist.get_nfilters() == 0
        C1 = f["measurement_function"]["session_1"]
        np.testing.assert_array_equal(C1[()], params.C[1].numpy())
        # the checksum is SHA-256 of "<dtype>;<shape>;" followed by the little-endian bytes
        raw = params.C[1].numpy().astype("<f8").tobytes()
        assert C1.attrs["sha256"].decode() == hashlib.sha256(b"<f8;6,3;" + raw).hexdigest()
        meta = json.loads(f.attrs["metadata"])
    assert meta["user"] == {"description": "layout"} and meta["library_version"] == lds.__version__
    assert datetime.fromisoformat(meta["created"]).tzinfo is not None


def test_info_metadata_and_user_dict(tmp_path):
    kalman().save(tmp_path / "p.h5", metadata={"metrics": {"ll": np.float64(-3.25)}, "tags": ("a", "b")})
    info = read_info(tmp_path / "p.h5")
    assert info.class_name == "KalmanParams" and info.format_version == 3 and info.dims == {"K": 3, "N": 5}
    assert info.metadata["user"] == {"metrics": {"ll": -3.25}, "tags": ["a", "b"]}
    assert "transition_matrix" in info.fields and "KalmanParams" in repr(info)
    with pytest.raises(ValidationError, match="JSON"):
        kalman().save(tmp_path / "q.h5", metadata={"bad": object()})
    with pytest.raises(ValidationError, match="metadata has the key 1 \\(int\\); keys must be strings"):
        kalman().save(tmp_path / "q.h5", metadata={1: "a", "b": 2})  # JSON would merge 1 and "1"
    with pytest.raises(ValidationError, match=r"metadata\['runs'\]\[0\] has the key 2"):
        kalman().save(tmp_path / "q.h5", metadata={"runs": [{2: "x"}]})
    with pytest.raises(ValidationError, match="metadata must be a dict, got list"):
        kalman().save(tmp_path / "q.h5", metadata=["a"])
    looped = {"a": []}
    looped["a"].append(looped)
    with pytest.raises(ValidationError, match="^metadata is nested more than 100 levels deep .or contains itself.$"):
        kalman().save(tmp_path / "q.h5", metadata=looped)
    assert not (tmp_path / "q.h5").exists()


def test_numpy_container_round_trip_and_session_order(tmp_path):
    obj = make_readout()
    obj.save(tmp_path / "r.h5")
    back = Readout.load(tmp_path / "r.h5")
    assert back == obj and back.readout.names == ["dsA.h5", "dsB.h5", "dsC.h5"]
    assert back.b is None and back.W.dtype == np.float32
    assert ParamsContainer.load(tmp_path / "r.h5") == obj  # registered class, found by name
    with pytest.raises(ValidationError, match="no device"):
        Readout.load(tmp_path / "r.h5", device="cpu")
    assert Readout.load(tmp_path / "r.h5", dtype="float64").W.dtype == np.float64


def test_dtype_and_device_options(tmp_path):
    kalman(dtype=torch.float32).save(tmp_path / "p.h5")
    assert lds.KalmanParams.load(tmp_path / "p.h5", dtype=torch.float64).dtype == torch.float64
    loaded = lds.KalmanParams.load(tmp_path / "p.h5", dtype="float64", device="cpu")
    assert loaded.dtype == torch.float64 and loaded.device == torch.device("cpu")
    if torch.cuda.is_available():
        assert lds.KalmanParams.load(tmp_path / "p.h5", device="cuda").A.is_cuda
    make_readout().save(tmp_path / "r.h5")
    for bad in ("zeros", "banana"):
        with pytest.raises(ValidationError, match=f"unknown dtype {bad!r}"):
            lds.KalmanParams.load(tmp_path / "p.h5", dtype=bad)
        with pytest.raises(ValidationError, match=f"unknown dtype {bad!r}"):
            Readout.load(tmp_path / "r.h5", dtype=bad)


def test_never_overwrites_unless_asked(tmp_path):
    kalman(seed=0).save(tmp_path / "p.h5")
    before = (tmp_path / "p.h5").read_bytes()
    with pytest.raises(OverwriteError, match="overwrite=True"):
        kalman(seed=1).save(tmp_path / "p.h5")
    assert (tmp_path / "p.h5").read_bytes() == before
    kalman(seed=1).save(tmp_path / "p.h5", overwrite=True)
    assert lds.KalmanParams.load(tmp_path / "p.h5") == kalman(seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.h5"]  # no temporary files left


def test_wrong_class_and_unknown_modules_are_refused(tmp_path):
    make_readout().save(tmp_path / "r.h5")
    with pytest.raises(FileFormatError, match="holds a Readout, not a KalmanParams"):
        lds.KalmanParams.load(tmp_path / "r.h5")
    for module, message in (("evil_module_xyz", "only classes of lds and lfads_tools"),
                            ("lds.no_such_module", "cannot import module")):
        path = tmp_path / f"{module}.h5"
        make_readout().save(path)
        with h5py.File(path, "r+") as f:
            config = json.loads(f.attrs["config"])
            config.update(module=module, **{"class": "Thing"})
            f.attrs["config"] = np.bytes_(json.dumps(config))  # fixed-length, as the writer stores strings
        reseal(path)
        with pytest.raises(FileFormatError, match=message):
            lds.load_params(path)
    assert "evil_module_xyz" not in sys.modules


# ---- corrupt files -------------------------------------------------------------------
def test_corrupt_files_get_clear_errors(tmp_path):
    path = tmp_path / "p.h5"
    kalman().save(path)
    data = path.read_bytes()
    cases = {
        "truncated.h5": (data[:-100], FileFormatError, "truncated"),
        "short.h5": (data[:100], FileFormatError, "truncated"),
        "magic.h5": (b"GARBAGE" + data[7:], FileFormatError, "wrong magic"),
        "flipped.h5": (data[:2000] + bytes([data[2000] ^ 0xFF]) + data[2001:], ChecksumError, "SHA-256"),
        "empty.h5": (b"", FileFormatError, "wrong magic"),
    }
    for name, (content, error, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(error, match=message) as info:
            lds.KalmanParams.load(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(MissingFileError, match="does not exist"):
        lds.KalmanParams.load(tmp_path / "nope.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(FileFormatError, match="other.h5 is an HDF5 file but not an lfads-tools parameter file"):
        lds.KalmanParams.load(tmp_path / "other.h5")
    (tmp_path / "fake.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    with pytest.raises(FileFormatError, match="fake.h5: cannot read the HDF5 content"):
        lds.KalmanParams.load(tmp_path / "fake.h5")


def write_raw_dataset(path, name, values, **options):
    """Replace a field of a saved file by a dataset made with ``options`` (checksum right when ``values``
    are given; a never-written array gets a dummy one, as its layout is refused first), header resealed."""
    with h5py.File(path, "r+") as f:
        del f[name]
        if values is None:
            dataset = f.create_dataset(name, **options)
            digest = "0" * 64
        else:
            dataset = f.create_dataset(name, data=values, **options)
            digest = array_digest(values)
        dataset.attrs["sha256"] = np.bytes_(digest)
    reseal(path)


def test_arrays_stored_unlike_the_writer_are_refused_before_reading(tmp_path):
    import tracemalloc

    path = tmp_path / "zip.h5"
    kalman().save(path)
    write_raw_dataset(path, "transition_matrix", np.zeros((3, 3)), chunks=(3, 3), compression="gzip")
    with pytest.raises(FileFormatError, match="zip.h5: array /transition_matrix is stored chunked, compact or"):
        lds.KalmanParams.load(path)
    # a never-written chunked 5000x5000 array: a 200 MB read from a small file
    path = tmp_path / "bomb.h5"
    kalman().save(path)
    write_raw_dataset(path, "transition_matrix", None, shape=(5000, 5000), dtype="f8", chunks=(100, 100))
    tracemalloc.start()
    try:
        with pytest.raises(FileFormatError, match="bomb.h5: array /transition_matrix is stored chunked"):
            lds.KalmanParams.load(path)
        assert tracemalloc.get_traced_memory()[1] < 20e6
    finally:
        tracemalloc.stop()
    # contiguous but never written: no storage behind the shape
    path = tmp_path / "empty.h5"
    kalman().save(path)
    write_raw_dataset(path, "transition_matrix", None, shape=(300, 300), dtype="f8")
    with pytest.raises(FileFormatError, match=r"empty.h5: array /transition_matrix is stored in 0 bytes, .*720000"):
        lds.KalmanParams.load(path)
    # storage said to lie beyond the end of the file: libhdf5 itself refuses to open the dataset
    path = tmp_path / "beyond.h5"
    kalman().save(path)
    with h5py.File(path, "r") as f:
        offset, nbytes = f["transition_matrix"].id.get_offset(), f["transition_matrix"].id.get_storage_size()
    data = path.read_bytes()
    layout = struct.pack("<QQ", offset - 512, nbytes)  # contiguous layout: address after the user block, size
    assert data.count(layout) == 1
    path.write_bytes(data.replace(layout, struct.pack("<QQ", len(data) - 512 - 8, nbytes)))
    reseal(path)
    with pytest.raises(FileFormatError, match="beyond.h5: cannot read the HDF5 content .*invalid dataset size"):
        lds.KalmanParams.load(path)


def test_per_array_checksum_names_the_array(tmp_path):
    path = tmp_path / "p.h5"
    kalman(multi=True).save(path)
    with h5py.File(path, "r+") as f:
        f["measurement_function"]["session_1"][0, 0] += 1.0
    with pytest.raises(ChecksumError, match="content does not match"):
        lds.KalmanParams.load(path)  # the whole-file hash notices first
    reseal(path)
    with pytest.raises(ChecksumError, match="measurement_function/session_1"):
        lds.KalmanParams.load(path)
    assert lds.KalmanParams.load(path, verify=False).C[1][0, 0] == kalman(multi=True).C[1][0, 0] + 1.0


def test_is_native_file(tmp_path):
    kalman().save(tmp_path / "p.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    (tmp_path / "text.txt").write_text("hello")
    assert is_native_file(tmp_path / "p.h5")
    assert not is_native_file(tmp_path / "other.h5")
    assert not is_native_file(tmp_path / "text.txt")
    assert not is_native_file(tmp_path / "missing.h5")


# ---- partial loading -----------------------------------------------------------------
def test_load_state_copies_a_subset_and_reports(tmp_path):
    source = kalman(seed=1)
    source.save(tmp_path / "src.h5")
    target = kalman(seed=2, offsets=False)
    before_C = target.C.clone()
    result = target.load_state(tmp_path / "src.h5", fields=["transition_matrix", "process_noise_covariance"])
    assert result.loaded == ["transition_matrix", "process_noise_covariance"]
    assert result.missing == [] and result.unexpected == []
    assert torch.equal(target.A, source.A) and torch.equal(target.Q, source.Q)
    assert torch.equal(target.C, before_C)  # untouched

    full = kalman(seed=3, offsets=False)
    full.save(tmp_path / "no_offsets.h5")
    report = kalman(seed=4).load_state(tmp_path / "no_offsets.h5")
    assert report.missing == ["state_offset", "observation_offset"]
    with pytest.raises(ValidationError, match=r"missing fields \['state_offset', 'observation_offset'\]"):
        kalman(seed=4).load_state(tmp_path / "no_offsets.h5", strict=True)


def test_load_state_reports_unexpected_fields_of_another_class(tmp_path):
    make_readout().save(tmp_path / "r.h5")
    target = Readout(W=np.zeros((3, 2), np.float32), readout=DatasetList(), dataset_names=None)
    result = target.load_state(tmp_path / "r.h5", fields=["W"])
    assert result.loaded == ["W"] and np.array_equal(target.W, make_readout().W)
    kalman().save(tmp_path / "k.h5")
    report = target.load_state(tmp_path / "k.h5", fields=["W"])
    assert report.missing == ["W"] and "transition_matrix" in report.unexpected


def test_load_state_shape_mismatch_names_field_and_changes_nothing(tmp_path):
    kalman().save(tmp_path / "k3.h5")
    target = lds.random_stable_lds(4, 5, seed=0, offsets=True)
    before = target.clone()
    expected = r"KalmanParams.transition_matrix: .*k3.h5 has shape \(3, 3\).*expects \(4, 4\)"
    with pytest.raises(ShapeError, match=expected):
        target.load_state(tmp_path / "k3.h5")
    assert target == before
    kalman(multi=True).save(tmp_path / "multi.h5")
    with pytest.raises(ShapeError, match="measurement_function.*one array per session"):
        kalman().load_state(tmp_path / "multi.h5", fields=["measurement_function"])
    with pytest.raises(UnknownParameterError, match="no field 'nope'"):
        kalman().load_state(tmp_path / "k3.h5", fields=["nope"])


def test_load_state_from_an_object_and_between_sessions(tmp_path):
    source, target = kalman(multi=True, seed=5), kalman(multi=True, seed=6)
    result = target.load_state(source, fields=["measurement_function", "initial_mean"])
    assert result.loaded == ["measurement_function", "initial_mean"]
    assert torch.equal(target.C[1], source.C[1]) and not torch.equal(target.A, source.A)


def test_load_with_fields_builds_from_a_subset(tmp_path):
    params = kalman(dtype=torch.float32)
    params.save(tmp_path / "p.h5")
    part = lds.KalmanParams.load(tmp_path / "p.h5", fields=["measurement_function", "initial_mean"])
    assert torch.equal(part.C, params.C) and torch.equal(part.m0, params.m0)
    assert torch.equal(part.A, torch.eye(3)) and part.dtype == torch.float32  # default A, file dtype
    with pytest.raises(UnknownParameterError):
        lds.KalmanParams.load(tmp_path / "p.h5", fields=["A_typo"])


@pytest.mark.parametrize("multi", [False, True])
def test_only_the_dynamics_load_with_the_sizes_the_file_records(tmp_path, multi):
    params = kalman(multi=multi, offsets=False)
    params.save(tmp_path / "p.h5")
    dynamics = ["transition_matrix", "process_noise_covariance"]
    part = lds.KalmanParams.load(tmp_path / "p.h5", fields=dynamics)  # N is in the file's dims, not in A or Q
    assert part.dims == params.dims and part.dataset_names == params.dataset_names
    assert torch.equal(part.A, params.A) and torch.equal(part.Q, params.Q)
    assert torch.equal(part.C[-1] if multi else part.C, torch.eye(6 if multi else 5, 3, dtype=torch.float64))
    with pytest.raises(FileFormatError, match=r"p.h5 has no field\(s\) \['state_offset'\]"):
        lds.KalmanParams.load(tmp_path / "p.h5", fields=dynamics + ["state_offset"])
    target = kalman(multi=multi, seed=9)
    report = target.load_state(tmp_path / "p.h5", fields=dynamics + ["state_offset"])
    assert report.loaded == dynamics and report.missing == ["state_offset"] and report.unexpected == []
    assert torch.equal(target.A, params.A) and not torch.equal(target.C[0], params.C[0])


def test_unexpected_field_in_file_is_refused_unless_selected(tmp_path):
    path = tmp_path / "p.h5"
    kalman().save(path)
    with h5py.File(path, "r+") as f:
        extra = np.ones(2)
        f["new_field"] = extra
        f["new_field"].attrs["sha256"] = np.bytes_(array_digest(extra))
    reseal(path)
    with pytest.raises(FileFormatError, match=r"\['new_field'\]"):
        lds.KalmanParams.load(path)
    names = [f for f in lds.KalmanParams.field_names()]
    assert lds.KalmanParams.load(path, fields=names) == kalman()


# ---- version migration ---------------------------------------------------------------
def write_format_1(path, params, description):
    """The older layout (format 1): plain HDF5, arrays under /params, sessions by index."""
    with h5py.File(path, "w") as f:
        f.attrs.update(format="lfads-tools-params", format_version=1, class_name="KalmanParams",
                       module="lds.params", dtype="float64", created="2025-01-02T03:04:05+00:00",
                       description=description)
        if params.is_multi_session:
            f.attrs["dataset_names"] = json.dumps(params.dataset_names)
        group = f.create_group("params")
        for name, value in params.items():
            if isinstance(value, DatasetList):
                if len(value):
                    sub = group.create_group(name)
                    for i, array in enumerate(value):
                        sub[str(i)] = array.numpy()
            elif value is not None:
                group[name] = value.numpy()


@pytest.mark.parametrize("multi", [False, True])
def test_format_1_files_are_migrated_on_load(tmp_path, multi):
    params = lds.random_stable_lds(3, [4, 6, 2, 5, 3, 4, 5, 6, 7, 2, 3] if multi else 5, seed=7, offsets=True)
    path = tmp_path / "old.h5"
    write_format_1(path, params, "fit from last year")
    assert is_native_file(path)
    loaded = lds.KalmanParams.load(path)
    assert loaded == params and loaded.dataset_names == params.dataset_names  # session 10 after 9, not after 1
    info = read_info(path)
    assert info.format_version == 1 and info.metadata["user"] == {"description": "fit from last year"}
    assert info.metadata["created"] == "2025-01-02T03:04:05+00:00"
    loaded.save(tmp_path / "new.h5")  # re-saved in the current format
    assert read_info(tmp_path / "new.h5").format_version == 3
    assert_fixed_length_only(tmp_path / "new.h5")


@pytest.mark.parametrize("multi", [False, True])
def test_format_2_files_are_migrated_on_load(tmp_path, multi):
    """Format 2 stored its strings variable-length: read only when the whole-file checksum verifies."""
    params = kalman(multi)
    path = tmp_path / "v2.h5"
    params.save(path, metadata={"description": "demo run"})
    downgrade_to_format_2(path)
    loaded = lds.KalmanParams.load(path)
    assert loaded == params and loaded.dataset_names == params.dataset_names
    info = read_info(path)
    assert info.format_version == 2 and info.metadata["user"] == {"description": "demo run"}
    loaded.save(tmp_path / "new.h5")
    assert read_info(tmp_path / "new.h5").format_version == 3
    assert_fixed_length_only(tmp_path / "new.h5")
    with pytest.raises(FileFormatError, match="v2.h5: attribute 'format' of / is a variable-length string"):
        lds.KalmanParams.load(path, verify=False)


def test_variable_length_strings_are_refused_in_format_3(tmp_path):
    path = tmp_path / "p.h5"
    kalman().save(path)
    with h5py.File(path, "r+") as f:
        f["initial_mean"].attrs["note"] = "variable-length"  # h5py stores str variable-length
    reseal(path)
    with pytest.raises(FileFormatError, match="p.h5: attribute 'note' of /initial_mean is a variable-length string"):
        lds.KalmanParams.load(path)


def test_only_format_1_files_lack_the_header(tmp_path):
    path = tmp_path / "p.h5"
    kalman().save(path)
    path.write_bytes(path.read_bytes()[512:])  # plain HDF5 now, still saying format 3
    with pytest.raises(FileFormatError, match="p.h5 has no lfads-tools header but says format version 3"):
        lds.KalmanParams.load(path)


def test_newer_format_versions_are_refused(tmp_path):
    path = tmp_path / "p.h5"
    kalman().save(path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 9
    data = bytearray(path.read_bytes())
    data[16:20] = struct.pack("<I", 9)
    path.write_bytes(bytes(data))
    reseal(path)
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 9
    with pytest.raises(FileFormatError, match="format version 9.*upgrade"):
        lds.KalmanParams.load(path)


# ---- .npz and .mat -------------------------------------------------------------------
@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_npz_and_mat_round_trips(tmp_path, multi, dtype):
    params = kalman(multi, dtype)
    params.to_npz(tmp_path / "p.npz")
    params.to_mat(tmp_path / "p.mat")
    for back in (lds.KalmanParams.from_npz(tmp_path / "p.npz"), lds.KalmanParams.from_mat(tmp_path / "p.mat"),
                 ParamsContainer.from_mat(tmp_path / "p.mat")):
        assert back == params and back.dtype == dtype


def test_npz_and_mat_open_without_this_library(tmp_path):
    params = kalman(multi=True, dtype=torch.float32)
    params.to_npz(tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz", allow_pickle=False) as data:
        np.testing.assert_array_equal(data["transition_matrix"], params.A.numpy())
        np.testing.assert_array_equal(data["measurement_function/session_1"], params.C[1].numpy())
        assert json.loads(str(data["__config__"]))["class"] == "KalmanParams"
    params.to_mat(tmp_path / "p.mat")
    mat = scipy.io.loadmat(tmp_path / "p.mat")
    np.testing.assert_array_equal(mat["transition_matrix"], params.A.numpy())
    assert mat["transition_matrix"].dtype == np.float32
    assert mat["initial_mean"].shape == (3, 1)  # column vector in MATLAB
    assert mat["measurement_function"].shape == (2, 1)  # a 2x1 cell
    np.testing.assert_array_equal(mat["measurement_function"][1, 0], params.C[1].numpy())
    assert [str(n[0]) for n in mat["dataset_names"][:, 0]] == ["session_0", "session_1"]


def test_numpy_container_npz_and_mat(tmp_path):
    obj = make_readout()
    obj.to_npz(tmp_path / "r.npz")
    obj.to_mat(tmp_path / "r.mat")
    assert Readout.from_npz(tmp_path / "r.npz") == obj
    assert Readout.from_mat(tmp_path / "r.mat") == obj
    with pytest.raises(OverwriteError):
        obj.to_mat(tmp_path / "r.mat")


def test_bad_npz_and_mat_files(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    (tmp_path / "bad.mat").write_bytes(b"not a mat file at all" * 10)
    np.savez(tmp_path / "plain.npz", x=np.zeros(2))
    with pytest.raises(FileFormatError, match="bad.npz"):
        lds.KalmanParams.from_npz(tmp_path / "bad.npz")
    with pytest.raises(FileFormatError, match="bad.mat"):
        lds.KalmanParams.from_mat(tmp_path / "bad.mat")
    with pytest.raises(FileFormatError, match="__config__"):
        lds.KalmanParams.from_npz(tmp_path / "plain.npz")
    params = kalman()
    params.to_npz(tmp_path / "p.npz")
    data = (tmp_path / "p.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="cut.npz"):
        lds.KalmanParams.from_npz(tmp_path / "cut.npz")


def model_trained_params(sessions, tmp_path):
    """Two sessions: every field (synthetic); one session: no read-in and no controller (fields missing)."""
    from lfads_tools import ModelTrainedParams, RunParams
    from lfads_tools.demo import synthetic_model_trained_params

    from lfads_fixtures import write_tf_model_params

    if sessions == 2:
        return synthetic_model_trained_params(["a.h5", "b.h5"], [5, 6], RunParams())
    write_tf_model_params(tmp_path / "model_params", {"only.h5": 4}, controller=False, read_in=False)
    return ModelTrainedParams.load(tmp_path / "model_params")


MODEL_FORMATS = {
    "native": ("m.h5", lambda m, path: m.save(path, metadata={"description": "lfads"}), "load"),
    "npz": ("m.npz", lambda m, path: m.to_npz(path), "from_npz"),
    "mat": ("m.mat", lambda m, path: m.to_mat(path), "from_mat"),
}


@pytest.mark.parametrize("fmt", list(MODEL_FORMATS))
@pytest.mark.parametrize("sessions", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_trained_params_round_trips(tmp_path, fmt, sessions, dtype):
    from lfads_tools import ModelTrainedParams

    model = model_trained_params(sessions, tmp_path).map_arrays(lambda a: np.asarray(a).astype(dtype))
    assert (model.x_to_infac_W.names == []) == (sessions == 1)  # the one-session model lacks parts
    name, write, read = MODEL_FORMATS[fmt]
    write(model, tmp_path / name)
    back = getattr(ModelTrainedParams, read)(tmp_path / name)
    assert back == model and back.dataset_names == model.dataset_names  # == compares dtypes too
    assert back.gen_to_factors_W.dtype == dtype and back.factors_to_logrates_W[0].dtype == dtype
    if fmt == "native":
        assert lds.load_params(tmp_path / name) == model  # class found from the file (lfads_tools module)
        assert read_info(tmp_path / name).module == "lfads_tools.model_trained_params"
