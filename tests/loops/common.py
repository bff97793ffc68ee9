"""Shared bits of the loop zoo: the one-line watch, fault switches, and the per-step log.

Every loop is written as its author would write it, plus:

- ``with watching(model, optimizer, watch):`` around the loop (``watch=None``: a no-op,
  otherwise the keyword arguments of ``gradviz.watch``);
- ``faults.step(iteration)`` at the top of each iteration, and ``faults.on("kind")``
  at the line where an injected fault happens (marked ``# FAULT:kind``);
- a ``Log`` that keeps what the loop itself computed (loss, clip_grad_norm_'s return,
  lr, wall time per iteration). ``module.LAST`` is the log of the latest call, so a
  harness can read it after the loop raised.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import time
from dataclasses import dataclass, field

import torch


def watching(model, optimizer=None, watch: dict | None = None, holder: dict | None = None):
    """``with gradviz.watch(model, optimizer, **watch)`` or nothing (``watch=None``).
    ``holder["watch"]`` gets the Watch object (for w.report(), w.breaks)."""
    if watch is None:
        return contextlib.nullcontext()
    import gradviz

    w = gradviz.watch(model, optimizer, **watch)
    if holder is not None:
        holder["watch"] = w
    return w


class Faults:
    """What to inject, and when. ``spec``: "kind" (iteration 3) or "kind@N", or a list.
    A kind ending in "+" stays on from iteration N (``"lr5@4+"``)."""

    def __init__(self):
        self.specs: list[tuple[str, int, bool]] = []
        self.iteration = 0
        self.active: set[str] = set()

    def set(self, spec) -> None:
        self.specs = []
        self.active = set()
        self.iteration = 0
        if spec is None:
            return
        for item in [spec] if isinstance(spec, str) else list(spec):
            m = re.fullmatch(r"([\w-]+)(?:@(\d+))?(\+)?", item)
            if not m:
                raise ValueError(f"bad inject spec {item!r}")
            self.specs.append((m.group(1), int(m.group(2) or 3), bool(m.group(3))))

    def step(self, iteration: int) -> None:
        """Iteration ``iteration`` (from 1, as gradviz counts) begins."""
        self.iteration = iteration
        self.active = {k for k, at, stays in self.specs
                       if iteration == at or (stays and iteration >= at)}

    def on(self, kind: str) -> bool:
        return kind in self.active

    def kinds(self) -> set[str]:
        return {k for k, _, _ in self.specs}


faults = Faults()


@dataclass
class Log:
    """What the loop itself computed, per iteration (optimizer step)."""

    losses: list[float] = field(default_factory=list)      # as gradviz should record it
    grad_norms: list[float] = field(default_factory=list)  # clip_grad_norm_'s return
    lrs: list[float] = field(default_factory=list)         # the lr the step used
    times: list[float] = field(default_factory=list)       # wall seconds per iteration
    cpu_times: list[float] = field(default_factory=list)   # this thread's CPU seconds
    extra: dict = field(default_factory=dict)
    _t: float = 0.0
    _c: float = 0.0

    def tick(self) -> None:
        self._t = time.perf_counter()
        self._c = time.thread_time()

    def tock(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()
        self.times.append(now - self._t)
        self.cpu_times.append(cpu - self._c)
        self._t, self._c = now, cpu

    def as_dict(self) -> dict:
        return {"losses": self.losses, "grad_norms": self.grad_norms, "lrs": self.lrs,
                "times": self.times, "cpu_times": self.cpu_times, **self.extra}


def fault_line(module, kind: str) -> tuple[str, int]:
    """File and line of the ``# FAULT:kind`` marker in ``module``'s source: the truth."""
    source, _ = inspect.getsourcelines(module)  # a module's source starts at line 1
    for offset, text in enumerate(source):
        if f"# FAULT:{kind}" in text:
            return os.path.relpath(inspect.getsourcefile(module)), 1 + offset
    raise LookupError(kind)


def single_thread() -> None:
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    torch.set_num_threads(1)
