"""What every benchmark row shares: the row, timing, memory readings, test graphs."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Row:
    name: str
    ours: str
    baseline: str
    ratio: float | None
    target: str

    @property
    def verdict(self) -> str:
        if self.ratio is None or not self.target.startswith("<="):
            return ""
        return "ok" if self.ratio <= float(self.target[2:]) else "MISSED"


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def chain(depth: int) -> torch.Tensor:
    """A chain of ``sin`` ops: every node saves its input, as most real ops do."""
    y = torch.ones(4, requires_grad=True)
    for _ in range(depth):
        y = y.sin()
    return y



def resnet18_batch8(seed: int = 0):
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    data, labels = torch.rand(8, 3, 64, 64), torch.rand(8, 1000)
    return model, lambda: (model(data) - labels).sum()



PEAK = """
import torch
def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
"""
