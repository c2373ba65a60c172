"""``FitLog``: the per-epoch costs TF LFADS appends to ``fitlog.csv``.

Each row (no header) reads
``epoch,N, step,N, total,TR,VA,       recon,TR,VA, kl,TR,VA, l2,X,       klweight,W, l2weight,W``;
runs without a validation set write 16 fields (no valid columns: those become NaN).
Labels are checked, so a file of another format (e.g. lfadslite's) is refused rather
than mis-read. The LVE ("lowest validation error") epoch is the one with the lowest
``total_valid`` among epochs whose KL and L2 weights have reached 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lds.errors import FileFormatError, MissingFileError, require

__all__ = ["FitLog"]

# label -> number of values after it, for the two row layouts
_LAYOUT_WITH_VALID = (("epoch", 1), ("step", 1), ("total", 2), ("recon", 2), ("kl", 2), ("l2", 1),
                      ("klweight", 1), ("l2weight", 1))
_LAYOUT_TRAIN_ONLY = (("epoch", 1), ("step", 1), ("total", 1), ("recon", 1), ("kl", 1), ("l2", 1),
                      ("klweight", 1), ("l2weight", 1))
COLUMNS = ("epoch", "step", "total_train", "total_valid", "recon_train", "recon_valid", "kl_train", "kl_valid",
           "l2", "kl_weight", "l2_weight")


def _parse_row(fields: list[str], where: str) -> list[float]:
    layout = {19: _LAYOUT_WITH_VALID, 16: _LAYOUT_TRAIN_ONLY}.get(len(fields))
    if layout is None:
        raise FileFormatError(f"{where}: expected 19 comma-separated fields (16 without validation), "
                              f"found {len(fields)}")
    values, position = {}, 0
    for label, count in layout:
        if fields[position] != label:
            raise FileFormatError(f"{where}: field {position} should be the label {label!r}, "
                                  f"found {fields[position]!r}")
        try:
            values[label] = [float(v) for v in fields[position + 1: position + 1 + count]]
        except ValueError:
            raise FileFormatError(f"{where}: the value(s) after {label!r} are not numbers: "
                                  f"{fields[position + 1: position + 1 + count]}") from None
        position += 1 + count
    valid = (lambda key: values[key][1]) if layout is _LAYOUT_WITH_VALID else (lambda key: np.nan)
    return [values["epoch"][0], values["step"][0], values["total"][0], valid("total"), values["recon"][0],
            valid("recon"), values["kl"][0], valid("kl"), values["l2"][0], values["klweight"][0],
            values["l2weight"][0]]


class FitLog:
    """The columns of ``fitlog.csv`` as float arrays, one entry per epoch.

    >>> log = run.load_fit_log()
    >>> log.lve_index, log.total_valid_lve
    """

    def __init__(self, filename, run_name: str | None = None):
        self.filename = Path(filename)
        self.run_name = run_name
        if not self.filename.is_file():
            raise MissingFileError(f"fit log {self.filename} does not exist; has the model been trained?")
        try:
            lines = self.filename.read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise FileFormatError(f"fit log {self.filename} could not be read as text: {exc}") from None
        rows = [_parse_row([f.strip() for f in line.split(",")], f"{self.filename} line {number}")
                for number, line in enumerate(lines, start=1) if line.strip()]
        table = np.array(rows, dtype=np.float64).reshape(len(rows), len(COLUMNS))
        for i, name in enumerate(COLUMNS):
            setattr(self, name, table[:, i])

    @property
    def n_epochs(self) -> int:
        return len(self.epoch)

    @property
    def lve_index(self) -> int | None:
        """0-based row of the lowest ``total_valid`` once both weights are 1 (None if never)."""
        candidates = np.where((self.kl_weight == 1) & (self.l2_weight == 1), self.total_valid, np.inf)
        candidates = np.where(np.isnan(candidates), np.inf, candidates)
        if not np.isfinite(candidates).any():
            return None
        return int(np.argmin(candidates))  # the first minimum wins, as in MATLAB

    def _at_lve(self, column: np.ndarray) -> float:
        index = self.lve_index
        return float("nan") if index is None else float(column[index])

    @property
    def total_train_lve(self) -> float:
        return self._at_lve(self.total_train)

    @property
    def total_valid_lve(self) -> float:
        return self._at_lve(self.total_valid)

    @property
    def recon_train_lve(self) -> float:
        return self._at_lve(self.recon_train)

    @property
    def recon_valid_lve(self) -> float:
        return self._at_lve(self.recon_valid)

    @property
    def kl_train_lve(self) -> float:
        return self._at_lve(self.kl_train)

    @property
    def kl_valid_lve(self) -> float:
        return self._at_lve(self.kl_valid)

    @property
    def l2_lve(self) -> float:
        return self._at_lve(self.l2)

    def plot(self, ax=None):
        """Train and valid total and reconstruction costs against the step, LVE marked (needs matplotlib)."""
        plt = require("matplotlib.pyplot", "plot")
        if ax is None:
            _, ax = plt.subplots()
        for column, style in (("total", "-"), ("recon", "--")):
            ax.plot(self.step, getattr(self, f"{column}_train"), style, color="C0", label=f"{column} (train)")
            ax.plot(self.step, getattr(self, f"{column}_valid"), style, color="C1", label=f"{column} (valid)")
        if self.lve_index is not None:
            ax.axvline(self.step[self.lve_index], color="0.5", linestyle=":", label="lowest valid cost")
        ax.set_xlabel("training step")
        ax.set_ylabel("cost")
        ax.set_title(f"LFADS fit log{f' of {self.run_name}' if self.run_name else ''}")
        ax.legend()
        return ax

    def __repr__(self) -> str:
        lve = self.lve_index
        fields = [("run_name", repr(self.run_name) if self.run_name else "[]"), ("filename", str(self.filename)),
                  ("n_epochs", str(self.n_epochs)),
                  ("last step", str(int(self.step[-1])) if self.n_epochs else "[]"),
                  ("lve_index", "[]" if lve is None else f"{lve} (epoch {int(self.epoch[lve])}, "
                                                         f"step {int(self.step[lve])})"),
                  ("total_valid_lve", f"{self.total_valid_lve:.2f}"),
                  ("recon_valid_lve", f"{self.recon_valid_lve:.2f}"),
                  ("kl_valid_lve", f"{self.kl_valid_lve:.2f}"), ("columns", ", ".join(COLUMNS))]
        width = max(len(k) for k, _ in fields) + 4
        return "  FitLog with properties:\n\n" + "\n".join(f"{k.rjust(width)}: {v}" for k, v in fields) + "\n"
