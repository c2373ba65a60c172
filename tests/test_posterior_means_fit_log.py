"""PosteriorMeans (trial order, NaN, spikes/s, bad files) and FitLog (LFADS rows, LVE, bad rows, plot)."""

import h5py
import numpy as np
import pytest

from lds.errors import FileFormatError, MissingFileError
from lfads_tools import FitLog, PosteriorMeans

# ---- fitlog.csv as TF LFADS writes it -----------------------------------------------------------

ROW = ("epoch,{e}, step,{s}, total,{tt:.2f},{tv:.2f},       recon,{rt:.2f},{rv:.2f}, kl,{kt:.2f},{kv:.2f}, "
       "l2,{l2:.5f},       klweight,{kw:.2f}, l2weight,{lw:.2f}\n")
ROW_NO_VALID = ("epoch,{e}, step,{s}, total,{tt:.2f}, recon,{rt:.2f}, kl,{kt:.2f},       l2,{l2:.5f}, "
                "klweight,{kw:.2f}, l2weight,{lw:.2f}\n")


def write_fit_log(path, rows, template=ROW):
    path.write_text("".join(template.format(**r) for r in rows))
    return path


def make_rows(n=8, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for e in range(n):
        ramp = min(1.0, (e + 1) / 4)  # weights reach 1 at epoch 3
        rows.append(dict(e=e, s=100 * (e + 1), tt=rng.uniform(50, 100), tv=rng.uniform(50, 100),
                         rt=rng.uniform(40, 90), rv=rng.uniform(40, 90), kt=rng.uniform(1, 5), kv=rng.uniform(1, 5),
                         l2=rng.uniform(0, 1), kw=ramp, lw=ramp))
    return rows


def test_fit_log_reads_every_column_and_finds_lve(tmp_path):
    rows = make_rows()
    rows[1]["tv"] = 1.0  # lowest valid cost, but the weights are still ramping: must not be the LVE
    log = FitLog(write_fit_log(tmp_path / "fitlog.csv", rows), run_name="single_a")
    assert log.n_epochs == len(rows)
    np.testing.assert_array_equal(log.step, [r["s"] for r in rows])
    np.testing.assert_allclose(log.total_valid, [round(r["tv"], 2) for r in rows])
    np.testing.assert_allclose(log.recon_train, [round(r["rt"], 2) for r in rows])
    np.testing.assert_allclose(log.l2, [round(r["l2"], 5) for r in rows])
    eligible = [i for i, r in enumerate(rows) if r["kw"] == 1 and r["lw"] == 1]
    expected = min(eligible, key=lambda i: (round(rows[i]["tv"], 2), i))
    assert log.lve_index == expected
    assert log.total_valid_lve == pytest.approx(round(rows[expected]["tv"], 2))
    assert log.kl_valid_lve == pytest.approx(round(rows[expected]["kv"], 2))
    assert log.run_name == "single_a"
    text = repr(log)
    assert "FitLog with properties" in text and f"lve_index: {expected}" in text


def test_fit_log_first_minimum_wins_and_none_before_weights_reach_one(tmp_path):
    rows = make_rows(6)
    for i in (3, 5):
        rows[i]["tv"] = 10.0
    assert FitLog(write_fit_log(tmp_path / "a.csv", rows)).lve_index == 3
    for r in rows:
        r["kw"] = 0.5
    log = FitLog(write_fit_log(tmp_path / "b.csv", rows))
    assert log.lve_index is None and np.isnan(log.total_valid_lve)


def test_fit_log_without_validation_set(tmp_path):
    rows = make_rows(3)
    log = FitLog(write_fit_log(tmp_path / "fitlog.csv", rows, ROW_NO_VALID))
    assert np.isnan(log.total_valid).all() and log.lve_index is None
    np.testing.assert_allclose(log.kl_train, [round(r["kt"], 2) for r in rows])


def test_fit_log_bad_rows_are_clear_errors(tmp_path):
    rows = make_rows(3)
    text = "".join(ROW.format(**r) for r in rows)
    short = tmp_path / "short.csv"
    short.write_text(text + "epoch,3, step,400, total,1.00,2.00\n")
    with pytest.raises(FileFormatError, match=r"short\.csv line 4: expected 19"):
        FitLog(short)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(text.replace("klweight", "kl_weight", 1))
    with pytest.raises(FileFormatError, match="line 1.*'klweight'"):
        FitLog(wrong)
    with pytest.raises(MissingFileError, match="fitlog.csv"):
        FitLog(tmp_path / "fitlog.csv")


def test_fit_log_plot(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    log = FitLog(write_fit_log(tmp_path / "fitlog.csv", make_rows()))
    ax = log.plot()
    assert len(ax.get_lines()) == 5  # total and recon, train and valid, plus the LVE marker
    np.testing.assert_array_equal(ax.get_lines()[0].get_xdata(), log.step)


# ---- posterior mean files --------------------------------------------------------------------

def write_posterior(path, n, T=7, D=5, F=3, G=6, U=2, I=4, seed=0, drop=()):
    rng = np.random.default_rng(seed)
    arrays = {"output_dist_params": rng.uniform(0.01, 0.3, (n, T, D)), "factors": rng.normal(size=(n, T, F)),
              "gen_states": rng.normal(size=(n, T, G)), "gen_ics": rng.normal(size=(n, G)),
              "controller_outputs": rng.normal(size=(n, T, U)), "post_g0_mean": rng.normal(size=(n, I)),
              "post_g0_logvar": rng.normal(size=(n, I)), "prior_g0_mean": rng.normal(size=(n, I)),
              "costs": rng.normal(size=n), "nll_bound_vaes": rng.normal(size=n),
              "nll_bound_iwaes": rng.normal(size=n), "train_steps": np.full(n, 100.0)}
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if key not in drop:
                f.create_dataset(key, data=value, compression="gzip")
    return arrays


def test_trials_go_back_to_their_original_order(tmp_path):
    valid_inds = np.arange(0, 12, 5)  # the run manager's split: 0, 5, 10
    train_inds = np.setdiff1d(np.arange(12), valid_inds)
    train = write_posterior(tmp_path / "train", len(train_inds), seed=1)
    valid = write_posterior(tmp_path / "valid", len(valid_inds), seed=2)
    pm = PosteriorMeans.from_tf_files(tmp_path / "train", tmp_path / "valid", train_inds, valid_inds,
                                      spike_bin_ms=10, kind="posterior_sample_and_average", dataset_name="ds")
    for trial in range(12):  # a plain per-trial lookup as the oracle
        source, row = (valid, list(valid_inds).index(trial)) if trial in valid_inds else (
            train, list(train_inds).index(trial))
        np.testing.assert_allclose(pm.rates[trial], source["output_dist_params"][row] * 1000 / 10)
        np.testing.assert_array_equal(pm.factors[trial], source["factors"][row])
        np.testing.assert_array_equal(pm.generator_ics[trial], source["gen_ics"][row])
        assert pm.costs[trial] == source["costs"][row]
    assert pm.rates.dtype == np.float64 and (pm.n_trials, pm.T, pm.n_neurons, pm.n_factors) == (12, 7, 5, 3)
    np.testing.assert_array_equal(pm.time, np.arange(1, 8) * 10.0)
    assert pm.bin_width_ms == 10
    pm.check_shapes()
    text = repr(pm)
    assert "PosteriorMeans with properties" in text and "[12x7x5 float64]" in text and "Basic info" in text


def test_trials_without_output_are_nan(tmp_path):
    valid_inds, train_inds = np.array([0, 5]), np.array([1, 2, 3, 4, 6, 7])
    write_posterior(tmp_path / "train", 4)  # LFADS processed only the first 4 training trials
    write_posterior(tmp_path / "valid", 2)
    pm = PosteriorMeans.from_tf_files(tmp_path / "train", tmp_path / "valid", train_inds, valid_inds,
                                      spike_bin_ms=2, kind="posterior_push_mean", dataset_name="ds")
    assert np.isnan(pm.rates[[6, 7]]).all() and np.isfinite(pm.rates[[0, 1, 2, 3, 4, 5]]).all()


def test_condition_average(tmp_path):
    write_posterior(tmp_path / "train", 3)
    write_posterior(tmp_path / "valid", 1, seed=3)
    pm = PosteriorMeans.from_tf_files(tmp_path / "train", tmp_path / "valid", [1, 2, 3], [0], spike_bin_ms=5,
                                      kind="posterior_sample_and_average", dataset_name="ds",
                                      condition_ids=np.array([1, 2, 1, 2]))
    conditions, averages = pm.condition_averaged("factors")
    np.testing.assert_array_equal(conditions, [1, 2])
    np.testing.assert_allclose(averages[0], (pm.factors[0] + pm.factors[2]) / 2)


def test_posterior_file_problems_are_clear_errors(tmp_path):
    write_posterior(tmp_path / "train", 3, drop=("factors",))
    write_posterior(tmp_path / "valid", 1)
    args = dict(spike_bin_ms=2, kind="posterior_sample_and_average", dataset_name="ds")
    with pytest.raises(FileFormatError, match=r"train lacks the keys \['factors'\]"):
        PosteriorMeans.from_tf_files(tmp_path / "train", tmp_path / "valid", [1, 2, 3], [0], **args)
    write_posterior(tmp_path / "train2", 3)
    write_posterior(tmp_path / "valid2", 1, drop=("gen_ics",))
    with pytest.raises(FileFormatError, match="gen_ics"):
        PosteriorMeans.from_tf_files(tmp_path / "train2", tmp_path / "valid2", [1, 2, 3], [0], **args)
    (tmp_path / "garbage").write_bytes(b"not hdf5")
    with pytest.raises(FileFormatError, match="garbage"):
        PosteriorMeans.from_tf_files(tmp_path / "garbage", tmp_path / "valid2", [1, 2, 3], [0], **args)
    with pytest.raises(MissingFileError, match="nothing"):
        PosteriorMeans.from_tf_files(tmp_path / "nothing", tmp_path / "valid2", [1, 2, 3], [0], **args)
    with pytest.raises(FileFormatError, match="trials but the split lists only"):
        PosteriorMeans.from_tf_files(tmp_path / "train2", tmp_path / "valid", [1, 2], [0], **args)


# ---- lfads-torch output files -----------------------------------------------------------------

def write_torch_output(path, train_inds, valid_inds, T=5, D=4, seed=0, drop=(), inds=True):
    """``lfads_output_<session>.h5``: a copy of the input file plus ``{split}_<field>`` outputs."""
    rng = np.random.default_rng(seed)
    arrays = {}
    with h5py.File(path, "w") as f:
        if inds:
            f["train_inds"], f["valid_inds"] = train_inds, valid_inds
        for split, n in (("train", len(train_inds)), ("valid", len(valid_inds))):
            values = {"output_params": rng.uniform(0.01, 0.3, (n, T, D)), "factors": rng.normal(size=(n, T, 3)),
                      "ic_mean": rng.normal(size=(n, 2)), "ic_std": rng.uniform(0.1, 1, (n, 2)),
                      "gen_init": rng.normal(size=(n, 6)), "gen_states": rng.normal(size=(n, T, 6)),
                      "gen_inputs": rng.normal(size=(n, T, 1)), "co_means": rng.normal(size=(n, T, 1)),
                      "con_states": rng.normal(size=(n, T, 7))}
            for key, value in values.items():
                if f"{split}_{key}" not in drop:
                    f[f"{split}_{key}"] = value
                arrays[split, key] = value
    return arrays


@pytest.mark.parametrize("base", [0, 1])
def test_lfads_torch_output_in_trial_order(tmp_path, base):
    valid_inds, train_inds = np.array([3, 0]), np.array([1, 4, 2, 5])  # any order, 0- or 1-based in the file
    arrays = write_torch_output(tmp_path / "out.h5", train_inds + base, valid_inds + base)
    pm = PosteriorMeans.from_lfads_torch_file(tmp_path / "out.h5", spike_bin_ms=20, dataset_name="sess")
    assert pm.kind == "lfads_torch" and pm.n_trials == 6
    for split, inds in (("train", train_inds), ("valid", valid_inds)):
        for row, trial in enumerate(inds):
            np.testing.assert_allclose(pm.rates[trial], arrays[split, "output_params"][row] * 50)
            np.testing.assert_array_equal(pm.controller_outputs[trial], arrays[split, "gen_inputs"][row])
            np.testing.assert_allclose(pm.post_g0_logvar[trial], np.log(arrays[split, "ic_std"][row] ** 2))
            np.testing.assert_array_equal(pm.generator_ics[trial], arrays[split, "gen_init"][row])
    np.testing.assert_array_equal(pm.valid_inds, valid_inds)


def test_lfads_torch_output_without_indices_and_bad_files(tmp_path):
    arrays = write_torch_output(tmp_path / "plain.h5", np.arange(3), np.arange(2), inds=False)
    pm = PosteriorMeans.from_lfads_torch_file(tmp_path / "plain.h5", spike_bin_ms=10, dataset_name="s")
    np.testing.assert_array_equal(pm.factors[3], arrays["valid", "factors"][0])  # train trials first
    write_torch_output(tmp_path / "dup.h5", np.array([0, 1, 1]), np.array([2, 3]))
    with pytest.raises(FileFormatError, match="dup.h5: train_inds and valid_inds are not the positions"):
        PosteriorMeans.from_lfads_torch_file(tmp_path / "dup.h5", spike_bin_ms=10, dataset_name="s")
    write_torch_output(tmp_path / "short.h5", np.arange(3), np.arange(2), drop=("valid_factors",))
    with pytest.raises(FileFormatError, match=r"short.h5 lacks the keys \['valid_factors'\]"):
        PosteriorMeans.from_lfads_torch_file(tmp_path / "short.h5", spike_bin_ms=10, dataset_name="s")
