"""BackwardStepper: PyTorch's own backward engine, paused between autograd nodes.

The facade over one stepped backward: :mod:`gradviz.engine.backward_hooks` holds the
hooks on the engine's hot path and the backward thread, :mod:`gradviz.engine.events`
what each node's run leaves (:class:`StepEvent`). The order is the engine's, the
gradients are the engine's: nothing is replayed or recomputed here.

>>> with BackwardStepper(loss) as stepper:                # doctest: +SKIP
...     event = stepper.step()           # the root node ran; the engine waits
...     stepper.run_until("param:fc.weight")
...     while not stepper.done:          # to the end, handing back control
...         stepper.run(seconds=0.05)    # every 50 ms (say, to draw)
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence

import networkx as nx
import torch

from gradviz.engine.backward_hooks import BackwardAborted, BackwardRun, Pause
from gradviz.engine.events import StepEvent, all_finite_together, summary_of
from gradviz.engine.lifecycle import PassEnd, StepperError, StepperState
from gradviz.errors import GraphError
from gradviz.graph.walk import Roots, discover, root_nodes, walk_graph
from gradviz.model.summary import TensorSummary
from gradviz.runtime.quiet_gc import frozen_heap

__all__ = ["BackwardAborted", "BackwardStepper", "Pause", "StepEvent", "StepperError",
           "DEFAULT_HISTORY_BYTES", "default_history_bytes"]

#: Full gradient tensors kept for browsing back, newest first, within this many bytes
#: (on a GPU, at most an eighth of its free memory: see :func:`default_history_bytes`).
#: Beyond it, events are summarized inside the engine's hook, which the engine waits
#: for: swin_t ran 2.0x a plain backward with 128 MiB, 1.4x with 512 MiB.
DEFAULT_HISTORY_BYTES = 512 << 20


def default_history_bytes(tensors: Sequence[torch.Tensor]) -> int:
    """:data:`DEFAULT_HISTORY_BYTES`, or an eighth of a GPU's free memory if that is
    less: held gradients must not be what runs a tight training box out of memory."""
    devices = {t.device for t in tensors if t.device.type == "cuda"}
    budget = DEFAULT_HISTORY_BYTES
    for device in devices:
        budget = min(budget, torch.cuda.mem_get_info(device)[0] // 8)
    return budget


class BackwardStepper:
    """Step through ``torch.autograd.backward(roots, gradient)`` one node at a time.

    ``graph``: a graph of these roots already built (say by ``rec.graph(loss)``);
    otherwise one is built, with ``model`` / ``params`` / ``modules`` as in
    :func:`gradviz.build_graph`. ``history_bytes`` bounds the full tensors kept (by default
    :func:`default_history_bytes`).
    Dropping the last reference to a stepper ends its backward, as :meth:`abort`.
    """

    def __init__(
        self,
        roots: Roots,
        *,
        gradient: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
        graph: nx.DiGraph | None = None,
        retain_graph: bool = False,
        create_graph: bool = False,
        model: torch.nn.Module | None = None,
        params: dict[str, torch.Tensor] | None = None,
        modules: dict[int, str] | None = None,
        history_bytes: int | None = None,
    ):
        root_fns = root_nodes(roots)
        tensors = _root_tensors(roots)
        if history_bytes is None:
            history_bytes = default_history_bytes(tensors)
        checked_gradient = _check_gradient(tensors, gradient)
        if graph is None:
            graph, walk = walk_graph(roots, model=model, params=params, modules=modules)
        else:
            walk = discover(root_fns)
            _check_graph_matches(graph, walk)
        self.graph = graph
        self._breakpoints: set[str] = set()
        self._backward = BackwardRun(tensors, checked_gradient, retain_graph, create_graph,
                                   graph, list(graph.nodes), walk.nodes, self._breakpoints,
                                   history_bytes)
        self._end = PassEnd("backward", "a new forward pass", "this stepper was aborted")
        self._scanned = 0  # events checked for the first non-finite one
        self._ended_scan = 0  # events before this index have all ended
        self._first_nonfinite: StepEvent | None = None
        # Dropped without abort(): end backward, without waiting (any thread may run this).
        weakref.finalize(self, self._backward.request_abort)

    # ----------------------------------------------------------------- state
    @property
    def breakpoints(self) -> set[str]:
        """Nodes to pause at (before they run) while running; edit the set freely."""
        return self._breakpoints

    @breakpoints.setter
    def breakpoints(self, keys) -> None:
        self._breakpoints.clear()
        self._breakpoints.update(keys)

    @property
    def history_bytes(self) -> int:
        """The most bytes of full gradient tensors kept for browsing back."""
        return self._backward.history_bytes

    @history_bytes.setter
    def history_bytes(self, value: int) -> None:
        self._backward.history_bytes = value

    @property
    def done(self) -> bool:
        """Backward is over: finished, failed or aborted."""
        return self._backward.state.over

    @property
    def finished(self) -> bool:
        return self._backward.state is StepperState.FINISHED

    @property
    def aborted(self) -> bool:
        return self._backward.state is StepperState.ABORTED

    @property
    def error(self) -> BaseException | None:
        """The exception backward raised, if it failed."""
        return self._backward.error

    @property
    def error_node(self) -> str | None:
        """The node :attr:`error` is attributed to: the node that raised it, or the one
        about to start when it was raised between nodes (a tensor hook); None when that
        cannot be told (the exception's last note says what is known)."""
        return self._backward.error_node

    @property
    def events(self) -> list[StepEvent]:
        """The nodes run so far, in the order the engine started them."""
        with self._backward.lock:
            return [event for event in self._backward.events if event.duration is not None]

    @property
    def executed(self) -> list[str]:
        """Node keys in the order the engine *started* them (its pre-hook order).

        A node run inside another (a reentrant backward) comes after the node it ran
        in; a node run twice appears twice (its second event has ``repeat == 1``).
        """
        return [event.node for event in self.events]

    @property
    def ended(self) -> int:
        """How many nodes have run to their end: ``len(executed)`` without building the
        list (the screen asks after every slice of a 200,000-node backward)."""
        with self._backward.lock:
            events = self._backward.events
            index = self._ended_scan
            while index < len(events) and events[index].duration is not None:
                index += 1
            self._ended_scan = index
            return index + sum(1 for event in events[index:] if event.duration is not None)

    @property
    def ready(self) -> set[str]:
        """Nodes whose gradients have all arrived (as the graph tells) and that have not run."""
        with self._backward.lock:
            self._backward.update_ready()
            return set(self._backward.ready)

    @property
    def pending(self) -> str | None:
        """The node the engine is paused at, about to run; None when not paused."""
        with self._backward.lock:
            held = self._backward.held
            return held[0].key if held else None

    @property
    def paused_by(self) -> Pause | None:
        """Why the engine is paused at :attr:`pending`; None when it is not paused."""
        with self._backward.lock:
            held = self._backward.held
            return held[0].reason if held else None

    @property
    def pending_grad_outputs(self) -> tuple[TensorSummary | None, ...]:
        """The gradients waiting to flow into :attr:`pending` (read while the engine waits)."""
        with self._backward.lock:
            held = self._backward.held
            incoming = held[0].grad_outputs if held else ()
        return tuple(summary_of(t) for t in incoming)

    @property
    def first_nonfinite(self) -> StepEvent | None:
        """The first node that made a NaN/Inf gradient out of finite ones."""
        with self._backward.lock:
            events = self._backward.events[self._scanned:]
        if self._first_nonfinite is None and len(events) > 8:
            all_finite_together([event for event in events if event.duration is not None])
        for event in events:
            if self._first_nonfinite is not None or event.duration is None:
                break
            if event.nonfinite:
                self._first_nonfinite = event
            self._scanned = event.index + 1
        return self._first_nonfinite

    def __len__(self) -> int:
        return len(self._backward.keys)

    # --------------------------------------------------------------- driving
    def start(self) -> None:
        """Start backward and wait until the engine is paused at its first node."""
        backward = self._backward
        if backward.state is StepperState.ABORTED:
            raise StepperError("this stepper was aborted: start a new forward pass to step again")
        with frozen_heap():  # a collection set off by the hooks made must not scan the heap
            backward.start()
        with backward.lock:
            backward.wait(backward.paused)

    def step(self) -> StepEvent | None:
        """Run exactly one node and return what happened; None once backward has finished.

        If backward fails in this node, its exception is raised here; if it fails after
        the node ran (a tensor hook, between nodes), the node's event is returned,
        :attr:`error` is set and the next call raises the exception.
        """
        self.start()
        backward = self._backward
        with backward.lock:
            if not backward.held:
                return self._at_end()
            hold = backward.held.popleft()
            hold.command = "run"
            backward.hold_next_node(Pause.STEPPING)
            backward.awaited = hold
            backward.cond.notify_all()
            try:
                backward.wait(lambda: (hold.event is not None and hold.event.duration is not None)
                              or backward.state is not StepperState.RUNNING)
            finally:
                backward.awaited = None
            if hold.event is None or hold.event.duration is None:
                self._raise_failure()
            # Settle: paused at the next node, or finished, so `pending` and `done` are exact.
            backward.wait(backward.paused)
            return hold.event

    def run(self, seconds: float | None = None) -> list[StepEvent]:
        """Run to the end, or to the next breakpoint (which is not run); the events run.

        ``seconds``: hand back control once that much time has passed, paused at the
        next node (:attr:`paused_by` is then :attr:`Pause.TIME`); call again to go on.
        At least one node runs per call. A call costs nothing that grows with the graph.
        """
        return self._run(None, None, seconds)

    def run_until(self, target: str | Callable[[StepEvent], bool],
                  seconds: float | None = None) -> list[StepEvent]:
        """Run until the node ``target`` has run, or until ``target(event)`` is true
        (called on the engine's thread after each node); ``seconds`` as in :meth:`run`."""
        if callable(target):
            return self._run(None, target, seconds)
        if target not in self.graph:
            raise StepperError(f"no node {target!r} in this graph")
        with self._backward.lock:
            if self._backward.runs.get(target):
                raise StepperError(f"node {target!r} has already run in this backward")
        return self._run(target, None, seconds)

    def abort(self) -> None:
        """End backward now: the engine stops before its next node. Idempotent, and
        safe from any thread (a run() waiting on another thread returns)."""
        if self._backward.request_abort():
            self._backward.join()

    def __enter__(self) -> BackwardStepper:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()
        self._backward.join()

    # ------------------------------------------------------------- internals
    def _run(self, target: str | None, stop_when, seconds: float | None) -> list[StepEvent]:
        self.start()
        backward = self._backward
        with backward.lock:
            first = len(backward.events)
            if not backward.held:
                self._at_end()
                return []
            backward.hold_next_node(None)
            backward.target = target
            backward.stop_when = stop_when
            backward.deadline = None if seconds is None else time.perf_counter() + seconds
            for hold in backward.held:  # let go of the node we are paused at
                hold.command = "run"
            backward.held.clear()
            backward.cond.notify_all()
            try:
                with frozen_heap():
                    backward.wait(backward.paused)
            finally:
                backward.target = backward.stop_when = backward.deadline = None
                backward.hold_next_node(Pause.STEPPING)
            events = [event for event in backward.events[first:] if event.duration is not None]
            if backward.state is StepperState.FAILED:
                self._raise_failure()
            if backward.state is StepperState.FINISHED:
                self._end.told = True
            return events

    def _at_end(self) -> None:
        """Called with nothing left to run: None the first time, then an error."""
        backward = self._backward
        if backward.state is StepperState.FAILED:
            self._raise_failure()
        self._end.reached(backward.state, backward.error)

    def _raise_failure(self):
        """The user's exception the first time, then a StepperError that recalls it
        (called holding the lock)."""
        backward = self._backward
        backward.lock.release()
        try:
            backward.join()
        finally:
            backward.lock.acquire()
        self._end.failed(backward.error, backward.error_where)


def _root_tensors(roots: Roots) -> list[torch.Tensor]:
    items = list(roots) if isinstance(roots, Sequence) else [roots]
    tensors = []
    for item in items:
        if not isinstance(item, torch.Tensor):
            raise GraphError("BackwardStepper needs the root tensors (such as the loss), "
                             f"not {type(item).__name__}")
        tensors.append(item)
    return tensors


def _check_gradient(roots: list[torch.Tensor], gradient) -> list[torch.Tensor | None] | None:
    grads = [gradient] if isinstance(gradient, torch.Tensor) or gradient is None else list(gradient)
    if gradient is None:
        grads = [None] * len(roots)
    if len(grads) != len(roots):
        raise GraphError(f"{len(grads)} gradients given for {len(roots)} roots")
    for index, (root, grad) in enumerate(zip(roots, grads)):
        where = "the root" if len(roots) == 1 else f"root {index}"
        if grad is None and root.numel() != 1:
            raise GraphError(
                f"{where} is not a scalar (shape {tuple(root.shape)}): pass gradient= "
                "of the same shape, as Q.backward(gradient=...) needs"
            )
        if grad is not None and grad.shape != root.shape:
            raise GraphError(f"the gradient for {where} has shape {tuple(grad.shape)}, "
                             f"the root {tuple(root.shape)}")
    return None if gradient is None else grads


def _check_graph_matches(graph: nx.DiGraph, walk) -> None:
    keys = list(graph.nodes)
    ops = [fn.name().rpartition("::")[2] for fn in walk.nodes]
    if len(keys) != len(ops) or any(graph.nodes[k]["op"] != op for k, op in zip(keys, ops)):
        raise GraphError("the graph given was not built from these roots")
