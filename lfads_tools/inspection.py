"""Open whatever parameter file or folder a user points at (``lfads-tools inspect`` and ``report``).

Supported: native parameter files (any class), TF LFADS ``model_params`` HDF5 files
(with the ``fitlog.csv`` beside them), lfads-torch ``.ckpt`` checkpoints, Bonsai.ML.Lds.Torch parameter folders, and run
folders (``<run>/lfadsOutput/model_params`` with its ``fitlog.csv``, else the LDS fit
``<run>/lds/kalman_params.h5`` with its ``em_history.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import lds.bonsai
from lds.containers import ParamsContainer
from lds.errors import FileFormatError, MissingFileError, ValidationError

from .report import Curve

__all__ = ["Opened", "open_path", "BONSAI_FILE_NAMES", "format_params"]

BONSAI_FILE_NAMES = tuple(lds.bonsai.FILE_NAMES.values())
FORMATS = ("text", "markdown", "html", "json")


@dataclass
class Opened:
    """A loaded parameter object with what the report shows beside it."""

    params: ParamsContainer
    kind: str
    source: Path
    curves: list[Curve] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


def _em_curve(metadata: dict) -> list[Curve]:
    values = metadata.get("log_likelihoods")
    if not values:
        return []
    y = np.asarray(values, dtype=np.float64)
    return [Curve("EM log-likelihood", np.arange(1, len(y) + 1), {"log-likelihood": y},
                  xlabel="EM iteration", ylabel="log-likelihood")]


def _fit_log_curves(fit_log_path: Path) -> list[Curve]:
    from .fit_log import FitLog

    log = FitLog(fit_log_path)
    curves = []
    for title, column in (("total cost", "total"), ("reconstruction cost", "recon"), ("KL cost", "kl")):
        series = {split: getattr(log, f"{column}_{split}") for split in ("train", "valid")}
        series = {k: v for k, v in series.items() if not np.all(np.isnan(v))}
        curves.append(Curve(title, log.epoch, series, xlabel="epoch", ylabel="cost"))
    if log.lve_index is not None:
        curves[0].notes.append(f"Lowest validation cost {log.total_valid_lve:.6g} at epoch "
                               f"{int(log.epoch[log.lve_index])} (KL and L2 weights at 1).")
    return curves


def _open_native(path: Path) -> Opened:
    from lds import native

    info = native.read_info(path)
    params = native.load_params(path)
    user = dict(info.metadata.get("user") or {})
    history = path.parent / "em_history.json"  # written beside the parameters by Run.fit_lds
    if "log_likelihoods" not in user and history.is_file():
        try:
            user["log_likelihoods"] = json.loads(history.read_text())["log_likelihoods"]
        except (ValueError, KeyError, TypeError):
            pass  # the curve is optional; the parameters are what was asked for
    return Opened(params, f"native parameter file ({info.class_name})", path, _em_curve(user), user)


def _open_lfads(path: Path, kind: str, source: Path) -> Opened:
    """An LFADS parameter file, with the curves of the ``fitlog.csv`` beside it (TF LFADS's output folder)."""
    from lfads_tools import ModelTrainedParams  # issue 4's public name

    fit_log = path.parent / "fitlog.csv"
    curves = _fit_log_curves(fit_log) if fit_log.is_file() else []
    return Opened(ModelTrainedParams.load(path), kind, source, curves)


def _open_folder(path: Path) -> Opened:
    if any((path / name).is_file() for name in BONSAI_FILE_NAMES):
        from lds import KalmanParams

        return Opened(KalmanParams.load_bonsai(path), "Bonsai.ML.Lds.Torch parameter folder", path)
    for model_params in (path / "lfadsOutput" / "model_params", path / "model_params"):
        if model_params.is_file():
            return _open_lfads(model_params, "LFADS run folder", path)
    if (path / "lds" / "kalman_params.h5").is_file():
        return _open_native(path / "lds" / "kalman_params.h5")
    raise FileFormatError(
        f"{path} is a folder with neither Bonsai parameter files ({', '.join(BONSAI_FILE_NAMES[:2])}, ...), "
        "an LFADS lfadsOutput/model_params file nor an LDS fit lds/kalman_params.h5"
    )


def open_path(path) -> Opened:
    """Load the parameters at ``path``, whatever supported kind it is (see the module docstring)."""
    from lds import native

    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} does not exist")
    if path.is_dir():
        return _open_folder(path)
    if native.is_native_file(path):
        return _open_native(path)
    if path.suffix == ".ckpt":
        from lfads_tools import ModelTrainedParams  # issue 4's public name

        return Opened(ModelTrainedParams.load(path), "lfads-torch checkpoint", path)
    return _open_lfads(path, "TF LFADS model_params file", path)


def format_params(opened: Opened, fmt: str = "text", verbose: bool = False) -> str:
    """The grouped view and the summary table as text, markdown, html or json."""
    params = opened.params
    header = f"{opened.source} ({opened.kind})"
    if fmt == "text":
        return f"{header}\n\n{params.format(verbose=verbose)}\n{params.summary()}\n"
    if fmt == "markdown":
        return (f"### {opened.source.name}\n\n{opened.kind}\n\n```\n{params.format(verbose=verbose)}```\n\n"
                f"{params.summary(tablefmt='github')}\n")
    if fmt == "html":
        import html

        return (f"<h3>{html.escape(header)}</h3>\n<pre>{html.escape(params.format(verbose=verbose))}</pre>\n"
                f"{params._repr_html_()}\n")
    if fmt == "json":
        names = getattr(params, "dataset_names", None)
        payload = {"source": str(opened.source), "kind": opened.kind, "class": type(params).__name__,
                   "dataset_names": list(names) if names is not None else None,
                   "fields": params.summary_rows(), "metadata": opened.metadata}
        return json.dumps(payload, indent=2, default=str) + "\n"
    raise ValidationError(f"unknown format {fmt!r}; use one of {FORMATS}")
