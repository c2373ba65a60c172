"""Download the Neural Latents Benchmark MC_Maze_Small recordings (DANDI 000140) and bin them.

Writes DATA_DIR/train.npz and DATA_DIR/test.npz: spike counts in 20 ms bins (edges from
0 to the last spike), transformed with sqrt(count + 0.5), time-major [T, 142].

    python download_data.py              # real data, needs internet
    python download_data.py --synthetic  # same-shaped Lorenz-driven data, offline
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse


import lds
from lds.errors import LfadsToolsError, MissingFileError, require

DANDISET = "000140"
ASSETS = {
    "train": "sub-Jenkins/sub-Jenkins_ses-small_desc-train_behavior+ecephys.nwb",
    "test": "sub-Jenkins/sub-Jenkins_ses-small_desc-test_ecephys.nwb",
}
DANDI_API = "https://api.dandiarchive.org/api"
HERE = Path(__file__).resolve().parent


def check_reachable(api_url: str, timeout: float = 5.0) -> None:
    """Fail fast (instead of a minute of retries) when the archive cannot be reached."""
    url = urlparse(api_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(
            f"cannot reach the DANDI archive at {api_url} ({exc.strerror or exc}); "
            "no internet? Run with --synthetic for same-shaped offline data"
        ) from None


def download(api_url: str, raw_dir: Path) -> dict[str, Path]:
    """Download the train and test NWB files of Dandiset 000140 (skips files already there)."""
    os.environ.setdefault("DANDI_NO_ET", "1")  # no version check over the network
    require("dandi", "nwb")
    from dandi.dandiapi import DandiAPIClient
    from dandi.exceptions import FailedToConnectError, NotFoundError

    check_reachable(api_url)
    raw_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    try:
        with DandiAPIClient(api_url=api_url) as client:
            dandiset = client.get_dandiset(DANDISET, "draft")
            for split, asset_path in ASSETS.items():
                target = raw_dir / Path(asset_path).name
                if not target.exists():
                    print(f"downloading {asset_path} ...")
                    dandiset.get_asset_by_path(asset_path).download(target)
                paths[split] = target
    except NotFoundError as exc:
        raise MissingFileError(f"DANDI archive {api_url}: {exc} (Dandiset {DANDISET}, draft)") from None
    except FailedToConnectError as exc:
        raise ConnectionError(f"cannot connect to the DANDI archive at {api_url}: {exc}") from None
    return paths


def write_synthetic_nwb(raw_dir: Path, neurons: int, trials: int, bins_per_trial: int,
                        bin_width: float, seed: int) -> dict[str, Path]:
    """Lorenz-driven Poisson spikes written as NWB units + trials tables, split 75/25 like MC_Maze."""
    pynwb = require("pynwb", "nwb")

    total = trials + max(1, trials // 3)
    spikes = lds.lorenz_spikes((neurons,), trials_per_session=total, num_steps=bins_per_trial,
                               bin_width=bin_width, base_rate=10.0, seed=seed)
    raw_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, block in (("train", slice(0, trials)), ("test", slice(trials, total))):
        nwbfile = pynwb.NWBFile(session_description=f"synthetic MC_Maze_Small-shaped {split} data",
                                identifier=f"synthetic-{split}-{seed}",
                                session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc))
        for times in spikes.spike_times(0, trials=block, seed=seed):  # trials back to back, one recording
            nwbfile.add_unit(spike_times=times)
        for k in range(block.stop - block.start):
            nwbfile.add_trial(start_time=k * bins_per_trial * bin_width,
                              stop_time=(k + 1) * bins_per_trial * bin_width)
        path = raw_dir / f"synthetic_{split}.nwb"
        with pynwb.NWBHDF5IO(str(path), "w") as io:
            io.write(nwbfile)
        paths[split] = path
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true", help="generate same-shaped data offline")
    parser.add_argument("--data-dir", type=Path, default=HERE / "data",
                        help="output folder (default: data/ beside this script; a folder you give is relative "
                             "to the current folder)")
    parser.add_argument("--bin-width", type=float, default=0.02, help="bin width in seconds (default 0.02)")
    parser.add_argument("--neurons", type=int, default=142, help="synthetic: number of units (default 142)")
    parser.add_argument("--trials", type=int, default=75, help="synthetic: training trials (default 75)")
    parser.add_argument("--bins-per-trial", type=int, default=35, help="synthetic: bins per trial (default 35)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic: random seed (default 0)")
    parser.add_argument("--api-url", default=DANDI_API, help=f"DANDI API (default {DANDI_API})")
    args = parser.parse_args(argv)
    for flag in ("--neurons", "--trials", "--bins-per-trial"):
        if getattr(args, flag[2:].replace("-", "_")) < 1:
            parser.error(f"{flag} must be a positive number")

    raw_dir = args.data_dir / "raw"
    try:
        if args.synthetic:
            nwb_files = write_synthetic_nwb(raw_dir, args.neurons, args.trials, args.bins_per_trial,
                                            args.bin_width, args.seed)
        else:
            nwb_files = download(args.api_url, raw_dir)
        binned = {split: lds.data.load_nwb(path, bin_width=args.bin_width) for split, path in nwb_files.items()}
        for split, data in binned.items():
            out = data.save(args.data_dir / f"{split}.npz", overwrite=True)
            print(f"{split}: {data}\n  -> {out}")
    except (OSError, LfadsToolsError) as exc:  # network, disk, or bad data
        print(f"download_data.py: error: {exc}", file=sys.stderr)
        return 2
    if binned["train"].num_units != binned["test"].num_units:
        print(f"note: the test file has {binned['test'].num_units} units, the training file "
              f"{binned['train'].num_units}; a model trained on one cannot filter the other")
    return 0


if __name__ == "__main__":
    sys.exit(main())
