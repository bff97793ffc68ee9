"""Values torch keeps on a node (a power's exponent, a reduction's dims, an optimizer's
state) as plain data, for display and JSON."""

from __future__ import annotations

import torch


def plain(value):
    """A torch-flavoured value as plain data for display and JSON: a one-element tensor as
    its number, a tensor as a tuple, dtypes and devices as text, anything else as repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else tuple(value.tolist())
    if isinstance(value, (tuple, list)):
        return tuple(plain(v) for v in value)
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    return repr(value)
