"""TensorSummary: what a person wants to know about a gradient at a glance.

Two passes over the data, with the statistics stacked into one tensor and read
back with one ``tolist()``, so a CUDA tensor costs one device sync, not ten.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SAMPLE_SIZE = 6


@dataclass(frozen=True)
class TensorSummary:
    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    norm: float
    mean: float
    std: float
    min: float
    max: float
    nan: int
    inf: int
    sample: tuple[float, ...]  # the first few elements, flattened

    @property
    def finite(self) -> bool:
        return self.nan == 0 and self.inf == 0

    def __str__(self) -> str:
        flags = "" if self.finite else f" nan={self.nan} inf={self.inf}"
        return (
            f"{self.shape} {self.dtype} norm={self.norm:.4g} mean={self.mean:.4g} "
            f"std={self.std:.4g} min={self.min:.4g} max={self.max:.4g}{flags}"
        )


def summarize(tensor: torch.Tensor) -> TensorSummary:
    """Shape, dtype, device, norm, mean, std, min, max, NaN and Inf counts, a few values."""
    values = tensor.detach()
    if values.is_complex():
        values = values.abs()
    if values.layout != torch.strided:
        values = values.to_dense()
    flat = values.reshape(-1)
    if not flat.is_floating_point() or flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    numel = flat.numel()
    if numel == 0:
        nothing = math.nan
        return TensorSummary(_shape(tensor), _dtype(tensor), str(tensor.device), 0,
                             0.0, nothing, nothing, nothing, nothing, 0, 0, ())
    # Two passes over the data: std_mean and aminmax. The norm follows from them
    # (|x|^2 = n (std^2 + mean^2)); and min, max and mean are NaN or Inf whenever an
    # element is, so NaN/Inf are counted only then.
    std, mean = torch.std_mean(flat, correction=0)
    low, high = torch.aminmax(flat)
    head = flat[:SAMPLE_SIZE]
    numbers = torch.cat([torch.stack([mean, std, low, high]).double(), head.double()]).tolist()
    mean_v, std_v, low_v, high_v = numbers[:4]
    nan = inf = 0
    if not all(math.isfinite(v) for v in (mean_v, std_v, low_v, high_v)):
        inf = int(torch.isinf(flat).sum())
        nan = int(torch.isnan(flat).sum())
    if nan or inf:
        norm = float(torch.linalg.vector_norm(flat))
    else:
        norm = math.sqrt(numel * (std_v * std_v + mean_v * mean_v))
    return TensorSummary(
        shape=_shape(tensor),
        dtype=_dtype(tensor),
        device=str(tensor.device),
        numel=numel,
        norm=norm,
        mean=mean_v,
        std=std_v,
        min=low_v,
        max=high_v,
        nan=nan,
        inf=inf,
        sample=tuple(numbers[4:]),
    )


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _dtype(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


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
