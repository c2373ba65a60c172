"""Speed of finding runs on disk: RunCollection.from_disk, find_runs and runs_table on 2,000 runs.

Two trees of 20 run specs x 100 parameter sets are built in a temporary folder:

- ``record``: every run has its lfads_tools_run.json (a quarter also have LFADS outputs);
- ``lfads hyperparameters``: folders made elsewhere, holding only the
  ``lfadsOutput/hyperparameters-0.txt`` that TF LFADS writes.

Each step is timed (median of several repeats). The peer is the bare minimum a scan
must do: walk the tree and json.load every record (or hyperparameters file) with the
standard library. Target: under 1 s in total for each tree.

    .venv/bin/python benchmarks/run_collection_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

from common import ROOT, median_seconds, write_results

sys.path.insert(0, str(ROOT / "tests"))
from lfads_fixtures import lfads_hyperparameters  # noqa: E402 (the TF LFADS hyperparameters the tests use)

from lfads_tools import Dataset, DatasetCollection, RunCollection, RunParams, RunSpec  # noqa: E402
from lfads_tools.run_records import RUN_RECORD_FILE, run_record_bytes  # noqa: E402

N_SPECS, N_PARAMS = 20, 100
HPS_FILE = os.path.join("lfadsOutput", "hyperparameters-0.txt")


def declared(root: Path) -> RunCollection:
    dc = DatasetCollection(root / "datasets", "datasets")
    for i in range(N_SPECS):
        Dataset(dc, f"dataset{i:03d}.npy", n_trials=100, n_channels=50)
    rc = RunCollection(root / "runs", "bench", dc)
    rc.add_run_spec([RunSpec(ds.single_run_name, ds) for ds in dc])
    rc.add_params(RunParams(c_co_dim=0).sweep(c_factors_dim=range(2, 2 + N_PARAMS)))
    return rc


def build(root: Path, kind: str) -> RunCollection:
    """Write the tree (files written plainly, without fsync: the build itself is not timed)."""
    rc = declared(root)
    for j, run in enumerate(rc.runs.flat):
        run.path_lfads_output.mkdir(parents=True)
        if kind == "record":
            (run.path / RUN_RECORD_FILE).write_bytes(run_record_bytes(run))
            if j % 4 == 0:
                (run.path_lfads_output / "fitlog.csv").write_text("")
                (run.path_lfads_output / "model_params").write_bytes(b"")
        else:
            (run.path / HPS_FILE).write_text(json.dumps(lfads_hyperparameters(
                run.params, run.dataset_names, data_dir=str(run.path_lfads_input),
                save_dir=str(run.path_lfads_output), dims=50, num_steps=100)))
    return rc


def bare_scan(path: Path, file_name: str) -> int:
    """The peer: os.scandir over the tree and json.load of every run's file."""
    count = 0
    for param in os.scandir(path):
        if param.is_dir() and param.name.startswith("param_"):
            for run in os.scandir(param.path):
                with open(os.path.join(run.path, file_name)) as f:
                    json.load(f)
                count += 1
    return count


def measure(kind: str, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        made = build(root, kind)
        rc = RunCollection.from_disk(root / "runs", "bench", progress=False)
        assert rc.n_runs == made.n_runs == N_SPECS * N_PARAMS
        some_hash = made.params[N_PARAMS // 2].param_hash

        def queries():
            rc.find_runs("single_dataset007", some_hash)
            rc.find_runs(None, some_hash[6:])
            rc.find_runs(["single_dataset001", "single_dataset019"], list(range(0, N_PARAMS, 10)))
            rc.find_runs()

        file_name = RUN_RECORD_FILE if kind == "record" else HPS_FILE
        return {
            "from_disk": median_seconds(lambda: RunCollection.from_disk(root / "runs", "bench", progress=False),
                                     repeats),
            "find_runs (4 queries)": median_seconds(queries, repeats),
            "runs_table": median_seconds(rc.runs_table, repeats),
            "peer: bare scandir + json.load": median_seconds(lambda: bare_scan(root / "runs" / "bench", file_name),
                                                          repeats),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"RunCollection on {N_SPECS * N_PARAMS} runs ({N_SPECS} run specs x {N_PARAMS} params), "
          f"median of {args.repeats}")
    cases = {}
    for kind in ("record", "lfads hyperparameters"):
        results = measure(kind, args.repeats)
        total = results["from_disk"] + results["find_runs (4 queries)"] + results["runs_table"]
        peer = results["peer: bare scandir + json.load"]
        rows = [[name, f"{seconds * 1000:.1f}", f"{seconds / peer:.2f}"] for name, seconds in results.items()]
        rows.append(["total (from_disk + find_runs + runs_table)", f"{total * 1000:.1f}", f"{total / peer:.2f}"])
        print(f"\nrun folders described by: {kind}")
        print(tabulate(rows, headers=["step", "median ms", "x peer"]))
        print(f"target: total under 1000 ms -> {'met' if total < 1.0 else 'NOT met'}")
        cases[kind] = {"median_seconds": results, "total_seconds": total, "total_over_peer": total / peer}
    write_results("run_collection_speed", {"runs": N_SPECS * N_PARAMS, "repeats": args.repeats, "cases": cases,
                                           "target_seconds": 1.0})


if __name__ == "__main__":
    main()
