"""What a :func:`gradviz.watch` break is, and what the app gets when one opens it.

:class:`WatchBreak` is the break itself (raised with ``on_break="raise"``, given to
a callable, recorded as an event). :class:`TrainingPause` is the plain data the app
is opened with (``on_break="app"``): the break, the run so far, a session paused
before the iteration's first backward node, and :meth:`TrainingPause.request_stop`
for its "stop training" action, after which the watch raises
:class:`TrainingStopped` in the loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gradviz.errors import GradvizError
from gradviz.model.run_history import EventRecord, RunHistory

if TYPE_CHECKING:
    from gradviz.training.nan_origin import Origin


class WatchBreak(GradvizError):
    """A breakpoint of :func:`watch` was hit (raised with ``on_break="raise"``).

    ``reason``: "at", "nonfinite", "spike" or "signal". For "nonfinite", where the
    NaN/Inf started: ``node`` (its graph key), ``op``, ``module`` and the ``file`` and
    ``line`` of that module's ``forward``; ``phase`` says whether backward made it or
    the loss was already NaN/Inf (forward). ``str()`` is one line.
    """

    def __init__(self, iteration: int, reason: str, detail: str, *, origin: Origin | None = None,
                 rank: int = 0, loss: float | None = None, grad_norm: float | None = None):
        self.iteration = iteration
        self.reason = reason
        self.detail = detail
        self.origin = origin
        self.rank = rank
        self.loss = loss
        self.grad_norm = grad_norm
        found = origin is not None and origin.node is not None
        self.node = origin.node if found else None
        self.op = origin.op if found else None
        self.module = origin.module if found else None
        self.file = origin.file if found else None
        self.line = origin.line if found else None
        self.phase = origin.phase if origin is not None else None
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"iteration {self.iteration}: {self.detail}"
        if self.origin is not None:
            if self.node is None:
                text += f"; origin not found: {self.origin.detail}"
            else:
                text += f"; it started at {self.origin.where}"
                if self.phase == "forward":
                    text += f" ({self.origin.detail})"
        return text

    def event(self, detail: str | None = None) -> EventRecord:
        return EventRecord(self.iteration, self.reason, "", detail or self.message,
                           self.node, self.op, self.module, self.file, self.line)


class TrainingStopped(GradvizError):
    """Training was stopped from the app (its "stop training" action) at ``iteration``."""

    def __init__(self, iteration: int):
        self.iteration = iteration
        super().__init__(f"training stopped from the app at iteration {iteration}")


@dataclass
class TrainingPause:
    """What the app gets when a break opens it: plain data, and a way to stop training.

    ``session`` is paused before the first node of the iteration's own graph, to be
    stepped again on set-aside gradients (the user's ``.grad`` is put back when the
    app closes; the optimizer is left out: the loop steps it). ``history`` is the run
    so far. The app's "stop training" action calls :meth:`request_stop`; when the
    app has closed, the watch raises :class:`TrainingStopped` in the loop.
    """

    brk: WatchBreak
    history: RunHistory
    session: object  # gradviz.session.session.Session
    stop_requested: bool = False

    def request_stop(self) -> None:
        self.stop_requested = True
