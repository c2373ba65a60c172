"""``lfads-tools demo``: the whole workflow on synthetic data, in a folder the user can explore.

All data are synthetic: Poisson spikes driven by a Lorenz attractor. The "trained" LFADS
weights are random stand-ins of the right shapes (no LFADS model is trained here); the
LDS fits are real.

1. Spike times binned into observations with :mod:`lds.data` (the Neural Latents recipe
   that ``lds.data.load_nwb`` applies to an NWB file's units), saved as train/test files.
2. An LDS fitted by EM from the training file, as ``lfads-tools fit-lds`` does.
3. The test file filtered sample by sample with ``OnlineKalmanFilter``, orthogonalized,
   and compared with the batch filter.
4. Lorenz-driven spiking sessions, saved as a dataset folder; a run collection (one run
   spec per session plus one with all sessions, two hyperparameter sets), prepared on
   disk; for the first hyperparameter set, the files a trained LFADS model leaves
   behind: a ``model_params`` file (random stand-in weights of a tiny LFADS model) and a
   ``fitlog.csv``.
5. An LDS fitted by EM to each of those runs (multi-session for the run with all sessions).
6. The collection rebuilt from disk and its runs table.
7. Parameters saved and reloaded: native file, Bonsai.ML.Lds.Torch folder, TF ``model_params``.
8. An HTML report of the multi-session run.
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
from .lfads_torch import controller_input_dim
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
                 c_con_input_dim=controller_input_dim(run_params.c_ci_enc_dim, run_params.c_factors_dim))

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
    # in folder-name order, as RunCollection.from_disk lists them, so that indices agree
    specs = [RunSpec(ds.single_run_name, ds, datasets) for ds in datasets] + [RunSpec("all", datasets.names, datasets)]
    collection.add_run_spec(sorted(specs, key=lambda spec: spec.name))
    collection.add_params(sorted(RunParams(**DEMO_PARAMS).sweep(c_gen_dim=[12, 16]), key=lambda p: p.param_hash))
    collection.prepare_folders(progress=progress)
    for spec_index, run in enumerate(collection.find_runs(None, 0)):
        model = synthetic_model_trained_params(run.dataset_names, [ds.n_channels for ds in run.datasets],
                                               run.params, seed=seed + spec_index)
        model.save_tf_model_params(run.file_model_params)
        write_fit_log(run.file_fit_log, seed=seed + spec_index)
    return collection


def spikes_to_online_latents(folder, seed: int = 0, bin_width: float = 0.02) -> Path:
    """Sections 1-3 of the module docstring; returns the saved LDS."""
    folder = Path(folder)
    _section("1. Spike times -> binned observations (lds.data), as download_data.py does with NWB files")
    spikes = lds.lorenz_spikes((24,), trials_per_session=40, num_steps=30, bin_width=bin_width, base_rate=15.0,
                               seed=seed)
    print(f"synthetic recording: {spikes}")
    (folder / "spikes").mkdir()
    files = {}
    for split, trials in (("train", slice(0, 30)), ("test", slice(30, 40))):
        counts, _ = lds.data.bin_spike_times(spikes.spike_times(0, trials=trials, seed=seed), bin_width)
        binned = lds.data.BinnedSpikes(observations=lds.data.transform_counts(counts), counts=counts,
                                       bin_width=bin_width, unit_ids=np.arange(counts.shape[1]),
                                       source=f"synthetic {split} spikes")
        files[split] = binned.save(folder / "spikes" / f"{split}.npz")
        print(f"  {split}: {binned} -> {files[split]}")

    _section(f"2. Fit an LDS from the file, as `lfads-tools fit-lds {files['train']} --states 4` does")
    y, kept = lds.data.drop_constant_channels(lds.data.load_observations(files["train"]))
    result = lds.fit_em(y, num_states=4, max_iter=20, progress=False)
    lls = result.log_likelihoods
    model = result.params.save(folder / "spikes" / "lds4.h5", metadata={
        "source": str(files["train"]), "log_likelihoods": lls.tolist(), "kept_channels": kept.tolist()})
    print(f"  EM: log-likelihood {float(lls[0]):.1f} -> {float(lls[-1]):.1f} in {result.num_iterations} "
          f"iterations ({result.termination}); saved {model}")

    _section("3. Online filtering of the test file, sample by sample, orthogonalized (as online_filtering.py)")
    params = lds.KalmanParams.load(model)
    test = lds.data.load_binned(files["test"]).observations[:, kept]
    online = lds.OnlineKalmanFilter(params, orthogonalize=True)
    steps = [online.step(sample) for sample in test]
    means = np.stack([m.numpy() for m, _ in steps])
    sds = np.sqrt(np.stack([np.diag(c.numpy()) for _, c in steps]))
    print("  time (s)   latent 0 ± SD     latent 1 ± SD     latent 2 ± SD")
    for t in range(5):
        latents = "  ".join(f"{means[t, k]:+7.3f} ± {sds[t, k]:.3f}" for k in range(3))
        print(f"  {(t + 1) * bin_width:7.2f}  {latents}")
    print(f"  ... {len(test)} samples in all")
    batch = lds.kalman_filter(params, test)
    batch_means, batch_covs = lds.orthogonalize(params, batch)
    batch_sds = np.sqrt(np.diagonal(batch_covs.numpy(), axis1=1, axis2=2))
    print(f"  the batch filter agrees: largest difference of the means {np.abs(means - batch_means.numpy()).max():.1e}"
          f", of the SDs {np.abs(sds - batch_sds).max():.1e}; log-likelihood {float(online.log_likelihood):.2f} "
          f"online, {float(batch.log_likelihood):.2f} batch")
    return model


def run_demo(out=None, seed: int = 0) -> Path:
    """Run every step of the module docstring, printing what a new user should see."""
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="lfads-tools-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise OverwriteError(f"{out} is not empty; give the demo a new or empty folder")
    print(f"lfads-tools demo (seed {seed}); files go to {out}\n"
          "All data are synthetic: Poisson spikes driven by a Lorenz attractor. The LFADS weights are random\n"
          "stand-ins of the right shapes (no LFADS model is trained here); the LDS fits are real.")
    spikes_model = spikes_to_online_latents(out, seed=seed)

    _section("4. Synthetic sessions, a run collection on disk, and stand-ins for trained-LFADS output files")
    collection = build_demo_collection(out, seed=seed)
    print(collection)

    _section("5. Fit an LDS by EM to each run of the first parameter set")
    for run in collection.find_runs(None, 0):
        result = run.fit_lds(num_states=3, max_iter=5, progress=False)
        lls = result.log_likelihoods
        print(f"  {run.name:18s} {len(run.datasets)} dataset(s): log-likelihood {float(lls[0]):.1f} -> "
              f"{float(lls[-1]):.1f} in {result.num_iterations} EM iterations")

    _section("6. The collection rebuilt from disk (same indices: specs and params in folder-name order)")
    collection = RunCollection.from_disk(out / "runs", "demo", progress=False)
    print(collection.runs_table())
    run = collection.find_runs("all", 0)
    print(f"\nrc.find_runs('all', 0)  (MATLAB: rc.findRuns('all', 1))\n{run}")

    _section("7. Save and reload parameters: native file, Bonsai folder, TF model_params (random stand-in weights)")
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

    _section("8. HTML report")
    try:
        opened = open_path(run.path)
        report = write_report(opened.params, out / "report_all.html", title=f"run {run.name} ({run.params_string})",
                              source=str(run.path), curves=opened.curves)
        print(f"wrote {report}")
    except OptionalDependencyError as exc:
        print(f"skipped: {exc}")
    print("\nNext, try:\n"
          f"  lfads-tools fit-lds {out / 'spikes' / 'train.npz'} --states 6 --out lds6.h5\n"
          f"  lfads-tools inspect {spikes_model}\n"
          f"  lfads-tools runs {out / 'runs'} demo\n"
          f"  lfads-tools inspect {run.file_model_params}\n"
          f"  lfads-tools inspect {run.file_kalman_params}\n"
          f"  lfads-tools report {run.file_kalman_params} --out lds_report.html")
    return out
