"""What every benchmark row shares: the row, timing, memory readings, test graphs."""

from __future__ import annotations

import gc
import statistics
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


def interleaved(ours: Callable[[], object], theirs: Callable[[], object], rounds: int,
                clock: Callable[[], float] = time.perf_counter
                ) -> tuple[float, float, float, float, float]:
    """(median ours, median theirs, median ratio, lowest ratio, highest ratio), taken in
    turns; ``clock`` is wall time, or ``time.process_time`` for CPU time."""
    mine, base, ratios = [], [], []
    for _ in range(rounds):
        pair = []
        for fn in (ours, theirs):
            gc.collect()
            start = clock()
            fn()
            pair.append(clock() - start)
        mine.append(pair[0])
        base.append(pair[1])
        ratios.append(pair[0] / pair[1])
    return (statistics.median(mine), statistics.median(base), statistics.median(ratios),
            min(ratios), max(ratios))


def prepared_rounds(cases: dict[str, Callable[[], Callable[[], object]]], rounds: int
                    ) -> dict[str, tuple[list[float], list[float]]]:
    """Wall and CPU seconds (the process's, all its threads) per round of each case,
    the cases taken in turns (their order rotating from round to round, so that none
    always runs after the same one). A case is a ``prepare()`` that does the untimed
    part (a forward pass, building a stepper) and returns what is timed.

    CPU time is the steadier reading on a shared machine: another process's burst
    stretches a round's wall time, hardly its CPU time."""
    names = list(cases)
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            timed = cases[name]()
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            timed()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            times[name][0].append(wall)
            times[name][1].append(cpu)
            del timed
    return times


def spread(low: float, high: float) -> str:
    return f"(r {low:.2f}-{high:.2f})"


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
