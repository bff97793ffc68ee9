"""The messages the engine's thread posts to the app: plain data only.

Each says that something changed and carries what the app needs to draw it (a
delta, a layout, a view): never a tensor, never a live engine object. Handlers are
``on_<name>`` on :class:`~gradviz.tui.app.GradvizApp` (``on_progress_made``, ...).
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

from gradviz.model.layout import GraphLayout
from gradviz.model.progress import BackwardProgress, ProgressDelta
from gradviz.model.updates import UpdateReport
from gradviz.model.views import ForwardStep, ParamView


class StateChanged(Message):
    """The session's state changed (posted from whichever thread changed it)."""


class Loaded(Message):
    """A scenario loaded on the engine's thread: the app adopts its session."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session


class LaidOut(Message):
    """A graph was laid out (off the UI thread); ``progress`` is what ran on it so far."""

    def __init__(self, session: Any, laid_out: GraphLayout, progress: BackwardProgress) -> None:
        super().__init__()
        self.session = session
        self.laid_out = laid_out
        self.progress = progress


class ProgressMade(Message):
    """Backward nodes ran: the rows and parameters ``delta`` names changed."""

    def __init__(self, session: Any, progress: BackwardProgress, delta: ProgressDelta) -> None:
        super().__init__()
        self.session = session
        self.progress = progress
        self.delta = delta


class NodesRead(Message):
    """Summaries of nodes that ran in a big slice were read (in sight, or inspected)."""

    def __init__(self, session: Any, progress: BackwardProgress, keys: frozenset[str]) -> None:
        super().__init__()
        self.session = session
        self.progress = progress
        self.keys = keys


class ForwardStepped(Message):
    """Operations of a stepped forward ran (one, or the rest at once)."""

    def __init__(self, session: Any, steps: list[ForwardStep]) -> None:
        super().__init__()
        self.session = session
        self.steps = steps


class UpdateMade(Message):
    """An optimizer step's report."""

    def __init__(self, session: Any, report: UpdateReport) -> None:
        super().__init__()
        self.session = session
        self.report = report


class ParamDescribed(Message):
    """What a selected parameter is, and why it has no gradient if it has none."""

    def __init__(self, view: ParamView) -> None:
        super().__init__()
        self.view = view


class EngineFailed(Message):
    """A job on the engine's thread raised where nothing else caught it: a bug of ours."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error
