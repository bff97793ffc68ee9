"""What happened in a training run, as data: event kinds, NaN origins, breaks.

The watch records events with structured fields (a kind, an iteration, a subject,
the event's own words, and for a NaN/Inf its :class:`Origin`); the report, the run
view and the app's break panel render them with the formatters here, so nothing
parses a sentence back and rewording one breaks nothing.
"""

from __future__ import annotations

import enum
import math
import os
from dataclasses import dataclass


class EventKind(str, enum.Enum):
    """An event's kind, as stored in the record's ``events.kind`` (a ``str`` enum)."""

    # breaks (a breakpoint of the watch)
    AT = "at"
    NONFINITE = "nonfinite"
    SPIKE = "spike"
    SIGNAL = "signal"
    # other events of an iteration
    NONFINITE_STEP = "nonfinite-step"
    SCALER_SKIP = "scaler-skip"
    PARAMS_CHANGED = "params-changed"
    OPTIMIZER_CHANGED = "optimizer-changed"
    PARAM_REPLACED = "param-replaced"
    # audits, each reported once per run and subject
    NOT_IN_OPTIMIZER = "not-in-optimizer"
    NO_GRAD = "no-grad"
    MOVED_WITHOUT_GRAD = "moved-without-grad"
    MOVED_ZERO_GRAD = "moved-zero-grad"
    MOVED_FROZEN = "moved-frozen"
    RATIO_HIGH = "ratio-high"
    RATIO_LOW = "ratio-low"
    ZERO_GRAD_RUN = "zero-grad-run"

    @property
    def is_break(self) -> bool:
        return self in _BREAKS

    @property
    def is_audit(self) -> bool:
        return self in AUDIT_TITLES

    @property
    def title(self) -> str:
        """What the kind means, in words ("in the optimizer but got no gradient")."""
        return AUDIT_TITLES.get(self) or _TITLES.get(self, self.value)

    @classmethod
    def read(cls, text: str) -> EventKind | str:
        """The kind stored as ``text``; a kind this gradviz does not know stays text."""
        try:
            return cls(text)
        except ValueError:
            return text


_BREAKS = (EventKind.AT, EventKind.NONFINITE, EventKind.SPIKE, EventKind.SIGNAL)
#: The break kinds, as a marker on a plot shows one iteration's: the most telling first.
BREAK_KINDS = (EventKind.NONFINITE, EventKind.SPIKE, EventKind.AT, EventKind.SIGNAL)

AUDIT_TITLES = {
    EventKind.NOT_IN_OPTIMIZER: "requires grad but is in no optimizer param group",
    EventKind.NO_GRAD: "in the optimizer but got no gradient",
    EventKind.MOVED_WITHOUT_GRAD: "changed in optimizer.step() without a gradient",
    EventKind.MOVED_ZERO_GRAD: "changed in optimizer.step() with a zero gradient",
    EventKind.MOVED_FROZEN: "changed in optimizer.step() with requires_grad=False",
    EventKind.RATIO_HIGH: "|Δ|/|p| above the band, 10 steps in a row",
    EventKind.RATIO_LOW: "|Δ|/|p| below the band, 10 steps in a row",
    EventKind.ZERO_GRAD_RUN: "gradient exactly zero for 10 iterations in a row",
}
_TITLES = {
    EventKind.AT: "break at an iteration (at=N)",
    EventKind.NONFINITE: "NaN/Inf in the loss or a gradient",
    EventKind.SPIKE: "loss or gradient norm spiked",
    EventKind.SIGNAL: "break on SIGUSR1",
    EventKind.NONFINITE_STEP: "optimizer.step() made NaN/Inf weights",
    EventKind.SCALER_SKIP: "GradScaler skipped optimizer.step()",
    EventKind.PARAMS_CHANGED: "the optimizer's param groups changed",
    EventKind.OPTIMIZER_CHANGED: "another optimizer steps the model: the watch follows it",
    EventKind.PARAM_REPLACED: "a parameter of the model was replaced after the optimizer "
                              "was built",
}


class OriginPhase(str, enum.Enum):
    """Where a NaN/Inf was made: in backward, or already in the forward (the loss)."""

    BACKWARD = "backward"
    FORWARD = "forward"


@dataclass(frozen=True)
class Origin:
    """Where a NaN/Inf started: the node (its graph key), its op, the module whose forward
    made it, the file and line of the user's code, and ``detail`` (how it was found, or
    why it was not: ``node`` is then None)."""

    phase: OriginPhase | str
    node: str | None
    op: str | None
    module: str | None
    file: str | None
    line: int | None
    detail: str

    @property
    def found(self) -> bool:
        """Where it started is known: its node, or (outside the graph shown) its op."""
        return self.node is not None or self.op is not None

    @property
    def where(self) -> str:
        return origin_text(self) if self.found else self.detail


def origin_text(origin, *, short: bool = False) -> str:
    """Where a NaN/Inf started, in words: ``node (op) in 'module' · file:line`` (the op
    only where the node's key does not say it; ``short``: the file's name alone). Takes
    anything with ``node``, ``op``, ``module``, ``file`` and ``line``; '' without a node."""
    if origin.node is None and origin.op is None:
        return ""
    text = origin.node or origin.op
    if origin.op and not text.startswith(origin.op):
        text += f" ({origin.op})"
    if origin.module:
        text += f" in {origin.module!r}"
    elif origin.module is not None:
        text += " in the model's own forward"
    if origin.file:
        text += f" · {os.path.basename(origin.file) if short else origin.file}:{origin.line}"
    return text


@dataclass(frozen=True)
class BreakInfo:
    """A break of :func:`gradviz.watch` as plain data (what the app's break panel reads;
    :class:`gradviz.WatchBreak` carries one).

    ``reason``: its :class:`EventKind` (at, nonfinite, spike, signal); ``detail``: what
    was seen, in words; ``origin``: for a NaN/Inf, where it started (or why that is
    unknown); ``loss`` / ``grad_norm``: the iteration's, as measured."""

    iteration: int
    reason: EventKind
    detail: str
    origin: Origin | None = None
    rank: int = 0
    loss: float | None = None
    grad_norm: float | None = None

    @property
    def message(self) -> str:
        return break_message(self)

    # the origin's fields, flat (``brk.node``), None where none was found
    node = property(lambda self: self.origin.node if self.origin is not None else None)
    op = property(lambda self: self.origin.op if self._found else None)
    module = property(lambda self: self.origin.module if self._found else None)
    file = property(lambda self: self.origin.file if self._found else None)
    line = property(lambda self: self.origin.line if self._found else None)
    phase = property(lambda self: None if self.origin is None else self.origin.phase)

    @property
    def _found(self) -> bool:
        return self.origin is not None and self.origin.found


def break_message(brk: BreakInfo) -> str:
    """The break in one line: ``iteration 7: a gradient is NaN/Inf; it started at ...``."""
    text = f"iteration {brk.iteration}: {brk.detail}"
    origin = brk.origin
    if origin is not None:
        if not origin.found:
            text += f"; origin not found: {origin.detail}"
        else:
            text += f"; it started at {origin_text(origin)}"
            if origin.phase == OriginPhase.FORWARD:
                text += f" ({origin.detail})"
    return text


def number_text(value: float | None) -> str:
    """A measured number as the screens show it: 4 significant digits, NaN, Inf."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "NaN"
    return f"{value:.4g}" if math.isfinite(value) else "Inf"


@dataclass
class TrainingPause:
    """What the app gets when a watch break opens it: plain data, and a way to stop training.

    ``session`` is paused before the first node of the iteration's own graph, to be
    stepped again on set-aside gradients (the user's ``.grad`` is put back when the
    app closes; the optimizer is left out: the loop steps it). ``history`` is the run
    so far (a :class:`~gradviz.model.runs.history.RunHistory`). The app's "stop
    training" action calls :meth:`request_stop`; when the app has closed, the watch
    raises :class:`gradviz.TrainingStopped` in the loop.
    """

    brk: BreakInfo
    history: object
    session: object  # gradviz.session.session.Session
    stop_requested: bool = False
    mute_requested: bool = False  # no more breaks of this kind in this run
    on_close: object = None  # called once when the app that shows it closes

    def closed(self) -> None:
        """The app showing this pause has closed (called by the app, once)."""
        callback, self.on_close = self.on_close, None
        if callable(callback):
            callback()

    def request_stop(self) -> None:
        self.stop_requested = True

    def request_mute(self) -> None:
        """No more breaks of this kind (spike, nonfinite, ...) for the rest of the run; their
        events are still recorded."""
        self.mute_requested = True
