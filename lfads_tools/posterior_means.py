"""``PosteriorMeans``: LFADS posterior-mean outputs of one dataset, in original trial order.

TF LFADS writes ``model_runs_<ds>.h5_{train,valid}_<kind>`` files holding the train and
the valid trials separately, rows in the order of the input file. Here they are
scattered back into the original trial order with the input file's 1-based
``train_inds`` / ``valid_inds`` (stored 0-based), in float64, NaN where a trial has
no output (e.g. when LFADS processed fewer examples). Arrays are trial-first, as h5py
reads them: ``rates`` is ``[n_trials, T, n_neurons]``. ``rates`` are in spikes/s:
LFADS's Poisson rates per bin times ``1000 / spikeBinMs``. lfads-torch's
``lfads_output_<session>.h5`` (``train_*``/``valid_*`` keys) is read the same way.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from lds.containers import FieldSpec, ParamsContainer
from lds.errors import FileFormatError, MissingFileError, ValidationError

__all__ = ["PosteriorMeans", "POSTERIOR_KINDS"]

POSTERIOR_KINDS = ("posterior_sample_and_average", "posterior_push_mean")
# HDF5 variable -> field (reference section 5.1)
_VARIABLES = {
    "output_dist_params": "rates",
    "factors": "factors",
    "gen_states": "generator_states",
    "gen_ics": "generator_ics",
    "controller_outputs": "controller_outputs",
    "post_g0_mean": "post_g0_mean",
    "post_g0_logvar": "post_g0_logvar",
    "costs": "costs",
    "nll_bound_vaes": "nll_bound_vaes",
    "nll_bound_iwaes": "nll_bound_iwaes",
}
_REQUIRED = ("output_dist_params", "factors")
# lfads-torch ``{split}_<key>`` -> field (lfads-formats reference, section 3.5); ic_std becomes a log-variance
_TORCH_VARIABLES = {
    "output_params": "rates",
    "factors": "factors",
    "gen_states": "generator_states",
    "gen_init": "generator_ics",
    "gen_inputs": "controller_outputs",
    "ic_mean": "post_g0_mean",
    "ic_std": "post_g0_logvar",
}


def _read_flat_hdf5(path: Path) -> dict[str, np.ndarray]:
    """Every root-level dataset of an LFADS output file, as float64 arrays."""
    if not path.is_file():
        raise MissingFileError(f"posterior mean file {path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            return {k: np.asarray(v[()], dtype=np.float64) for k, v in f.items() if isinstance(v, h5py.Dataset)}
    except (OSError, ValueError, TypeError) as exc:
        raise FileFormatError(f"posterior mean file {path} could not be read as HDF5: {exc}") from None


def _zero_based_split(train_inds, valid_inds, where) -> tuple[np.ndarray, np.ndarray]:
    """Trial positions stored in a file, 0-based: they must cover 0..n-1 or 1..n exactly once."""
    train, valid = (np.asarray(i).ravel().astype(np.int64) for i in (train_inds, valid_inds))
    everything = np.sort(np.concatenate([train, valid]))
    n = len(everything)
    for base in (0, 1):
        if np.array_equal(everything, np.arange(base, n + base)):
            return train - base, valid - base
    raise FileFormatError(f"{where}: train_inds and valid_inds are not the positions of {n} trials "
                          f"(neither 0..{n - 1} nor 1..{n}, each once)")


def _scatter(parts, n_trials: int, where: str) -> np.ndarray:
    """A NaN-filled ``[n_trials, ...]`` array with each part's rows put at its trial indices."""
    shapes = {p[0].shape[1:] for p in parts}
    if len(shapes) != 1:
        raise FileFormatError(f"{where}: train and valid files disagree on the shape per trial: {sorted(shapes)}")
    out = np.full((n_trials,) + shapes.pop(), np.nan)
    for values, indices, file in parts:
        if values.shape[0] > len(indices):
            raise FileFormatError(f"{file}: {where} has {values.shape[0]} trials but the split lists only "
                                  f"{len(indices)}")
        out[indices[: values.shape[0]]] = values
    return out


class PosteriorMeans(ParamsContainer):
    """Posterior means of one dataset of a run (trial-first arrays, original trial order)."""

    FIELDS = (
        FieldSpec("time", "Time", "start of each LFADS bin (ms)", ("T",)),
        FieldSpec("rates", "Rates and factors", "firing rates (spikes/s)", ("n_trials", "T", "n_neurons")),
        FieldSpec("factors", "Rates and factors", "latent factors", ("n_trials", "T", "n_factors")),
        FieldSpec("generator_states", "Generator", "generator RNN states", ("n_trials", "T", "c_gen_dim")),
        FieldSpec("generator_ics", "Generator", "generator initial conditions", ("n_trials", "c_gen_dim")),
        FieldSpec("controller_outputs", "Controller", "inferred inputs", ("n_trials", "T", "c_co_dim"),
                  optional=True),
        FieldSpec("post_g0_mean", "Initial conditions", "posterior mean of g0", ("n_trials", "c_ic_dim"),
                  optional=True),
        FieldSpec("post_g0_logvar", "Initial conditions", "posterior log-variance of g0", ("n_trials", "c_ic_dim"),
                  optional=True),
        FieldSpec("costs", "Costs", "per-trial cost", ("n_trials",), optional=True),
        FieldSpec("nll_bound_vaes", "Costs", "VAE bound of the negative log-likelihood", ("n_trials",),
                  optional=True),
        FieldSpec("nll_bound_iwaes", "Costs", "IWAE bound of the negative log-likelihood", ("n_trials",),
                  optional=True),
        FieldSpec("train_inds", "Trials", "0-based indices of the training trials", ("n_train",)),
        FieldSpec("valid_inds", "Trials", "0-based indices of the validation trials", ("n_valid",)),
        FieldSpec("condition_ids", "Trials", "condition of each trial", ("n_trials",), optional=True),
        FieldSpec("raw_counts", "Trials", "spike counts in the original bins", ("n_neurons", "T_orig", "n_trials"),
                  optional=True),
    )
    EXTRA_GROUPS = (("Basic info", ("kind", "dataset_name", "n_trials", "T", "n_neurons", "n_factors",
                                    "bin_width_ms"), "first"),)

    def __init__(self, *, kind: str, dataset_name: str, spike_bin_ms: float, rates, factors, train_inds,
                 valid_inds, time=None, generator_states=None, generator_ics=None, controller_outputs=None,
                 post_g0_mean=None, post_g0_logvar=None, costs=None, nll_bound_vaes=None, nll_bound_iwaes=None,
                 condition_ids=None, raw_counts=None):
        self.kind, self.dataset_name, self.spike_bin_ms = kind, dataset_name, float(spike_bin_ms)
        self.rates, self.factors = rates, factors
        self.generator_states, self.generator_ics, self.controller_outputs = (
            generator_states, generator_ics, controller_outputs)
        self.post_g0_mean, self.post_g0_logvar = post_g0_mean, post_g0_logvar
        self.costs, self.nll_bound_vaes, self.nll_bound_iwaes = costs, nll_bound_vaes, nll_bound_iwaes
        self.train_inds, self.valid_inds = np.asarray(train_inds, dtype=np.int64), np.asarray(valid_inds, np.int64)
        self.condition_ids, self.raw_counts = condition_ids, raw_counts
        T = self.rates.shape[1]
        self.time = (np.arange(1, T + 1) * self.spike_bin_ms) if time is None else np.asarray(time)[:T]

    @classmethod
    def from_tf_files(cls, train_file, valid_file, train_inds, valid_inds, *, spike_bin_ms: float, kind: str,
                      dataset_name: str, time=None, condition_ids=None, raw_counts=None) -> "PosteriorMeans":
        """Read a dataset's train and valid posterior files and merge them into trial order.

        ``train_inds`` / ``valid_inds`` are 0-based trial positions (the input file's
        1-based indices minus one).
        """
        train_file, valid_file = Path(train_file), Path(valid_file)
        train_inds, valid_inds = np.asarray(train_inds, np.int64), np.asarray(valid_inds, np.int64)
        n_trials = len(train_inds) + len(valid_inds)
        if n_trials and (np.concatenate([train_inds, valid_inds]).min() < 0
                         or np.concatenate([train_inds, valid_inds]).max() >= n_trials):
            raise ValidationError(f"{dataset_name}: trial indices must lie in [0, {n_trials}) (0-based)")
        train, valid = _read_flat_hdf5(train_file), _read_flat_hdf5(valid_file)
        for data, file in ((train, train_file), (valid, valid_file)):
            missing = [k for k in _REQUIRED if k not in data]
            if missing:
                raise FileFormatError(f"posterior mean file {file} lacks the keys {missing}; it has {sorted(data)}")
        only_train = sorted(k for k in train if k in _VARIABLES and k not in valid)
        if only_train:
            raise FileFormatError(f"{train_file} has {only_train} but {valid_file} does not "
                                  f"(training and validation files of different runs?)")
        fields = {
            field: _scatter([(train[var], train_inds, train_file), (valid[var], valid_inds, valid_file)],
                            n_trials, f"{var!r} of {dataset_name}")
            for var, field in _VARIABLES.items() if var in train
        }
        fields["rates"] = fields["rates"] * (1000.0 / spike_bin_ms)
        return cls(kind=kind, dataset_name=dataset_name, spike_bin_ms=spike_bin_ms, train_inds=train_inds,
                   valid_inds=valid_inds, time=time, condition_ids=condition_ids, raw_counts=raw_counts, **fields)

    @classmethod
    def from_lfads_torch_file(cls, path, *, spike_bin_ms: float, dataset_name: str, time=None, condition_ids=None,
                              raw_counts=None) -> "PosteriorMeans":
        """Read an lfads-torch ``lfads_output_<session>.h5`` (``train_*`` / ``valid_*`` keys) into trial order.

        The trial positions come from the file's ``train_inds`` / ``valid_inds`` (copied
        from the input file; 0- or 1-based), else train trials are taken to come first.
        ``ic_std`` is stored as ``post_g0_logvar = 2 log(ic_std)``.
        """
        path = Path(path)
        data = _read_flat_hdf5(path)
        missing = [f"{split}_{key}" for split in ("train", "valid") for key in ("output_params", "factors")
                   if f"{split}_{key}" not in data]
        if missing:
            raise FileFormatError(f"lfads-torch output file {path} lacks the keys {missing}; it has {sorted(data)}")
        n_train, n_valid = len(data["train_factors"]), len(data["valid_factors"])
        if "train_inds" in data and "valid_inds" in data:
            train_inds, valid_inds = _zero_based_split(data["train_inds"], data["valid_inds"], path)
        else:
            train_inds, valid_inds = np.arange(n_train), n_train + np.arange(n_valid)
        fields = {
            field: _scatter([(data[f"train_{key}"], train_inds, path), (data[f"valid_{key}"], valid_inds, path)],
                            len(train_inds) + len(valid_inds), f"{key!r} of {dataset_name}")
            for key, field in _TORCH_VARIABLES.items() if f"train_{key}" in data and f"valid_{key}" in data
        }
        fields["rates"] = fields["rates"] * (1000.0 / spike_bin_ms)
        if "post_g0_logvar" in fields:
            fields["post_g0_logvar"] = 2 * np.log(fields["post_g0_logvar"])
        return cls(kind="lfads_torch", dataset_name=dataset_name, spike_bin_ms=spike_bin_ms, train_inds=train_inds,
                   valid_inds=valid_inds, time=time, condition_ids=condition_ids, raw_counts=raw_counts, **fields)

    # ---- derived ---------------------------------------------------------------
    @property
    def n_trials(self) -> int:
        return int(self.rates.shape[0])

    @property
    def T(self) -> int:
        return int(self.rates.shape[1])

    @property
    def n_neurons(self) -> int:
        return int(self.rates.shape[2])

    @property
    def n_factors(self) -> int:
        return int(self.factors.shape[2])

    @property
    def bin_width_ms(self) -> float:
        return float(self.time[1] - self.time[0]) if len(self.time) > 1 else self.spike_bin_ms

    @property
    def dims(self) -> dict:
        dims = {"n_trials": self.n_trials, "T": self.T, "n_neurons": self.n_neurons, "n_factors": self.n_factors,
                "n_train": len(self.train_inds), "n_valid": len(self.valid_inds)}
        for field, name in (("generator_ics", "c_gen_dim"), ("controller_outputs", "c_co_dim"),
                            ("post_g0_mean", "c_ic_dim")):
            value = getattr(self, field)
            if value is not None:
                dims[name] = int(value.shape[-1])
        return dims

    def condition_averaged(self, field: str = "rates", condition_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """``(conditions, averages)``: the trial average of ``field`` per condition (NaN trials ignored)."""
        values = getattr(self, self.field_spec(field).name)
        ids = np.asarray(self.condition_ids if condition_ids is None else condition_ids)
        if values is None or ids.ndim != 1 or len(ids) != self.n_trials:
            raise ValidationError(f"condition_averaged({field!r}) needs the field and one condition id per trial "
                                  f"({self.n_trials}); got ids of shape {ids.shape}")
        conditions = np.unique(ids)
        return conditions, np.stack([np.nanmean(values[ids == c], axis=0) for c in conditions])
