"""Datasets, RunSpec, RunCollection (grid, find_runs, runs_table, from_disk) and Run, on trees in the
reference layout."""

import json
import os

import h5py
import numpy as np
import pytest
import scipy.io

from lds.errors import (FileFormatError, LibraryWarning, MissingFileError, OverwriteError, SearchError,
                        ValidationError)
from lfads_tools import (Dataset, DatasetCollection, Hyperparameter, Run, RunCollection, RunParams, RunSpec)
from lfads_fixtures import lfads_hyperparameters

SMALL = dict(c_learning_rate_stop=0.001, c_batch_size=150, c_co_dim=0, c_ic_enc_dim=64, c_gen_dim=64)


@pytest.fixture
def dc(tmp_path):
    folder = tmp_path / "datasets"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (trials, channels) in {"dataset001": (6, 4), "dataset002": (5, 3), "dataset003": (4, 2)}.items():
        np.save(folder / f"{name}.npy", rng.normal(size=(trials, 30, channels)))
    (folder / "notes.txt").write_text("not a dataset")
    return DatasetCollection.from_folder(folder, "*.npy")


@pytest.fixture
def rc(tmp_path, dc):
    rc = RunCollection(tmp_path / "runs", "exp1", dc)
    rc.add_run_spec([RunSpec(ds.single_run_name, ds) for ds in dc] + [RunSpec("all", dc.names, dc)])
    rc.add_params(RunParams(**SMALL).sweep(c_factors_dim=[2, 4, 8]))
    return rc


# ---- datasets -----------------------------------------------------------------------------------

def test_dataset_collection(dc):
    assert dc.names == ["dataset001", "dataset002", "dataset003"] and dc.name == "datasets"
    dc.load_info()
    assert [(d.n_trials, d.n_channels) for d in dc] == [(6, 4), (5, 3), (4, 2)]
    assert dc["dataset002"] is dc[1] and dc[-1].name == "dataset003"
    assert dc[0].load_data().shape == (6, 30, 4)
    with pytest.raises(SearchError, match=r"\[0\] dataset001, \[1\] dataset002"):
        dc["dataset9"]
    dc.filter_having_minimum_trials(5)
    assert dc.names == ["dataset001", "dataset002"]
    assert "n_trials" in repr(dc) and "dataset001" in dc.info_table()
    assert "Dataset with properties" in repr(dc[0])


def test_dataset_name_from_file_and_missing_file(tmp_path):
    collection = DatasetCollection(tmp_path)
    ds = Dataset(collection, "monkey,day1.npy")
    assert ds.name == "monkey_day1" and ds.path == tmp_path / "monkey,day1.npy"
    with pytest.raises(MissingFileError, match="monkey,day1.npy"):
        ds.load_data()
    with pytest.raises(MissingFileError, match="has no file"):
        Dataset(name="loose").load_data()
    with pytest.raises(MissingFileError, match="does not exist"):
        DatasetCollection.from_folder(tmp_path / "nope")


def test_run_spec_selection_keeps_the_given_order(dc):
    spec = RunSpec("pair", ["dataset003", "dataset001"], dc)
    assert spec.dataset_names == ["dataset003", "dataset001"]
    assert RunSpec("pair", [2, 0], dc) == spec == RunSpec("pair", [dc[2], dc[0]])
    assert RunSpec("pair", [0, 2], dc) != spec
    with pytest.raises(ValidationError, match="need a dataset_collection"):
        RunSpec("x", ["dataset001"])
    with pytest.raises(ValidationError, match="folder name"):
        RunSpec("a/b", dc[0])


# ---- the grid and find_runs -----------------------------------------------------------------------

def test_grid_and_paths(rc, tmp_path):
    assert (rc.n_run_specs, rc.n_params, rc.n_runs) == (4, 3, 12) and rc.runs.shape == (4, 3)
    run = rc.runs[3, 2]
    assert isinstance(run, Run) and run.name == "all" and run.params_string == "param_YOs74u"
    root = tmp_path / "runs" / "exp1"
    assert run.path == root / "param_YOs74u" / "all"
    assert run.path_common_data == root / "data_4MaTKO" / "all"
    assert run.path_lfads_input == run.path / "lfadsInput"
    assert run.file_model_params == run.path / "lfadsOutput" / "model_params"
    assert run.file_fit_log == run.path / "lfadsOutput" / "fitlog.csv"
    assert run.lfads_input_file_names == ["lfads_dataset001.h5", "lfads_dataset002.h5", "lfads_dataset003.h5"]
    assert [p.version for p in rc.params] == [rc.version] * 3


def test_find_runs_semantics(rc):
    target = rc.runs[3, 2]
    for spec_search in ("all", 3, rc.run_specs[3], -1):
        for param_search in (2, "param_YOs74u", "YOs74u", RunParams(**SMALL, c_factors_dim=8), -1):
            assert rc.find_runs(spec_search, param_search) is target
    assert rc.find_runs() == [rc.runs[i, j] for j in range(3) for i in range(4)]
    column = rc.find_runs(None, "param_Z1-4Ne")
    assert [r.name for r in column] == ["single_dataset001", "single_dataset002", "single_dataset003", "all"]
    picked = rc.find_runs(["all", "single_dataset002"], [0, 2])
    assert [(r.name, r.param_index) for r in picked] == [("all", 0), ("single_dataset002", 0), ("all", 2),
                                                        ("single_dataset002", 2)]
    assert len(rc.find_runs([True, False, False, True], None)) == 6
    assert rc.find_runs(None, np.array(["YOs74u"])) == rc.find_runs(None, [2])  # bare hashes in a numpy array
    assert rc.find_runs(np.array(["all"]), np.array(["param_Z1-4Ne", "UEvXAB"])) == [rc.runs[3, 0], rc.runs[3, 1]]
    assert rc.find_runs(None, np.array([False, False, True])) == rc.find_runs(None, [2])
    listing = repr(column)
    assert listing.startswith("RunList of 4 runs") and "param_Z1-4Ne" in listing and "dataset003" in listing


@pytest.mark.parametrize("specs, params, message", [
    ("nope", None, r"no run spec matches \['nope'\].*\[0\] single_dataset001.*\[3\] all"),
    (4, None, "no run spec matches"),
    (None, "param_AAAAAA", r"no parameter set matches.*\[0\] param_Z1-4Ne, \[1\] param_UEvXAB"),
    (None, RunParams(c_gen_dim=3), "no parameter set matches"),
    (None, 3, "no parameter set matches"),
    ([True, False], None, "needs 4 entries"),
])
def test_find_runs_unknown_entries_list_the_choices(rc, specs, params, message):
    with pytest.raises(SearchError, match=message):
        rc.find_runs(specs, params)


def test_adding_replaces_matching_entries(rc, dc):
    before = rc.runs[0, 0]
    rc.add_params(RunParams(**SMALL, c_factors_dim=2, name="same hash, new label"))
    assert rc.n_params == 3 and rc.params[0].name == "same hash, new label"
    with pytest.warns(LibraryWarning, match="replacing run spec 'all'") as record:
        rc.add_run_spec(RunSpec("all", ["dataset001"], dc))
    assert [w.filename for w in record] == [__file__]  # the warning points at the caller
    assert rc.n_run_specs == 4 and rc.find_runs("all", 0).dataset_names == ["dataset001"]
    assert rc.runs[1, 1] is rc.find_runs("single_dataset002", 1)
    assert before.name == rc.runs[0, 0].name


def test_repr_and_table_of_a_declared_collection(rc):
    text = repr(rc)
    assert text.startswith('RunCollection "exp1" (4 run specs x 3 params = 12 runs)')
    assert "[1] param_UEvXAB data_QcdNGf" in text and "[3] all" in text
    table = rc.runs_table()
    assert table.count("no folder yet") == 12 and "param_YOs74u/all" in table
    assert "Run with properties" in repr(rc.runs[0, 0]) and "nothing yet" in repr(rc.runs[0, 0])


# ---- from_disk: records written by this library ------------------------------------------------------

class HandParams(RunParams):
    EXTRA_PARAMETERS = (Hyperparameter("useHandKinematics", "logical", False),
                        Hyperparameter("windowMs", "double", (-100, 500)))


def test_from_disk_rebuilds_a_prepared_collection(rc, tmp_path, dc):
    rc.add_params(HandParams(**SMALL, useHandKinematics=True, windowMs=[0, 300]))
    rc.prepare_folders(progress=False)
    record = json.loads((rc.runs[0, 0].path / "lfads_tools_run.json").read_text())
    assert record["run_name"] == "single_dataset001" and record["param_hash"] == "param_Z1-4Ne"
    rc.prepare_folders(progress=False)  # identical records are left alone

    again = RunCollection.from_disk(tmp_path / "runs", "exp1", progress=False)
    assert sorted(again.param_hashes) == sorted(rc.param_hashes)
    assert sorted(s.name for s in again.run_specs) == sorted(s.name for s in rc.run_specs)
    assert again.find_runs("all", None)[0].dataset_names == dc.names
    hand = again.params[again.find_params(rc.params[3].param_hash)[0]]
    assert type(hand).__name__ == "HandParams" and hand.useHandKinematics is True
    np.testing.assert_array_equal(hand.windowMs, [0, 300])
    assert hand.param_hash == rc.params[3].param_hash and hand.data_hash == rc.params[3].data_hash
    assert all(r.problem is None and r.source == "record" for r in again.runs.flat)
    # the datasets come back with their files, so data can be loaded again
    assert again.dataset_collection.path == dc.path
    assert again.find_runs("single_dataset002", 0).datasets[0].load_data().shape == (5, 30, 3)
    # the user's own subclass can be used instead of the rebuilt one
    typed = RunCollection.from_disk(tmp_path / "runs", "exp1", params_class=HandParams, progress=False)
    assert all(isinstance(p, HandParams) for p in typed.params)
    assert sorted(typed.param_hashes) == sorted(rc.param_hashes)


def test_run_record_is_never_silently_replaced(rc):
    run = rc.runs[0, 0]
    run.prepare_folder()
    run.run_spec.comment = "unchanged record"
    run.prepare_folder()
    record = run.file_run_record.read_bytes()
    run.datasets[0].n_trials = 6  # the record now differs from what the folder holds
    with pytest.raises(OverwriteError, match="lfads_tools_run.json"):
        run.prepare_folder()
    assert run.file_run_record.read_bytes() == record
    run.prepare_folder(overwrite=True)
    assert json.loads(run.file_run_record.read_text())["datasets"][0]["n_trials"] == 6


def test_no_record_contradicts_its_folder(rc):
    run = rc.runs[0, 0]
    run.prepare_folder()
    record = run.file_run_record.read_bytes()
    run.params.c_factors_dim = 3  # the params no longer hash to the run's folder
    assert not run.params_known and "now hash to param_" in run.problem
    for overwrite in (False, True):
        with pytest.raises(ValidationError, match="would contradict the folder"):
            run.prepare_folder(overwrite=overwrite)
    assert run.file_run_record.read_bytes() == record
    fresh = rc.runs[0, 1]
    fresh.params.c_gen_dim = 3
    with pytest.raises(ValidationError, match="would contradict the folder"):
        fresh.prepare_folder()
    assert not fresh.path.exists()  # refused before anything was created


def test_prepare_folders_checks_every_run_before_creating_any(rc):
    rc.params[2].c_gen_dim = 3  # the last parameter set no longer hashes to its folder
    with pytest.raises(ValidationError, match="would contradict the folder"):
        rc.prepare_folders(progress=False)
    assert not rc.path.exists()


def test_from_disk_marks_broken_runs_and_keeps_going(rc, tmp_path):
    rc.prepare_folders(progress=False)
    broken = rc.find_runs("single_dataset001", 0).path / "lfads_tools_run.json"
    broken.write_text('{"format": "lfads_tools.run", "format_version": 1, "run_name": ')
    wrong = rc.find_runs("single_dataset002", 1).path / "lfads_tools_run.json"
    data = json.loads(wrong.read_text())
    data["params"]["c_factors_dim"] = 16
    wrong.write_text(json.dumps(data))
    empty = tmp_path / "runs" / "exp1" / "param_UEvXAB" / "stray"
    empty.mkdir()
    bad_hps = tmp_path / "runs" / "exp1" / "param_m8Dk5i" / "lfads_run" / "lfadsOutput"
    bad_hps.mkdir(parents=True)
    (bad_hps / "hyperparameters-0.txt").write_text("{not json")

    again = RunCollection.from_disk(tmp_path / "runs", "exp1", progress=False)
    problems = {(r.name, r.params_string): r.problem for r in again.runs.flat if r.problem}
    assert "is not valid JSON" in problems[("single_dataset001", "param_Z1-4Ne")]
    assert "hashing to param_" in problems[("single_dataset002", "param_UEvXAB")]
    assert "neither lfads_tools_run.json nor" in problems[("stray", "param_UEvXAB")]
    assert "hyperparameters-0.txt is not valid JSON" in problems[("lfads_run", "param_m8Dk5i")]
    assert again.n_params == 4  # the folder whose only run is unreadable is still listed
    table = again.runs_table()
    assert "is not valid JSON" in table and "stray" in table
    assert "could not be read completely" in repr(again)
    good = again.find_runs("all", "param_YOs74u")
    assert good.problem is None


def test_from_disk_of_a_missing_root_is_a_clear_error(tmp_path):
    with pytest.raises(MissingFileError, match="nowhere"):
        RunCollection.from_disk(tmp_path, "nowhere", progress=False)


# ---- a run tree written the way lfads-run-manager and TF LFADS write it --------------------------------

ROW = ("epoch,{e}, step,{s}, total,{tt:.2f},{tv:.2f},       recon,{rt:.2f},{rv:.2f}, kl,{kt:.2f},{kv:.2f}, "
       "l2,{l2:.5f},       klweight,{kw:.2f}, l2weight,{lw:.2f}\n")


def write_lfads_run(folder, params, datasets, n_trials=9, T=6, seed=0):
    """lfadsInput (1-based train/valid indices, inputInfo .mat), lfadsOutput (hps, fitlog, posterior files)."""
    rng = np.random.default_rng(seed)
    out, inp = folder / "lfadsOutput", folder / "lfadsInput"
    out.mkdir(parents=True)
    inp.mkdir()
    names = [d for d, _ in datasets]
    (out / "hyperparameters-0.txt").write_text(json.dumps(lfads_hyperparameters(params, names)))
    (out / "hyperparameters-1200.txt").write_text(json.dumps(
        lfads_hyperparameters(params, names, kind="posterior_sample_and_average", batch_size=512)))
    rows = [dict(e=e, s=100 * (e + 1), tt=90 - e, tv=95 - e + (3 if e == 4 else 0), rt=80 - e, rv=85 - e,
                 kt=2.0, kv=2.5, l2=0.1, kw=min(1.0, (e + 1) / 3), lw=min(1.0, (e + 1) / 3)) for e in range(6)]
    (out / "fitlog.csv").write_text("".join(ROW.format(**r) for r in rows))
    truth = {}
    rebin = int(params.spikeBinMs)  # original bins of 1 ms
    for name, channels in datasets:
        valid = np.arange(1, n_trials + 1, params.trainToTestRatio + 1)  # 1-based, as MATLAB writes them
        train = np.setdiff1d(np.arange(1, n_trials + 1), valid)
        counts = rng.poisson(0.3, (channels, T * rebin, n_trials))  # neurons x original bins x trials
        summed = counts.reshape(channels, T, rebin, n_trials).sum(axis=2).transpose(2, 1, 0)  # trials x T x neurons
        with h5py.File(inp / f"lfads_{name}.h5", "w") as f:
            f["train_data"] = summed[train - 1].astype(np.int64)
            f["valid_data"] = summed[valid - 1].astype(np.int64)
            f["train_inds"] = train.astype(np.float64)
            f["valid_inds"] = valid.astype(np.float64)
        scipy.io.savemat(inp / f"inputInfo_{name}.mat", {
            "trainInds": train[None, :], "validInds": valid[None, :], "paramInputDataHash": params.data_hash[5:],
            "seq_timeVector": np.arange(0, T * rebin, 1.0)[None, :], "seq_binSizeMs": 1.0, "counts": counts,
            "conditionId": (np.arange(n_trials) % 3)[None, :]})
        rates = {}
        for split, inds in (("train", train), ("valid", valid)):
            r = rng.uniform(0.01, 0.5, (len(inds), T, channels))
            with h5py.File(out / f"model_runs_{name}.h5_{split}_posterior_sample_and_average", "w") as f:
                f["output_dist_params"] = r
                f["factors"] = rng.normal(size=(len(inds), T, params.c_factors_dim))
                f["gen_ics"] = rng.normal(size=(len(inds), params.c_gen_dim))
                f["gen_states"] = rng.normal(size=(len(inds), T, params.c_gen_dim))
                f["costs"] = rng.normal(size=len(inds))
            rates[split] = (inds, r)
        truth[name] = rates
    return truth, rows


@pytest.fixture
def lfads_tree(tmp_path):
    """Two parameter folders made by lfads-run-manager: LFADS files only, no records of ours."""
    params = [RunParams(**SMALL, c_factors_dim=8, c_kl_increase_steps=500),
              RunParams(**SMALL, c_factors_dim=4, c_do_train_readin=False)]
    root = tmp_path / "lfads_runs" / "lorenz"
    truths = {}
    for p in params:
        for run_name, datasets in (("single_dataset001", [("dataset001", 4)]),
                                   ("all", [("dataset001", 4), ("dataset002", 3)])):
            truths[p.param_hash, run_name] = write_lfads_run(root / p.param_hash / run_name, p, datasets)
    (root / "data_4MaTKO").mkdir()  # data folders and files beside the param folders are ignored
    (root / "summary.txt").write_text("summary")
    return tmp_path / "lfads_runs", params, truths


def test_lfads_made_tree_is_found_and_listed(lfads_tree):
    root, params, _ = lfads_tree
    rc = RunCollection.from_disk(root, "lorenz", progress=False)
    assert sorted(rc.param_hashes) == sorted(p.param_hash for p in params)
    assert [s.name for s in rc.run_specs] == ["all", "single_dataset001"]
    assert rc.find_runs("all", None)[0].dataset_names == ["dataset001", "dataset002"]
    for p in params:
        recovered = rc.params[rc.find_params(p.param_hash)[0]]
        # every c_ flag survives: booleans from "true"/"false", steps divided back by the number of datasets,
        # batch_size from the training build (not the posterior-sampling one)
        assert recovered.param_hash == p.param_hash
        assert recovered.c_kl_increase_steps == p.c_kl_increase_steps and recovered.c_batch_size == 150
    assert all(r.source == "lfads hyperparameters" and r.problem is None for r in rc.runs.flat)
    table = rc.runs_table()
    lines = [line for line in table.splitlines() if "param_" in line]
    assert len(lines) == 4 and all(line.count("✓") == 2 for line in lines)  # posterior means and fit log
    rows = rc.runs_rows()
    assert all(r["posterior_means"] and r["fit_log"] and not r["model_params"] and not r["lds_fit"] for r in rows)


def test_lfads_made_run_loads_posterior_means_and_fit_log(lfads_tree):
    root, params, truths = lfads_tree
    rc = RunCollection.from_disk(root, "lorenz", progress=False)
    run = rc.find_runs("all", params[0].param_hash)
    means = run.load_posterior_means()
    assert means.names == ["dataset001", "dataset002"]
    truth, rows = truths[params[0].param_hash, "all"]
    for name in means.names:
        pm = means[name]
        for split in ("train", "valid"):
            inds, rates = truth[name][split]
            np.testing.assert_allclose(pm.rates[inds - 1], rates * 1000 / params[0].spikeBinMs)
        np.testing.assert_array_equal(np.sort(np.concatenate([pm.train_inds, pm.valid_inds])), np.arange(9))
        np.testing.assert_array_equal(pm.valid_inds, [0, 5])
        np.testing.assert_array_equal(pm.time, np.arange(0, 12, 2.0)[:6])  # first original bin of each LFADS bin
        np.testing.assert_array_equal(pm.condition_ids, np.arange(9) % 3)
        assert pm.controller_outputs is None  # absent from the files (no controller)
    log = run.load_fit_log()
    assert log.n_epochs == 6 and log.run_name == "all"
    # weights reach 1 at epoch 2; epoch 4 has a bumped valid cost; the lowest is epoch 5
    assert log.lve_index == 5 and log.total_valid_lve == pytest.approx(rows[5]["tv"])
    with pytest.raises(MissingFileError, match="no trained model"):
        run.load_model_trained_params()


def test_posterior_means_fall_back_to_inputinfo_and_split_rule(lfads_tree):
    root, params, truths = lfads_tree
    rc = RunCollection.from_disk(root, "lorenz", progress=False)
    run = rc.find_runs("single_dataset001", params[1].param_hash)
    (run.path_lfads_input / "lfads_dataset001.h5").unlink()
    from_info = run.load_posterior_means()["dataset001"]
    (run.path_lfads_input / "inputInfo_dataset001.mat").unlink()
    from_rule = run.load_posterior_means()[0]
    inds, rates = truths[params[1].param_hash, "single_dataset001"][0]["dataset001"]["valid"]
    for pm in (from_info, from_rule):
        np.testing.assert_allclose(pm.rates[inds - 1], rates * 500)
    np.testing.assert_array_equal(from_rule.time, np.arange(1, 7) * 2.0)


def test_lfads_made_tree_with_damaged_files(lfads_tree):
    root, params, _ = lfads_tree
    hps = root / "lorenz" / params[1].param_hash / "all" / "lfadsOutput" / "hyperparameters-0.txt"
    data = json.loads(hps.read_text())
    data["factors_dim"] = "eight"
    hps.write_text(json.dumps(data))
    fitlog = root / "lorenz" / params[0].param_hash / "all" / "lfadsOutput" / "fitlog.csv"
    fitlog.write_text(fitlog.read_text() + "epoch,6, step,700, total,1.0\n")
    posterior = (root / "lorenz" / params[0].param_hash / "single_dataset001" / "lfadsOutput"
                 / "model_runs_dataset001.h5_valid_posterior_sample_and_average")
    with h5py.File(posterior, "a") as f:
        del f["factors"]
    rc = RunCollection.from_disk(root, "lorenz", progress=False)
    broken = rc.find_runs("all", params[1].param_hash)
    assert "key 'factors_dim'" in broken.problem and "hyperparameters-0.txt" in broken.problem
    assert sum(1 for r in rc.runs.flat if r.problem) == 1
    with pytest.raises(FileFormatError, match="fitlog.csv line 7: expected 19"):
        rc.find_runs("all", params[0].param_hash).load_fit_log()
    with pytest.raises(FileFormatError, match=r"valid_posterior_sample_and_average lacks the keys \['factors'\]"):
        rc.find_runs("single_dataset001", params[0].param_hash).load_posterior_means()
    with pytest.raises(ValidationError, match="posterior mean kind"):
        broken.load_posterior_means(kind="prior_sample")


def test_on_disk_detects_model_files(rc):
    run = rc.runs[0, 0]
    run.prepare_folder()
    assert run.on_disk() == dict.fromkeys(["model_params", "lfads_torch_checkpoint", "posterior_means", "fit_log",
                                           "lds_fit"], False) | {"folder": True}
    run.file_model_params.write_bytes(b"")
    ckpt_dir = run.path_lfads_output / "lightning_checkpoints"
    ckpt_dir.mkdir()
    for name in ("last.ckpt", "12-3400.ckpt"):
        (ckpt_dir / name).write_bytes(b"")
    disk = run.on_disk()
    assert disk["model_params"] and disk["lfads_torch_checkpoint"] and not disk["posterior_means"]
    assert run.lfads_torch_checkpoint() == ckpt_dir / "12-3400.ckpt"
    assert "model_params, lfads_torch_checkpoint" in repr(run)
    os.symlink(run.path / "gone.ckpt", ckpt_dir / "99-9999.ckpt")  # a dangling link is not a checkpoint
    assert run.lfads_torch_checkpoint() == ckpt_dir / "12-3400.ckpt"
    other = rc.runs[1, 0]
    other.prepare_folder()
    os.symlink(other.path / "gone.ckpt", other.path_lfads_output / "last.ckpt")
    assert not other.on_disk()["lfads_torch_checkpoint"] and "nothing yet" in repr(other)
    assert other.lfads_torch_checkpoint() is None and "param_Z1-4Ne/single_dataset002" in rc.runs_table()
    (other.path_lfads_output / "lightning_checkpoints").mkdir()
    os.symlink(other.path / "gone.ckpt", other.path_lfads_output / "lightning_checkpoints" / "1-2.ckpt")
    assert not other.on_disk()["lfads_torch_checkpoint"]
    (other.path_lfads_output / "lightning_checkpoints" / "3-4.ckpt").write_bytes(b"")
    assert other.on_disk()["lfads_torch_checkpoint"] and other.lfads_torch_checkpoint().name == "3-4.ckpt"
    assert os.path.relpath(run.path, rc.path) == "param_Z1-4Ne/single_dataset001"


def test_hidden_checkpoints_are_not_found_by_listing_or_loading(rc):
    """``.x.ckpt`` (hidden) is no checkpoint for on_disk nor for lfads_torch_checkpoint and loading."""
    run = rc.runs[0, 0]
    run.prepare_folder()
    for folder in (run.path_lfads_output, run.path_lfads_output / "lightning_checkpoints"):
        folder.mkdir(exist_ok=True)
        (folder / ".x.ckpt").write_bytes(b"")
        assert not run.on_disk()["lfads_torch_checkpoint"] and run.lfads_torch_checkpoint() is None
        with pytest.raises(MissingFileError, match="no trained model"):
            run.load_model_trained_params()


# ---- LDS fits stored in run folders ---------------------------------------------------------------

@pytest.fixture
def lds_rc(tmp_path):
    import lds

    folder = tmp_path / "sessions"
    folder.mkdir()
    truth = lds.random_stable_lds(2, 4, seed=0)
    for seed, name in enumerate(["s1", "s2"]):
        np.save(folder / f"{name}.npy", np.asarray(lds.sample_lds(truth, 120, seed=seed).observations))
    dc = DatasetCollection.from_folder(folder, "*.npy")
    rc = RunCollection(tmp_path / "runs", "lds", dc)
    rc.add_run_spec([RunSpec("both", dc.names, dc), RunSpec("single_s2", "s2", dc)])
    rc.add_params(RunParams())
    return rc


def test_fit_lds_stores_params_and_history(lds_rc, tmp_path):
    import lds

    options = dict(num_states=2, max_iter=2, progress=False)
    both, single = lds_rc.find_runs("both", 0), lds_rc.find_runs("single_s2", 0)
    result = both.fit_lds(**options)
    direct = lds.fit_em({d.name: d.load_data() for d in both.datasets}, **options)  # the same fit, done by hand
    loaded = both.load_kalman_params()
    assert loaded.allclose(direct.params, rtol=1e-8, atol=1e-10)
    assert list(loaded.measurement_function.names) == ["s1", "s2"]
    history = both.load_lds_history()
    np.testing.assert_allclose(history["log_likelihoods"], np.asarray(result.log_likelihoods))
    assert history["num_iterations"] == result.num_iterations and history["em_options"]["max_iter"] == 2

    single.fit_lds(**options)
    single_params = single.load_kalman_params()
    assert single_params.measurement_function.shape == (4, 2)  # one session: plain arrays, no DatasetList
    with pytest.raises(OverwriteError, match="kalman_params.h5"):
        single.fit_lds(**options)
    single.fit_lds(overwrite=True, **dict(options, max_iter=1))
    assert single.load_lds_history()["num_iterations"] == 1

    again = RunCollection.from_disk(tmp_path / "runs", "lds", progress=False)
    assert all(row["lds_fit"] for row in again.runs_rows())
    assert again.find_runs("both", 0).load_kalman_params().allclose(loaded)


def test_load_kalman_params_without_fit(lds_rc):
    with pytest.raises(MissingFileError, match="call fit_lds first"):
        lds_rc.find_runs("both", 0).load_kalman_params()


def test_lfads_torch_run_folder(rc):
    from test_posterior_means_fit_log import write_torch_output

    run = rc.find_runs("single_dataset002", 0)
    run.prepare_folder()
    assert not run.on_disk()["posterior_means"]
    arrays = write_torch_output(run.path_lfads_output / "lfads_output_lfads_dataset002.h5", np.array([2, 3, 5]),
                                np.array([1, 4]))
    assert run.on_disk()["posterior_means"]
    pm = run.load_posterior_means()["dataset002"]
    np.testing.assert_allclose(pm.rates[4], arrays["train", "output_params"][2] * 1000 / run.params.spikeBinMs)


# ---- parameters LFADS does not record, datasets per folder, Run results ------------------------------------

def _drop_counts(info_file):
    info = {k: v for k, v in scipy.io.loadmat(info_file).items() if not k.startswith("__") and k != "counts"}
    scipy.io.savemat(info_file, info)


def test_lfads_made_run_with_parameters_lfads_does_not_record(tmp_path):
    params = RunParams(**SMALL, c_factors_dim=8, spikeBinMs=10, trainToTestRatio=3, useAlignmentMatrix=True)
    folder = tmp_path / "rc" / params.param_hash / "all"
    truth, _ = write_lfads_run(folder, params, [("dsA", 4), ("dsB", 3)])
    rc = RunCollection.from_disk(tmp_path, "rc", progress=False)
    run = rc.find_runs("all", 0)
    assert run.params_string == params.param_hash and not run.params_known
    assert "spikeBinMs" in run.problem and "are unknown" in run.problem and "are unknown" in rc.runs_table()
    assert params.data_hash not in repr(run) + repr(rc) and "data_?????? (unknown)" in repr(run)
    with pytest.raises(ValidationError, match="data hash is unknown"):
        run.path_common_data
    # the bin width comes from the input info: 60 original 1-ms bins make 6 LFADS bins, summed by 10 (9 also fits
    # the bin counts; the spike counts tell them apart)
    means = run.load_posterior_means()
    for name in ("dsA", "dsB"):
        for split in ("train", "valid"):
            inds, rates = truth[name][split]
            np.testing.assert_allclose(means[name].rates[inds - 1], rates * 1000 / 10)
        np.testing.assert_array_equal(means[name].time, np.arange(0, 60, 10.0))
    # nothing is written that would contradict the folder
    before = sorted(folder.rglob("*"))
    with pytest.raises(ValidationError, match="would contradict the folder"):
        run.prepare_folder(overwrite=True)
    assert sorted(folder.rglob("*")) == before
    # the bin width is never guessed, nor the split rule used with an unknown trainToTestRatio
    _drop_counts(run.path_lfads_input / "inputInfo_dsA.mat")
    with pytest.raises(ValidationError, match=r"spikeBinMs is unknown: 60 original bins .* any of \[9, 10\]"):
        run.load_posterior_means()
    (run.path_lfads_input / "inputInfo_dsA.mat").unlink()
    with pytest.raises(ValidationError, match="spikeBinMs is unknown .* inputInfo_dsA.mat"):
        run.load_posterior_means()
    # declared parameters complete the run: it loads with them and can be given a record
    rc.add_params(params)
    run = rc.find_runs("all", 0)
    assert run.params_known and run.problem is None and params.data_hash in repr(run)
    inds, rates = truth["dsA"]["valid"]
    np.testing.assert_allclose(run.load_posterior_means()["dsA"].rates[inds - 1], rates * 100)
    run.prepare_folder()
    again = RunCollection.from_disk(tmp_path, "rc", progress=False).find_runs("all", 0)
    assert again.source == "record" and again.problem is None and again.params.spikeBinMs == 10


def test_folders_with_the_same_lfads_hyperparameters_get_their_own_params(tmp_path):
    sweep = RunParams(**SMALL).sweep(spikeBinMs=[2, 10])  # only what LFADS does not record differs
    for p in sweep:
        for run_name in ("a", "b"):
            write_lfads_run(tmp_path / "rc" / p.param_hash / run_name, p, [("dsA", 2)])
    rc = RunCollection.from_disk(tmp_path, "rc", progress=False)
    default, binned = (rc.find_runs("a", p.param_hash) for p in sweep)
    assert default.params_known and default.problem is None and not binned.params_known
    assert binned.params is not default.params and rc.find_runs("b", sweep[1].param_hash).params is binned.params
    binned.params.c_gen_dim = 3
    assert default.params.c_gen_dim == 64


def test_unknown_bin_width_found_from_bin_counts_alone(tmp_path):
    params = RunParams(**SMALL, spikeBinMs=4)
    truth, _ = write_lfads_run(tmp_path / "rc" / params.param_hash / "one", params, [("dsA", 2)])
    _drop_counts(tmp_path / "rc" / params.param_hash / "one" / "lfadsInput" / "inputInfo_dsA.mat")
    run = RunCollection.from_disk(tmp_path, "rc", progress=False).find_runs("one", 0)
    assert not run.params_known  # 24 original bins give 6 LFADS bins only when summed by 4
    inds, rates = truth["dsA"]["train"]
    np.testing.assert_allclose(run.load_posterior_means()[0].rates[inds - 1], rates * 250)


def test_runs_of_one_name_keep_the_datasets_of_their_folder(tmp_path):
    p, q, r = (RunParams(**SMALL, c_factors_dim=d) for d in (8, 4, 2))  # folders param_YOs74u, UEvXAB, Z1-4Ne
    root = tmp_path / "rc"
    write_lfads_run(root / p.param_hash / "all", p, [("dsA", 4), ("dsB", 3)])
    write_lfads_run(root / q.param_hash / "all", q, [("dsA", 4)])
    write_lfads_run(root / r.param_hash / "all", r, [("dsB", 3), ("dsA", 4)])  # the same datasets, other order
    rc = RunCollection.from_disk(tmp_path, "rc", progress=False)
    runs = {run.params_string: run for run in rc.find_runs("all", None)}
    assert rc.run_specs[0].dataset_names == ["dsA"]  # from the first folder read, param_UEvXAB
    assert runs[q.param_hash].dataset_names == ["dsA"] and runs[q.param_hash].problem is None
    assert runs[p.param_hash].dataset_names == ["dsA", "dsB"] and runs[r.param_hash].dataset_names == ["dsB", "dsA"]
    for other in (p, r):
        assert "differ from those of the run spec 'all'" in runs[other.param_hash].problem
    assert runs[r.param_hash].load_posterior_means().names == ["dsB", "dsA"]
    assert runs[r.param_hash].load_posterior_means()["dsB"].n_neurons == 3


def test_fit_lds_checks_before_fitting_and_refits_after_from_disk(lds_rc, tmp_path, monkeypatch):
    import datetime

    import lds

    options = dict(num_states=2, max_iter=1, progress=False)
    both, single = lds_rc.find_runs("both", 0), lds_rc.find_runs("single_s2", 0)
    both.datasets[0].date, both.datasets[0].save_tags, both.datasets[0].subject = datetime.date(2020, 1, 2), (3,), "M"
    both.fit_lds(**options)
    lds_rc.dataset_collection.load_info()  # trial and channel counts known now: the record differs
    both.fit_lds(overwrite=True, **options)
    record = both.file_run_record.read_bytes()
    assert b'"n_trials": 1' in record

    single.prepare_folder()
    single.datasets[0].subject = "changed"
    fitted = []
    real_fit = lds.fit_em
    monkeypatch.setattr(lds, "fit_em", lambda *a, **k: fitted.append(1) or real_fit(*a, **k))
    with pytest.raises(OverwriteError, match="lfads_tools_run.json"):
        single.fit_lds(**options)
    single.params.c_gen_dim = 3
    with pytest.raises(ValidationError, match="would contradict the folder"):
        single.fit_lds(overwrite=True, **options)
    assert not fitted and not single.path_lds.exists()  # refused before the fit

    twin = RunCollection.from_disk(tmp_path / "runs", "lds", progress=False).find_runs("both", 0)
    first = twin.datasets[0]
    assert (first.date, first.save_tags, first.subject, first.n_trials) == (datetime.date(2020, 1, 2), (3,), "M", 1)
    twin.fit_lds(overwrite=True, **options)
    assert twin.file_run_record.read_bytes() == record and fitted


def test_bad_dataset_date_in_a_record_marks_the_run(rc, tmp_path):
    rc.prepare_folders(progress=False)
    file = rc.find_runs("all", 0).file_run_record
    data = json.loads(file.read_text())
    data["datasets"][0]["date"] = "yesterday"
    file.write_text(json.dumps(data))
    again = RunCollection.from_disk(tmp_path / "runs", "exp1", progress=False)
    assert "not an ISO date" in again.find_runs("all", rc.param_hashes[0]).problem
    assert sum(1 for r in again.runs.flat if r.problem) == 1


def test_load_model_trained_params_in_the_run_dataset_order(tmp_path, dc):
    from lfads_fixtures import save_lightning_checkpoint, torch_state_dict, write_tf_model_params

    rc = RunCollection(tmp_path / "runs", "x", dc)
    rc.add_run_spec(RunSpec("pair", ["dataset002", "dataset001"], dc))
    rc.add_params(RunParams())
    run = rc.find_runs("pair", 0)
    run.prepare_folder()
    values = write_tf_model_params(run.file_model_params, {"dataset001.h5": 4, "dataset002.h5": 6})
    tf = run.load_model_trained_params()
    assert list(tf.dataset_names) == ["dataset002", "dataset001"]
    for i, ds in enumerate(["dataset002.h5", "dataset001.h5"]):
        np.testing.assert_array_equal(tf.factors_to_logrates_W[i], values["factors_to_logrates_W"][ds])
    np.testing.assert_array_equal(tf.gen_to_factors_W, values["gen_to_factors_W"])

    run.file_model_params.unlink()
    folder = run.path_lfads_output / "lightning_checkpoints"
    folder.mkdir()
    state = torch_state_dict([6, 4])  # lfads-torch readouts are matched by position: dataset002 first
    save_lightning_checkpoint(folder / "last.ckpt", state)
    torch_params = run.load_model_trained_params()
    assert list(torch_params.dataset_names) == ["dataset002", "dataset001"]
    for i in range(2):
        np.testing.assert_array_equal(torch_params.factors_to_logrates_W[i], state[f"readout.{i}.weight"].numpy().T)
        np.testing.assert_array_equal(torch_params.factors_to_logrates_b[i],
                                      state[f"readout.{i}.bias"].numpy()[None, :])


def test_legacy_posterior_sample_files_are_read(lfads_tree):
    root, params, truths = lfads_tree
    rc = RunCollection.from_disk(root, "lorenz", progress=False)
    run = rc.find_runs("all", params[0].param_hash)
    for split in ("train", "valid"):
        new = run.path_lfads_output / f"model_runs_dataset001.h5_{split}_posterior_sample_and_average"
        new.rename(run.path_lfads_output / f"model_runs_dataset001.h5_{split}_posterior_sample")
    assert run.on_disk()["posterior_means"]
    assert run.posterior_mean_files()[0][0].name == "model_runs_dataset001.h5_train_posterior_sample"
    means = run.load_posterior_means()
    truth, _ = truths[params[0].param_hash, "all"]
    for name in ("dataset001", "dataset002"):
        inds, rates = truth[name]["train"]
        np.testing.assert_allclose(means[name].rates[inds - 1], rates * 500)
    with pytest.raises(MissingFileError, match="posterior_push_mean"):  # only the sample-and-average kind falls back
        run.load_posterior_means(kind="posterior_push_mean")
