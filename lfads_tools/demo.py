"""``lfads-tools demo``: the whole workflow on synthetic data, in a folder the user can explore.

1. Lorenz-driven spiking sessions, saved as a dataset folder.
2. A run collection (one run spec per session plus one with all sessions, two
   hyperparameter sets), prepared on disk.
3. For the first hyperparameter set, the files a trained LFADS model leaves behind: a
   ``model_params`` file with the weights of a tiny random LFADS model and a ``fitlog.csv``.
4. An LDS fitted by EM to each of those runs (multi-session for the run with all sessions).
5. The collection rebuilt from disk and its runs table.
6. Parameters saved and reloaded: native file, Bonsai.ML.Lds.Torch folder, TF ``model_params``.
7. An HTML report of the multi-session run.
"""

from __future__ import annotations

import ast
import io
import tempfile
from pathlib import Path

import numpy as np

import lds
from lds.containers import evaluate_shape
from lds.errors import OptionalDependencyError, OverwriteError
from lds.fileio import atomic_write_bytes

from .datasets import DatasetCollection
from .inspection import open_path
from .model_trained_params import ModelTrainedParams
from .report import write_report
from .run_collection import RunCollection, RunSpec
from .run_params import RunParams

__all__ = ["run_demo", "build_demo_collection", "synthetic_model_trained_params", "write_fit_log"]

DEMO_PARAMS = dict(c_factors_dim=4, c_in_factors_dim=4, c_ic_enc_dim=6, c_ic_dim=5, c_gen_dim=12, c_ci_enc_dim=4,
                   c_con_dim=6, c_co_dim=2, c_batch_size=10)


def _section(title: str) -> None:
    print(f"\n=== {title} ===")


def write_fit_log(path, num_epochs: int = 40, seed: int = 0, overwrite: bool = False) -> Path:
    """A ``fitlog.csv`` in TF LFADS's row format with decaying costs and KL/L2 weight ramps."""
    rng = np.random.default_rng(seed)
    rows = []
    for epoch in range(num_epochs):
        decay = np.exp(-epoch / 10)
        weight = min(1.0, (epoch + 1) / 10)
        recon_train, recon_valid = 900 + 600 * decay + rng.normal(0, 4), 930 + 600 * decay + rng.normal(0, 6)
        kl_train, kl_valid = 20 + 30 * decay, 22 + 30 * decay
        rows.append(
            f"epoch,{epoch}, step,{(epoch + 1) * 20}, total,{recon_train + kl_train:.2f},{recon_valid + kl_valid:.2f},"
            f"       recon,{recon_train:.2f},{recon_valid:.2f}, kl,{kl_train:.2f},{kl_valid:.2f}, l2,{0.5 * decay:.5f},"
            f"       klweight,{weight:.2f}, l2weight,{weight:.2f}\n"
        )
    return atomic_write_bytes(path, "".join(rows).encode("ascii"), overwrite=overwrite)


def synthetic_model_trained_params(dataset_names, num_channels, run_params, seed: int = 0):
    """A ``ModelTrainedParams`` with random float32 weights of a tiny LFADS model of ``run_params``'s sizes.

    Shape symbols that name a hyperparameter (``c_gen_dim``, ...) take its value in
    ``run_params``; the inputs of the encoders, controller and generator are those of a
    model without external inputs whose non-causal controller is fed the factors
    (lfads-formats.md §0); the remaining symbol is the dataset's channel count.
    """
    rng = np.random.default_rng(seed)
    symbols = {node.id for spec in ModelTrainedParams.FIELDS for axis in spec.shape
               for node in ast.walk(ast.parse(axis, mode="eval")) if isinstance(node, ast.Name)}
    sizes = {name: getattr(run_params, name, None) for name in symbols}
    sizes.update(c_enc_input_dim=run_params.c_in_factors_dim, c_gen_input_dim=run_params.c_co_dim,
                 c_con_input_dim=2 * run_params.c_ci_enc_dim + run_params.c_factors_dim)

    def draw(spec, channels):
        dims = {name: int(channels if value is None else value) for name, value in sizes.items()
                if value is not None or channels is not None}
        shape = [evaluate_shape(axis, dims) for axis in spec.shape]
        return (rng.normal(size=shape) / np.sqrt(max(shape[0], 1))).astype(np.float32)

    fields = {spec.name: ({name: draw(spec, n) for name, n in zip(dataset_names, num_channels)}
                          if spec.per_dataset else draw(spec, None))
              for spec in ModelTrainedParams.FIELDS}
    return ModelTrainedParams.from_dict({**fields, "dataset_names": list(dataset_names)})


def build_demo_collection(folder, seed: int = 0, progress: bool = False):
    """Datasets, a prepared run collection and the LFADS output files of its first parameter set."""
    folder = Path(folder)
    spikes = lds.lorenz_spikes((12, 16), trials_per_session=8, num_steps=25, seed=seed)
    (folder / "datasets").mkdir(parents=True, exist_ok=True)
    for name, counts in zip(spikes.session_names, spikes.counts):
        npy = io.BytesIO()
        np.save(npy, np.sqrt(counts + 0.5))  # [trials, time, neurons], sqrt(count + 0.5)
        atomic_write_bytes(folder / "datasets" / f"{name}.npy", npy.getvalue())
    datasets = DatasetCollection.from_folder(folder / "datasets", "*.npy")
    datasets.load_info()  # trial and channel counts, recorded in each run folder
    collection = RunCollection(folder / "runs", "demo", datasets)
    collection.add_run_spec([RunSpec(ds.single_run_name, ds, datasets) for ds in datasets]
                            + [RunSpec("all", datasets.names, datasets)])
    collection.add_params(RunParams(**DEMO_PARAMS).sweep(c_gen_dim=[12, 16]))
    collection.prepare_folders(progress=progress)
    for spec_index, run in enumerate(collection.find_runs(None, 0)):
        model = synthetic_model_trained_params(run.dataset_names, [ds.n_channels for ds in run.datasets],
                                               run.params, seed=seed + spec_index)
        model.save_tf_model_params(run.file_model_params)
        write_fit_log(run.file_fit_log, seed=seed + spec_index)
    return collection


def run_demo(out=None, seed: int = 0) -> Path:
    """Run every step of the module docstring, printing what a new user should see."""
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="lfads-tools-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise OverwriteError(f"{out} is not empty; give the demo a new or empty folder")
    print(f"lfads-tools demo (seed {seed}); files go to {out}")

    _section("1-3. Synthetic sessions, a run collection on disk, and trained-LFADS output files")
    collection = build_demo_collection(out, seed=seed)
    print(collection)

    _section("4. Fit an LDS by EM to each run of the first parameter set")
    for run in collection.find_runs(None, 0):
        result = run.fit_lds(num_states=3, max_iter=5, progress=False)
        lls = result.log_likelihoods
        print(f"  {run.name:18s} {len(run.datasets)} dataset(s): log-likelihood {float(lls[0]):.1f} -> "
              f"{float(lls[-1]):.1f} in {result.num_iterations} EM iterations")

    _section("5. The collection rebuilt from disk")
    collection = RunCollection.from_disk(out / "runs", "demo", progress=False)
    print(collection.runs_table())
    run = collection.find_runs("all", 0)
    print(f"\nrc.find_runs('all', 0)  (MATLAB: rc.findRuns('all', 1))\n{run}")

    _section("6. Save and reload parameters: native file, Bonsai folder, TF model_params")
    kalman = run.load_kalman_params()
    print(kalman)
    print(kalman.summary())
    (out / "exported").mkdir()
    saved = kalman.save(out / "exported" / "lds_all.h5", metadata={"run": run.name})
    print(f"native file {saved}: reloads equal: {lds.KalmanParams.load(saved).allclose(kalman)}")
    first = kalman.dataset_names[0]
    bonsai = kalman.save_bonsai(out / "exported" / f"bonsai_{first}", session=first)
    differences = lds.KalmanParams.load_bonsai(bonsai).differences(kalman.session(first))
    print(f"Bonsai folder {bonsai} (session {first} only): fields that differ after reloading: {differences} "
          "(Bonsai stores an absent state offset as zeros)")
    model = run.load_model_trained_params()
    print(model)
    print(model.summary())
    exported = model.save_tf_model_params(out / "exported" / "model_params")
    print(f"TF model_params {exported}: reloads equal: {ModelTrainedParams.load(exported).allclose(model)}")

    _section("7. HTML report")
    try:
        opened = open_path(run.path)
        report = write_report(opened.params, out / "report_all.html", title=f"run {run.name} ({run.params_string})",
                              source=str(run.path), curves=opened.curves)
        print(f"wrote {report}")
    except OptionalDependencyError as exc:
        print(f"skipped: {exc}")
    print("\nNext, try:\n"
          f"  lfads-tools runs {out / 'runs'} demo\n"
          f"  lfads-tools inspect {run.file_model_params}\n"
          f"  lfads-tools inspect {run.file_kalman_params}\n"
          f"  lfads-tools report {run.file_kalman_params} --out lds_report.html")
    return out
