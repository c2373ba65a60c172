"""The shared container layer: DatasetList, grouped display, summary, dict round trips."""

import numpy as np
import pytest
import torch

from lds.containers import DatasetList, FieldSpec, ParamsContainer, evaluate_shape, format_value
from lds.errors import DatasetNameError, ShapeError, UnknownParameterError, ValidationError


class Toy(ParamsContainer):
    FIELDS = (
        FieldSpec("W", "Weights", "a matrix", ("n", "2*m")),
        FieldSpec("b", "Weights", "a bias", ("m",)),
        FieldSpec("readout", "Per session", "one per session", ("m", "N"), per_dataset=True),
    )

    def __init__(self, W=None, b=None, readout=None, dataset_names=None):
        self.W, self.b = W, b
        self.readout = readout if readout is not None else DatasetList()
        self.dataset_names = dataset_names

    @property
    def dims(self):
        return {"n": 3, "m": 2, "N": [int(r.shape[1]) for r in self.readout]}


def make_toy():
    rng = np.random.default_rng(0)
    readout = DatasetList([rng.normal(size=(2, 4)).astype(np.float32), rng.normal(size=(2, 5)).astype(np.float32)],
                          names=["dsA.h5", "dsB.h5"])
    return Toy(W=rng.normal(size=(3, 4)), b=None, readout=readout, dataset_names=["dsA.h5", "dsB.h5"])


def test_dataset_list_indexing_by_position_and_name():
    a, b = np.zeros((2, 3)), np.ones((2, 4))
    dl = DatasetList([a, b], names=["x", "y"])
    assert dl[0] is a and dl["x"] is a and dl[-1] is b and dl["y"] is b
    assert len(dl) == 2 and dl.names == ["x", "y"] and list(dl) == [a, b]
    assert dl.concatenated(axis=1).shape == (2, 7)
    assert dl[1:].names == ["y"]


def test_dataset_list_unknown_name_lists_available():
    dl = DatasetList([np.zeros(1)], names=["only.h5"])
    with pytest.raises(DatasetNameError, match=r"no dataset named 'nope'.*only\.h5"):
        dl["nope"]
    with pytest.raises(DatasetNameError, match="out of range"):
        dl[3]
    with pytest.raises(KeyError):  # also a KeyError for generic handlers
        dl["nope"]


def test_dataset_names_with_and_without_h5_are_interchangeable():
    a, b = np.zeros(1), np.ones(1)
    run_style = DatasetList([a, b], names=["dataset2", "dataset1"])
    assert run_style["dataset2.h5"] is a and run_style["dataset1.h5"] is b
    tf_style = DatasetList([a, b], names=["dataset2.h5", "dataset1.h5"])
    assert tf_style["dataset1"] is b
    both = DatasetList([a, b], names=["x", "x.h5"])  # an exact match wins
    assert both["x"] is a and both["x.h5"] is b
    with pytest.raises(DatasetNameError, match=r"'dataset3'.*dataset2\.h5"):
        tf_style["dataset3"]


def test_a_single_string_is_one_dataset_name():
    dl = DatasetList([np.zeros(1)], names="dsA")
    assert dl.names == ["dsA"] and dl["dsA"] is dl[0]
    with pytest.raises(ValidationError, match="1 arrays but 0 names"):
        DatasetList([np.zeros(1)], names=[])


def test_dataset_list_concatenates_tensors_with_torch():
    dl = DatasetList([torch.ones(2, 2), torch.zeros(2, 3)])
    out = dl.concatenated(axis=1)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)
    assert dl.names == ["session_0", "session_1"]


def test_empty_dataset_list_is_missing():
    dl = DatasetList()
    assert len(dl) == 0 and not dl and dl.concatenated() is None
    assert repr(dl) == "{}" and format_value(dl) == "{}"


def test_format_value_matlab_style():
    assert format_value(np.zeros((72, 128), np.float32)) == "[72x128 float32]"
    assert format_value(torch.zeros(3, dtype=torch.float64)) == "[3 float64]"
    assert format_value(None) == "[]"
    assert format_value(DatasetList([np.zeros(1)] * 2, names=["a", "b"])) == "{2x1 cell}"
    assert format_value(["dsA", "dsB", "dsC"]) == "{3x1 cell}"  # like MATLAB's nDatasets x 1 datasetNames
    assert format_value([5, 6]) == "[5 6]" and format_value([]) == "{}"


def test_grouped_repr_has_sections_in_order_and_right_aligned_names():
    text = repr(make_toy())
    lines = text.splitlines()
    assert lines[0].strip() == "Toy with properties:"
    assert text.index("Weights") < text.index("Per session")
    assert "      W: [3x4 float64]" in text
    assert "      b: []" in text
    assert "readout: {2x1 cell}" in text
    verbose = make_toy().format(verbose=True)
    assert "dsB.h5: [2x5 float32]" in verbose


def test_summary_table_has_stats_per_array():
    toy = make_toy()
    table = toy.summary()
    for header in ("section", "field", "shape", "dtype", "min", "max", "norm"):
        assert header in table
    rows = toy.summary_rows()
    assert [r["field"] for r in rows] == ["W", "b", "readout[dsA.h5]", "readout[dsB.h5]"]
    assert rows[0]["norm"] == pytest.approx(np.linalg.norm(toy.W))
    assert rows[0]["min"] == pytest.approx(toy.W.min()) and rows[0]["max"] == pytest.approx(toy.W.max())
    assert rows[1]["shape"] == "[]" and rows[1]["norm"] is None
    assert "<table>" in toy._repr_html_()


def test_to_dict_from_dict_round_trip_and_tolerant_equality():
    toy = make_toy()
    data = toy.to_dict()
    assert set(data["readout"]) == {"dsA.h5", "dsB.h5"}
    back = Toy.from_dict(data)
    assert back == toy and back.allclose(toy)
    shifted = toy.map_arrays(lambda a: a + 1e-9)
    assert shifted != toy and shifted.allclose(toy) and not shifted.allclose(toy, rtol=0, atol=1e-12)
    assert toy.differences(toy.map_arrays(lambda a: a * 2)) == ["W", "readout"]
    with pytest.raises(UnknownParameterError, match="unknown keys"):
        Toy.from_dict({"nonsense": 1})


def test_check_shapes_names_field_expected_and_actual():
    toy = make_toy()
    toy.check_shapes()
    toy.W = np.zeros((3, 5))
    with pytest.raises(ShapeError, match=r"Toy\.W should have shape \(3, 4\).*\(3, 5\)"):
        toy.check_shapes()


def test_evaluate_shape_arithmetic_only():
    assert evaluate_shape("c_ic_enc_dim + c_factors_dim", {"c_ic_enc_dim": 64, "c_factors_dim": 8}) == 72
    assert evaluate_shape("2*h - 1", {"h": 5}) == 9
    with pytest.raises(Exception):
        evaluate_shape("__import__('os')", {})


def test_check_shapes_computes_dims_once_and_expected_shape_picks_the_dataset():
    class Counting(Toy):
        calls = 0

        @property
        def dims(self):
            Counting.calls += 1
            return super().dims

    toy = make_toy()
    counting = Counting(W=toy.W, readout=toy.readout, dataset_names=toy.dataset_names)
    counting.check_shapes()
    assert Counting.calls == 1
    spec = Toy.field_spec("readout")
    assert toy.expected_shape(spec, 1) == (2, 5)
    assert toy.expected_shape(spec, 0) == (2, 4)
    assert toy.expected_shape(Toy.field_spec("W")) == (3, 4)
