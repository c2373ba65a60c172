"""The neural-latents examples run end to end, as a new user runs them (subprocesses, small sizes)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lds

pytest.importorskip("pynwb")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "neural_latents"


def run_script(name, *args, cwd=None):
    return subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


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

