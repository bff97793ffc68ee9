"""A :func:`gradviz.watch` break as the loop meets it: raised, given to a callable, or
ending training from the app.

The break itself is plain data (:class:`~gradviz.model.runs.events.BreakInfo`): what the
record stores, the report and the app's break panel read. :class:`WatchBreak` is that
data as an exception (``on_break="raise"``); :class:`TrainingStopped` is raised in the
loop after the app's "stop training".
"""

from __future__ import annotations

from gradviz.errors import GradvizError
from gradviz.model.runs.events import BreakInfo, EventKind, Origin
from gradviz.model.runs.history import EventRecord


class WatchBreak(GradvizError):
    """A breakpoint of :func:`watch` was hit (raised with ``on_break="raise"``).

    ``reason``: "at", "nonfinite", "spike" or "signal" (an
    :class:`~gradviz.model.runs.events.EventKind`). For "nonfinite", where the NaN/Inf
    started: ``node`` (its graph key), ``op``, ``module``, and the ``file`` and ``line``
    of the user's code; ``phase`` says whether backward made it or the loss was already
    NaN/Inf (forward). ``info`` is all of it as plain data; ``str()`` is one line.
    """

    def __init__(self, iteration: int, reason: str, detail: str, *, origin: Origin | None = None,
                 rank: int = 0, loss: float | None = None, grad_norm: float | None = None):
        self.info = BreakInfo(iteration, EventKind(reason), detail, origin, rank, loss,
                              grad_norm)
        super().__init__(self.info.message)

    iteration = property(lambda self: self.info.iteration)
    reason = property(lambda self: self.info.reason)
    detail = property(lambda self: self.info.detail)
    origin = property(lambda self: self.info.origin)
    rank = property(lambda self: self.info.rank)
    loss = property(lambda self: self.info.loss)
    grad_norm = property(lambda self: self.info.grad_norm)
    node = property(lambda self: self.info.node)
    op = property(lambda self: self.info.op)
    module = property(lambda self: self.info.module)
    file = property(lambda self: self.info.file)
    line = property(lambda self: self.info.line)
    phase = property(lambda self: self.info.phase)

    @property
    def message(self) -> str:
        return self.info.message

    def event(self, note: str = "") -> EventRecord:
        """The break as the record stores it; ``note`` is added to its words."""
        detail = self.detail + (f" ({note})" if note else "")
        return EventRecord(self.iteration, self.reason, "", detail, self.origin)


class TrainingStopped(GradvizError):
    """Training was stopped from the app (its "stop training" action) at ``iteration``."""

    def __init__(self, iteration: int):
        self.iteration = iteration
        super().__init__(f"training stopped from the app at iteration {iteration}")
