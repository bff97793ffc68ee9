"""BackwardProgress: what one backward has done so far, as the screen shows it.

The session owns one per graph and feeds it on the engine's thread as nodes run
(:meth:`BackwardProgress.record`); the app reads it on the UI thread when it draws.
So the app mirrors nothing: a row's glyph is :meth:`BackwardProgress.state_of` its
node, its ``|g|`` is :meth:`norm_of`, the inspector's facts are :meth:`run_of`.

Point reads (``state_of``, ``norm_of``, ``run_of``) take no lock: a dict or set
lookup is atomic under the GIL, and a read that races a write sees the value
before or after it, both true a moment apart. Whatever iterates (the gradient-flow
plot, the parameters to redraw) copies under the lock.

Plain data only: :class:`NodeRun` holds summaries, never a tensor.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx

from gradviz.model.summary import TensorSummary


class NodeState(enum.Enum):
    """What a node of the graph on screen is doing, as its glyph tells."""

    WAITING = "waiting"  # gradients still to come
    READY = "ready"  # all its gradients have arrived; the engine may run it next
    PENDING = "pending"  # the engine waits before it, paused
    DONE = "done"
    BROKEN = "broken"  # where a NaN/Inf started, or where backward raised
    NEW = "new"  # recorded by the forward operation just stepped


@dataclass(frozen=True, slots=True)
class NodeRun:
    """One node's run by the engine, as read for the screen.

    ``index``: its place in the engine's start order. ``summarized``: its gradients
    were read (``grad_outputs``, what came in; ``grad_inputs``, what it sent along each
    ``next_functions`` slot; ``param_grad``, a leaf's ``.grad``); a node that ran in
    a big slice is read later, when it comes into sight or is inspected.
    ``norm``: the largest |g| it sent. ``nonfinite``: it made a NaN/Inf out of finite
    gradients.
    """

    key: str
    index: int
    duration: float
    summarized: bool = False
    grad_outputs: tuple[TensorSummary | None, ...] = ()
    grad_inputs: tuple[TensorSummary | None, ...] = ()
    param_grad: TensorSummary | None = None
    norm: float | None = None
    nonfinite: bool = False


@dataclass(frozen=True)
class ProgressDelta:
    """What one report changed: the app redraws these rows and parameters, and follows."""

    ran: tuple[str, ...] = ()  # the nodes that ran, in the engine's start order
    nodes: frozenset[str] = frozenset()  # the rows whose state changed (``ran`` and more)
    params: tuple[str, ...] = ()  # parameters whose .grad landed
    pending: str | None = None
    finished: bool = False

    @property
    def last(self) -> str | None:
        return self.ran[-1] if self.ran else None


@dataclass
class _Where:
    pending: str | None = None
    incoming: tuple[TensorSummary | None, ...] = ()
    ready: frozenset[str] = frozenset()
    broken: str | None = None
    finished: bool = False


class BackwardProgress:
    """One graph's backward so far. ``graph`` is the graph shown; ``new`` the nodes the
    last stepped forward operation recorded (a forward's partial graph)."""

    def __init__(self, graph: nx.DiGraph | None = None, *, new: Iterable[str] = ()):
        self.graph = graph
        self.new = frozenset(new)
        self._lock = threading.Lock()
        self._runs: dict[str, NodeRun] = {}
        self._where = _Where(ready=frozenset(
            key for key, degree in graph.in_degree() if degree == 0) if graph is not None
            and not self.new else frozenset())
        self._grads: dict[str, TensorSummary] = {}  # parameter -> its .grad, as it landed
        self._flow: dict[str, float] = {}  # parameter -> mean |grad|
        self._asked: set[str] = set()  # nodes whose summaries were asked for

    # ----------------------------------------------------------------- reading
    def state_of(self, key: str) -> NodeState:
        where = self._where
        if key == where.broken:
            return NodeState.BROKEN
        if key in self.new:
            return NodeState.NEW
        if key == where.pending:
            return NodeState.PENDING
        if key in self._runs:
            return NodeState.DONE
        return NodeState.READY if key in where.ready else NodeState.WAITING

    def run_of(self, key: str) -> NodeRun | None:
        """The node's run, once it has run (its summaries may not be read yet)."""
        return self._runs.get(key)

    def norm_of(self, key: str) -> float | None:
        run = self._runs.get(key)
        return None if run is None else run.norm

    def has_run(self, key: str) -> bool:
        return key in self._runs

    @property
    def done(self) -> int:
        return len(self._runs)

    @property
    def pending(self) -> str | None:
        """The node the engine waits before (paused), or None."""
        return self._where.pending

    @property
    def incoming(self) -> tuple[TensorSummary | None, ...]:
        """The gradients waiting to flow into :attr:`pending`."""
        return self._where.incoming

    @property
    def broken(self) -> str | None:
        return self._where.broken

    @property
    def finished(self) -> bool:
        return self._where.finished

    def grad_of(self, param: str) -> TensorSummary | None:
        """A parameter's ``.grad`` as it landed in this backward."""
        return self._grads.get(param)

    def flow(self) -> dict[str, float]:
        """Mean |grad| per parameter so far (a copy)."""
        with self._lock:
            return dict(self._flow)

    def unread(self, keys: Iterable[str]) -> list[str]:
        """Of ``keys``, the nodes that ran but whose summaries were neither read nor asked
        for; they count as asked for from now on (the engine reads them next)."""
        with self._lock:
            found = [key for key in keys
                     if key in self._runs and not self._runs[key].summarized
                     and key not in self._asked]
            self._asked.update(found)
            return found

    # ----------------------------------------------------------------- writing
    def record(self, runs: Iterable[NodeRun], *, pending: str | None,
               incoming: tuple[TensorSummary | None, ...], ready: Iterable[str],
               finished: bool, nonfinite: str | None = None,
               grads: dict[str, TensorSummary] | None = None,
               flow: dict[str, float] | None = None) -> ProgressDelta:
        """Nodes ran (the engine's thread): store them and where backward stands now."""
        runs = list(runs)
        with self._lock:
            before = self._where
            for run in runs:
                self._runs[run.key] = run
            ready = frozenset(ready)
            broken = before.broken if before.broken is not None else nonfinite
            self._where = _Where(pending, tuple(incoming), ready, broken, finished)
            if grads:
                self._grads.update(grads)
            if flow:
                self._flow.update(flow)
        changed = {run.key for run in runs} | (before.ready ^ ready)
        changed |= {before.pending, pending, broken} - {None}
        return ProgressDelta(tuple(run.key for run in runs), frozenset(changed),
                             tuple(grads or ()), pending, finished)

    def read(self, runs: Iterable[NodeRun]) -> frozenset[str]:
        """Summaries read later (a node that ran in a big slice, now in sight)."""
        with self._lock:
            keys = set()
            for run in runs:
                self._runs[run.key] = run
                keys.add(run.key)
            return frozenset(keys)

    def fail_at(self, node: str | None) -> None:
        """Backward raised at ``node`` (or between nodes): nothing waits any more."""
        with self._lock:
            where = self._where
            self._where = _Where(None, (), where.ready,
                                 where.broken if node is None else node, where.finished)

    def mark_broken(self, key: str) -> None:
        """Where a NaN/Inf started, known before any node runs (a watch break's origin)."""
        with self._lock:
            where = self._where
            self._where = _Where(where.pending, where.incoming, where.ready, key,
                                 where.finished)

    def stop(self) -> None:
        """Backward was aborted: nothing waits any more."""
        with self._lock:
            where = self._where
            self._where = _Where(None, (), where.ready, where.broken, where.finished)


@dataclass(frozen=True)
class GroupProgress:
    """A folded module's row: how many of its nodes ran, and the state its glyph shows."""

    members: int
    run: int
    state: NodeState = NodeState.WAITING
    states: frozenset[NodeState] = field(default_factory=frozenset)


#: A folded row shows the most telling of its members' states, in this order.
_GROUP_ORDER = (NodeState.BROKEN, NodeState.NEW, NodeState.PENDING, NodeState.READY)


def group_progress(progress: BackwardProgress, members: Iterable[str]) -> GroupProgress:
    states = [progress.state_of(key) for key in members]
    present = frozenset(states)
    state = next((s for s in _GROUP_ORDER if s in present),
                 NodeState.DONE if present == {NodeState.DONE} else NodeState.WAITING)
    return GroupProgress(len(states), sum(1 for s in states if s is NodeState.DONE),
                         state, present)
