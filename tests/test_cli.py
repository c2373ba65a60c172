"""The lfads-tools command line tool: every command through main(), exit codes, one-line errors, --help."""

import base64
import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lds
from lds.errors import OverwriteError
from lfads_fixtures import save_lightning_checkpoint, torch_state_dict, write_tf_model_params
from lfads_tools import Dataset, ModelTrainedParams, RunCollection, RunParams, RunSpec
from lfads_tools.cli import main
from lfads_tools.demo import write_fit_log

COMMANDS = ("inspect", "runs", "fit-lds", "report", "demo")


def run_main(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lfads-tools ") and ": error: " in lines[0], err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def observations(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    y = np.asarray(lds.sample_lds(lds.random_stable_lds(2, 5, seed=3), 80, seed=3).observations)
    np.save(folder / "y.npy", y)
    return folder, y


@pytest.fixture(scope="module")
def fitted(observations):
    folder, y = observations
    code = main(["fit-lds", str(folder / "y.npy"), "--states", "2", "--max-iter", "4", "--out",
                 str(folder / "fit.h5"), "--bonsai", str(folder / "bonsai"), "--quiet"])
    assert code == 0
    return folder / "fit.h5", folder / "bonsai"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"lfads-tools {command}" in text.split("examples:")[1]


def test_fit_lds_equals_direct_em_and_records_history(observations, fitted, capsys):
    _, y = observations
    native, bonsai = fitted
    direct = lds.fit_em(y, num_states=2, max_iter=4, progress=False)
    saved = lds.KalmanParams.load(native)
    assert saved.allclose(direct.params, rtol=1e-10, atol=1e-12)
    user = lds.native.read_info(native).metadata["user"]
    np.testing.assert_allclose(user["log_likelihoods"], direct.log_likelihoods.numpy())
    assert user["num_states"] == 2 and user["source"].endswith("y.npy")
    # the subspace start fits an observation offset; Bonsai then stores the absent state offset as zeros
    assert saved.differences(lds.KalmanParams.load_bonsai(bonsai)) == ["state_offset"]


def test_fit_lds_from_nwb_with_trials(tmp_path, capsys):
    pytest.importorskip("pynwb")
    from test_data_nwb import write_nwb

    rng = np.random.default_rng(0)
    spikes = [np.sort(rng.uniform(0, 2.0, size=40)) for _ in range(4)]
    path = write_nwb(tmp_path / "rec.nwb", spikes, trials=[(0.0, 1.0), (1.0, 2.0)])
    code, out, _ = run_main(capsys, "fit-lds", path, "--states", "2", "--max-iter", "2", "--trials",
                            "--bin-width", "0.05", "--out", tmp_path / "nwb_fit.h5", "--quiet")
    assert code == 0 and "(2 trials)" in out
    assert lds.KalmanParams.load(tmp_path / "nwb_fit.h5").num_observations == 4


def test_fit_lds_bad_input_is_one_line(observations, fitted, tmp_path, capsys):
    folder, _ = observations
    native, _ = fitted
    assert_one_line_error(*run_main(capsys, "fit-lds", tmp_path / "none.npy", "--states", "2", "--out",
                                    tmp_path / "o.h5")[::2], "none.npy does not exist")
    assert_one_line_error(*run_main(capsys, "fit-lds", folder / "y.npy", "--states", "2", "--out", native)[::2],
                          "already exists")
    assert_one_line_error(*run_main(capsys, "fit-lds", folder / "y.npy", "--states", "2", "--max-iter", "0",
                                    "--out", tmp_path / "o.h5")[::2], "max_iter")
    with pytest.raises(SystemExit) as exit_info:  # argparse: --states missing
        main(["fit-lds", str(folder / "y.npy"), "--out", str(tmp_path / "o.h5")])
    assert exit_info.value.code == 2


def test_fit_lds_checks_every_output_before_fitting(observations, fitted, tmp_path, capsys):
    folder, _ = observations
    native, bonsai = fitted
    y = folder / "y.npy"
    cases = [
        (["--out", tmp_path / "nodir" / "o.h5"], ["--out", "folder", "nodir does not exist"]),
        (["--out", native], ["--out", "already exists; pass --overwrite to replace it"]),
        (["--out", tmp_path], ["--out", "is a folder"]),
        (["--out", tmp_path / "o.h5", "--bonsai", native], ["--bonsai", "is a file"]),
        (["--out", tmp_path / "o.h5", "--bonsai", bonsai], ["--bonsai", "already holds Bonsai parameter files",
                                                            "pass --overwrite"]),
        (["--out", tmp_path / "o.h5", "--bonsai", tmp_path / "o.h5"], ["--out and --bonsai are both"]),
    ]
    for outputs, fragments in cases:
        code, out, err = run_main(capsys, "fit-lds", y, "--states", "2", "--quiet", *outputs)
        assert_one_line_error(code, err, *fragments)
        assert "fitting" not in out  # refused before loading and fitting
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # and nothing was written


def test_fit_lds_leaves_out_constant_channels_and_records_the_kept_ones(observations, tmp_path, capsys):
    _, y = observations
    with_constant = np.insert(y, 1, 0.25, axis=1)  # a channel that never changes, as a unit without spikes
    np.save(tmp_path / "c.npy", with_constant)
    code, out, _ = run_main(capsys, "fit-lds", tmp_path / "c.npy", "--states", "2", "--max-iter", "3", "--out",
                            tmp_path / "c.h5", "--quiet")
    assert code == 0
    assert "leaving out 1 of 6 channels that never change (0-based columns [1])" in out
    saved = lds.KalmanParams.load(tmp_path / "c.h5")
    assert lds.native.read_info(tmp_path / "c.h5").metadata["user"]["kept_channels"] == [0, 2, 3, 4, 5]
    direct = lds.fit_em(y, num_states=2, max_iter=3, progress=False)  # the same fit as without the channel
    assert saved.allclose(direct.params, rtol=1e-10, atol=1e-12)
    np.save(tmp_path / "flat.npy", np.ones((50, 3)))
    assert_one_line_error(*run_main(capsys, "fit-lds", tmp_path / "flat.npy", "--states", "1", "--out",
                                    tmp_path / "f.h5")[::2], "all 3 channels are constant")
    np.save(tmp_path / "huge.npy", y * 1e200)
    assert_one_line_error(*run_main(capsys, "fit-lds", tmp_path / "huge.npy", "--states", "2", "--out",
                                    tmp_path / "h.h5")[::2], "too large to fit", "rescale")


def test_fit_lds_nwb_with_a_silent_unit(tmp_path, capsys):
    pytest.importorskip("pynwb")
    from test_data_nwb import write_nwb

    rng = np.random.default_rng(1)
    spikes = [np.sort(rng.uniform(0, 2.0, size=40)) for _ in range(3)] + [[]]
    path = write_nwb(tmp_path / "rec.nwb", spikes)
    code, out, err = run_main(capsys, "fit-lds", path, "--states", "2", "--max-iter", "2", "--bin-width", "0.05",
                              "--out", tmp_path / "fit.h5", "--quiet")
    assert code == 0
    warning, = err.strip().splitlines()  # one line, naming the unit
    assert warning.startswith("lfads-tools fit-lds: warning: rec.nwb: 1 of 4 units never fire (unit ids [3])")
    assert "leaving out 1 of 4 channels" in out
    assert lds.KalmanParams.load(tmp_path / "fit.h5").num_observations == 3
    assert_one_line_error(*run_main(capsys, "fit-lds", path, "--states", "2", "--bin-width", "1e-8", "--out",
                                    tmp_path / "tiny.h5")[::2], "bins x 4 units", "wider bin width")


def test_inspect_native_in_every_format(fitted, capsys):
    native, _ = fitted
    params = lds.KalmanParams.load(native)
    code, text, _ = run_main(capsys, "inspect", native)
    assert code == 0 and params.format() in text and params.summary() in text
    code, md, _ = run_main(capsys, "inspect", native, "--format", "markdown")
    assert code == 0 and params.summary(tablefmt="github") in md and "```" in md
    code, page, _ = run_main(capsys, "inspect", native, "--format", "html")
    assert code == 0 and params._repr_html_() in page and "<pre>" in page
    code, raw, _ = run_main(capsys, "inspect", native, "--format", "json")
    payload = json.loads(raw)
    assert code == 0 and payload["class"] == "KalmanParams"
    assert payload["fields"] == json.loads(json.dumps(params.summary_rows()))
    assert len(payload["metadata"]["log_likelihoods"]) >= 2


def test_inspect_bonsai_folder_and_errors(fitted, tmp_path, capsys):
    _, bonsai = fitted
    code, text, _ = run_main(capsys, "inspect", bonsai)
    assert code == 0 and "Bonsai.ML.Lds.Torch parameter folder" in text and "transition_matrix" in text
    assert_one_line_error(*run_main(capsys, "inspect", tmp_path / "missing.h5")[::2], "missing.h5 does not exist")
    assert_one_line_error(*run_main(capsys, "inspect", tmp_path)[::2], "neither Bonsai parameter files")


def test_report_of_a_native_fit(fitted, tmp_path, capsys):
    native, _ = fitted
    out = tmp_path / "report.html"
    code, stdout, _ = run_main(capsys, "report", native, "--out", out, "--title", "LDS fit")
    assert code == 0 and f"wrote {out}" in stdout
    text = out.read_text()
    for section in ("overview", "summary", "eigenvalues", "readouts", "heatmaps", "curves"):
        assert f'<section id="{section}">' in text
    assert text.count("data:image/png;base64,") >= 4 and "<title>LDS fit</title>" in text
    assert_one_line_error(*run_main(capsys, "report", native, "--out", out)[::2], "already exists")


@pytest.fixture(scope="module")
def lfads_files(tmp_path_factory):
    """A TF LFADS output folder (model_params + fitlog.csv), an lfads-torch checkpoint and an LDS run folder."""
    root = tmp_path_factory.mktemp("lfads")
    output = root / "run" / "lfadsOutput"
    output.mkdir(parents=True)
    values = write_tf_model_params(output / "model_params", {"dsA.h5": 5, "dsB.h5": 6}, controller=False)
    write_fit_log(output / "fitlog.csv", num_epochs=12)
    save_lightning_checkpoint(root / "last.ckpt", torch_state_dict([5, 6], controller=False))
    (root / "lds_run" / "lds").mkdir(parents=True)
    lds.random_stable_lds(2, 4, seed=0).save(root / "lds_run" / "lds" / "kalman_params.h5")
    (root / "lds_run" / "lds" / "em_history.json").write_text(json.dumps({"log_likelihoods": [-9.0, -5.0, -4.5]}))
    return root, values


def test_inspect_lfads_files_and_run_folders(lfads_files, capsys):
    root, _ = lfads_files
    model_params = root / "run" / "lfadsOutput" / "model_params"
    expected = ModelTrainedParams.load(model_params)
    for path, kind in ((model_params, "TF LFADS model_params file"), (root / "run", "LFADS run folder")):
        code, text, _ = run_main(capsys, "inspect", path)
        assert code == 0 and f"{path} ({kind})" in text
        assert expected.format() in text and expected.summary() in text
    code, raw, _ = run_main(capsys, "inspect", root / "last.ckpt", "--format", "json")
    payload = json.loads(raw)
    assert code == 0 and payload["kind"] == "lfads-torch checkpoint" and payload["class"] == "ModelTrainedParams"
    fields = {row["field"]: row for row in payload["fields"]}
    assert len(payload["dataset_names"]) == 2 and fields["gen_gengru_rh_to_c_W"]["shape"] == "7x7"
    code, text, _ = run_main(capsys, "inspect", root / "lds_run", "--format", "markdown")
    assert code == 0 and "native parameter file (KalmanParams)" in text and "transition_matrix" in text


def png_width(data_uri_png: str) -> int:
    return int.from_bytes(base64.b64decode(data_uri_png)[16:20], "big")  # the IHDR width


def test_report_of_an_lfads_model_params_file(lfads_files, tmp_path, capsys):
    root, values = lfads_files
    out = tmp_path / "mtp.html"
    code, _, _ = run_main(capsys, "report", root / "run" / "lfadsOutput" / "model_params", "--out", out)
    assert code == 0
    text = out.read_text()
    for section in ("overview", "summary", "eigenvalues", "readouts", "heatmaps", "curves"):
        assert f'<section id="{section}">' in text
    radius = np.abs(np.linalg.eigvals(values["gen_gengru_rh_to_c_W"].astype(np.float64))).max()
    assert f"Spectral radius <strong>{radius:.4g}</strong> (7 eigenvalues)" in text
    assert 'alt="eigenvalues of gen_gengru_rh_to_c_W"' in text
    readouts = re.search(r'alt="readout matrices factors_to_logrates_W" src="data:image/png;base64,([^"]+)"', text)
    assert readouts and png_width(readouts.group(1)) == round(2 * 3.4 * 90)  # one panel per dataset, side by side
    assert "factors_to_logrates_W[dsB.h5]" in text  # the per-dataset rows of the summary
    assert "Lowest validation cost" in text  # the fitlog.csv beside the file


@pytest.fixture
def collection(tmp_path):
    a, b = Dataset(name="a"), Dataset(name="b")
    rc = RunCollection(tmp_path / "runs", "exp", None)
    rc.add_run_spec([RunSpec("single_a", [a]), RunSpec("both", [a, b])])
    rc.add_params(RunParams(c_batch_size=10).sweep(c_factors_dim=[2, 4]))
    rc.prepare_folders(progress=False)
    return rc


def test_runs_table_and_filters(collection, capsys):
    root = collection.root_path
    code, out, _ = run_main(capsys, "runs", root, "exp")
    assert code == 0 and "4 of 4 runs" in out
    for folder in collection.param_hashes:
        assert folder in out
    first, second = collection.param_hashes
    code, out, _ = run_main(capsys, "runs", root, "exp", "--spec", "both", "--params", second)
    assert code == 0 and "1 of 4 runs" in out and first not in out and "single_a" not in out
    code, out, _ = run_main(capsys, "runs", root, "exp", "--params", "0", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and sorted(r["name"] for r in rows) == ["both", "single_a"]
    assert {r["params"] for r in rows} == {sorted(collection.param_hashes)[0]}  # from disk: folder order
    assert_one_line_error(*run_main(capsys, "runs", root, "exp", "--spec", "nope")[::2], "nope", "single_a")
    assert_one_line_error(*run_main(capsys, "runs", root, "missing")[::2], "does not exist")
    (root / "not_runs" / "something").mkdir(parents=True)
    assert_one_line_error(*run_main(capsys, "runs", root, "not_runs")[::2], "not a run collection", "param_")


def test_a_closed_pipe_ends_quietly(collection, monkeypatch, capsys):
    """``lfads-tools runs ... | head``: the reader is gone before the table is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        code = main(["runs", str(collection.root_path), "exp"])
        monkeypatch.undo()
        assert code == 1 and capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory):
    """``lfads-tools demo --out lfads-demo`` once, for the tests below: the folder and what it printed."""
    folder = tmp_path_factory.mktemp("demo") / "lfads-demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--out", str(folder)])
    assert code == 0
    return folder, printed.getvalue()


def test_demo_runs_the_whole_path(demo_output, capsys):
    folder, out = demo_output
    words = " ".join(out.split())
    assert "The LFADS weights are random stand-ins" in words and "driven by a Lorenz attractor" in words
    for name in ("spikes/train.npz", "spikes/test.npz", "spikes/lds4.h5", "report_all.html", "exported/lds_all.h5"):
        assert (folder / name).is_file(), name
    assert "native file" in out and "reloads equal: True" in out
    # the online filter printed latents +- SD and agrees with the batch filter
    assert re.search(r"\n +0\.02 +[+-]\d\.\d{3} ± \d\.\d{3}", out)
    agreement = re.search(r"means ([\d.e+-]+), of the SDs ([\d.e+-]+); log-likelihood ([\d.-]+) online, ([\d.-]+) "
                          r"batch", out)
    assert float(agreement[1]) < 1e-10 and float(agreement[2]) < 1e-10 and agreement[3] == agreement[4]
    # run spec and params indices are the same before and after rebuilding from disk
    assert "[0] all  (2 datasets" in out and re.search(r"\(0,0\) +all +param_", out)
    # the report of the run with all sessions shows the stand-in LFADS model's generator and readouts
    report = (folder / "report_all.html").read_text()
    run = RunCollection.from_disk(folder / "runs", "demo", progress=False).find_runs("all", 0)
    generator = np.asarray(run.load_model_trained_params().gen_gengru_rh_to_c_W, dtype=np.float64)
    assert f"Spectral radius <strong>{np.abs(np.linalg.eigvals(generator)).max():.4g}</strong>" in report
    assert 'alt="eigenvalues of gen_gengru_rh_to_c_W"' in report and 'alt="readout matrices' in report
    assert_one_line_error(*run_main(capsys, "demo", "--out", folder)[::2], "not empty")


def readme_examples():
    """The README's ``>>>`` lines with their expected output (blank lines included), as doctest Examples."""
    import doctest

    text = (Path(__file__).parents[1] / "README.md").read_text()
    examples = []
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        for chunk in re.split(r"^>>> ", block, flags=re.M)[1:]:
            lines = chunk.rstrip("\n").split("\n")
            source = [lines.pop(0)]
            while lines and lines[0].startswith("... "):
                source.append(lines.pop(0)[4:])
            want = "\n".join(lines).rstrip()
            examples.append(doctest.Example("\n".join(source) + "\n", want + "\n" if want else ""))
    return examples


def test_readme_tour_is_true(demo_output, monkeypatch):
    import doctest

    monkeypatch.chdir(demo_output[0].parent)  # the tour reads the demo's output in lfads-demo/
    examples = readme_examples()
    assert len(examples) > 20
    test = doctest.DocTest(examples, {}, "README.md", None, 0, None)
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)


def test_demo_datasets_are_written_atomically_and_never_replaced(tmp_path, monkeypatch):
    from lfads_tools.demo import build_demo_collection

    build_demo_collection(tmp_path / "a")
    names = sorted(p.name for p in (tmp_path / "a" / "datasets").iterdir())
    data = np.load(tmp_path / "a" / "datasets" / names[0], allow_pickle=False)
    assert data.ndim == 3 and np.all(data >= np.sqrt(0.5))  # [trials, time, neurons] of sqrt(count + 0.5)
    own = tmp_path / "b" / "datasets" / names[0]
    own.parent.mkdir(parents=True)
    own.write_bytes(b"the user's own data")
    with pytest.raises(OverwriteError, match=names[0]):
        build_demo_collection(tmp_path / "b")
    # kept as it was, and the refused write left no temporary file beside it
    assert own.read_bytes() == b"the user's own data" and [p.name for p in own.parent.iterdir()] == [names[0]]

    # atomically: a write cut short (half of the bytes, then an error) leaves no partial dataset under its
    # name and no temporary file
    write_bytes = Path.write_bytes

    def half_then_fail(self, data):
        write_bytes(self, data[:len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        build_demo_collection(tmp_path / "c")
    assert list((tmp_path / "c" / "datasets").iterdir()) == []


def test_console_script(tmp_path):
    script = Path(sys.executable).parent / "lfads-tools"
    if not script.exists():
        pytest.skip("the package is not installed with its console script in this environment")
    ok = subprocess.run([str(script), "inspect", "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "lfads-tools inspect" in ok.stdout
    bad = subprocess.run([str(script), "inspect", str(tmp_path / "nothing.h5")], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert bad.stderr.startswith("lfads-tools inspect: error:") and "nothing.h5 does not exist" in bad.stderr
