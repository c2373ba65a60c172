"""Speed of reading trained LFADS weights: ModelTrainedParams against h5py / torch.load alone.

A large model (generator 200, controller 128, encoders 128, controller outputs 4,
factors 40, initial condition 64, 40 datasets of 150 neurons) is written as

- a TF LFADS ``model_params`` file with the Adam slots (``LFADS_LFADS_..._Adam:0``,
  ``_Adam_1:0``) and optimizer scalars a real file holds (three times the weights), and
- an lfads-torch Lightning-like checkpoint of the same weights (``torch.save``).

Timed (median of ``--repeats``, the four readers taking turns in every repeat):

- ``ModelTrainedParams.from_tf_model_params`` against h5py alone reading the same
  arrays by their known keys (target: within 1.3x);
- ``ModelTrainedParams.from_lfads_torch`` (restricted unpickler + conversion) against
  ``torch.load(weights_only=True)``.

Prints a table and writes ``benchmarks/results/model_params_load.json``.

    .venv/bin/python benchmarks/model_params_load.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from tabulate import tabulate

from common import write_results

from lds.containers import evaluate_shape  # noqa: E402
from lfads_tools import ModelTrainedParams  # noqa: E402
from lfads_tools.tf_model_params import TF_KEYS  # noqa: E402

SIZES = dict(c_gen_dim=200, c_con_dim=128, c_ic_enc_dim=128, c_ci_enc_dim=128, c_factors_dim=40,
             c_in_factors_dim=40, c_ic_dim=64, c_co_dim=4, c_ext_input_dim=0,
             c_enc_input_dim=40, c_con_input_dim=2 * 128 + 40, c_gen_input_dim=4)
DATASETS, NEURONS = 40, 150


def interleaved_medians(functions: dict, repeats: int) -> dict:
    """Median seconds of each function, run in turn within every repeat (so load on a shared machine hits all)."""
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def large_model(seed: int = 0) -> ModelTrainedParams:
    rng = np.random.default_rng(seed)
    names = [f"dataset{i:03d}" for i in range(DATASETS)]
    dims = {**SIZES, "num_channels": NEURONS}

    def draw(spec):
        shape = [evaluate_shape(axis, dims) for axis in spec.shape]
        return rng.normal(size=shape).astype(np.float32)

    fields = {s.name: ({n: draw(s) for n in names} if s.per_dataset else draw(s)) for s in ModelTrainedParams.FIELDS}
    return ModelTrainedParams.from_dict({**fields, "dataset_names": names})


def add_optimizer_state(path: Path) -> None:
    """Adam slots for every weight and the optimizer scalars, as ``write_model_params`` leaves them."""
    with h5py.File(path, "a") as f:
        for key in list(f):
            stem = key[len("LFADS_"):-len(":0")]
            f[f"LFADS_LFADS_{stem}_Adam:0"] = np.zeros(f[key].shape, np.float32)
            f[f"LFADS_LFADS_{stem}_Adam_1:0"] = np.ones(f[key].shape, np.float32)
        f["LFADS_global_step:0"] = np.int64(100000)
        for name in ("learning_rate", "beta1_power", "beta2_power"):
            f[f"LFADS_{name}:0"] = np.float32(0.5)


def weight_keys(model: ModelTrainedParams) -> list[str]:
    keys = []
    for field, template in TF_KEYS.items():
        value = getattr(model, field)
        if "{}" in template:
            keys += [template.format(f"{name}.h5") + ":0" for name in value.names]
        elif value is not None:
            keys.append(template + ":0")
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    model = large_model()
    keys = weight_keys(model)
    with tempfile.TemporaryDirectory() as tmp:
        tf_path, ckpt_path = Path(tmp) / "model_params", Path(tmp) / "last.ckpt"
        model.save_tf_model_params(tf_path)
        add_optimizer_state(tf_path)
        with h5py.File(tf_path, "r") as f:
            total_keys = len(f)
            megabytes = sum(f[k].nbytes for k in f) / 1e6
        state = {k: torch.from_numpy(v) for k, v in model.to_lfads_torch_state_dict().items()}
        torch.save({"epoch": 1, "global_step": 10, "state_dict": state}, ckpt_path)

        def h5py_alone():
            with h5py.File(tf_path, "r") as f:
                return {key: f[key][()] for key in keys}

        names = model.dataset_names
        loaded = ModelTrainedParams.from_tf_model_params(tf_path, dataset_names=names)
        assert loaded == model, "the benchmark file does not read back equal"
        rows = interleaved_medians({
            "TF model_params: ModelTrainedParams.from_tf_model_params":
                lambda: ModelTrainedParams.from_tf_model_params(tf_path),
            "TF model_params: h5py alone, same arrays by known keys": h5py_alone,
            "lfads-torch .ckpt: ModelTrainedParams.from_lfads_torch":
                lambda: ModelTrainedParams.from_lfads_torch(ckpt_path, dataset_names=names),
            "lfads-torch .ckpt: torch.load(weights_only=True)": lambda: torch.load(ckpt_path, weights_only=True),
        }, args.repeats)
    ratio_tf = rows["TF model_params: ModelTrainedParams.from_tf_model_params"] / \
        rows["TF model_params: h5py alone, same arrays by known keys"]
    ratio_torch = rows["lfads-torch .ckpt: ModelTrainedParams.from_lfads_torch"] / \
        rows["lfads-torch .ckpt: torch.load(weights_only=True)"]
    ratios = [f"{ratio_tf:.2f}x", "1.00x", f"{ratio_torch:.2f}x", "1.00x"]
    print(f"LFADS model: {len(keys)} weight arrays in a file of {total_keys} keys ({megabytes:.1f} MB with Adam "
          f"slots), {DATASETS} datasets x {NEURONS} neurons; median of {args.repeats}")
    print(tabulate([[name, f"{s * 1e3:.1f}", r] for (name, s), r in zip(rows.items(), ratios)],
                   headers=["operation", "median ms", "vs peer"]))
    write_results("model_params_load", {
        "torch": torch.__version__, "h5py": h5py.__version__, "repeats": args.repeats, "sizes": SIZES,
        "datasets": DATASETS, "neurons": NEURONS, "weight_arrays": len(keys), "file_keys": total_keys,
        "file_megabytes": megabytes, "median_seconds": rows, "ratio_tf_to_h5py": ratio_tf,
        "ratio_lfads_torch_to_torch_load": ratio_torch, "target_ratio_tf_to_h5py": 1.3,
    })


if __name__ == "__main__":
    main()
