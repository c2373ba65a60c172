"""MATLAB-like display shared by the result objects of the ``lds`` algorithms."""

from __future__ import annotations

import dataclasses

import torch

from .containers import ParamsContainer, format_value

__all__ = ["ResultDisplay", "stack_results"]


class ResultDisplay:
    """Mixin for result dataclasses: ``repr`` lists each field with its shape and dtype."""

    def __repr__(self) -> str:
        fields = [f.name for f in dataclasses.fields(self)]
        width = max(len(name) for name in fields) + 4
        lines = [f"  {type(self).__name__} with properties:", ""]
        for name in fields:
            lines.append(f"{name.rjust(width)}: {_describe(getattr(self, name))}")
        return "\n".join(lines) + "\n"


def _describe(value) -> str:
    if torch.is_tensor(value) and value.dim() == 0:
        return f"{float(value):.10g}"
    if dataclasses.is_dataclass(value) or isinstance(value, ParamsContainer):
        return f"[1x1 {type(value).__name__}]"
    return format_value(value)


def stack_results(items: list):
    """One result whose tensors gain a leading trial axis (for a batch ``[B, T, N]``)."""
    first = items[0]
    values = {}
    for field in dataclasses.fields(first):
        parts = [getattr(item, field.name) for item in items]
        if torch.is_tensor(parts[0]):
            values[field.name] = torch.stack(parts)
        elif dataclasses.is_dataclass(parts[0]):
            values[field.name] = stack_results(parts)
        else:
            values[field.name] = parts
    return type(first)(**values)
