"""ModelTrainedParams: TF model_params and lfads-torch readers, writers, GRU conversion, safety, bad input."""

import io
import os
import pickle
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from lds.containers import DatasetList
from lds.errors import (
    DatasetNameError,
    DefaultsUsedWarning,
    FileFormatError,
    LfadsToolsError,
    MissingFileError,
    OverwriteError,
    ShapeError,
    UnsafeCheckpointError,
    ValidationError,
)
import lfads_tools
from lfads_tools import ModelTrainedParams
from lfads_tools.lfads_torch import gru_tf_to_torch, gru_torch_to_tf, read_lfads_torch
from lfads_tools.safe_unpickle import SafeUnpickler, read_torch_file
from lfads_tools.tf_model_params import read_export_hdf5, read_tf_model_params

from lfads_fixtures import (
    SIZES,
    TF_VARIABLES,
    save_lightning_checkpoint,
    tf_gengru_step,
    tf_gru_step,
    torch_cell_step,
    torch_state_dict,
    write_hyperparameters,
    write_tf_model_params,
)
from native_fixtures import break_global_heap

DATASETS = {"dsA.h5": 5, "dsB.h5": 6}
SECTIONS = ["Basic info", "Read-in from spikes to input factors", "Initial condition encoder (forward)",
            "Initial condition encoder (reverse)", "Initial condition g0", "Controller encoder (forward)",
            "Controller encoder (reverse)", "Controller RNN", "Controller output co", "Generator RNN",
            "Generator output and readout", "Imputing rates of neurons across stitched datasets"]


def assert_fields_equal(mtp, values, names=None):
    """Every field equals the array the fixture wrote under its TF name; the others are missing."""
    for spec in ModelTrainedParams.FIELDS:
        got, want = getattr(mtp, spec.name), values.get(spec.name)
        if spec.per_dataset:
            assert isinstance(got, DatasetList)
            if want is None:
                assert len(got) == 0, spec.name
                continue
            for name, tf_name in zip(names or want, want):
                np.testing.assert_array_equal(got[name], want[tf_name], err_msg=spec.name)
        elif want is None:
            assert got is None, spec.name
        else:
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want, err_msg=spec.name)


@pytest.fixture
def full_model(tmp_path):
    path = tmp_path / "model_params"
    return path, write_tf_model_params(path, DATASETS)


# ---- TF model_params --------------------------------------------------------------------------
def test_tf_file_with_controller_adam_slots_and_zero_biases(full_model, capsys):
    path, values = full_model
    mtp = ModelTrainedParams.from_tf_model_params(path)
    assert mtp.dataset_names == ["dsA.h5", "dsB.h5"]
    assert_fields_equal(mtp, values)
    assert mtp.dims == {"c_factors_dim": 3, "c_in_factors_dim": 3, "c_gen_dim": 7, "c_ic_dim": 4, "c_ic_enc_dim": 5,
                        "c_ci_enc_dim": 4, "c_con_dim": 6, "c_co_dim": 2, "c_enc_input_dim": 3,
                        "c_con_input_dim": 2 * 4 + 3, "c_gen_input_dim": 2, "c_ext_input_dim": 0,
                        "num_channels": [5, 6], "has_controller": True}
    assert capsys.readouterr().out == ""  # quiet unless verbose


def test_derived_properties_and_indexing(full_model):
    path, values = full_model
    mtp = ModelTrainedParams.load(path)
    W = values["factors_to_logrates_W"]
    assert mtp.x_to_infac_W["dsB.h5"] is mtp.x_to_infac_W[1]
    assert mtp.num_datasets == 2 and mtp.num_channels_by_dataset == [5, 6] and mtp.num_channels_all_datasets == 11
    np.testing.assert_array_equal(mtp.dataset_idx_concatenated, [0] * 5 + [1] * 6)
    np.testing.assert_array_equal(mtp.factors_to_logrates_W_concatenated, np.hstack([W["dsA.h5"], W["dsB.h5"]]))
    b = values["factors_to_logrates_b"]
    np.testing.assert_array_equal(mtp.factors_to_logrates_b_concatenated, np.hstack([b["dsA.h5"], b["dsB.h5"]]))
    with pytest.raises(DatasetNameError, match="dsA.h5"):
        mtp.x_to_infac_W["dsC.h5"]


def test_display_is_matlab_like(full_model, tmp_path):
    mtp = ModelTrainedParams.load(full_model[0])
    text = repr(mtp)
    assert text.startswith("  ModelTrainedParams with properties:")
    titles = [line.strip() for line in text.splitlines() if line.startswith("   ") and ":" not in line]
    assert titles == SECTIONS
    assert "Controlller" not in text
    assert "ic_enc_fwd_gru_xh_to_gates_ru_W: [8x10 float32]" in text
    assert "x_to_infac_W: {2x1 cell}" in text and "num_channels_all_datasets: 11" in text
    table = mtp.summary()
    assert "factors_to_logrates_W[dsB.h5]" in table and "3x6" in table and "float32" in table
    single = write_tf_model_params(tmp_path / "single", {"only.h5": 9}, controller=False, read_in=False)
    text = repr(ModelTrainedParams.load(tmp_path / "single"))
    assert "x_to_infac_W: {}" in text and "con_gengru_x_to_ru_W: []" in text and single


def test_dataset_names_given_select_and_order_run_manager_style(full_model):
    path, values = full_model
    mtp = ModelTrainedParams.from_tf_model_params(path, dataset_names=["dsB", "dsA"])
    assert mtp.dataset_names == ["dsB", "dsA"]
    np.testing.assert_array_equal(mtp.x_to_infac_W["dsB"], values["x_to_infac_W"]["dsB.h5"])
    assert_fields_equal(mtp, {k: ({n: v[n] for n in ("dsB.h5", "dsA.h5")} if isinstance(v, dict) else v)
                              for k, v in values.items()}, names=["dsB", "dsA"])
    only = ModelTrainedParams.load(path, dataset_names=["dsB.h5"])
    assert only.dataset_names == ["dsB.h5"] and only.num_channels_by_dataset == [6]


def test_names_with_or_without_h5_and_one_name_as_a_string(full_model, tmp_path):
    path, values = full_model
    run_style = ModelTrainedParams.from_tf_model_params(path, dataset_names=["dsB", "dsA"])
    np.testing.assert_array_equal(run_style.x_to_infac_W["dsB.h5"], values["x_to_infac_W"]["dsB.h5"])
    tf_style = ModelTrainedParams.load(path)
    assert tf_style.factors_to_logrates_W["dsA"] is tf_style.factors_to_logrates_W[0]
    assert "dataset_names: {2x1 cell}" in repr(tf_style)  # nDatasets x 1, as MATLAB shows datasetNames
    assert ModelTrainedParams.from_tf_model_params(path, dataset_names="dsB").dataset_names == ["dsB"]
    assert tf_style.select_datasets("dsA").dataset_names == ["dsA.h5"]
    tf_style.export_hdf5(tmp_path / "export.h5")
    assert ModelTrainedParams.from_export_hdf5(tmp_path / "export.h5", "dsB.h5").dataset_names == ["dsB.h5"]
    torch.save(torch_state_dict([5]), tmp_path / "sd.pt")
    assert ModelTrainedParams.from_lfads_torch(tmp_path / "sd.pt", dataset_names="mine").dataset_names == ["mine"]


def test_unknown_dataset_names_list_the_available_ones(full_model):
    with pytest.raises(DatasetNameError) as info:
        ModelTrainedParams.from_tf_model_params(full_model[0], dataset_names=["dsA", "nope"])
    message = str(info.value)
    assert "nope" in message and "dsA.h5" in message and "dsB.h5" in message and str(full_model[0]) in message


def test_hyperparameters_file_gives_the_default_order(tmp_path):
    values = write_tf_model_params(tmp_path / "model_params", DATASETS)
    write_hyperparameters(tmp_path, ["dsA.h5", "dsB.h5"], step=0)
    write_hyperparameters(tmp_path, ["dsB.h5", "dsA.h5"], step=38740)  # the latest build wins
    mtp = ModelTrainedParams.load(tmp_path / "model_params")
    assert mtp.dataset_names == ["dsB.h5", "dsA.h5"]
    np.testing.assert_array_equal(mtp.factors_to_logrates_W[0], values["factors_to_logrates_W"]["dsB.h5"])


def test_single_dataset_without_read_in_and_no_controller(tmp_path):
    """Identity read-in (encoder input = neurons), co_dim 0 though the hyperparameters list controller sizes."""
    sizes = {**SIZES, "I": SIZES["G"]}  # ic_dim == gen_dim: TF writes no g0_2_gen_ic either
    values = write_tf_model_params(tmp_path / "model_params", {"sess.h5": 9}, sizes=sizes, controller=False,
                                   read_in=False, g0_map=False)
    write_hyperparameters(tmp_path, ["sess.h5"], co_dim=4, con_dim=128, ci_enc_dim=128)
    mtp = ModelTrainedParams.load(tmp_path / "model_params")
    assert_fields_equal(mtp, values)
    assert mtp.dims["c_in_factors_dim"] == 9 and mtp.dims["c_co_dim"] == 0 and mtp.dims["c_con_dim"] == 0
    assert mtp.dims["has_controller"] is False and not mtp.has_controller
    assert mtp.x_to_infac_W == DatasetList() and mtp.con_co is None and mtp.g0_to_gen_ic_W is None
    sd = mtp.to_lfads_torch_state_dict()  # identity g0 map and empty controller tensors, as lfads-torch keeps them
    np.testing.assert_array_equal(sd["decoder.ic_to_g0.weight"], np.eye(7))
    assert sd["decoder.con_h0"].shape == (1, 0) and sd["decoder.rnn.cell.gen_cell.weight_ih"].shape == (21, 0)


def test_single_dataset_with_identity_read_in_and_read_out_keeps_its_name(tmp_path):
    """No per-dataset keys at all (one dataset, no alignment matrix, F == D): one name, from the hps or the caller."""
    path = tmp_path / "model_params"
    values = write_tf_model_params(path, {"sess.h5": SIZES["F"]}, read_in=False, controller=False)
    with h5py.File(path, "a") as f:
        for key in [k for k in f if "_glm_" in k]:
            del f[key]
    assert ModelTrainedParams.load(path).dataset_names == []  # nothing names it
    write_hyperparameters(tmp_path, ["sess.h5"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mtp = ModelTrainedParams.load(path)
    assert mtp.dataset_names == ["sess.h5"] and mtp.num_datasets == 1 and len(mtp.factors_to_logrates_W) == 0
    np.testing.assert_array_equal(mtp.gen_to_factors_W, values["gen_to_factors_W"])
    assert ModelTrainedParams.from_tf_model_params(path, dataset_names="sess").dataset_names == ["sess"]
    with pytest.raises(DatasetNameError, match="single dataset"):
        ModelTrainedParams.from_tf_model_params(path, dataset_names=["a", "b"])


VARIANTS = [dict(causal=True), dict(feed_factors=False), dict(causal=True, feed_factors=False),
            dict(inject_ext_input_to_gen=False), dict(inject_ext_input_to_gen=True)]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={w}" for k, w in v.items()))
def test_controller_and_external_input_variants_are_read(tmp_path, variant):
    """Causal controller (no ci_enc_rev), no factors fed to the controller, external inputs to encoders or generator."""
    sizes = {**SIZES, "X": 2}
    values = write_tf_model_params(tmp_path / "model_params", DATASETS, sizes=sizes, **variant)
    mtp = ModelTrainedParams.load(tmp_path / "model_params")
    assert_fields_equal(mtp, values)
    causal, fed = variant.get("causal", False), variant.get("feed_factors", True)
    to_gen = variant.get("inject_ext_input_to_gen", True)
    dims = mtp.dims
    assert dims["c_con_input_dim"] == sizes["Eci"] * (1 if causal else 2) + (sizes["F"] if fed else 0)
    assert dims["c_enc_input_dim"] == sizes["F"] + (0 if to_gen else 2) and dims["c_in_factors_dim"] == sizes["F"]
    assert dims["c_gen_input_dim"] == sizes["U"] + (2 if to_gen else 0) and dims["c_ext_input_dim"] == 2


@pytest.mark.parametrize("variant", VARIANTS[:3] + [{}], ids=["causal", "no factors", "causal, no factors", "full"])
def test_controller_variants_step_the_same_in_lfads_torch(tmp_path, variant):
    """lfads-torch's controller always takes [ci_fwd, ci_bwd, factors]: what TF does not feed gets zero weights."""
    write_tf_model_params(tmp_path / "model_params", DATASETS, **variant)
    mtp = ModelTrainedParams.load(tmp_path / "model_params")
    sd = mtp.to_lfads_torch_state_dict()
    E, F, C = SIZES["Eci"], SIZES["F"], SIZES["C"]
    cell = [_t(sd[f"decoder.rnn.cell.con_cell.{k}"]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert cell[0].shape == (3 * C, 2 * E + F)
    rng = np.random.default_rng(5)
    forward, backward, factors, h = (_t(rng.normal(size=(4, n))) for n in (E, E, F, C))
    fed = [forward] + ([] if variant.get("causal") else [backward])
    fed += [factors] if variant.get("feed_factors", True) else []
    want = tf_gengru_step(torch.cat(fed, 1), h, *(_t(getattr(mtp, f"con_gengru_{n}")) for n in
                                                   ("x_to_ru_W", "h_to_ru_W", "h_to_ru_b", "x_to_c_W", "rh_to_c_W",
                                                    "rh_to_c_b")))
    got = torch_cell_step(torch.cat([forward, backward, factors], 1), h, *cell)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert sd["encoder.ci_enc_h0"].shape == (2, 1, E)
    assert sd["encoder.ci_enc.bwd_gru.cell.weight_hh"].shape == (3 * E, E)
    torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "sd.pt")
    assert ModelTrainedParams.load(tmp_path / "sd.pt").dims["c_con_input_dim"] == 2 * E + F


def test_models_lfads_torch_cannot_represent_are_refused(tmp_path):
    write_tf_model_params(tmp_path / "encoders", DATASETS, sizes={**SIZES, "X": 2}, inject_ext_input_to_gen=False)
    with pytest.raises(ValidationError, match="2 external inputs to its encoders"):
        ModelTrainedParams.load(tmp_path / "encoders").to_lfads_torch_state_dict()
    E, C = SIZES["Eci"], SIZES["C"]
    rates = {"LFADS/con/GenGRU/Gates/x_2_ru/W:0": np.ones((2 * E + 5, 2 * C), np.float32),  # 5 rates fed back
             "LFADS/con/GenGRU/Candidate/x_2_c/W:0": np.ones((2 * E + 5, C), np.float32)}
    write_tf_model_params(tmp_path / "rates", DATASETS, extra=rates)
    with pytest.raises(ValidationError, match="5 others, which are not the 3 factors"):
        ModelTrainedParams.load(tmp_path / "rates").to_lfads_torch_state_dict()


def test_fixed_prior_variances_and_no_zero_bias_variant(tmp_path):
    values = write_tf_model_params(tmp_path / "model_params", DATASETS, trainable_prior_variances=False,
                                   zero_biases=False)
    assert_fields_equal(ModelTrainedParams.load(tmp_path / "model_params"), values)


def test_verbose_lists_unused_keys_but_not_optimizer_state(tmp_path, capsys):
    extra = {"LFADS/gen/g0:0": np.zeros((1, 7), np.float32), "LFADS/mystery/W:0": np.ones((2, 2), np.float32)}
    write_tf_model_params(tmp_path / "model_params", DATASETS, extra=extra)
    ModelTrainedParams.load(tmp_path / "model_params", verbose=True)
    out = capsys.readouterr().out
    assert "LFADS_gen_g0:0" in out and "LFADS_mystery_W:0" in out and "2 other keys not used" in out
    assert "Adam" not in out and "beta1_power" not in out and "gen_2_fac_b" not in out


def test_tf_round_trip_writes_the_same_arrays(full_model, tmp_path):
    path, values = full_model
    mtp = ModelTrainedParams.load(path)
    mtp.save_tf_model_params(tmp_path / "again")
    with h5py.File(path, "r") as original, h5py.File(tmp_path / "again", "r") as written:
        kept = {k for k in original if "Adam" not in k and not k.endswith(("power:0", "step:0", "rate:0"))
                and not k.endswith(("x_2_ru_b:0", "x_2_c_b:0", "gen_2_fac_b:0"))}
        assert set(written) == kept
        for key in kept:
            np.testing.assert_array_equal(written[key][()], original[key][()])
            assert written[key].dtype == original[key].dtype
    assert ModelTrainedParams.load(tmp_path / "again") == mtp
    with pytest.raises(OverwriteError):
        mtp.save_tf_model_params(tmp_path / "again")
    mtp.save_tf_model_params(tmp_path / "again", overwrite=True)


def test_writer_uses_run_manager_key_names(tmp_path, full_model):
    """Names without .h5 are written as MATLAB's template ``LFADS_x_2_infac_%s.h5_W`` looks them up."""
    mtp = ModelTrainedParams.load(full_model[0], dataset_names=["dsA", "dsB"])
    mtp.save_tf_model_params(tmp_path / "mp")
    with h5py.File(tmp_path / "mp", "r") as f:
        assert "LFADS_x_2_infac_dsA.h5_W:0" in f and "LFADS_glm_fac_2_logrates_dsB.h5_b:0" in f
    assert ModelTrainedParams.load(tmp_path / "mp").dataset_names == ["dsA", "dsB"]  # kept in the file


def test_export_layout(full_model, tmp_path):
    mtp = ModelTrainedParams.load(full_model[0])
    mtp.export_hdf5(tmp_path / "modelTrainedParams.h5")
    with h5py.File(tmp_path / "modelTrainedParams.h5", "r") as f:
        assert [n.decode() for n in f["dataset_names"][()]] == ["dsA.h5", "dsB.h5"]
        np.testing.assert_array_equal(f["x_to_infac_W/dsB.h5"][()], mtp.x_to_infac_W[1])  # matrices as they are
        np.testing.assert_array_equal(f["ic_enc_fwd_t0"][()], mtp.ic_enc_fwd_t0.T)  # a 1xN vector reads (N, 1)
        assert f["num_datasets"][()].item() == 2 and f["num_channels_all_datasets"][()].item() == 11
        np.testing.assert_array_equal(f["dataset_idx_concatenated"][()].ravel(), [1] * 5 + [2] * 6)  # MATLAB's
        assert f["factors_to_logrates_W_concatenated"].shape == (3, 11)
    assert ModelTrainedParams.load(tmp_path / "modelTrainedParams.h5") == mtp
    selected = ModelTrainedParams.from_export_hdf5(tmp_path / "modelTrainedParams.h5", ["dsB.h5"])
    assert selected.dataset_names == ["dsB.h5"]


def test_native_file_round_trip_and_dispatch_by_content(full_model, tmp_path):
    mtp = ModelTrainedParams.load(full_model[0])
    mtp.save(tmp_path / "native.h5")
    assert ModelTrainedParams.load(tmp_path / "native.h5") == mtp
    assert ModelTrainedParams.load(tmp_path / "native.h5", dataset_names=["dsB.h5"]).dataset_names == ["dsB.h5"]
    shutil.copy(full_model[0], tmp_path / "looks_like.ckpt")
    assert ModelTrainedParams.load(tmp_path / "looks_like.ckpt") == mtp


# ---- GRU conversion -------------------------------------------------------------------------
def _t(a):
    return torch.as_tensor(np.asarray(a), dtype=torch.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_encoder_gru_tf_weights_give_the_same_step_in_lfads_torch(seed):
    rng = np.random.default_rng(seed)
    In, H = 6, 5
    W_ru, b_ru = rng.normal(size=(In + H, 2 * H)), rng.normal(size=(1, 2 * H))
    W_c, b_c = rng.normal(size=(In + H, H)), rng.normal(size=(1, H))
    W_ru, b_ru, W_c, b_c = (a.astype(np.float32) for a in (W_ru, b_ru, W_c, b_c))
    x, h = _t(rng.normal(size=(3, In))), _t(rng.normal(size=(3, H)))
    cell = gru_tf_to_torch(W_ru[:In], W_ru[In:], b_ru, W_c[:In], W_c[In:], b_c)
    assert cell["weight_ih"].shape == (3 * H, In) and cell["weight_hh"].shape == (3 * H, H)
    want = tf_gru_step(x, h, _t(W_ru), _t(b_ru), _t(W_c), _t(b_c))
    got = torch_cell_step(x, h, *(_t(cell[k]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    stock = torch.nn.GRUCell(In, H)  # stock torch computes r*(W_hn h + b_hn): not the LFADS cell
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(stock, name).copy_(_t(cell[name]))
    assert not torch.allclose(stock(x, h), want, atol=1e-3)


def test_generator_gengru_tf_weights_give_the_same_step_in_lfads_torch():
    rng = np.random.default_rng(3)
    In, H = 4, 7
    Wx_ru, Wh_ru, b_ru = (rng.normal(size=s).astype(np.float32) for s in ((In, 2 * H), (H, 2 * H), (1, 2 * H)))
    Wx_c, Wh_c, b_c = (rng.normal(size=s).astype(np.float32) for s in ((In, H), (H, H), (1, H)))
    x, h = _t(rng.normal(size=(2, In))), _t(rng.normal(size=(2, H)))
    cell = gru_tf_to_torch(Wx_ru, Wh_ru, b_ru, Wx_c, Wh_c, b_c)
    want = tf_gengru_step(x, h, *(_t(a) for a in (Wx_ru, Wh_ru, b_ru, Wx_c, Wh_c, b_c)))
    got = torch_cell_step(x, h, *(_t(cell[k]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    assert torch.allclose(got, want, atol=1e-6, rtol=0)


def test_checkpoint_cells_step_like_the_tf_cells_they_map_to(tmp_path):
    """lfads-torch weights (bias_hh non-zero) -> TF fields: every cell steps the same, to 1e-6 in float32."""
    sd = torch_state_dict([5, 6])
    save_lightning_checkpoint(tmp_path / "last.ckpt", sd)
    mtp = ModelTrainedParams.from_lfads_torch(tmp_path / "last.ckpt")
    rng = np.random.default_rng(7)
    for field, prefix in (("ic_enc_fwd", "encoder.ic_enc.fwd_gru"), ("ic_enc_rev", "encoder.ic_enc.bwd_gru"),
                          ("ci_enc_fwd", "encoder.ci_enc.fwd_gru"), ("ci_enc_rev", "encoder.ci_enc.bwd_gru")):
        gates = "gates_" if field.startswith("ic") else ""
        cell = [sd[f"{prefix}.cell.{k}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        x, h = _t(rng.normal(size=(4, cell[0].shape[1]))), _t(rng.normal(size=(4, cell[1].shape[1])))
        want = torch_cell_step(x, h, *cell)
        got = tf_gru_step(x, h, *(_t(getattr(mtp, f"{field}_gru_{n}")) for n in
                                  (f"xh_to_{gates}ru_W", f"xh_to_{gates}ru_b", "xrh_to_c_W", "xrh_to_c_b")))
        assert torch.allclose(got, want, atol=1e-6, rtol=0), field
    for field, prefix in (("gen_gengru", "gen_cell"), ("con_gengru", "con_cell")):
        cell = [sd[f"decoder.rnn.cell.{prefix}.{k}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        x, h = _t(rng.normal(size=(4, cell[0].shape[1]))), _t(rng.normal(size=(4, cell[1].shape[1])))
        got = tf_gengru_step(x, h, *(_t(getattr(mtp, f"{field}_{n}")) for n in
                                     ("x_to_ru_W", "h_to_ru_W", "h_to_ru_b", "x_to_c_W", "rh_to_c_W", "rh_to_c_b")))
        assert torch.allclose(got, torch_cell_step(x, h, *cell), atol=1e-6, rtol=0), field


# ---- lfads-torch checkpoints -------------------------------------------------------------------
def test_lightning_checkpoint_maps_every_key(tmp_path, capsys):
    sd = torch_state_dict([5, 6])
    save_lightning_checkpoint(tmp_path / "last.ckpt", sd)
    mtp = ModelTrainedParams.from_lfads_torch(tmp_path / "last.ckpt", verbose=True)
    out = capsys.readouterr().out
    assert "0 state_dict keys not used" in out and "lfads_torch.modules.priors.AutoregressiveMultivariateNormal" in out
    n = lambda key: sd[key].numpy()  # noqa: E731
    assert mtp.dataset_names == ["session_0", "session_1"]
    np.testing.assert_array_equal(mtp.x_to_infac_W["session_1"], n("readin.1.weight").T)
    np.testing.assert_array_equal(mtp.x_to_infac_b[0], n("readin.0.bias")[None])
    np.testing.assert_array_equal(mtp.factors_to_logrates_W[1], n("readout.1.weight").T)
    np.testing.assert_array_equal(mtp.ic_enc_rev_t0, n("encoder.ic_enc_h0")[1])
    np.testing.assert_array_equal(mtp.ci_enc_fwd_t0, n("encoder.ci_enc_h0")[0])
    W, b = n("encoder.ic_linear.weight"), n("encoder.ic_linear.bias")
    np.testing.assert_array_equal(mtp.ic_enc_to_posterior_g0_mean_W, W[:4].T)
    np.testing.assert_array_equal(mtp.ic_enc_to_posterior_g0_logvar_b, b[None, 4:])
    W = n("decoder.rnn.cell.co_linear.weight")
    np.testing.assert_array_equal(mtp.con_to_posterior_co_logvar_W, W[2:].T)
    np.testing.assert_array_equal(mtp.gen_to_factors_W, n("decoder.rnn.cell.fac_linear.weight").T)
    np.testing.assert_array_equal(mtp.g0_to_gen_ic_W, n("decoder.ic_to_g0.weight").T)
    np.testing.assert_array_equal(mtp.prior_ar1_logatau, n("co_prior.logtaus")[None])
    np.testing.assert_array_equal(mtp.prior_ar1_logevars, n("co_prior.lognvars")[None])
    np.testing.assert_array_equal(mtp.prior_g0_logvar, n("ic_prior.logvar")[None])
    np.testing.assert_array_equal(mtp.con_co, n("decoder.con_h0"))
    mtp.check_shapes()


def test_model_without_controller_has_missing_controller_fields(tmp_path):
    torch.save(torch_state_dict([8], controller=False, read_in=False), tmp_path / "state_dict.pt")  # bare state_dict
    mtp = ModelTrainedParams.load(tmp_path / "state_dict.pt")
    controller = [s.name for s in ModelTrainedParams.FIELDS if s.section.startswith("Controller")]
    assert len(controller) == 23 and all(getattr(mtp, name) is None for name in controller)
    assert mtp.gen_gengru_x_to_ru_W is None and mtp.gen_gengru_x_to_c_W is None
    assert len(mtp.x_to_infac_W) == 0 and mtp.dims["c_in_factors_dim"] == 8 and mtp.dims["c_co_dim"] == 0


def test_gaussian_read_out_without_read_in_is_not_taken_for_poisson(tmp_path):
    """One session without read-in: 2 read-out rows per encoded neuron is Gaussian; extra rows (held-out) are not."""
    sd = torch_state_dict([8], read_in=False)
    sd["readout.0.weight"], sd["readout.0.bias"] = torch.ones(16, 3), torch.ones(16)  # rows [means; logvars]
    torch.save(sd, tmp_path / "gaussian.pt")
    with pytest.warns(DefaultsUsedWarning, match="not a Poisson model"):
        mtp = ModelTrainedParams.load(tmp_path / "gaussian.pt")
    assert len(mtp.factors_to_logrates_W) == 0 and mtp.dims["c_in_factors_dim"] == 8
    sd["readout.0.weight"], sd["readout.0.bias"] = torch.ones(11, 3), torch.ones(11)  # 8 encoded + 3 held out
    torch.save(sd, tmp_path / "held_out.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ModelTrainedParams.load(tmp_path / "held_out.pt").num_channels_by_dataset == [11]


@pytest.mark.parametrize("key, shape", [
    ("encoder.ic_enc.fwd_gru.cell.weight_ih", (3 * 5 + 2, 3)),
    ("decoder.rnn.cell.gen_cell.weight_hh", (3 * 7 + 1, 7)),
    ("decoder.rnn.cell.con_cell.weight_hh", (18,)),
    ("decoder.rnn.cell.gen_cell.bias_ih", (3 * 7 + 4,)),
    ("encoder.ic_enc.bwd_gru.cell.bias_hh", (3 * 5 + 4,)),
    ("encoder.ic_enc_h0", (3, 1, 5)),
    ("encoder.ci_enc_h0", (2, 4)),
])
def test_malformed_gru_tensors_are_refused_naming_the_key(tmp_path, key, shape):
    sd = torch_state_dict([5, 6])
    sd[key] = torch.zeros(shape)
    torch.save(sd, tmp_path / "sd.pt")
    with pytest.raises(ShapeError, match=re.escape(f"sd.pt: {key}")):
        ModelTrainedParams.load(tmp_path / "sd.pt")


def test_gru_conversion_checks_every_shape():
    with pytest.raises(ShapeError, match=r"GRU cell\.bias_ih should have shape \(6,\)"):
        gru_torch_to_tf(np.zeros((6, 3)), np.zeros((6, 2)), np.zeros(7), np.zeros(6))
    with pytest.raises(ShapeError, match=r"GRU cell\.weight_ih should be a \(3\*H, in\) matrix but has shape \(6,\)"):
        gru_torch_to_tf(np.zeros(6), np.zeros((6, 2)), np.zeros(6), np.zeros(6))


def test_session_names_from_the_data_configuration(tmp_path):
    (tmp_path / "data").mkdir()
    for name in ("lfads_s2.h5", "lfads_s1.h5"):
        (tmp_path / "data" / name).write_bytes(b"")
    sd = torch_state_dict([5, 6])
    save_lightning_checkpoint(tmp_path / "last.ckpt", sd, datafile_pattern=tmp_path / "data" / "lfads_*.h5")
    mtp = ModelTrainedParams.load(tmp_path / "last.ckpt")
    assert mtp.dataset_names == ["lfads_s1", "lfads_s2"]  # sorted files, as lfads-torch orders sessions
    run_style = ModelTrainedParams.from_lfads_torch(tmp_path / "last.ckpt", dataset_names=["s2"])
    np.testing.assert_array_equal(run_style.factors_to_logrates_W["s2"], sd["readout.1.weight"].numpy().T)
    named = ModelTrainedParams.from_lfads_torch(tmp_path / "last.ckpt", dataset_names=["a", "b"])
    assert named.dataset_names == ["a", "b"]
    with pytest.raises(DatasetNameError, match="lfads_s1"):
        ModelTrainedParams.from_lfads_torch(tmp_path / "last.ckpt", dataset_names=["a", "b", "c"])


def test_lfads_torch_to_tf_file_and_back(tmp_path):
    save_lightning_checkpoint(tmp_path / "last.ckpt", torch_state_dict([5, 6]))
    mtp = ModelTrainedParams.load(tmp_path / "last.ckpt", dataset_names=["dsA", "dsB"])
    mtp.save_tf_model_params(tmp_path / "model_params")
    assert ModelTrainedParams.from_tf_model_params(tmp_path / "model_params", dataset_names=["dsA", "dsB"]) == mtp
    back = {k: torch.from_numpy(v) for k, v in mtp.to_lfads_torch_state_dict().items()}
    torch.save({"state_dict": back}, tmp_path / "converted.ckpt")
    again = ModelTrainedParams.load(tmp_path / "converted.ckpt", dataset_names=["dsA", "dsB"])
    assert again.allclose(mtp, rtol=0, atol=1e-6)


def test_tf_file_to_lfads_torch_state_dict_and_back(full_model, tmp_path):
    mtp = ModelTrainedParams.load(full_model[0])
    sd = mtp.to_lfads_torch_state_dict()
    assert sd["decoder.rnn.cell.con_cell.weight_ih"].shape == (18, 11)  # 3C x (2 E_ci + F)
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in sd.items()}}, tmp_path / "c.ckpt")
    assert ModelTrainedParams.load(tmp_path / "c.ckpt", dataset_names=mtp.dataset_names).allclose(mtp, atol=1e-6)


# ---- safety ------------------------------------------------------------------------------------
class RunsCode:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class Evaluates:
    def __reduce__(self):
        return eval, ("__import__('pathlib').Path('MARKER').touch()",)


def test_checkpoint_that_tries_to_run_code_loads_its_tensors_only(tmp_path):
    marker = tmp_path / "pwned"
    sd = torch_state_dict([5])
    save_lightning_checkpoint(tmp_path / "evil.ckpt", sd, extra={
        "callbacks": {"x": RunsCode(f"touch {marker}")}, "more": [Evaluates(), {"y": RunsCode(f"touch {marker}")}]})
    mtp = ModelTrainedParams.load(tmp_path / "evil.ckpt")
    np.testing.assert_array_equal(mtp.gen_to_factors_W, sd["decoder.rnn.cell.fac_linear.weight"].numpy().T)
    assert not marker.exists() and not (tmp_path / "MARKER").exists() and not os.path.exists("MARKER")


def test_state_dict_replaced_by_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": RunsCode(f"touch {marker}")}, tmp_path / "evil.ckpt")
    with pytest.raises(FileFormatError, match="state_dict"):
        ModelTrainedParams.load(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_unknown_persistent_ids_are_unsafe(tmp_path):
    import io
    import pickle

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("module", "os", "system") if obj == "payload" else None

    data = io.BytesIO()
    Pickler(data, protocol=2).dump({"state_dict": {"w": "payload"}})
    with zipfile.ZipFile(tmp_path / "odd.ckpt", "w") as z:
        z.writestr("odd/data.pkl", data.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="persistent id") as info:
        ModelTrainedParams.load(tmp_path / "odd.ckpt")
    assert str(tmp_path / "odd.ckpt") in str(info.value)


def _rewrite_zip(source, target, change):
    """Copy a zip file, passing every member's bytes through ``change(name, data)``."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, change(name, old.read(name)))


def test_damaged_tensor_storages_are_errors_that_name_the_file(tmp_path):
    torch.save({"w": torch.arange(4.0)}, tmp_path / "good.pt")
    for label, cut, expected in (("short", 8, "needs 4 elements but its storage '0' has 2"),
                                 ("ragged", 7, "7 bytes, not a whole number of float32")):
        _rewrite_zip(tmp_path / "good.pt", tmp_path / f"{label}.pt",
                     lambda name, data: data[:cut] if name.endswith("/data/0") else data)
        with pytest.raises(FileFormatError, match=expected) as info:
            read_torch_file(tmp_path / f"{label}.pt")
        assert str(tmp_path / f"{label}.pt") in str(info.value)

    def quantized(name, data):  # a storage type the reader does not rebuild
        return data.replace(b"FloatStorage", b"QInt8Storage") if name.endswith("data.pkl") else data

    _rewrite_zip(tmp_path / "good.pt", tmp_path / "qint.pt", quantized)
    with pytest.raises(UnsafeCheckpointError, match=r"qint\.pt: storage '0' has type torch\.QInt8Storage"):
        read_torch_file(tmp_path / "qint.pt")


def test_protocol_2_builtins_are_rebuilt_not_stood_in(tmp_path):
    """torch.save writes protocol-2 pickles, which name set/frozenset/complex as __builtin__'s."""
    plain = {"s": {1, 2}, "f": frozenset([3]), "c": 1 + 2j}
    torch.save({"state_dict": torch_state_dict([5]), "hyper_parameters": plain}, tmp_path / "last.ckpt")
    checkpoint, stand_ins = read_torch_file(tmp_path / "last.ckpt")
    assert checkpoint["hyper_parameters"] == plain and not stand_ins


def test_tensors_of_dtypes_without_a_typed_storage(tmp_path):
    """uint16/32/64 come as untyped bytes plus a dtype (torch's _rebuild_tensor_v3); float8 has no NumPy type."""
    values = np.arange(12).reshape(3, 4)
    tensors = {name: torch.from_numpy(values.astype(name)).to(getattr(torch, name))[:, 1:3]
               for name in ("uint16", "uint32", "uint64", "float32")}
    torch.save(tensors, tmp_path / "ints.pt")
    loaded, _ = read_torch_file(tmp_path / "ints.pt")
    for name in tensors:
        assert loaded[name].dtype == np.dtype(name)
        np.testing.assert_array_equal(loaded[name], values[:, 1:3])
    torch.save({"f8": torch.ones(2).to(torch.float8_e4m3fn)}, tmp_path / "f8.pt")
    with pytest.raises(FileFormatError, match=r"f8\.pt: a tensor has dtype torch\.float8_e4m3fn"):
        read_torch_file(tmp_path / "f8.pt")


# ---- bad input ---------------------------------------------------------------------------------
def test_bad_files_give_clear_errors(tmp_path, full_model):
    with pytest.raises(MissingFileError, match="nothing_here"):
        ModelTrainedParams.load(tmp_path / "nothing_here")
    with pytest.raises(MissingFileError):
        ModelTrainedParams.from_tf_model_params(tmp_path / "nothing_here")
    (tmp_path / "notes.txt").write_text("epoch,1, step,20\n")
    with pytest.raises(FileFormatError, match="notes.txt"):
        ModelTrainedParams.load(tmp_path / "notes.txt")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty"):
        ModelTrainedParams.load(tmp_path / "empty")
    data = full_model[0].read_bytes()
    (tmp_path / "cut").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="cut"):
        ModelTrainedParams.load(tmp_path / "cut")
    with pytest.raises(FileFormatError, match="notes.txt"):
        ModelTrainedParams.from_tf_model_params(tmp_path / "notes.txt")
    save_lightning_checkpoint(tmp_path / "last.ckpt", torch_state_dict([5]))
    data = (tmp_path / "last.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="cut.ckpt"):
        ModelTrainedParams.load(tmp_path / "cut.ckpt")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["train_data"] = np.zeros((2, 3, 4))
    with pytest.raises(FileFormatError, match="train_data"):
        ModelTrainedParams.load(tmp_path / "other.h5")
    torch.save({"linear.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(FileFormatError, match="linear.weight"):
        ModelTrainedParams.load(tmp_path / "other.pt")


@pytest.mark.parametrize("kind", ["tf", "tf_ours", "export", "checkpoint"])
def test_overwritten_bytes_give_library_errors_naming_the_file(tmp_path, kind):
    """64 bytes of 0xff at 32 offsets across the file: a damaged index, names, heaps or zip records are library errors.

    Damaged array data inside a TF file cannot be detected (HDF5 keeps no checksums there), so some copies load.
    The global heap of the export and of our TF files (their variable-length dataset names) is damaged too: it is
    checked before libhdf5 reads it (HDF5 2.0.0 loops forever on some damaged heaps).
    """
    original = tmp_path / "original"
    if kind == "checkpoint":
        save_lightning_checkpoint(original, torch_state_dict([5, 6]))
    else:
        write_tf_model_params(original, DATASETS)
        if kind == "export":
            ModelTrainedParams.load(original).export_hdf5(tmp_path / "export.h5")
            original = tmp_path / "export.h5"
        elif kind == "tf_ours":
            ModelTrainedParams.load(original).save_tf_model_params(tmp_path / "ours")
            original = tmp_path / "ours"
    data = original.read_bytes()
    damaged, refused = tmp_path / "damaged", 0
    for offset in range(0, len(data), len(data) // 32):
        damaged.write_bytes(data[:offset] + b"\xff" * 64 + data[offset + 64:])
        try:
            ModelTrainedParams.load(damaged)
        except LfadsToolsError as exc:
            assert str(damaged) in str(exc), (offset, exc)
            refused += 1
    assert refused > 0


LOAD = """
import sys
from lfads_tools import ModelTrainedParams
try:
    ModelTrainedParams.load(sys.argv[1])
    print("loaded")
except Exception as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("kind", ["export", "tf"])
def test_damaged_global_heap_is_refused_before_libhdf5_loops_on_it(tmp_path, kind):
    """The export and our TF files keep the dataset names as variable-length strings, in the global heap.

    libhdf5 2.0.0 loops forever on a heap with a free-space object of size 0; the readers refuse it first.
    """
    write_tf_model_params(tmp_path / "model_params", DATASETS)
    ours = ModelTrainedParams.load(tmp_path / "model_params")
    if kind == "export":
        ours.export_hdf5(tmp_path / "ours")
    else:
        ours.save_tf_model_params(tmp_path / "ours")
    (tmp_path / "broken.h5").write_bytes(break_global_heap((tmp_path / "ours").read_bytes()))
    child = subprocess.run([sys.executable, "-c", LOAD, str(tmp_path / "broken.h5")], capture_output=True, text=True,
                           cwd=Path(lfads_tools.__file__).parents[1], timeout=120)
    assert child.returncode == 0, child.stdout + child.stderr
    assert child.stdout.startswith(f"FileFormatError {tmp_path / 'broken.h5'}: damaged global heap"), child.stdout


@pytest.mark.parametrize("kind", ["tf", "export", "checkpoint"])
def test_bad_dataset_names_are_the_callers_error_not_a_damaged_file(tmp_path, kind):
    write_tf_model_params(tmp_path / "model_params", DATASETS)
    path, reader = tmp_path / "model_params", read_tf_model_params
    if kind == "export":
        path, reader = ModelTrainedParams.load(path).export_hdf5(tmp_path / "export.h5"), read_export_hdf5
    elif kind == "checkpoint":
        path, reader = tmp_path / "last.ckpt", read_lfads_torch
        save_lightning_checkpoint(path, torch_state_dict([5, 6]))
    for load in (reader, ModelTrainedParams.load):
        with pytest.raises(ValidationError, match="dataset_names should be a name or a list of names, got int 5"
                           ) as info:
            load(path, dataset_names=5)
        assert not isinstance(info.value, FileFormatError)


def test_reader_warnings_point_at_the_caller(tmp_path):
    """Library warnings are attributed to the code calling the library, whichever way it was called."""
    write_tf_model_params(tmp_path / "model_params", DATASETS)
    (tmp_path / "hyperparameters-0.txt").write_text("{not json")
    other = tmp_path / "other"
    other.mkdir()
    write_tf_model_params(other / "model_params", DATASETS)
    write_hyperparameters(other, ["dsC.h5"])  # names that do not fit the file
    sd = torch_state_dict([8], read_in=False)
    sd["readout.0.weight"], sd["readout.0.bias"] = torch.ones(16, 3), torch.ones(16)  # Gaussian: rows [means; logvars]
    torch.save(sd, tmp_path / "gaussian.pt")
    tf_readers = (ModelTrainedParams.load, ModelTrainedParams.from_tf_model_params, read_tf_model_params)
    for path, message, readers in (
            (tmp_path / "model_params", "has no readable dataset_names", tf_readers),
            (other / "model_params", "do not match its per-dataset keys", tf_readers),
            (tmp_path / "gaussian.pt", "not a Poisson model", (ModelTrainedParams.load, read_lfads_torch))):
        for read in readers:
            with pytest.warns(DefaultsUsedWarning, match=message) as record:
                read(path)
            assert [w.filename for w in record] == [__file__], (path, read)


def test_python_2_names_are_renamed_only_in_protocols_before_3():
    """Protocols 0-2 name globals as Python 2 did; pickle's own tables rename them, then the allow-list decides."""
    data = pickle.dumps([zip, {1}], protocol=2)  # written as itertools.izip and __builtin__.set
    assert b"itertools\nizip" in data and b"__builtin__\nset" in data

    def load(data):
        unpickler = SafeUnpickler(io.BytesIO(data), storage_bytes=lambda key: b"")
        return unpickler.load(), unpickler.stand_ins

    for renamed in (data, pickle.dumps([zip, {1}], protocol=0)):
        obj, stand_ins = load(renamed)
        assert obj[1] == {1} and stand_ins == {"builtins.zip"}  # zip is renamed, but not allowed
    obj, stand_ins = load(b"\x80\x04" + data[2:])  # the same opcodes in a protocol-4 pickle: names are taken as written
    assert stand_ins == {"itertools.izip", "__builtin__.set"}


def test_inconsistent_shapes_between_sections_are_refused(tmp_path):
    bad = {"LFADS/gen/GenGRU/Candidate/rh_2_c/W:0": np.zeros((8, 8), np.float32)}  # c_gen_dim 7 elsewhere
    write_tf_model_params(tmp_path / "model_params", DATASETS, extra=bad)
    with pytest.raises(ShapeError, match="c_gen_dim") as info:
        ModelTrainedParams.load(tmp_path / "model_params")
    assert "model_params" in str(info.value)
    E, C, F = SIZES["Eci"], SIZES["C"], SIZES["F"]
    x_rows = {"LFADS/con/GenGRU/Candidate/x_2_c/W:0": np.zeros((2 * E + F + 1, C), np.float32)}  # x_2_ru has 2E+F
    wide_read_in = {f"LFADS/x_2_infac_{ds}/{p}:0": np.zeros((D if p == "W" else 1, F + 1), np.float32)
                    for ds, D in DATASETS.items() for p in "Wb"}  # encoders built on F inputs
    few_inputs = {f"LFADS/con/GenGRU/{g}/W:0": np.zeros((2 * E - 1, n * C), np.float32)
                  for g, n in (("Gates/x_2_ru", 2), ("Candidate/x_2_c", 1))}  # fewer than ci_fwd + ci_rev
    both = {f"LFADS/gen/GenGRU/{g}/W:0": np.zeros((SIZES["U"] + 2, n * SIZES["G"]), np.float32)
            for g, n in (("Gates/x_2_ru", 2), ("Candidate/x_2_c", 1))}  # 2 more generator inputs, and 2 to encoders
    for name, extra, message in (("x_rows", x_rows, r"con_gengru_x_to_c_W should have shape \(11, 6\)"),
                                 ("wide_read_in", wide_read_in, "c_enc_input_dim = 3 inputs, fewer than the read-in"),
                                 ("few_inputs", few_inputs, "c_con_input_dim = 7 inputs, fewer than the controller"),
                                 ("both", both, "both the encoders and the generator take external inputs")):
        write_tf_model_params(tmp_path / name, DATASETS, sizes={**SIZES, "X": 2}, extra=extra,
                              inject_ext_input_to_gen=name != "both")
        with pytest.raises(ShapeError, match=message):
            ModelTrainedParams.load(tmp_path / name)
    sd = torch_state_dict([5, 6])
    sd["readout.1.weight"] = torch.zeros(6, 4)  # 4 factors where the generator makes 3
    torch.save(sd, tmp_path / "sd.pt")
    with pytest.raises(ShapeError, match="factors_to_logrates_W"):
        ModelTrainedParams.load(tmp_path / "sd.pt")
    for key, columns, expected in (("encoder.ic_enc.fwd_gru.cell.weight_ih", F + 1, F),
                                   ("decoder.rnn.cell.con_cell.weight_ih", 2 * E + F + 1, 2 * E + F)):
        sd = torch_state_dict([5, 6])
        same_input = [k for k in sd if k.endswith("_gru.cell.weight_ih")] if key.startswith("encoder") else [key]
        sd.update({k: torch.zeros(sd[k].shape[0], columns) for k in same_input})  # the 4 encoders take one input
        torch.save(sd, tmp_path / "sd.pt")
        with pytest.raises(ShapeError, match=f"{key} has {columns} input columns; an lfads-torch model feeds it "
                                             f"{expected}"):
            ModelTrainedParams.load(tmp_path / "sd.pt")


def test_incomplete_model_cannot_become_a_state_dict(full_model):
    data = ModelTrainedParams.load(full_model[0]).to_dict()
    data["gen_to_factors_W"] = None
    with pytest.raises(ValidationError, match="gen_to_factors_W"):
        ModelTrainedParams.from_dict(data).to_lfads_torch_state_dict()


def test_all_tf_variables_of_the_reference_are_read():
    """The fixture's TF names cover every field (guards the independent table in lfads_fixtures)."""
    assert set(TF_VARIABLES) == set(ModelTrainedParams.field_names())
