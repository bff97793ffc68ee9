"""TensorSummary: what a person wants to know about a gradient at a glance, as plain data.

Made by :func:`gradviz.engine.summary.summarize` (which reads the tensor); read by the
app, the reports and the tests without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Elements a summary keeps (``sample``): all of a tensor this small, whose values the
#: screens then show in full (the tutorial's ``a.grad = [36, 81]``).
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
