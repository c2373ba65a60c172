"""MATLAB-like display shared by the result objects of the ``lds`` algorithms."""

from __future__ import annotations

import dataclasses

import torch

from .containers import ParamsContainer, format_value

__all__ = ["ResultDisplay", "DeferredFields", "Deferred", "stack_results"]


class Deferred:
    """A tensor that a result field holds as ``make()`` until first read (see :class:`DeferredFields`).

    ``shape`` and ``dtype`` describe it meanwhile, so a result prints without making it.
    """

    __slots__ = ("make", "shape", "dtype")

    def __init__(self, make, shape, dtype: torch.dtype):
        self.make, self.shape, self.dtype = make, torch.Size(shape), dtype


class ResultDisplay:
    """Mixin for result dataclasses: ``repr`` lists each field with its shape and dtype."""

    def __repr__(self) -> str:
        fields = [f.name for f in dataclasses.fields(self)]
        width = max(len(name) for name in fields) + 4
        lines = [f"  {type(self).__name__} with properties:", ""]
        for name in fields:
            lines.append(f"{name.rjust(width)}: {_describe(object.__getattribute__(self, name))}")
        return "\n".join(lines) + "\n"


class DeferredFields:
    """Mixin: a field that holds a :class:`Deferred` is made on first read and kept.

    The fast path's covariances are the same at every step once the filter is at its steady
    state; their dense ``[T, K, K]`` arrays (megabytes for long trials) are written only when
    read. Reading gives the same tensor every time, as for any other field.
    """

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if type(value) is Deferred:
            value = value.make()
            object.__setattr__(self, name, value)
        return value

    def __getstate__(self) -> dict:
        """Every field made (for pickling, e.g. to another process, and ``copy.deepcopy``)."""
        return {name: getattr(self, name) for name in vars(self)}


def _describe(value) -> str:
    if torch.is_tensor(value) and value.dim() == 0:
        return f"{float(value):.10g}"
    if dataclasses.is_dataclass(value) or isinstance(value, ParamsContainer):
        return f"[1x1 {type(value).__name__}]"
    return format_value(value)


def stack_tensors(tensors: list) -> torch.Tensor:
    """``torch.stack(tensors)``, or a view without a copy when they already are the consecutive,
    non-overlapping entries of one tensor (a batch split into trials, or the trials of a fast-path batch)."""
    first = tensors[0]
    step = tensors[1].storage_offset() - first.storage_offset() if len(tensors) > 1 else first.numel()
    extent = 1 + sum((n - 1) * s for n, s in zip(first.shape, first.stride()))
    same = all(t.shape == first.shape and t.stride() == first.stride() and t.dtype == first.dtype
               and t.untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
               and t.storage_offset() == first.storage_offset() + j * step for j, t in enumerate(tensors))
    if same and step >= extent and first.numel() > 0:
        return first.as_strided((len(tensors), *first.shape), (step, *first.stride()))
    return torch.stack(tensors)


def _stack_made(parts: list) -> torch.Tensor:
    """The parts (tensors or :class:`Deferred`) stacked, each deferred one made straight into its
    slot: the memory of the stack plus one part, and nothing kept on the per-trial results."""
    made = lambda part: part.make() if type(part) is Deferred else part  # noqa: E731
    first = made(parts[0])
    out = first.new_empty((len(parts), *first.shape))
    out[0] = first
    for j, part in enumerate(parts[1:], 1):
        out[j] = made(part)
    return out


def stack_results(items: list):
    """One result whose tensors gain a leading trial axis (for a batch ``[B, T, N]``)."""
    first = items[0]
    values = {}
    for field in dataclasses.fields(first):
        parts = [object.__getattribute__(item, field.name) for item in items]
        if any(isinstance(part, Deferred) for part in parts):  # stacked when read
            values[field.name] = Deferred(lambda parts=parts: _stack_made(parts), (len(items), *parts[0].shape),
                                          parts[0].dtype)
        elif torch.is_tensor(parts[0]):
            values[field.name] = stack_tensors(parts)
        elif dataclasses.is_dataclass(parts[0]):
            values[field.name] = stack_results(parts)
        else:
            values[field.name] = parts
    return type(first)(**values)
