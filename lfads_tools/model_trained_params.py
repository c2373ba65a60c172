"""``ModelTrainedParams``: the trained weights of an LFADS model, as the MATLAB class shows them.

Every field keeps the name of lfads-run-manager's ``LFADS.ModelTrainedParams`` and the
shape of the TF LFADS ``model_params`` array (= the MATLAB property's shape). Per-dataset
fields are :class:`~lds.containers.DatasetList`\\ s in ``dataset_names`` order. Missing
values follow MATLAB: an absent field is ``None`` (``[]``); a per-dataset field is an
empty ``DatasetList`` (``{}``) as soon as any dataset lacks it.

Readers and writers live in :mod:`lfads_tools.tf_model_params` (TF ``model_params``,
the lfads-run-manager export layout) and :mod:`lfads_tools.lfads_torch` (checkpoints);
:meth:`ModelTrainedParams.load` picks one from the file's content.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from lds.containers import DatasetList, FieldSpec, ParamsContainer, dataset_name_list
from lds.errors import DatasetNameError, ShapeError, UnknownParameterError, ValidationError

__all__ = ["ModelTrainedParams", "build_checked", "dataset_names_argument"]


def _spec(name, section, description, shape, per_dataset=False):
    return FieldSpec(name, section, description, shape, per_dataset=per_dataset, optional=True)


def _gru_encoder(prefix: str, direction: str, gates: str, size: str, section: str) -> tuple[FieldSpec, ...]:
    """The five fields of one TF ``GRU`` encoder (initial state, gate and candidate layers)."""
    inputs = f"{size} + c_enc_input_dim"
    return (
        _spec(f"{prefix}_t0", section, f"{direction} encoder initial state", ("1", size)),
        _spec(f"{prefix}_gru_xh_to_{gates}ru_W", section,
              f"{direction} encoder GRU, input and hidden to gates r|u, weights", (inputs, f"2*{size}")),
        _spec(f"{prefix}_gru_xh_to_{gates}ru_b", section,
              f"{direction} encoder GRU, input and hidden to gates r|u, biases", ("1", f"2*{size}")),
        _spec(f"{prefix}_gru_xrh_to_c_W", section,
              f"{direction} encoder GRU, input and r*hidden to candidate, weights", (inputs, size)),
        _spec(f"{prefix}_gru_xrh_to_c_b", section,
              f"{direction} encoder GRU, input and r*hidden to candidate, biases", ("1", size)),
    )


def _gengru(prefix: str, what: str, inputs: str, size: str, section: str) -> tuple[FieldSpec, ...]:
    """The six fields of one TF ``GenGRU`` (controller or generator)."""
    return (
        _spec(f"{prefix}_x_to_ru_W", section, f"{what} GenGRU, input to gates r|u, weights", (inputs, f"2*{size}")),
        _spec(f"{prefix}_h_to_ru_W", section, f"{what} GenGRU, hidden to gates r|u, weights", (size, f"2*{size}")),
        _spec(f"{prefix}_h_to_ru_b", section, f"{what} GenGRU, hidden to gates r|u, biases", ("1", f"2*{size}")),
        _spec(f"{prefix}_x_to_c_W", section, f"{what} GenGRU, input to candidate, weights", (inputs, size)),
        _spec(f"{prefix}_rh_to_c_W", section, f"{what} GenGRU, r*hidden to candidate, weights", (size, size)),
        _spec(f"{prefix}_rh_to_c_b", section, f"{what} GenGRU, r*hidden to candidate, biases", ("1", size)),
    )


READIN = "Read-in from spikes to input factors"
G0 = "Initial condition g0"
CO = "Controller output co"
READOUT = "Generator output and readout"

FIELDS = (
    _spec("x_to_infac_W", READIN, "read-in weights, counts to input factors", ("num_channels", "c_in_factors_dim"),
          per_dataset=True),
    _spec("x_to_infac_b", READIN, "read-in biases", ("1", "c_in_factors_dim"), per_dataset=True),
    *_gru_encoder("ic_enc_fwd", "forward IC", "gates_", "c_ic_enc_dim", "Initial condition encoder (forward)"),
    *_gru_encoder("ic_enc_rev", "reverse IC", "gates_", "c_ic_enc_dim", "Initial condition encoder (reverse)"),
    _spec("prior_g0_mean", G0, "mean of the prior on the initial condition g0", ("1", "c_ic_dim")),
    _spec("prior_g0_logvar", G0, "log-variance of the prior on g0", ("1", "c_ic_dim")),
    _spec("ic_enc_to_posterior_g0_mean_W", G0, "IC encoder to posterior mean of g0, weights",
          ("2*c_ic_enc_dim", "c_ic_dim")),
    _spec("ic_enc_to_posterior_g0_mean_b", G0, "IC encoder to posterior mean of g0, biases", ("1", "c_ic_dim")),
    _spec("ic_enc_to_posterior_g0_logvar_W", G0, "IC encoder to posterior log-variance of g0, weights",
          ("2*c_ic_enc_dim", "c_ic_dim")),
    _spec("ic_enc_to_posterior_g0_logvar_b", G0, "IC encoder to posterior log-variance of g0, biases",
          ("1", "c_ic_dim")),
    _spec("g0_to_gen_ic_W", G0, "g0 to generator initial state, weights (absent: identity)", ("c_ic_dim", "c_gen_dim")),
    _spec("g0_to_gen_ic_b", G0, "g0 to generator initial state, biases", ("1", "c_gen_dim")),
    *_gru_encoder("ci_enc_fwd", "forward controller-input", "", "c_ci_enc_dim", "Controller encoder (forward)"),
    *_gru_encoder("ci_enc_rev", "reverse controller-input", "", "c_ci_enc_dim", "Controller encoder (reverse)"),
    *_gengru("con_gengru", "controller", "c_con_input_dim", "c_con_dim", "Controller RNN"),
    _spec("prior_ar1_logevars", CO, "AR(1) prior on controller outputs, log noise variances", ("1", "c_co_dim")),
    _spec("prior_ar1_logatau", CO, "AR(1) prior on controller outputs, log time constants", ("1", "c_co_dim")),
    _spec("con_co", CO, "controller initial state (TF LFADS/con/c0)", ("1", "c_con_dim")),
    _spec("con_to_posterior_co_mean_W", CO, "controller to posterior mean of co, weights", ("c_con_dim", "c_co_dim")),
    _spec("con_to_posterior_co_mean_b", CO, "controller to posterior mean of co, biases", ("1", "c_co_dim")),
    _spec("con_to_posterior_co_logvar_W", CO, "controller to posterior log-variance of co, weights",
          ("c_con_dim", "c_co_dim")),
    _spec("con_to_posterior_co_logvar_b", CO, "controller to posterior log-variance of co, biases", ("1", "c_co_dim")),
    *_gengru("gen_gengru", "generator", "c_gen_input_dim", "c_gen_dim", "Generator RNN"),
    _spec("gen_to_factors_W", READOUT, "generator to factors, weights (columns normalized at use; no bias)",
          ("c_gen_dim", "c_factors_dim")),
    _spec("factors_to_logrates_W", READOUT, "read-out weights, factors to log rates",
          ("c_factors_dim", "num_channels"), per_dataset=True),
    _spec("factors_to_logrates_b", READOUT, "read-out biases", ("1", "num_channels"), per_dataset=True),
)


def _width(value, axis: int) -> int | None:
    return None if value is None else int(value.shape[axis])


def _first(*candidates) -> int | None:
    return next((c for c in candidates if c is not None), None)


class ModelTrainedParams(ParamsContainer):
    """Trained LFADS weights in the TF LFADS convention, grouped as lfads-run-manager shows them.

    >>> mtp = ModelTrainedParams.load("lfadsOutput/model_params")  # or an lfads-torch .ckpt
    >>> mtp.factors_to_logrates_W["dataset001.h5"].shape, mtp.dims["c_factors_dim"]
    """

    FIELDS = FIELDS
    EXTRA_GROUPS = (
        ("Basic info", ("num_datasets", "dataset_names", "num_channels_all_datasets"), "first"),
        ("Imputing rates of neurons across stitched datasets",
         ("factors_to_logrates_W_concatenated", "factors_to_logrates_b_concatenated"), "last"),
    )

    def __init__(self, dataset_names: str | Iterable[str] | None = None, **fields):
        unknown = sorted(set(fields) - set(self.field_names()))
        if unknown:
            raise UnknownParameterError(f"ModelTrainedParams has no field(s) {unknown}; fields: {self.field_names()}")
        per_dataset = {s.name: fields.get(s.name) for s in self.FIELDS if s.per_dataset}
        if dataset_names is None:
            given = next((v for v in per_dataset.values() if isinstance(v, (DatasetList, Mapping)) and len(v)), None)
            dataset_names = [] if given is None else list(given.names if isinstance(given, DatasetList) else given)
        self.dataset_names = dataset_name_list(dataset_names)
        for spec in self.FIELDS:
            value = fields.get(spec.name)
            if spec.per_dataset:
                value = self._dataset_list(spec.name, value)
            elif value is not None and getattr(value, "ndim", None) != len(spec.shape):
                raise ShapeError(f"ModelTrainedParams.{spec.name} should be a {len(spec.shape)}-d array "
                                 f"({spec.shape_text}), got {_describe(value)}")
            setattr(self, spec.name, value)

    def _dataset_list(self, name: str, value) -> DatasetList:
        """A per-dataset value in ``dataset_names`` order; empty if any dataset lacks it (MATLAB ``{}``)."""
        if value is None:
            return DatasetList()
        if isinstance(value, DatasetList):
            value = value.to_dict()
        elif not isinstance(value, Mapping):
            value = list(value)
            if len(value) != len(self.dataset_names):
                raise ValidationError(f"ModelTrainedParams.{name} has {len(value)} arrays for "
                                      f"{len(self.dataset_names)} datasets {self.dataset_names}")
            value = dict(zip(self.dataset_names, value))
        extra = [n for n in value if n not in self.dataset_names]
        if extra:
            raise DatasetNameError(f"ModelTrainedParams.{name} has arrays for {extra}, which are not among "
                                   f"the dataset names {self.dataset_names}")
        arrays = [value.get(n) for n in self.dataset_names]
        if not arrays or any(a is None for a in arrays):
            return DatasetList()
        for ds, array in zip(self.dataset_names, arrays):
            if getattr(array, "ndim", None) != 2:
                raise ShapeError(f"ModelTrainedParams.{name}[{ds!r}] should be a 2-d array, got {_describe(array)}")
        return DatasetList(arrays, self.dataset_names)

    # ---- readers (the formats live in their own modules) ---------------------------------
    @classmethod
    def load(cls, path, dataset_names: str | Iterable[str] | None = None, verbose: bool = False, **options):
        """Read any supported file, recognised by its content (not its name).

        TF LFADS ``model_params`` (flat HDF5), the lfads-run-manager export layout
        (``export_hdf5``), an lfads-torch checkpoint or state_dict file (zip), or this
        library's native parameter file (``save``). ``dataset_names`` selects and orders
        the datasets; ``verbose=True`` lists the keys that were not used.
        """
        from lds import native

        from . import lfads_torch, tf_model_params

        kind = tf_model_params.file_kind(path)
        if kind == "native":
            loaded = native.load_params(path, cls=cls, **options)
            return loaded if dataset_names is None else loaded.select_datasets(dataset_names)
        if kind == "tf":
            return tf_model_params.read_tf_model_params(path, dataset_names, verbose=verbose, **options)
        if kind == "export":
            return tf_model_params.read_export_hdf5(path, dataset_names, **options)
        return lfads_torch.read_lfads_torch(path, dataset_names, verbose=verbose, **options)

    @classmethod
    def from_tf_model_params(cls, path, dataset_names: str | Iterable[str] | None = None, verbose: bool = False):
        """Read a TF LFADS ``model_params`` file (see :func:`lfads_tools.tf_model_params.read_tf_model_params`)."""
        from .tf_model_params import read_tf_model_params

        return read_tf_model_params(path, dataset_names, verbose=verbose)

    @classmethod
    def from_lfads_torch(cls, path, dataset_names: str | Iterable[str] | None = None, verbose: bool = False):
        """Read an lfads-torch checkpoint safely (see :func:`lfads_tools.lfads_torch.read_lfads_torch`)."""
        from .lfads_torch import read_lfads_torch

        return read_lfads_torch(path, dataset_names, verbose=verbose)

    @classmethod
    def from_export_hdf5(cls, path, dataset_names: str | Iterable[str] | None = None):
        """Read the lfads-run-manager export layout written by :meth:`export_hdf5`."""
        from .tf_model_params import read_export_hdf5

        return read_export_hdf5(path, dataset_names)

    # ---- writers ----------------------------------------------------------------------------
    def save_tf_model_params(self, path, overwrite: bool = False):
        """Write the flat TF ``model_params`` HDF5 file that MATLAB's ``ModelTrainedParams`` reads."""
        from .tf_model_params import save_tf_model_params

        return save_tf_model_params(self, path, overwrite=overwrite)

    def export_hdf5(self, path, overwrite: bool = False):
        """Write lfads-run-manager's ``exportToHDF5`` layout (one HDF5 entry per property)."""
        from .tf_model_params import export_hdf5

        return export_hdf5(self, path, overwrite=overwrite)

    def to_lfads_torch_state_dict(self) -> dict:
        """The weights as an lfads-torch ``state_dict`` of NumPy arrays (see :mod:`lfads_tools.lfads_torch`)."""
        from .lfads_torch import to_lfads_torch_state_dict

        return to_lfads_torch_state_dict(self)

    # ---- datasets and derived values ----------------------------------------------------
    def select_datasets(self, names: Iterable[str]) -> "ModelTrainedParams":
        """A copy holding only the datasets ``names`` (by name or 0-based index), in that order."""
        lookup = DatasetList(self.dataset_names, self.dataset_names)
        chosen = [self.dataset_names[lookup.index_of(n)] for n in dataset_name_list(names)]
        data = self.to_dict()
        data["dataset_names"] = chosen
        for spec in self.FIELDS:
            if spec.per_dataset and data[spec.name]:
                data[spec.name] = {n: data[spec.name][n] for n in chosen}
        return type(self).from_dict(data)

    @property
    def num_datasets(self) -> int:
        return len(self.dataset_names)

    @property
    def num_channels_by_dataset(self) -> list[int]:
        """Neurons of each dataset (columns of ``factors_to_logrates_W``); empty when the read-out is missing."""
        return [int(w.shape[1]) for w in self.factors_to_logrates_W]

    @property
    def num_channels_all_datasets(self) -> int:
        return sum(self.num_channels_by_dataset)

    @property
    def dataset_idx_concatenated(self) -> np.ndarray:
        """The 0-based dataset index of every column of ``factors_to_logrates_W_concatenated``."""
        return np.repeat(np.arange(len(self.num_channels_by_dataset)), self.num_channels_by_dataset)

    @property
    def factors_to_logrates_W_concatenated(self):
        """All read-out weights side by side (``c_factors_dim x num_channels_all_datasets``), to impute rates."""
        return self.factors_to_logrates_W.concatenated(axis=1)

    @property
    def factors_to_logrates_b_concatenated(self):
        return self.factors_to_logrates_b.concatenated(axis=1)

    @property
    def has_controller(self) -> bool:
        return self.dims["c_co_dim"] > 0

    @property
    def dims(self) -> dict:
        """The model's sizes inferred from the shapes (0 for parts the model does not have).

        - ``c_in_factors_dim``: the read-in's output, the data the encoders get. Without a
          read-in (a single dataset) it is the dataset's neuron count, or the encoders'
          input when the read-out has more neurons than that (lfads-torch's held-out neurons).
        - ``c_enc_input_dim``, ``c_con_input_dim``, ``c_gen_input_dim``: the inputs of the
          encoders, the controller and the generator (the rows of their input weights;
          ``Ein``, ``Cin``, ``Gin`` of lfads-formats.md §0). Ein is ``c_in_factors_dim`` plus
          the external inputs TF feeds to the encoders unless ``inject_ext_input_to_gen``; Cin
          is ``c_ci_enc_dim`` forward, and reverse unless the controller is causal, plus
          ``c_factors_dim`` when the factors are fed back; Gin is ``c_co_dim`` plus the
          external inputs injected into the generator.
        - ``c_ext_input_dim``: the external inputs, wherever they go.
        - ``num_channels``: the neurons of each dataset.
        """
        read_in = self.x_to_infac_W[0] if len(self.x_to_infac_W) else None
        read_out = self.factors_to_logrates_W[0] if len(self.factors_to_logrates_W) else None
        ic_enc = _first(_width(self.ic_enc_fwd_t0, 1), _width(self.ic_enc_rev_t0, 1),
                        _width(self.ic_enc_fwd_gru_xrh_to_c_W, 1), 0)
        ci_enc = _first(_width(self.ci_enc_fwd_t0, 1), _width(self.ci_enc_rev_t0, 1),
                        _width(self.ci_enc_fwd_gru_xrh_to_c_W, 1), 0)
        factors = _first(_width(self.gen_to_factors_W, 1), _width(read_out, 0), 0)
        co = _first(_width(self.prior_ar1_logatau, 1), _width(self.con_to_posterior_co_mean_W, 1), 0)
        encoder_rows = _width(self.ic_enc_fwd_gru_xh_to_gates_ru_W, 0)
        enc_inputs = None if encoder_rows is None else encoder_rows - ic_enc
        channels = [int(w.shape[1]) for w in self.factors_to_logrates_W] or [int(w.shape[0]) for w in self.x_to_infac_W]
        neurons = channels[0] if len(channels) == 1 and (enc_inputs is None or channels[0] <= enc_inputs) else None
        in_factors = _first(_width(read_in, 1), neurons, enc_inputs, factors)
        enc_inputs = _first(enc_inputs, in_factors)
        gen_inputs = _first(_width(self.gen_gengru_x_to_ru_W, 0), _width(self.gen_gengru_x_to_c_W, 0), co)
        return {
            "c_factors_dim": factors,
            "c_in_factors_dim": in_factors,
            "c_gen_dim": _first(_width(self.gen_gengru_rh_to_c_W, 0), _width(self.gen_gengru_h_to_ru_W, 0),
                                _width(self.gen_to_factors_W, 0), 0),
            "c_ic_dim": _first(_width(self.prior_g0_mean, 1), _width(self.ic_enc_to_posterior_g0_mean_W, 1), 0),
            "c_ic_enc_dim": ic_enc,
            "c_ci_enc_dim": ci_enc,
            "c_con_dim": _first(_width(self.con_co, 1), _width(self.con_gengru_rh_to_c_W, 0), 0),
            "c_co_dim": co,
            "c_enc_input_dim": enc_inputs,
            "c_con_input_dim": _first(_width(self.con_gengru_x_to_ru_W, 0), _width(self.con_gengru_x_to_c_W, 0), 0),
            "c_gen_input_dim": gen_inputs,
            "c_ext_input_dim": (enc_inputs - in_factors) + (gen_inputs - co),
            "num_channels": channels,
            "has_controller": co > 0,
        }

    def check_shapes(self) -> None:
        """Every field's shape against the others; no part takes fewer inputs than it is fed."""
        super().check_shapes()
        dims = self.dims
        ci_directions = sum(t0 is not None for t0 in (self.ci_enc_fwd_t0, self.ci_enc_rev_t0))
        fed = {"c_enc_input_dim": ("the read-in's c_in_factors_dim", dims["c_in_factors_dim"]),
               "c_gen_input_dim": ("c_co_dim", dims["c_co_dim"])}
        if dims["c_con_input_dim"]:
            fed["c_con_input_dim"] = ("the controller-input encoders' outputs", ci_directions * dims["c_ci_enc_dim"])
        for name, (what, size) in fed.items():
            if dims[name] < size:
                raise ShapeError(f"ModelTrainedParams: {name} = {dims[name]} inputs, fewer than {what} = {size}")
        if dims["c_enc_input_dim"] > dims["c_in_factors_dim"] and dims["c_gen_input_dim"] > dims["c_co_dim"]:
            raise ShapeError("ModelTrainedParams: both the encoders and the generator take external inputs "
                             f"(c_enc_input_dim {dims['c_enc_input_dim']} > c_in_factors_dim, c_gen_input_dim "
                             f"{dims['c_gen_input_dim']} > c_co_dim); TF LFADS feeds them to one or the other")


def dataset_names_argument(names) -> list[str] | None:
    """A reader's ``dataset_names`` argument as a list (None stays None); a :class:`ValidationError` if not names."""
    if names is not None and not isinstance(names, str) and not hasattr(names, "__iter__"):
        raise ValidationError(f"dataset_names should be a name or a list of names, got {type(names).__name__} "
                              f"{names!r:.80}")
    return dataset_name_list(names)


def build_checked(fields: dict, dataset_names, source) -> ModelTrainedParams:
    """A ``ModelTrainedParams`` of a file's arrays, shapes checked against each other (``source`` names the file)."""
    try:
        params = ModelTrainedParams(dataset_names=dataset_names, **fields)
        params.check_shapes()
    except ShapeError as exc:
        raise ShapeError(f"{source}: inconsistent parameter shapes: {exc}") from None
    return params


def _describe(value) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else type(value).__name__
