"""Speed of parameter files: native HDF5 (checksums, fsync, read-back) against its peers.

A multi-session KalmanParams sized like a large fit (K = 40 states, 40 sessions of 150
channels: about 9 MB of float64) is written and read with

- ``params.save`` / ``KalmanParams.load`` (atomic, fsynced, SHA-256 of the file and of
  every array, verified on load),
- the peers on the same arrays: plain h5py (no checksums, no fsync), ``np.savez`` /
  ``np.load``, ``torch.save`` / ``torch.load(weights_only=True)``,
- ``to_npz`` / ``from_npz`` and ``save_bonsai`` (one session) / ``load_bonsai``.

Prints medians and ratios to plain h5py and writes ``benchmarks/results/param_files_speed.json``.

    .venv/bin/python benchmarks/param_files_speed.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch
from tabulate import tabulate

from common import median_seconds, write_results

import lds  # noqa: E402
from lds.native import container_arrays  # noqa: E402

K, N, SESSIONS = 40, 150, 40


def flat_arrays(params) -> dict:
    out = {}
    for name, value in container_arrays(params).items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        out.update({name if ds is None else f"{name}/{ds}": a for ds, a in items})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    params = lds.random_stable_lds(K, [N] * SESSIONS, seed=0)
    arrays = flat_arrays(params)
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    megabytes = sum(a.nbytes for a in arrays.values()) / 1e6
    counter = iter(range(10**9))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fresh = lambda suffix: folder / f"f{next(counter)}{suffix}"  # noqa: E731

        def h5py_write(path):
            with h5py.File(path, "w") as f:
                for key, value in arrays.items():
                    f[key] = value

        def h5py_read(path):
            with h5py.File(path, "r") as f:
                return {key: f[key][()] for key in arrays}

        paths = {"native": folder / "p.h5", "h5py": folder / "plain.h5", "npz": folder / "p.npz",
                 "torch": folder / "p.pt", "to_npz": folder / "to.npz", "bonsai": folder / "bonsai"}
        params.save(paths["native"])
        h5py_write(paths["h5py"])
        np.savez(paths["npz"], **arrays)
        torch.save(tensors, paths["torch"])
        params.to_npz(paths["to_npz"])
        params.save_bonsai(paths["bonsai"], session=0)

        rows = {
            "save: native (checksums, fsync)": median_seconds(lambda: params.save(fresh(".h5")), args.repeats),
            "save: plain h5py": median_seconds(lambda: h5py_write(fresh(".h5")), args.repeats),
            "save: np.savez": median_seconds(lambda: np.savez(fresh(".npz"), **arrays), args.repeats),
            "save: torch.save": median_seconds(lambda: torch.save(tensors, fresh(".pt")), args.repeats),
            "save: to_npz": median_seconds(lambda: params.to_npz(fresh(".npz")), args.repeats),
            "load: native (verified)": median_seconds(lambda: lds.KalmanParams.load(paths["native"]), args.repeats),
            "load: native arrays only (verified)": median_seconds(
                lambda: lds.native._read_document(paths["native"]), args.repeats),
            "load: plain h5py": median_seconds(lambda: h5py_read(paths["h5py"]), args.repeats),
            "load: np.load": median_seconds(lambda: dict(np.load(paths["npz"])), args.repeats),
            "load: torch.load, weights_only=True": median_seconds(
                lambda: torch.load(paths["torch"], weights_only=True), args.repeats),
            "load: from_npz": median_seconds(lambda: lds.KalmanParams.from_npz(paths["to_npz"]), args.repeats),
            "save_bonsai (1 session)": median_seconds(
                lambda: params.save_bonsai(fresh(""), session=0), args.repeats),
            "load_bonsai (1 session)": median_seconds(lambda: lds.KalmanParams.load_bonsai(paths["bonsai"]), args.repeats),
        }
    save_ref, load_ref = rows["save: plain h5py"], rows["load: plain h5py"]
    table = [[name, f"{seconds * 1e3:.1f}",
              f"{seconds / (save_ref if name.startswith('save') else load_ref):.2f}x"
              if name.startswith(("save:", "load:")) else ""]
             for name, seconds in rows.items()]
    print(f"KalmanParams K={K}, {SESSIONS} sessions x N={N}: {len(arrays)} arrays, {megabytes:.1f} MB; "
          f"median of {args.repeats}")
    print(tabulate(table, headers=["operation", "median ms", "vs plain h5py"]))
    write_results("param_files_speed", {
        "torch": torch.__version__, "h5py": h5py.__version__, "repeats": args.repeats, "megabytes": megabytes,
        "arrays": len(arrays), "median_seconds": rows,
        "ratio_save_native_to_h5py": rows["save: native (checksums, fsync)"] / save_ref,
        "ratio_load_native_to_h5py": rows["load: native (verified)"] / load_ref,
    })


if __name__ == "__main__":
    main()
