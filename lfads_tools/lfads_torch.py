"""lfads-torch checkpoints as :class:`ModelTrainedParams` in the TF LFADS convention, and back.

The checkpoint (a Lightning ``.ckpt`` or a bare ``state_dict`` file) is read with the
restricted unpickler of :mod:`lfads_tools.safe_unpickle`: no code in the file runs and
lfads-torch need not be installed. Its ``state_dict`` is mapped key by key to the
fields of ``ModelTrainedParams`` (``lfads-formats.md`` §4):

- torch weights are ``[out, in]``, TF weights ``[in, out]``: every weight is transposed,
  and biases become ``[1, n]`` rows;
- lfads-torch's ``ClippedGRUCell`` stacks its rows as ``[z; r; n]`` (update, reset,
  candidate) and applies ``r`` before the candidate's hidden product, like TF; TF
  stacks its gate columns as ``[r | u]`` and adds a constant forget bias of 1 to ``u``.
  Hence ``b_u = bias_ih_z + bias_hh_z - 1``, ``b_r = bias_ih_r + bias_hh_r`` and the one
  TF candidate bias ``b_c = bias_ih_n + bias_hh_n``;
- the mean and log-variance layers of the posteriors are one torch ``Linear`` with rows
  ``[mean; logvar]``; the AR(1) prior's ``lognvars``/``logtaus`` are TF's
  ``logevars``/``logatau``;
- a model without controller keeps empty tensors; they become missing fields.

Only a Poisson read-out (one row per neuron) maps to ``factors_to_logrates``.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from lds.containers import as_numpy
from lds.errors import DatasetNameError, DefaultsUsedWarning, FileFormatError, ShapeError, ValidationError, warn

from .model_trained_params import ModelTrainedParams, build_checked, dataset_names_argument
from .safe_unpickle import StandIn, read_torch_file

__all__ = ["read_lfads_torch", "fields_from_state_dict", "to_lfads_torch_state_dict", "gru_torch_to_tf",
           "gru_tf_to_torch", "read_state_dict"]

_ENCODERS = {"ic_enc": ("ic_enc", "gates_"), "ci_enc": ("ci_enc", "")}
_CELLS = {"con_gengru": "decoder.rnn.cell.con_cell", "gen_gengru": "decoder.rnn.cell.gen_cell"}
_NEEDED_FOR_TORCH = ("ic_enc_fwd_t0", "ic_enc_rev_t0", "ic_enc_to_posterior_g0_mean_W", "prior_g0_mean",
                     "prior_g0_logvar", "gen_gengru_h_to_ru_W", "gen_to_factors_W")
_SESSION_KEY = re.compile(r"^(readin|readout)\.(\d+)\.(weight|bias)$")


# ---- GRU weights ------------------------------------------------------------------------
def gru_torch_to_tf(weight_ih, weight_hh, bias_ih, bias_hh, name: str = "GRU cell") -> dict:
    """One lfads-torch GRU cell's weights as TF blocks ``x_ru, h_ru, b_ru, x_c, h_c, b_c`` (``[in, out]``).

    The shapes must be ``[3H, in]``, ``[3H, H]``, ``[3H]``, ``[3H]``; else a :class:`ShapeError` names ``name``.
    """
    _check_cell(name, weight_ih, weight_hh, bias_ih, bias_hh)
    hidden = weight_hh.shape[1]
    z, r, n = slice(0, hidden), slice(hidden, 2 * hidden), slice(2 * hidden, 3 * hidden)
    return {
        "x_ru": np.concatenate([weight_ih[r].T, weight_ih[z].T], axis=1),
        "h_ru": np.concatenate([weight_hh[r].T, weight_hh[z].T], axis=1),
        "b_ru": np.concatenate([bias_ih[r] + bias_hh[r], bias_ih[z] + bias_hh[z] - 1])[None, :],
        "x_c": np.ascontiguousarray(weight_ih[n].T),
        "h_c": np.ascontiguousarray(weight_hh[n].T),
        "b_c": (bias_ih[n] + bias_hh[n])[None, :],
    }


def _check_cell(name: str, weight_ih, weight_hh, bias_ih, bias_hh) -> None:
    """``weight_ih [3H, in]``, ``weight_hh [3H, H]``, ``bias_ih``/``bias_hh [3H]``, with H from ``weight_hh``."""
    for part, array, shape in (("weight_hh", weight_hh, "(3*H, H)"), ("weight_ih", weight_ih, "(3*H, in)")):
        if array.ndim != 2:
            raise ShapeError(f"{name}.{part} should be a {shape} matrix but has shape {tuple(array.shape)}")
    hidden = weight_hh.shape[1]
    wanted = {"weight_ih": (3 * hidden, weight_ih.shape[1]), "weight_hh": (3 * hidden, hidden),
              "bias_ih": (3 * hidden,), "bias_hh": (3 * hidden,)}
    for part, array in zip(wanted, (weight_ih, weight_hh, bias_ih, bias_hh)):
        if tuple(array.shape) != wanted[part]:
            raise ShapeError(f"{name}.{part} should have shape {wanted[part]} (3*H rows for the hidden size H = "
                             f"{hidden} of weight_hh) but has shape {tuple(array.shape)}")


def gru_tf_to_torch(x_ru, h_ru, b_ru, x_c, h_c, b_c) -> dict:
    """The inverse: TF blocks to lfads-torch ``weight_ih, weight_hh, bias_ih, bias_hh`` (forget bias in ``bias_hh``)."""
    hidden = h_c.shape[0]
    r, u = slice(0, hidden), slice(hidden, 2 * hidden)
    dtype = h_c.dtype
    return {
        "weight_ih": np.concatenate([x_ru[:, u].T, x_ru[:, r].T, x_c.T]),
        "weight_hh": np.concatenate([h_ru[:, u].T, h_ru[:, r].T, h_c.T]),
        "bias_ih": np.concatenate([b_ru[0, u], b_ru[0, r], b_c[0]]),
        "bias_hh": np.concatenate([np.ones(hidden, dtype), np.zeros(2 * hidden, dtype)]),
    }


def _encoder_fields(blocks: dict, field: str, gates: str) -> dict:
    return {
        f"{field}_gru_xh_to_{gates}ru_W": np.concatenate([blocks["x_ru"], blocks["h_ru"]]),
        f"{field}_gru_xh_to_{gates}ru_b": blocks["b_ru"],
        f"{field}_gru_xrh_to_c_W": np.concatenate([blocks["x_c"], blocks["h_c"]]),
        f"{field}_gru_xrh_to_c_b": blocks["b_c"],
    }


def _gengru_fields(blocks: dict, field: str) -> dict:
    return {f"{field}_x_to_ru_W": blocks["x_ru"], f"{field}_h_to_ru_W": blocks["h_ru"],
            f"{field}_h_to_ru_b": blocks["b_ru"], f"{field}_x_to_c_W": blocks["x_c"],
            f"{field}_rh_to_c_W": blocks["h_c"], f"{field}_rh_to_c_b": blocks["b_c"]}


# ---- state_dict -> fields ------------------------------------------------------------------
class _Keys:
    """The state_dict, remembering which keys were used."""

    def __init__(self, state_dict: Mapping, source):
        self.arrays, self.source, self.used = state_dict, source, set()

    def get(self, key):
        value = self.arrays.get(key)
        if value is None:
            return None
        if not isinstance(value, np.ndarray):
            raise FileFormatError(f"{self.source}: state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        self.used.add(key)
        return value

    def cell(self, prefix: str):
        parts = [self.get(f"{prefix}.{p}") for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        if all(p is None for p in parts):
            return None
        if any(p is None for p in parts):
            raise FileFormatError(f"{self.source}: GRU cell {prefix} lacks some of weight_ih, weight_hh, bias_ih, "
                                  "bias_hh")
        return gru_torch_to_tf(*parts, name=f"{self.source}: {prefix}")


def _split_rows(weight, bias, first: str, second: str) -> dict:
    """A ``Linear`` with rows ``[first; second]`` as two TF layers."""
    if weight is None:
        return {}
    half = weight.shape[0] // 2
    out = {f"{first}_W": weight[:half].T, f"{second}_W": weight[half:].T}
    if bias is not None:
        out.update({f"{first}_b": bias[None, :half], f"{second}_b": bias[None, half:]})
    return out


def _row(value):
    return None if value is None else value.reshape(1, -1)


def _sessions(keys: Iterable[str]) -> int:
    indices = [int(m[2]) for m in map(_SESSION_KEY.match, keys) if m]
    return max(indices) + 1 if indices else 0


def fields_from_state_dict(state_dict: Mapping, num_sessions: int | None = None, source="state_dict"
                           ) -> tuple[dict, set]:
    """``({field: array or [array per session]}, used keys)`` in the TF convention."""
    keys = _Keys(state_dict, source)
    sessions = _sessions(state_dict) if num_sessions is None else num_sessions
    fields: dict = {}
    for field, (module, gates) in _ENCODERS.items():
        h0 = keys.get(f"encoder.{module}_h0")
        if h0 is not None and (h0.ndim != 3 or h0.shape[:2] != (2, 1)):
            raise ShapeError(f"{source}: encoder.{module}_h0 should have shape (2, 1, H) (forward, backward) but has "
                             f"shape {tuple(h0.shape)}")
        for index, (direction, torch_direction) in enumerate((("fwd", "fwd"), ("rev", "bwd"))):
            if h0 is not None:
                fields[f"{field}_{direction}_t0"] = h0[index].reshape(1, -1)
            blocks = keys.cell(f"encoder.{module}.{torch_direction}_gru.cell")
            if blocks is not None:
                fields.update(_encoder_fields(blocks, f"{field}_{direction}", gates))
    fields.update(_split_rows(keys.get("encoder.ic_linear.weight"), keys.get("encoder.ic_linear.bias"),
                              "ic_enc_to_posterior_g0_mean", "ic_enc_to_posterior_g0_logvar"))
    fields.update(_split_rows(keys.get("decoder.rnn.cell.co_linear.weight"),
                              keys.get("decoder.rnn.cell.co_linear.bias"),
                              "con_to_posterior_co_mean", "con_to_posterior_co_logvar"))
    for field, prefix in _CELLS.items():
        blocks = keys.cell(prefix)
        if blocks is not None:
            fields.update(_gengru_fields(blocks, field))
    weight = keys.get("decoder.ic_to_g0.weight")
    fields.update({
        "prior_g0_mean": _row(keys.get("ic_prior.mean")),
        "prior_g0_logvar": _row(keys.get("ic_prior.logvar")),
        "g0_to_gen_ic_W": None if weight is None else weight.T,
        "g0_to_gen_ic_b": _row(keys.get("decoder.ic_to_g0.bias")),
        "prior_ar1_logevars": _row(keys.get("co_prior.lognvars")),
        "prior_ar1_logatau": _row(keys.get("co_prior.logtaus")),
        "con_co": _row(keys.get("decoder.con_h0")),
    })
    fac = keys.get("decoder.rnn.cell.fac_linear.weight")
    fields["gen_to_factors_W"] = None if fac is None else fac.T
    for field, module in (("x_to_infac", "readin"), ("factors_to_logrates", "readout")):
        weights = [keys.get(f"{module}.{s}.weight") for s in range(sessions)]
        biases = [keys.get(f"{module}.{s}.bias") for s in range(sessions)]
        fields[f"{field}_W"] = None if any(w is None for w in weights) else [w.T for w in weights]
        fields[f"{field}_b"] = None if any(b is None for b in biases) else [_row(b) for b in biases]
    encoder = keys.get("encoder.ic_enc.fwd_gru.cell.weight_ih")
    _drop_non_poisson_readout(fields, 0 if encoder is None else encoder.shape[1], source)
    fields = {name: None if isinstance(value, np.ndarray) and value.size == 0 else value
              for name, value in fields.items()}
    return {k: np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v for k, v in fields.items()}, keys.used


def _drop_non_poisson_readout(fields: dict, encoder_inputs: int, source) -> None:
    """A read-out with several rows per neuron (Gaussian, ZIG, ...) is not ``factors_to_logrates``.

    A session's neurons are its read-in's inputs; without a read-in (one session) they are
    the encoder's inputs, and a Poisson read-out may have more rows (held-out neurons, as
    in the NLB configs), so there only a whole multiple of them counts.
    """
    read_in, read_out = fields.get("x_to_infac_W"), fields.get("factors_to_logrates_W")
    if not read_out:
        return
    if read_in:
        several = any(w.shape[1] != r.shape[0] for w, r in zip(read_out, read_in))
    else:
        rows = read_out[0].shape[1]
        several = len(read_out) == 1 and 0 < encoder_inputs < rows and rows % encoder_inputs == 0
    if several:
        warn(f"{source}: the read-out has more rows than neurons (not a Poisson model); "
             "factors_to_logrates is left empty", DefaultsUsedWarning)
        fields["factors_to_logrates_W"] = fields["factors_to_logrates_b"] = None


# ---- reading ---------------------------------------------------------------------------------
def read_state_dict(path) -> tuple[dict, object, set]:
    """``(state_dict, whole checkpoint, stand-ins)`` of a Lightning ``.ckpt`` or a bare state_dict file."""
    obj, stand_ins = read_torch_file(path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise FileFormatError(f"{path} holds a {type(obj).__name__} without a state_dict: expected a Lightning "
                              "checkpoint (a dict with 'state_dict') or a state_dict")
    return state, obj, stand_ins


def _config_names(checkpoint, path: Path, sessions: int) -> list[str] | None:
    """Session names from the checkpoint's data configuration (``datafile_pattern``), if they can be found.

    lfads-torch orders sessions by the sorted files matching the pattern; a session is
    named by its file's name up to the first dot.
    """
    if not isinstance(checkpoint, dict):
        return None
    for section in ("datamodule_hyper_parameters", "hyper_parameters"):
        config = checkpoint.get(section)
        config = config.items if isinstance(config, StandIn) else config  # e.g. Lightning's AttributeDict
        pattern = config.get("datafile_pattern") if isinstance(config, dict) else None
        if not isinstance(pattern, str):
            continue
        bases = [Path()] if Path(pattern).is_absolute() else [path.parent, path.parent.parent]
        for base in bases:
            files = sorted(glob.glob(str(base / pattern)))
            if len(files) == sessions:
                return [Path(f).name.split(".")[0] for f in files]
        if not glob.has_magic(pattern) and sessions == 1:
            return [Path(pattern).name.split(".")[0]]
    return None


def _choose_names(given: list[str] | None, available: list[str], sessions: int, path) -> tuple[list[str], list[int]]:
    """``(names, session indices)``: the caller's names matched to the sessions, else the available ones."""
    if given is None:
        return available, list(range(sessions))
    lookup = {a: i for i, a in enumerate(available)}
    lookup.update({a[len("lfads_"):]: i for i, a in enumerate(available) if a.startswith("lfads_")})
    if all(n in lookup for n in given):
        return given, [lookup[n] for n in given]
    if len(given) == sessions:
        return given, list(range(sessions))
    raise DatasetNameError(f"{path} has {sessions} session(s) {available}; the dataset names {given} match neither "
                           "those names nor their number")


def read_lfads_torch(path, dataset_names: str | Iterable[str] | None = None, verbose: bool = False
                     ) -> ModelTrainedParams:
    """Read an lfads-torch checkpoint or state_dict file into a :class:`ModelTrainedParams`.

    Dataset names come from ``dataset_names`` (names of the sessions in the checkpoint's
    data configuration, to select and order them, or one name per session), else from
    that configuration, else ``session_0``, ``session_1``, ... ``verbose=True`` prints the
    state_dict keys not used and the classes replaced by inert stand-ins.
    """
    path, dataset_names = Path(path), dataset_names_argument(dataset_names)
    state, checkpoint, stand_ins = read_state_dict(path)
    sessions = _sessions(state)
    available = _config_names(checkpoint, path, sessions) or [f"session_{i}" for i in range(sessions)]
    names, order = _choose_names(dataset_names, available, sessions, path)
    fields, used = fields_from_state_dict(state, sessions, source=path)
    if not used:
        raise FileFormatError(f"{path} holds no lfads-torch weights (no encoder./decoder./readout. keys); its "
                              f"state_dict has {list(state)[:8]}{' ...' if len(state) > 8 else ''}")
    for name, value in fields.items():
        if isinstance(value, list):
            fields[name] = [value[i] for i in order]
    if verbose:
        unused = [k for k in state if k not in used]
        print(f"{path}: {len(unused)} state_dict keys not used" + "".join(f"\n  {k}" for k in unused))
        if stand_ins:
            print(f"{path}: objects of these classes were not rebuilt (inert stand-ins): {sorted(stand_ins)}")
    params = build_checked(fields, names, path)
    _check_lfads_torch_inputs(params.dims, path)
    return params


def controller_input_dim(ci_enc_dim: int, factors_dim: int) -> int:
    """Inputs of lfads-torch's controller (and TF LFADS's non-causal one fed the factors):
    ``[ci_fwd, ci_bwd, factors]``."""
    return 2 * ci_enc_dim + factors_dim


def _check_lfads_torch_inputs(dims: dict, path) -> None:
    """lfads-torch's encoders take the read-in's output; its controller takes ``[ci_fwd, ci_bwd, factors]``."""
    expected = {"c_enc_input_dim": dims["c_in_factors_dim"],
                "c_con_input_dim": controller_input_dim(dims["c_ci_enc_dim"], dims["c_factors_dim"])
                if dims["c_con_dim"] else 0}
    for name, size in expected.items():
        if dims[name] != size:
            cell = "encoder.ic_enc.fwd_gru.cell" if name == "c_enc_input_dim" else "decoder.rnn.cell.con_cell"
            raise ShapeError(f"{path}: {cell}.weight_ih has {dims[name]} input columns; an lfads-torch model feeds it "
                             f"{size}")


# ---- fields -> state_dict ----------------------------------------------------------------------
def _controller_inputs_as_lfads_torch(p: dict, dims: dict) -> None:
    """Give the controller lfads-torch's inputs ``[ci_fwd, ci_bwd, factors]`` (``p`` is changed in place).

    TF feeds ``ci_bwd`` unless the controller is causal (no reverse controller-input
    encoder) and the factors if ``do_feed_factors_to_controller``; what it does not feed
    gets zero input weights, and a causal model gets a zero reverse encoder.
    """
    ci, factors, rows = dims["c_ci_enc_dim"], dims["c_factors_dim"], dims["c_con_input_dim"]
    causal = p["ci_enc_fwd_t0"] is not None and p["ci_enc_rev_t0"] is None
    encoded = ci if causal else 2 * ci
    if rows - encoded not in (0, factors):
        raise ValidationError(f"the controller takes {rows} inputs: {encoded} from the controller-input encoders and "
                              f"{rows - encoded} others, which are not the {factors} factors (rates fed back?); "
                              "lfads-torch cannot represent that")
    for name in ("con_gengru_x_to_ru_W", "con_gengru_x_to_c_W"):
        weight = p[name]
        if weight is None:
            continue
        zeros = np.zeros((max(ci, factors), weight.shape[1]), weight.dtype)
        backward = zeros[:ci] if causal else weight[ci:encoded]
        fed_back = weight[encoded:] if rows > encoded else zeros[:factors]
        p[name] = np.concatenate([weight[:ci], backward, fed_back])
    if causal:
        p.update({n.replace("ci_enc_fwd", "ci_enc_rev"): np.zeros_like(v) for n, v in list(p.items())
                  if n.startswith("ci_enc_fwd") and v is not None})


def to_lfads_torch_state_dict(params: ModelTrainedParams) -> dict:
    """An lfads-torch ``state_dict`` (NumPy arrays, sessions in ``dataset_names`` order) of ``params``.

    Missing controller parts become the empty tensors lfads-torch keeps; a missing
    ``g0_to_gen_ic`` (TF's identity when ``c_ic_dim == c_gen_dim``) becomes the identity.
    """
    p = {name: None if value is None else as_numpy(value) for name, value in params.items()
         if not hasattr(value, "names")}
    needed = [name for name in _NEEDED_FOR_TORCH if p[name] is None] + (
        ["factors_to_logrates_W"] if not len(params.factors_to_logrates_W) else [])
    if needed:
        raise ValidationError(f"an lfads-torch state_dict needs {needed}, which this ModelTrainedParams lacks")
    dims = params.dims
    if dims["c_enc_input_dim"] != dims["c_in_factors_dim"]:
        external = dims["c_enc_input_dim"] - dims["c_in_factors_dim"]
        raise ValidationError(f"this model feeds {external} external inputs to its encoders (TF LFADS without "
                              "inject_ext_input_to_gen); lfads-torch feeds none there, so the model has no "
                              "lfads-torch equivalent")
    dtype = next((v.dtype for v in p.values() if v is not None), np.float32)
    if dims["c_con_input_dim"]:
        _controller_inputs_as_lfads_torch(p, dims)
    out: dict = {}
    for index, field in enumerate(params.x_to_infac_W):
        out[f"readin.{index}.weight"] = as_numpy(field).T
        out[f"readin.{index}.bias"] = as_numpy(params.x_to_infac_b[index]).ravel()
    for field, (module, gates) in _ENCODERS.items():
        if p[f"{field}_fwd_t0"] is None:
            continue
        out[f"encoder.{module}_h0"] = np.stack([p[f"{field}_fwd_t0"], p[f"{field}_rev_t0"]])
        for direction, torch_direction in (("fwd", "fwd"), ("rev", "bwd")):
            stem = f"{field}_{direction}_gru"
            inputs = p[f"{stem}_xrh_to_c_W"].shape[0] - p[f"{stem}_xrh_to_c_W"].shape[1]
            W_ru, W_c = p[f"{stem}_xh_to_{gates}ru_W"], p[f"{stem}_xrh_to_c_W"]
            cell = gru_tf_to_torch(W_ru[:inputs], W_ru[inputs:], p[f"{stem}_xh_to_{gates}ru_b"], W_c[:inputs],
                                   W_c[inputs:], p[f"{stem}_xrh_to_c_b"])
            out.update({f"encoder.{module}.{torch_direction}_gru.cell.{k}": v for k, v in cell.items()})
    out["encoder.ic_linear.weight"] = np.concatenate([p["ic_enc_to_posterior_g0_mean_W"].T,
                                                      p["ic_enc_to_posterior_g0_logvar_W"].T])
    out["encoder.ic_linear.bias"] = np.concatenate([p["ic_enc_to_posterior_g0_mean_b"][0],
                                                    p["ic_enc_to_posterior_g0_logvar_b"][0]])
    gen, con, co = dims["c_gen_dim"], dims["c_con_dim"], dims["c_co_dim"]
    identity = p["g0_to_gen_ic_W"] is None
    out["decoder.con_h0"] = p["con_co"] if p["con_co"] is not None else np.zeros((1, 0), dtype)
    out["decoder.ic_to_g0.weight"] = np.eye(gen, dtype=dtype) if identity else p["g0_to_gen_ic_W"].T
    out["decoder.ic_to_g0.bias"] = np.zeros(gen, dtype) if identity else p["g0_to_gen_ic_b"][0]
    inputs = {"con_gengru": controller_input_dim(dims["c_ci_enc_dim"], dims["c_factors_dim"]),
              "gen_gengru": dims["c_gen_input_dim"]}
    for field, prefix in _CELLS.items():
        size = gen if field == "gen_gengru" else con
        x_ru = p[f"{field}_x_to_ru_W"] if p[f"{field}_x_to_ru_W"] is not None else np.zeros((0, 2 * size), dtype)
        x_c = p[f"{field}_x_to_c_W"] if p[f"{field}_x_to_c_W"] is not None else np.zeros((0, size), dtype)
        if size == 0:  # no controller: lfads-torch keeps a cell of empty tensors
            cell = {"weight_ih": np.zeros((0, inputs[field]), dtype), "weight_hh": np.zeros((0, 0), dtype),
                    "bias_ih": np.zeros(0, dtype), "bias_hh": np.zeros(0, dtype)}
        else:
            cell = gru_tf_to_torch(x_ru, p[f"{field}_h_to_ru_W"], p[f"{field}_h_to_ru_b"], x_c,
                                   p[f"{field}_rh_to_c_W"], p[f"{field}_rh_to_c_b"])
        out.update({f"{prefix}.{k}": v for k, v in cell.items()})
    out["decoder.rnn.cell.fac_linear.weight"] = p["gen_to_factors_W"].T
    if co:
        out["decoder.rnn.cell.co_linear.weight"] = np.concatenate([p["con_to_posterior_co_mean_W"].T,
                                                                   p["con_to_posterior_co_logvar_W"].T])
        out["decoder.rnn.cell.co_linear.bias"] = np.concatenate([p["con_to_posterior_co_mean_b"][0],
                                                                 p["con_to_posterior_co_logvar_b"][0]])
    else:
        out["decoder.rnn.cell.co_linear.weight"] = np.zeros((0, con), dtype)
        out["decoder.rnn.cell.co_linear.bias"] = np.zeros(0, dtype)
    for index, weight in enumerate(params.factors_to_logrates_W):
        out[f"readout.{index}.weight"] = as_numpy(weight).T
        out[f"readout.{index}.bias"] = as_numpy(params.factors_to_logrates_b[index]).ravel()
    out["ic_prior.mean"] = p["prior_g0_mean"][0]
    out["ic_prior.logvar"] = p["prior_g0_logvar"][0]
    out["co_prior.logtaus"] = p["prior_ar1_logatau"][0] if co else np.zeros(0, dtype)
    out["co_prior.lognvars"] = p["prior_ar1_logevars"][0] if co else np.zeros(0, dtype)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}
