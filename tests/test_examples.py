"""The neural-latents examples run end to end, as a new user runs them (subprocesses, small sizes)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lds

pytest.importorskip("pynwb")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "neural_latents"


def run_script(name, *args, cwd=None):
    """The script in a new process that imports this checkout's packages (whatever is installed)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env=env)


@pytest.fixture(scope="module")
def neural_latents(tmp_path_factory):
    """download_data --synthetic, then train_model (native + Bonsai), on small sizes."""
    root = tmp_path_factory.mktemp("neural_latents")
    data, model, bonsai = root / "data", root / "models" / "nl.h5", root / "models" / "bonsai"
    download = run_script("download_data.py", "--synthetic", "--data-dir", data, "--neurons", 12, "--trials", 6,
                          "--bins-per-trial", 15)
    assert download.returncode == 0, download.stderr
    train = run_script("train_model.py", "--data-dir", data, "--model", model, "--bonsai", bonsai,
                       "--states", 2, "--max-iter", 3)
    assert train.returncode == 0, train.stderr
    return root, data, model, bonsai, download, train


def test_download_synthetic_writes_binned_arrays(neural_latents):
    _, data, *_, download, _ = neural_latents
    train, test = lds.data.load_binned(data / "train.npz"), lds.data.load_binned(data / "test.npz")
    assert train.num_units == test.num_units == 12 and train.bin_width == 0.02
    assert train.num_trials == 6 and test.num_trials == 2
    assert train.num_bins <= 6 * 15 and train.num_bins >= 6 * 15 - 1  # edges end at the last spike
    np.testing.assert_allclose(train.observations, np.sqrt(train.counts + 0.5))
    assert (data / "raw" / "synthetic_train.nwb").is_file()
    assert "train: BinnedSpikes(" in download.stdout


def test_download_without_network_fails_in_one_line(tmp_path):
    result = run_script("download_data.py", "--data-dir", tmp_path, "--api-url", "http://127.0.0.1:9/api")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the DANDI archive" in lines[0] and "--synthetic" in lines[0]


def test_train_model_saves_native_and_bonsai(neural_latents):
    _, data, model, bonsai, _, train = neural_latents
    params = lds.KalmanParams.load(model)
    assert params.num_states == 2 and params.num_observations == 12
    from_bonsai = lds.KalmanParams.load_bonsai(bonsai)
    # Bonsai needs both offsets, so an absent state offset is written as zeros
    assert params.differences(from_bonsai) == ["state_offset"] and params.b is None
    assert float(from_bonsai.b.abs().max()) == 0.0
    info = lds.native.read_info(model)
    assert len(info.metadata["user"]["log_likelihoods"]) >= 2
    assert "KalmanParams with properties:" in train.stdout and "transition_matrix" in train.stdout
    again = run_script("train_model.py", "--data-dir", data, "--model", model, "--states", 2, "--max-iter", 1)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_online_filtering_writes_png_and_matches_batch_filter(neural_latents):
    root, data, model, bonsai, *_ = neural_latents
    png = root / "online.png"
    result = run_script("online_filtering.py", "--data-dir", data, "--bonsai", bonsai, "--no-show",
                        "--png", png, "--steps", 25, "--latents", 2)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "filtered 25 samples" in result.stdout
    # the online log-likelihood printed equals the batch filter's on the same 25 samples
    params = lds.KalmanParams.load(model)
    y = lds.data.load_binned(data / "test.npz").observations[:25]
    batch = float(lds.kalman_filter(params, y).log_likelihood)
    printed = float(result.stdout.split("log-likelihood ")[1].split()[0])
    assert printed == pytest.approx(batch, rel=1e-5)


def test_online_filtering_rejects_other_unit_count(neural_latents, tmp_path):
    _, data, *_ = neural_latents
    other = lds.random_stable_lds(2, 5, seed=0)
    other.save(tmp_path / "five.h5")
    result = run_script("online_filtering.py", "--data-dir", data, "--model", tmp_path / "five.h5", "--no-show",
                        "--png", tmp_path / "x.png")
    assert result.returncode == 2 and "reads 5 units" in result.stderr and "has 12" in result.stderr



# ---- in this process (faster): the scripts' main(argv) -------------------------------------------
def script(name):
    spec = importlib.util.spec_from_file_location(name[:-3], EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def call(module, *args):
    return module.main([str(a) for a in args])


def one_line_error(capsys, script_name):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"{script_name}: error: "), err
    return err


def test_a_unit_silent_in_training_is_left_out_and_filtering_uses_the_same_units(tmp_path, capsys):
    spikes = lds.lorenz_spikes((6,), trials_per_session=8, num_steps=25, bin_width=0.02, base_rate=20.0, seed=4)
    counts = spikes.counts[0].reshape(-1, 6)
    train_counts, test_counts = counts[:150].copy(), counts[150:]
    train_counts[:, 2] = 0  # unit id 12 never fires while training
    for name, block in (("train", train_counts), ("test", test_counts)):
        lds.data.BinnedSpikes(observations=lds.data.transform_counts(block), counts=block, bin_width=0.02,
                              unit_ids=np.arange(10, 16), source=f"{name}.nwb").save(tmp_path / f"{name}.npz")
    model = tmp_path / "model.h5"
    assert call(script("train_model.py"), "--data-dir", tmp_path, "--model", model, "--states", 2,
                "--max-iter", 2) == 0
    assert "leaving out 1 units that never fire in the training data (unit ids [12])" in capsys.readouterr().out
    assert lds.native.read_info(model).metadata["user"]["unit_ids"] == [10, 11, 13, 14, 15]
    assert call(script("online_filtering.py"), "--data-dir", tmp_path, "--model", model, "--no-show",
                "--png", tmp_path / "o.png", "--steps", 20) == 0
    printed = float(capsys.readouterr().out.split("log-likelihood ")[1].split()[0])
    test = lds.data.load_binned(tmp_path / "test.npz").select_units([10, 11, 13, 14, 15])
    batch = float(lds.kalman_filter(lds.KalmanParams.load(model), test.observations[:20]).log_likelihood)
    assert printed == pytest.approx(batch, rel=1e-5)  # printed with 6 digits


def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        call(script("download_data.py"), "--synthetic", "--data-dir", tmp_path, "--trials", "0")
    assert exit_info.value.code == 2 and "--trials must be a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        call(script("online_filtering.py"), "--data-dir", tmp_path, "--steps", "0", "--no-show")
    assert exit_info.value.code == 2 and "--steps must be positive" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "old.h5").write_bytes(b"a model saved before")
    assert call(script("train_model.py"), "--data-dir", tmp_path, "--model", tmp_path / "old.h5") == 2
    err = one_line_error(capsys, "train_model.py")  # refused before reading the (missing) training data
    assert f"--model {tmp_path / 'old.h5'} already exists; pass --overwrite to replace it" in err


def test_missing_extras_and_archive_errors_are_one_line(tmp_path, monkeypatch, capsys):
    import dandi.dandiapi
    from dandi.exceptions import NotFoundError

    download = script("download_data.py")

    class NoDandiset:
        def __init__(self, api_url):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def get_dandiset(self, identifier, version):
            raise NotFoundError(f"No such Dandiset: {identifier!r}")

    monkeypatch.setattr(download, "check_reachable", lambda url: None)
    monkeypatch.setattr(dandi.dandiapi, "DandiAPIClient", NoDandiset)
    assert call(download, "--data-dir", tmp_path) == 2
    assert "No such Dandiset: '000140'" in one_line_error(capsys, "download_data.py")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
    assert call(script("inspect_lfads_run.py"), "--root", tmp_path, "--no-show") == 2
    assert "pip install 'lfads-tools[plot]'" in one_line_error(capsys, "inspect_lfads_run.py")


def test_inspect_lfads_run_builds_the_collection_its_defaults_then_open(tmp_path, capsys):
    inspect = script("inspect_lfads_run.py")
    root = tmp_path / "lfads_runs" / "runs"
    assert call(inspect, "--synthetic", "--root", root, "--no-show", "--png", tmp_path / "w.png") == 0
    out = capsys.readouterr().out
    assert "building a synthetic run collection" in out and "ModelTrainedParams with properties:" in out
    assert "name: 'all'" in out and (tmp_path / "w.png").read_bytes().startswith(b"\x89PNG")
    # without --synthetic the same ROOT and NAME open the collection just built
    assert call(inspect, "--root", root, "--spec", "single_session_1", "--no-show", "--png", tmp_path / "s.png") == 0
    out = capsys.readouterr().out
    assert "building" not in out and "name: 'single_session_1'" in out and "x_to_infac_W: {1x1 cell}" in out
    assert call(inspect, "--synthetic", "--root", tmp_path / "elsewhere", "--no-show") == 2
    err = one_line_error(capsys, "inspect_lfads_run.py")
    assert "--synthetic builds the collection demo in a folder named runs" in err
