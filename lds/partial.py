"""Partial loading: copy some fields of a file or object into existing parameters.

``params.load_state(source, fields=..., strict=False)`` copies the chosen fields (for
example only the dynamics) and reports which were loaded, which the source lacks
(missing) and which the source has but the target's class does not know (unexpected).
Shapes are checked for every field before anything changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .containers import DatasetList, ParamsContainer
from .errors import ShapeError, ValidationError
from .native import container_arrays, read_arrays

__all__ = ["LoadStateResult", "load_state"]


@dataclass(frozen=True)
class LoadStateResult:
    """Outcome of :func:`load_state`: which fields were copied, absent, or unknown."""

    loaded: list
    missing: list
    unexpected: list

    def __repr__(self) -> str:
        return f"LoadStateResult(loaded={self.loaded}, missing={self.missing}, unexpected={self.unexpected})"


def load_state(target: ParamsContainer, source, fields: Iterable[str] | None = None,
               strict: bool = False, verify: bool = True) -> LoadStateResult:
    """Copy fields from ``source`` (a native file or a parameter object) into ``target``.

    ``fields`` limits the copy (default: every field of ``target``). Returns which fields
    were loaded, which were missing in the source and which the source has but the
    target's class does not know; ``strict=True`` makes either list an error. Shapes are
    checked for every field before anything changes; a mismatch raises
    :class:`~lds.errors.ShapeError` naming the field.
    """
    if isinstance(source, ParamsContainer):
        where, available = type(source).__name__, container_arrays(source)
    else:
        where, available = str(source), read_arrays(source, verify)
    known = target.field_names()
    wanted = known if fields is None else list(fields)
    for name in wanted:
        target.field_spec(name)
    missing = [f for f in wanted if f not in available]
    unexpected = [f for f in available if f not in known]
    if strict and (missing or unexpected):
        raise ValidationError(
            f"load_state from {where} (strict): missing fields {missing}, unexpected fields {unexpected}"
        )
    loaded = [f for f in wanted if f in available]
    for name in loaded:
        _check_compatible(target, name, available[name], where)
    for name in loaded:
        _assign(target, name, available[name])
    return LoadStateResult(loaded=loaded, missing=missing, unexpected=unexpected)


def _current_shapes(target, name):
    """``{session or None: expected shape}`` for a field of ``target`` (None if unknown)."""
    value = getattr(target, name)
    spec = target.field_spec(name)
    if isinstance(value, DatasetList) and len(value):
        return {ds: tuple(a.shape) for ds, a in value.items()}
    if value is not None and not isinstance(value, DatasetList):
        return {None: tuple(value.shape)}
    names = getattr(target, "dataset_names", None)
    if spec.per_dataset and names:
        return {ds: target.expected_shape(spec, i) for i, ds in enumerate(names)}
    return {None: target.expected_shape(spec)}


def _check_compatible(target, name, incoming, where) -> None:
    expected = _current_shapes(target, name)
    label = f"{type(target).__name__}.{name}"
    if isinstance(incoming, dict) and None in expected:
        raise ShapeError(f"{label}: {where} has one array per session {list(incoming)}, this object a single array")
    if not isinstance(incoming, dict) and None not in expected:
        raise ShapeError(f"{label}: {where} has a single array, this object one per session {list(expected)}")
    pairs = incoming.items() if isinstance(incoming, dict) else [(None, incoming)]
    if isinstance(incoming, dict) and list(incoming) != list(expected):
        raise ShapeError(f"{label}: {where} has sessions {list(incoming)}, this object has {list(expected)}")
    for ds, array in pairs:
        want, got = expected[ds], tuple(np.shape(array))
        if want is not None and want != got:
            at = label if ds is None else f"{label}[{ds!r}]"
            raise ShapeError(f"{at}: {where} has shape {got}, this object expects {want}")


def _assign(target, name, incoming) -> None:
    current = getattr(target, name)
    if isinstance(incoming, dict):
        incoming = DatasetList(list(incoming.values()), list(incoming))
    if hasattr(target, "set_field"):
        target.set_field(name, incoming)
        return
    like = next(iter(current), None) if isinstance(current, DatasetList) else current
    convert = (lambda a: _like(a, like)) if like is not None else (lambda a: a)
    setattr(target, name, incoming.map(convert) if isinstance(incoming, DatasetList) else convert(incoming))


def _like(array, reference):
    if hasattr(reference, "detach"):
        import torch

        return torch.as_tensor(np.asarray(array), dtype=reference.dtype, device=reference.device).clone()
    return np.asarray(array, dtype=np.asarray(reference).dtype)
