"""Standalone HTML reports of trained parameters (``lfads-tools report``).

A report holds the grouped view and the summary table of a parameter object
(``KalmanParams`` or ``ModelTrainedParams``), and figures drawn with matplotlib's Agg
renderer and embedded as base64 PNG so the single file opens anywhere:

- weight heatmaps, one figure per parameter section;
- the eigenvalues of the transition matrix (LDS) or of the generator's recurrent
  candidate weights ``gen_gengru_rh_to_c_W`` (LFADS) in the complex plane, with the unit circle;
- the readout matrices of each dataset (``measurement_function`` / ``factors_to_logrates_W``);
- training curves: the EM log-likelihood or the LFADS fit log.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tabulate import tabulate

from lds.containers import DatasetList, ParamsContainer, as_numpy
from lds.errors import ValidationError, require
from lds.fileio import atomic_write_bytes

__all__ = ["Curve", "build_report", "write_report", "DYNAMICS_FIELDS", "READOUT_FIELDS"]

# The matrix whose eigenvalues describe the dynamics, and the readouts, by field name.
DYNAMICS_FIELDS = ("transition_matrix", "gen_gengru_rh_to_c_W")
READOUT_FIELDS = ("measurement_function", "factors_to_logrates_W")
_READOUT_AXES = {"measurement_function": ("neuron", "state"), "factors_to_logrates_W": ("factor", "neuron")}
_MAX_EIGENVALUE_ROWS = 12


@dataclass
class Curve:
    """One training-curve panel: ``series`` maps a label to y values over ``x``."""

    title: str
    x: np.ndarray
    series: dict[str, np.ndarray]
    xlabel: str = "iteration"
    ylabel: str = ""
    notes: list[str] = field(default_factory=list)


# ---- figures ------------------------------------------------------------------
def _figure(width: float, height: float, **spacing):
    """A pyplot-free Agg figure; fixed margins (automatic layout engines are slow)."""
    require("matplotlib", "plot")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    fig.subplots_adjust(**{"left": 0.1, "right": 0.95, "bottom": 0.15, "top": 0.85, **spacing})
    return fig


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _matrices(value, name: str) -> list[tuple[str, np.ndarray]]:
    """``(label, 2-D array)`` for a field (one per dataset for a DatasetList); vectors are skipped."""
    entries = value.items() if isinstance(value, DatasetList) else [(None, value)]
    out = []
    for ds_name, array in entries:
        if array is None:
            continue
        array = as_numpy(array).astype(np.float64, copy=False)
        if array.ndim == 2 and min(array.shape) > 1:
            out.append((name if ds_name is None else f"{name}[{ds_name}]", array))
    return out


def heatmap_figure(panels: list[tuple[str, np.ndarray]], columns: int = 4, axes: tuple[str, str] = ("", "")) -> str:
    """Grid of heatmaps (diverging colours centred on 0), as base64 PNG; ``axes``: row and column labels."""
    from matplotlib.ticker import MaxNLocator

    columns = min(columns, len(panels))
    rows = -(-len(panels) // columns)
    fig = _figure(3.4 * columns, 3.0 * rows, left=0.6 / (3.4 * columns), right=1 - 0.1 / columns,
                  bottom=0.4 / (3.0 * rows), top=1 - 0.5 / (3.0 * rows), wspace=0.45, hspace=0.6)
    for i, (label, array) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        limit = float(np.max(np.abs(array))) or 1.0
        image = ax.imshow(array, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        ax.set_title(f"{label}\n{array.shape[0]}x{array.shape[1]}", fontsize=8)
        ax.set_ylabel(axes[0], fontsize=7)
        ax.set_xlabel(axes[1], fontsize=7)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    return _png(fig)


def eigenvalue_figure(matrix: np.ndarray, label: str) -> str:
    """Eigenvalues in the complex plane with the unit circle, as base64 PNG."""
    eig = np.linalg.eigvals(matrix)
    fig = _figure(4.6, 4.4, left=0.16, bottom=0.12, top=0.92)
    ax = fig.add_subplot(1, 1, 1)
    theta = np.linspace(0, 2 * np.pi, 361)
    ax.plot(np.cos(theta), np.sin(theta), color="0.6", lw=1, label="unit circle")
    ax.axhline(0, color="0.85", lw=0.8)
    ax.axvline(0, color="0.85", lw=0.8)
    ax.scatter(eig.real, eig.imag, s=22, color="C3", zorder=3, label="eigenvalues")
    extent = max(1.05, float(np.max(np.abs(eig))) * 1.1)
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel("real")
    ax.set_ylabel("imaginary")
    ax.set_title(f"eigenvalues of {label}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


def curve_figure(curves: list[Curve]) -> str:
    """One panel per curve, as base64 PNG."""
    fig = _figure(5.0 * len(curves), 3.4, left=0.9 / (5.0 * len(curves)), right=1 - 0.1 / len(curves),
                  bottom=0.16, top=0.9, wspace=0.35)
    for i, curve in enumerate(curves):
        ax = fig.add_subplot(1, len(curves), i + 1)
        for label, y in curve.series.items():
            ax.plot(curve.x, y, marker="o" if len(curve.x) <= 30 else None, ms=3, label=label)
        ax.set_title(curve.title, fontsize=9)
        ax.set_xlabel(curve.xlabel)
        ax.set_ylabel(curve.ylabel)
        ax.grid(alpha=0.3)
        if len(curve.series) > 1:
            ax.legend(fontsize=7)
    return _png(fig)


# ---- HTML ---------------------------------------------------------------------
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
table { border-collapse: collapse; font-size: .85em; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .2em .6em; text-align: left; }
th { background: #f0f0f0; }
img { max-width: 100%; display: block; margin: .5em 0; }
.meta { color: #666; font-size: .9em; } nav a { margin-right: 1em; }
"""


def _img(png: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png}">'


def _table(headers: list[str], rows: list[list], colalign=None) -> str:
    return tabulate(rows, headers=headers, tablefmt="html", floatfmt=".4g", colalign=colalign)


def _find(params, names) -> tuple[str, object] | tuple[None, None]:
    for name in names:
        value = getattr(params, name, None)
        if value is not None and not (isinstance(value, DatasetList) and len(value) == 0):
            return name, value
    return None, None


def _eigen_section(params) -> str | None:
    name, value = _find(params, DYNAMICS_FIELDS)
    if name is None:
        return None
    matrix = as_numpy(value).astype(np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        return None
    eig = np.linalg.eigvals(matrix)
    order = np.argsort(-np.abs(eig))[:_MAX_EIGENVALUE_ROWS]
    rows = [[f"{eig[i].real:.4g}", f"{eig[i].imag:+.4g}j", abs(eig[i]), np.degrees(np.angle(eig[i]))]
            for i in order]
    note = ("The GRU candidate weights are stored input x output; their eigenvalues describe the "
            "recurrent coupling, not the full nonlinear dynamics." if name == "gen_gengru_rh_to_c_W" else
            "Eigenvalues inside the unit circle mean the latent dynamics decay (stable).")
    return (f"<p>Spectral radius <strong>{np.max(np.abs(eig)):.4g}</strong> ({matrix.shape[0]} eigenvalues). "
            f"{html.escape(note)}</p>" + _img(eigenvalue_figure(matrix, name), f"eigenvalues of {name}")
            + _table(["real", "imag", "|λ|", "angle (deg)"], rows, colalign=("right",) * 4))


def _readout_section(params) -> str | None:
    name, value = _find(params, READOUT_FIELDS)
    panels = _matrices(value, name) if name else []
    if not panels:
        return None
    return _img(heatmap_figure(panels, columns=min(4, len(panels)), axes=_READOUT_AXES[name]),
                f"readout matrices {name}")


def _heatmap_sections(params: ParamsContainer) -> str:
    parts = []
    for title, fields in params.sections():
        panels = [p for spec, value in fields for p in _matrices(value, spec.name)]
        if panels:
            parts.append(f"<h3>{html.escape(title)}</h3>" + _img(heatmap_figure(panels), f"{title} weights"))
    return "".join(parts) or "<p>No two-dimensional weight arrays.</p>"


def build_report(params: ParamsContainer, *, title: str, source: str = "", curves: list[Curve] = (),
                 extra_tables: dict[str, str] | None = None) -> str:
    """The HTML text of a report (see the module docstring for its sections)."""
    if not isinstance(params, ParamsContainer):
        raise ValidationError(f"a report needs a parameter object, got {type(params).__name__}")
    sections = [("overview", "Overview", f"<pre>{html.escape(params.format(verbose=True))}</pre>")]
    for heading, body in (extra_tables or {}).items():
        sections.append((heading.lower().replace(" ", "-"), heading, body))
    sections.append(("summary", "Parameter summary", params.summary(tablefmt="html")))
    eigen = _eigen_section(params)
    if eigen:
        sections.append(("eigenvalues", "Eigenvalues of the dynamics", eigen))
    readouts = _readout_section(params)
    if readouts:
        sections.append(("readouts", "Readout matrices", readouts))
    sections.append(("heatmaps", "Weight heatmaps", _heatmap_sections(params)))
    if curves:
        notes = "".join(f"<p>{html.escape(n)}</p>" for c in curves for n in c.notes)
        sections.append(("curves", "Training curves", _img(curve_figure(list(curves)), "training curves") + notes))
    nav = "".join(f'<a href="#{sid}">{html.escape(h)}</a>' for sid, h, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(h)}</h2>{content}</section>' for sid, h, content in sections)
    from . import __version__

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p class=\"meta\">{html.escape(source)}<br>{type(params).__name__} · written {stamp} "
        f"by lfads-tools {__version__}</p><nav>{nav}</nav>{body}</body></html>\n"
    )


def write_report(params: ParamsContainer, out, *, title: str, source: str = "", curves: list[Curve] = (),
                 extra_tables: dict[str, str] | None = None, overwrite: bool = False) -> Path:
    """Write :func:`build_report` to ``out`` (atomically; ``overwrite`` to replace)."""
    text = build_report(params, title=title, source=source, curves=curves, extra_tables=extra_tables)
    return atomic_write_bytes(out, text.encode("utf-8"), overwrite=overwrite)
