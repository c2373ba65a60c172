"""Normalise the observation data that every ``lds`` algorithm accepts.

Accepted forms of ``y`` (time-major, missing entries or whole rows marked with NaN):

- one sequence ``[T, N]``;
- a batch of equal-length trials ``[B, T, N]``;
- a list (or tuple) of trials ``[T_i, N]`` of unequal length;
- for multi-session parameters, a dict mapping dataset names to any of the above
  (the dict order is the dataset order; a subset of the sessions is allowed).

Torch or NumPy input. Computations run on the device and in the floating dtype of the
first floating torch tensor found in ``y``; NumPy (or integer) input uses the dtype and
device of the parameters. Infinite values are an error: only NaN means "missing".

:func:`prepare` returns the parameters on that device and dtype and an
:class:`Observations` object: the flat list of trials plus what is needed to give
per-trial results back in the form of the input (:meth:`Observations.regroup`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .errors import DatasetNameError, ShapeError, ValidationError
from .params import KalmanParams

__all__ = ["Observations", "prepare", "real_tensor"]


@dataclass
class Observations:
    """Observation trials in one flat list, with the layout of the original input.

    ``trials[i]`` is ``[T_i, N]`` for session ``sessions[i]`` (0-based index into the
    parameters' sessions). ``layouts`` holds one ``(kind, count)`` per input group,
    kind being ``"single"``, ``"batch"`` or ``"list"``; ``names`` the dict keys (None
    when ``y`` was not a dict); ``labels[i]`` names trial ``i`` in messages. ``complete[i]``
    tells that trial ``i`` has no NaN (found by the input check, so the fast path need not
    look again), or is None when the values were not looked at yet (see :func:`prepare`).
    """

    trials: list[torch.Tensor]
    sessions: list[int]
    layouts: list[tuple[str, int]]
    names: list[str] | None
    complete: list[bool | None]
    labels: list[str]

    @property
    def num_trials(self) -> int:
        return len(self.trials)

    def check_trial(self, i: int) -> bool:
        """Look at trial ``i``'s values: :class:`ValidationError` for infinite values, else record
        and return whether it has no NaN."""
        self.complete[i] = _has_no_nan(self.labels[i], self.trials[i])
        return self.complete[i]

    def check_unknown(self) -> None:
        """:meth:`check_trial` for every trial not looked at yet."""
        for i, known in enumerate(self.complete):
            if known is None:
                self.check_trial(i)

    def regroup(self, per_trial: Sequence, stack: Callable[[list], Any]):
        """Arrange one result per trial like the input: single, stacked batch, list, dict."""
        items = iter(per_trial)

        def group(kind, count):
            if kind == "single":
                return next(items)
            chunk = [next(items) for _ in range(count)]
            return stack(chunk) if kind == "batch" else chunk

        if self.names is None:
            return group(*self.layouts[0])
        return {name: group(*layout) for name, layout in zip(self.names, self.layouts)}


def prepare(params: KalmanParams, y, check_values: bool = True) -> tuple[KalmanParams, Observations]:
    """Check ``y`` against ``params``; return both on the computation device and dtype.

    ``check_values=False`` checks the forms but not the values (``complete`` holds None): for
    the fast filter, which finds trials with NaN or infinite values from sums it computes
    anyway and then calls :meth:`Observations.check_trial` for them; it saves a pass over the data.
    """
    if not isinstance(params, KalmanParams):
        raise ValidationError(f"params must be lds.KalmanParams, got {type(params).__name__}")
    if isinstance(y, Observations):
        if check_values:
            y.check_unknown()
        return params, y
    dtype, device = _computation_dtype_device(y, params)
    if (dtype, device) != (params.dtype, params.device):
        params = params.to(device=device, dtype=dtype)
    if isinstance(y, Mapping):
        if not params.is_multi_session:
            raise ValidationError(
                "y is a dict of sessions but the parameters have a single session; "
                "give one array, a batch or a list of trials"
            )
        names = [str(k) for k in y]
        unknown = [n for n in names if n not in params.dataset_names]
        if unknown:
            raise DatasetNameError(
                f"y has sessions {unknown} that the parameters lack; they have {params.dataset_names}")
        if not names:
            raise ValidationError("y is an empty dict; give data for at least one session")
        groups = [(f"y[{n!r}]", value, params.dataset_names.index(n)) for n, value in zip(names, y.values())]
    else:
        if params.is_multi_session:
            raise ValidationError(
                f"the parameters have sessions {params.dataset_names}; give y as a dict "
                "mapping session names to their data"
            )
        names, groups = None, [("y", y, 0)]
    trials, sessions, layouts, labels = [], [], [], []
    Ns = params.num_observations if params.is_multi_session else [params.num_observations]
    for where, data, session in groups:
        kind, arrays = _split_trials(where, data)
        for label, array in arrays:
            trials.append(_checked_trial(label, array, Ns[session], dtype, device))
            labels.append(label)
            sessions.append(session)
        layouts.append((kind, len(arrays)))
    observations = Observations(trials, sessions, layouts, names, [None] * len(trials), labels)
    if check_values:
        observations.check_unknown()
    return params, observations


def _computation_dtype_device(y, params):
    for value in _leaves(y):
        if torch.is_tensor(value) and value.is_floating_point():
            return value.dtype, value.device
    return params.dtype, params.device


def _leaves(y):
    if isinstance(y, Mapping):
        for value in y.values():
            yield from _leaves(value)
    elif isinstance(y, (list, tuple)):
        for value in y:
            yield from _leaves(value)
    else:
        yield y


def _split_trials(where, data):
    """``(kind, [(label, 2-D array), ...])`` for one sequence, a batch or a list of trials."""
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValidationError(f"{where} is an empty list; give at least one trial")
        dims = [_ndim(t) for t in data]
        if all(d == 2 for d in dims):
            return "list", [(f"{where}[{i}]", t) for i, t in enumerate(data)]
        if any(d == 2 for d in dims):
            shapes = [_shape(t) for t in data]
            raise ShapeError(f"{where} is a list of trials, each [T, N]; found shapes {shapes}")
    ndim = _ndim(data)
    if ndim == 2:
        return "single", [(where, data)]
    if ndim == 3:
        if len(data) == 0:
            raise ShapeError(f"{where} is an empty batch (shape {_shape(data)}); give at least one trial")
        return "batch", [(f"{where}[{i}]", data[i]) for i in range(len(data))]
    raise ShapeError(
        f"{where} should be [T, N] (one sequence), [B, T, N] (a batch) or a list of [T, N] "
        f"trials, but has shape {_shape(data)}"
    )


def _ndim(value) -> int:
    return value.dim() if torch.is_tensor(value) else np.ndim(value)


def _shape(value) -> tuple:
    return tuple(value.shape) if torch.is_tensor(value) else tuple(np.shape(value))


def real_tensor(where: str, array, dtype, device) -> torch.Tensor:
    """``array`` (torch, NumPy or nested lists of real numbers) as a tensor of ``dtype`` on ``device``."""
    if torch.is_tensor(array):
        if array.is_complex() or array.dtype == torch.bool:
            raise ValidationError(f"{where} must hold real numbers, got dtype {array.dtype}")
        return array.detach().to(device=device, dtype=dtype)
    values = np.asarray(array)
    if values.dtype.kind not in "biuf":
        raise ValidationError(f"{where} must hold real numbers, got dtype {values.dtype}")
    return torch.as_tensor(values.astype(np.float64, copy=False), dtype=dtype, device=device)


def _checked_trial(where, array, N, dtype, device) -> torch.Tensor:
    """The trial as a tensor of ``dtype`` on ``device``, of shape ``[T >= 1, N]``."""
    tensor = real_tensor(where, array, dtype, device)
    if tensor.shape[-1] != N:
        raise ShapeError(
            f"{where} should have N = {N} observations per time step (shape [T, {N}]) "
            f"but has shape {tuple(tensor.shape)}"
        )
    if tensor.shape[0] < 1:
        raise ShapeError(f"{where} has no time steps (shape {tuple(tensor.shape)})")
    return tensor


def _has_no_nan(where, tensor) -> bool:
    """Whether ``tensor`` has no NaN; infinite values are an error (only NaN marks missing data)."""
    if bool(torch.isfinite(tensor.sum())):  # one cheap pass: no NaN, no inf (the usual case)
        return True
    infinite = torch.isinf(tensor)
    if bool(infinite.any()):
        t, n = (int(i) for i in torch.nonzero(infinite)[0])
        raise ValidationError(
            f"{where} has infinite values (first at time {t}, observation {n}); "
            "only NaN may mark missing data"
        )
    return not bool(torch.isnan(tensor).any())  # a sum can overflow with finite values


def trials_by_session(y) -> tuple[list[str] | None, list[list[torch.Tensor]]]:
    """Trials grouped by session, for algorithms that start without parameters.

    Returns the dict keys (None when ``y`` is not a dict) and, per session, its trials
    ``[T_i, N]``, in the dtype and on the device of the first floating torch tensor of
    ``y`` (else float64 on the CPU). All trials of a session must have the same ``N``.
    """
    dtype, device = torch.float64, torch.device("cpu")
    for value in _leaves(y):
        if torch.is_tensor(value) and value.is_floating_point():
            dtype, device = value.dtype, value.device
            break
    if isinstance(y, Mapping):
        if not y:
            raise ValidationError("y is an empty dict; give data for at least one session")
        names, groups = [str(k) for k in y], [(f"y[{k!r}]", v) for k, v in y.items()]
    else:
        names, groups = None, [("y", y)]
    sessions = []
    for where, data in groups:
        _, arrays = _split_trials(where, data)
        N = _shape(arrays[0][1])[-1]
        checked = [_checked_trial(label, array, N, dtype, device) for label, array in arrays]
        for (label, _), trial in zip(arrays, checked):
            _has_no_nan(label, trial)  # infinite values are an error here too
        sessions.append(checked)
    return names, sessions
