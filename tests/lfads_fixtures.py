"""Writers of LFADS files that follow ``shared/reference/lfads-formats.md``, independent of the library.

- :func:`write_tf_model_params` writes a flat TF1 ``model_params`` file the way
  ``utils.write_data`` does: every TF variable name (with ``/``) becomes a root dataset
  with ``/`` replaced by ``_``; Adam slots are double-prefixed; optimizer scalars and
  (optionally) the all-zero biases of bias-free layers are included.
- :func:`torch_state_dict` builds an lfads-torch ``state_dict`` (§3.2 key list, torch
  ``[out, in]`` weights, GRU rows ``[z; r; n]``) from random numbers.
- :func:`save_lightning_checkpoint` saves it with ``torch.save`` in a Lightning-like dict
  holding objects of classes that exist only while saving (like lfads-torch's).
- :func:`tf_gru_step`, :func:`tf_gengru_step` and :func:`torch_cell_step` are plain
  single steps of TF LFADS's ``GRU``/``GenGRU`` and lfads-torch's ``ClippedGRUCell``.
"""

from __future__ import annotations

import collections
import json
import sys
import types

import h5py
import numpy as np
import torch

#: ModelTrainedParams field -> TF variable name (lfads-formats.md §1.4; ``{ds}``: TF dataset name).
TF_VARIABLES = {
    "x_to_infac_W": "LFADS/x_2_infac_{ds}/W:0", "x_to_infac_b": "LFADS/x_2_infac_{ds}/b:0",
    "factors_to_logrates_W": "LFADS/glm/fac_2_logrates_{ds}/W:0",
    "factors_to_logrates_b": "LFADS/glm/fac_2_logrates_{ds}/b:0",
    "prior_g0_mean": "LFADS/z/prior_g0/mean:0", "prior_g0_logvar": "LFADS/z/prior_g0/logvar:0",
    "ic_enc_to_posterior_g0_mean_W": "LFADS/z/ic_enc_2_post_g0/mean/W:0",
    "ic_enc_to_posterior_g0_mean_b": "LFADS/z/ic_enc_2_post_g0/mean/b:0",
    "ic_enc_to_posterior_g0_logvar_W": "LFADS/z/ic_enc_2_post_g0/logvar/W:0",
    "ic_enc_to_posterior_g0_logvar_b": "LFADS/z/ic_enc_2_post_g0/logvar/b:0",
    "g0_to_gen_ic_W": "LFADS/gen/g0_2_gen_ic/W:0", "g0_to_gen_ic_b": "LFADS/gen/g0_2_gen_ic/b:0",
    "prior_ar1_logevars": "LFADS/z/u_prior_ar1/logevars:0", "prior_ar1_logatau": "LFADS/z/u_prior_ar1/logatau:0",
    "con_co": "LFADS/con/c0:0",
    "con_to_posterior_co_mean_W": "LFADS/con/con_to_post_co/mean/W:0",
    "con_to_posterior_co_mean_b": "LFADS/con/con_to_post_co/mean/b:0",
    "con_to_posterior_co_logvar_W": "LFADS/con/con_to_post_co/logvar/W:0",
    "con_to_posterior_co_logvar_b": "LFADS/con/con_to_post_co/logvar/b:0",
    "gen_to_factors_W": "LFADS/gen/gen_2_fac/W:0",
}
for _enc, _gates in (("ic_enc", "gates_"), ("ci_enc", "")):
    for _d in ("fwd", "rev"):
        TF_VARIABLES.update({
            f"{_enc}_{_d}_t0": f"LFADS/{_enc}_{_d}/{_enc}_t0_{_d}:0",
            f"{_enc}_{_d}_gru_xh_to_{_gates}ru_W": f"LFADS/{_enc}_{_d}/GRU/Gates/xh_2_ru/W:0",
            f"{_enc}_{_d}_gru_xh_to_{_gates}ru_b": f"LFADS/{_enc}_{_d}/GRU/Gates/xh_2_ru/b:0",
            f"{_enc}_{_d}_gru_xrh_to_c_W": f"LFADS/{_enc}_{_d}/GRU/Candidate/xrh_2_c/W:0",
            f"{_enc}_{_d}_gru_xrh_to_c_b": f"LFADS/{_enc}_{_d}/GRU/Candidate/xrh_2_c/b:0",
        })
for _field, _scope in (("con_gengru", "con"), ("gen_gengru", "gen")):
    TF_VARIABLES.update({
        f"{_field}_x_to_ru_W": f"LFADS/{_scope}/GenGRU/Gates/x_2_ru/W:0",
        f"{_field}_h_to_ru_W": f"LFADS/{_scope}/GenGRU/Gates/h_2_ru/W:0",
        f"{_field}_h_to_ru_b": f"LFADS/{_scope}/GenGRU/Gates/h_2_ru/b:0",
        f"{_field}_x_to_c_W": f"LFADS/{_scope}/GenGRU/Candidate/x_2_c/W:0",
        f"{_field}_rh_to_c_W": f"LFADS/{_scope}/GenGRU/Candidate/rh_2_c/W:0",
        f"{_field}_rh_to_c_b": f"LFADS/{_scope}/GenGRU/Candidate/rh_2_c/b:0",
    })
ZERO_BIASES = ["LFADS/con/GenGRU/Gates/x_2_ru/b:0", "LFADS/con/GenGRU/Candidate/x_2_c/b:0",
               "LFADS/gen/GenGRU/Gates/x_2_ru/b:0", "LFADS/gen/GenGRU/Candidate/x_2_c/b:0",
               "LFADS/gen/gen_2_fac/b:0"]
SIZES = dict(E=5, Eci=4, C=6, U=2, G=7, F=3, I=4, X=0)


def tf_shapes(s: dict, D: int, read_in: bool, causal: bool = False, feed_factors: bool = True,
              inject_ext_input_to_gen: bool = True) -> dict:
    """Shapes of every field (lfads-formats.md §0, §1.4) for sizes ``s`` and one dataset of ``D`` neurons.

    The flags are TF's ``do_causal_controller``, ``do_feed_factors_to_controller`` and
    ``inject_ext_input_to_gen`` (the ``X`` external inputs go to the encoders when false).
    """
    Fin = s["F"] if read_in else D
    E, Eci, C, U, G, F, I, X = (s[k] for k in ("E", "Eci", "C", "U", "G", "F", "I", "X"))
    Ein = Fin if inject_ext_input_to_gen else Fin + X
    Gin = U + X if inject_ext_input_to_gen else U
    Cin = Eci * (1 if causal else 2) + (F if feed_factors else 0)
    shapes = {"x_to_infac_W": (D, Fin), "x_to_infac_b": (1, Fin), "factors_to_logrates_W": (F, D),
              "factors_to_logrates_b": (1, D), "prior_g0_mean": (1, I), "prior_g0_logvar": (1, I),
              "ic_enc_to_posterior_g0_mean_W": (2 * E, I), "ic_enc_to_posterior_g0_mean_b": (1, I),
              "ic_enc_to_posterior_g0_logvar_W": (2 * E, I), "ic_enc_to_posterior_g0_logvar_b": (1, I),
              "g0_to_gen_ic_W": (I, G), "g0_to_gen_ic_b": (1, G), "prior_ar1_logevars": (1, U),
              "prior_ar1_logatau": (1, U), "con_co": (1, C), "con_to_posterior_co_mean_W": (C, U),
              "con_to_posterior_co_mean_b": (1, U), "con_to_posterior_co_logvar_W": (C, U),
              "con_to_posterior_co_logvar_b": (1, U), "gen_to_factors_W": (G, F)}
    for enc, gates, H in (("ic_enc", "gates_", E), ("ci_enc", "", Eci)):
        for d in ("fwd", "rev"):
            shapes.update({f"{enc}_{d}_t0": (1, H), f"{enc}_{d}_gru_xh_to_{gates}ru_W": (Ein + H, 2 * H),
                           f"{enc}_{d}_gru_xh_to_{gates}ru_b": (1, 2 * H), f"{enc}_{d}_gru_xrh_to_c_W": (Ein + H, H),
                           f"{enc}_{d}_gru_xrh_to_c_b": (1, H)})
    for field, In, H in (("con_gengru", Cin, C), ("gen_gengru", Gin, G)):
        shapes.update({f"{field}_x_to_ru_W": (In, 2 * H), f"{field}_h_to_ru_W": (H, 2 * H),
                       f"{field}_h_to_ru_b": (1, 2 * H), f"{field}_x_to_c_W": (In, H), f"{field}_rh_to_c_W": (H, H),
                       f"{field}_rh_to_c_b": (1, H)})
    return shapes


def write_tf_model_params(path, datasets: dict, sizes: dict = SIZES, controller: bool = True, read_in: bool = True,
                          g0_map: bool = True, zero_biases: bool = True, trainable_prior_variances: bool = True,
                          extra: dict | None = None, seed: int = 0, **variant) -> dict:
    """Write ``model_params`` for ``datasets`` (``{tf dataset name: neurons}``); return ``{field: value}``.

    Per-dataset values are ``{tf dataset name: array}``; fields the model lacks are left out.
    ``variant`` takes the flags of :func:`tf_shapes` (a causal controller has no ``ci_enc_rev``).
    """
    rng = np.random.default_rng(seed)
    variables, values = {}, {}
    for field, name in TF_VARIABLES.items():
        controller_part = field.startswith(("ci_enc", "con_", "prior_ar1")) or field.startswith("gen_gengru_x_to")
        if (controller_part and not controller) or (field.startswith("x_to_infac") and not read_in) \
                or (field.startswith("g0_to_gen_ic") and not g0_map) \
                or (field.startswith("ci_enc_rev") and variant.get("causal")):
            continue
        if "{ds}" in name:
            values[field] = {}
            for ds, D in datasets.items():
                array = rng.normal(size=tf_shapes(sizes, D, read_in, **variant)[field]).astype(np.float32)
                variables[name.format(ds=ds)] = values[field][ds] = array
        else:
            D = next(iter(datasets.values()))
            shape = tf_shapes(sizes, D, read_in, **variant)[field]
            variables[name] = values[field] = rng.normal(size=shape).astype(np.float32)
    fixed = {"LFADS/z/prior_g0/logvar:0", "LFADS/z/u_prior_ar1/logevars:0"}
    slots = {}
    for name, array in variables.items():
        if trainable_prior_variances or name not in fixed:
            stem = name[len("LFADS/"):-len(":0")]
            slots[f"LFADS/LFADS/{stem}/Adam:0"] = rng.normal(size=array.shape).astype(np.float32)
            slots[f"LFADS/LFADS/{stem}/Adam_1:0"] = rng.random(size=array.shape).astype(np.float32)
    if zero_biases:
        for name in ZERO_BIASES:
            if controller or name.startswith("LFADS/gen/gen_2"):
                width = variables[name.replace("/b:0", "/W:0")].shape[1]
                variables[name] = np.zeros((1, width), np.float32)
    scalars = {"LFADS/global_step:0": np.int64(1234), "LFADS/learning_rate:0": np.float32(0.01),
               "LFADS/beta1_power:0": np.float32(0.9 ** 1234), "LFADS/beta2_power:0": np.float32(0.999 ** 1234)}
    with h5py.File(path, "w") as f:
        for name, array in {**scalars, **variables, **slots, **(extra or {})}.items():
            f.create_dataset(name.replace("/", "_"), data=array)
    return values


def lfads_hyperparameters(params, dataset_names, kind="train", batch_size=None, data_dir="/x/lfadsInput",
                          save_dir="/x/lfadsOutput", dims=4, num_steps=30) -> dict:
    """What TF LFADS's run_lfads.py writes (jsonify_dict) for ``params`` (a RunParams): the c_ flags
    without the prefix, booleans as strings, numbers as numbers."""
    hps = {"kind": kind, "data_dir": data_dir, "lfads_save_dir": save_dir, "data_filename_stem": "lfads",
           "dataset_names": [f"{n}.h5" for n in dataset_names], "dataset_dims": {f"{n}.h5": dims for n in dataset_names},
           "num_steps": num_steps, "ndatasets": len(dataset_names), "ps_nexamples_to_process": 9223372036854775807,
           "checkpoint_name": "lfads_vae", "csv_log": "fitlog", "do_train_encoder_only": "false"}
    for flag in params.command_line_options(num_datasets=len(dataset_names)):
        key, value = flag[2:].split("=", 1)
        try:
            hps[key] = int(value)
        except ValueError:
            try:
                hps[key] = float(value)
            except ValueError:
                hps[key] = value
    if batch_size is not None:
        hps["batch_size"] = batch_size
    return hps


def write_hyperparameters(folder, dataset_names, step: int = 0, **values) -> None:
    """``hyperparameters-<step>.txt``: single-line JSON, booleans as strings (§2.3)."""
    hps = {"dataset_names": list(dataset_names), "co_dim": 4, "con_dim": 128, "ci_enc_dim": 128,
           "do_causal_controller": "false", "factors_dim": 3, **values}
    (folder / f"hyperparameters-{step}.txt").write_text(json.dumps(hps))


def _randn(rng, *shape):
    return torch.from_numpy(rng.normal(size=shape).astype(np.float32))


def torch_state_dict(neurons, sizes: dict = SIZES, controller: bool = True, read_in: bool = True, seed: int = 0):
    """An lfads-torch state_dict (§3.2) with random weights, ``bias_hh`` non-zero to exercise the conversion."""
    rng = np.random.default_rng(seed)
    s = dict(sizes) if controller else {**sizes, "Eci": 0, "C": 0, "U": 0}
    E, Eci, C, U, G, F, I = (s[k] for k in ("E", "Eci", "C", "U", "G", "F", "I"))
    Fin = F if read_in else neurons[0]
    sd = collections.OrderedDict()
    for k, D in enumerate(neurons):
        if read_in:
            sd[f"readin.{k}.weight"], sd[f"readin.{k}.bias"] = _randn(rng, Fin, D), _randn(rng, Fin)
    sd["encoder.ic_enc_h0"] = _randn(rng, 2, 1, E)
    if controller:
        sd["encoder.ci_enc_h0"] = _randn(rng, 2, 1, Eci)
    for enc, H in (("ic_enc", E), ("ci_enc", Eci)):
        if enc == "ci_enc" and not controller:
            continue
        for d in ("fwd", "bwd"):
            for part, shape in (("weight_ih", (3 * H, Fin)), ("weight_hh", (3 * H, H)), ("bias_ih", (3 * H,)),
                                ("bias_hh", (3 * H,))):
                sd[f"encoder.{enc}.{d}_gru.cell.{part}"] = _randn(rng, *shape)
    sd["encoder.ic_linear.weight"], sd["encoder.ic_linear.bias"] = _randn(rng, 2 * I, 2 * E), _randn(rng, 2 * I)
    sd["decoder.con_h0"] = _randn(rng, 1, C)
    sd["decoder.ic_to_g0.weight"], sd["decoder.ic_to_g0.bias"] = _randn(rng, G, I), _randn(rng, G)
    for cell, H, In in (("gen_cell", G, U + s["X"]), ("con_cell", C, 2 * Eci + F)):
        for part, shape in (("weight_ih", (3 * H, In)), ("weight_hh", (3 * H, H)), ("bias_ih", (3 * H,)),
                            ("bias_hh", (3 * H,))):
            sd[f"decoder.rnn.cell.{cell}.{part}"] = _randn(rng, *shape)
    sd["decoder.rnn.cell.fac_linear.weight"] = _randn(rng, F, G)
    sd["decoder.rnn.cell.co_linear.weight"] = _randn(rng, 2 * U, C)
    sd["decoder.rnn.cell.co_linear.bias"] = _randn(rng, 2 * U)
    for k, D in enumerate(neurons):
        sd[f"readout.{k}.weight"], sd[f"readout.{k}.bias"] = _randn(rng, D, F), _randn(rng, D)
    sd["ic_prior.mean"], sd["ic_prior.logvar"] = _randn(rng, I), _randn(rng, I)
    sd["co_prior.logtaus"], sd["co_prior.lognvars"] = _randn(rng, U), _randn(rng, U)
    return sd


def save_lightning_checkpoint(path, state_dict, datafile_pattern=None, extra: dict | None = None) -> None:
    """``torch.save`` a Lightning-1.6-like checkpoint whose hyperparameters hold lfads-torch objects.

    The classes live in modules (``lfads_torch.modules.priors``, ``pytorch_lightning.utilities.parsing``)
    that exist only while saving, so a reader must cope with classes it cannot import.
    """
    class AutoregressiveMultivariateNormal(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.logtaus = torch.nn.Parameter(torch.ones(2))

    class AugmentationStack:
        def __init__(self):
            self.transforms, self.batch_order = ["CoordinatedDropout"], [0]

    class AttributeDict(dict):
        pass

    homes = {"lfads_torch.modules.priors": [AutoregressiveMultivariateNormal, AugmentationStack],
             "pytorch_lightning.utilities.parsing": [AttributeDict]}
    names = [".".join(home.split(".")[:i]) for home in homes for i in range(1, 4)]
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update({name: types.ModuleType(name) for name in names})
    for home, classes in homes.items():
        for cls in classes:
            cls.__module__, cls.__qualname__ = home, cls.__name__
            setattr(sys.modules[home], cls.__name__, cls)
    try:
        checkpoint = {
            "epoch": 12, "global_step": 3456, "pytorch-lightning_version": "1.6.0", "state_dict": state_dict,
            "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 12}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'valid/recon_smth'}": {"best_model_score": torch.tensor(0.5)}},
            "optimizer_states": [{"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3)}},
                                  "param_groups": [{"lr": 0.004, "betas": (0.9, 0.999), "params": [0]}]}],
            "lr_schedulers": [], "hparams_name": "kwargs",
            "hyper_parameters": {"co_prior": AutoregressiveMultivariateNormal(),
                                 "train_aug_stack": AugmentationStack(), "fac_dim": 3, "lr_init": 0.004},
            **(extra or {}),
        }
        if datafile_pattern is not None:
            checkpoint["datamodule_hyper_parameters"] = AttributeDict(datafile_pattern=str(datafile_pattern),
                                                                      batch_size=256)
        torch.save(checkpoint, path)
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _sigmoid(v):
    return 1 / (1 + torch.exp(-v))


def tf_gru_step(x, h, W_ru, b_ru, W_c, b_c):
    """TF LFADS ``GRU``: gates ``[r | u]`` from ``[x, h]``, forget bias 1 on u, candidate from ``[x, r*h]``."""
    H = h.shape[1]
    ru = torch.cat([x, h], 1) @ W_ru + b_ru
    r, u = _sigmoid(ru[:, :H]), _sigmoid(ru[:, H:] + 1.0)
    c = torch.tanh(torch.cat([x, r * h], 1) @ W_c + b_c)
    return u * h + (1 - u) * c


def tf_gengru_step(x, h, Wx_ru, Wh_ru, b_ru, Wx_c, Wh_c, b_c):
    """TF LFADS ``GenGRU``: separate input and hidden weights, bias on the hidden side only."""
    H = h.shape[1]
    ru = x @ Wx_ru + h @ Wh_ru + b_ru
    r, u = _sigmoid(ru[:, :H]), _sigmoid(ru[:, H:] + 1.0)
    c = torch.tanh(x @ Wx_c + (r * h) @ Wh_c + b_c)
    return u * h + (1 - u) * c


def torch_cell_step(x, h, weight_ih, weight_hh, bias_ih, bias_hh):
    """lfads-torch ``ClippedGRUCell`` (no clipping): rows ``[z; r; n]``, r applied before the hidden product."""
    H = h.shape[1]
    xz, xr, xn = torch.chunk(x @ weight_ih.T + bias_ih, 3, dim=1)
    hz, hr = torch.chunk(h @ weight_hh[: 2 * H].T + bias_hh[: 2 * H], 2, dim=1)
    z, r = _sigmoid(xz + hz), _sigmoid(xr + hr)
    n = torch.tanh(xn + (r * h) @ weight_hh[2 * H:].T + bias_hh[2 * H:])
    return z * h + (1 - z) * n
