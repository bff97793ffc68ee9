"""BackwardStepper: PyTorch's own backward engine, paused between autograd nodes.

``torch.autograd.backward`` runs on a worker thread. Every node of the graph gets
a pre-hook and a post-hook (``Node.register_prehook`` / ``Node.register_hook``).
The pre-hook, on whichever thread the engine runs that node (CPU nodes: the
worker; CUDA nodes: the engine's device threads), reports the node and waits
until :meth:`BackwardStepper.step` lets it go; the post-hook records what the node
sent along each edge. The order is the engine's, the gradients are the engine's:
nothing is replayed or recomputed here.

A node that starts while another is running is not held: that happens inside a
reentrant backward (``checkpoint(use_reentrant=True)`` runs one inside its node),
and holding it would deadlock the node waiting for it.

>>> with BackwardStepper(loss) as stepper:                # doctest: +SKIP
...     event = stepper.step()           # the root node ran; the engine waits
...     stepper.run_until("param:fc.weight")
...     stepper.run()                    # to the end
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch

from gradviz.core.deep_graphs import WORKER_STACK_BYTES
from gradviz.core.errors import GradvizError, GraphError
from gradviz.core.graph import Roots, discover, root_nodes, walk_graph
from gradviz.core.quiet_gc import frozen_heap, paused_gc
from gradviz.core.summary import TensorSummary, summarize

#: Full gradient tensors kept for browsing back, newest first, within this many bytes.
DEFAULT_HISTORY_BYTES = 128 << 20


class StepperError(GradvizError):
    """The stepper cannot do what was asked (it has finished, was aborted, ...)."""


class BackwardAborted(Exception):
    """Raised inside the engine by :meth:`BackwardStepper.abort` to end backward."""


@dataclass
class KeptTensors:
    """The tensors behind an event's summaries, while they fit the history budget."""

    grad_outputs: tuple[torch.Tensor | None, ...]
    grad_inputs: tuple[torch.Tensor | None, ...]
    param_grad: torch.Tensor | None
    nbytes: int


class StepEvent:
    """One autograd node run by the engine.

    ``grad_outputs``: summaries of the gradients flowing into the node (one per
    output of the forward op). ``grad_inputs``: what it sent along each
    ``next_functions`` slot, ``None`` where nothing flows. ``param_grad``: for a
    parameter or leaf node, its accumulated ``.grad``. ``nonfinite``: the node made
    a NaN/Inf gradient out of finite ones (where a NaN starts). ``tensors``: the
    full tensors, until the history budget drops them.

    The hooks only keep references; summaries are computed when first read, or
    when the tensors leave the history, so the engine is slowed as little as can be.
    """

    __slots__ = ("index", "node", "op", "module", "duration", "thread", "tensors",
                 "_summaries", "_finite")

    def __init__(self, index, node, op, module, duration, thread, tensors: KeptTensors):
        self.index = index
        self.node = node
        self.op = op
        self.module = module
        self.duration = duration
        self.thread = thread
        self.tensors: KeptTensors | None = tensors
        self._summaries: tuple | None = None
        self._finite: tuple[bool, bool] | None = None  # (what came in, what went out)

    @property
    def grad_outputs(self) -> tuple[TensorSummary | None, ...]:
        return self._summarized()[0]

    @property
    def grad_inputs(self) -> tuple[TensorSummary | None, ...]:
        return self._summarized()[1]

    @property
    def param_grad(self) -> TensorSummary | None:
        return self._summarized()[2]

    @property
    def nonfinite(self) -> bool:
        received, sent = self._finiteness()
        return received and not sent

    @property
    def produces_nonfinite(self) -> bool:
        return not self._finiteness()[1]

    def summarize(self) -> None:
        """Compute the summaries now (on a thread where touching torch is fine)."""
        self._summarized()

    def release(self) -> None:
        """Drop the full tensors, keeping their summaries."""
        self._summarized()
        self.tensors = None

    def _summarized(self) -> tuple:
        if self._summaries is None:
            kept = self.tensors
            self._summaries = (
                tuple(_summary(t) for t in kept.grad_outputs),
                tuple(_summary(t) for t in kept.grad_inputs),
                _summary(kept.param_grad),
            )
        return self._summaries

    def _finiteness(self) -> tuple[bool, bool]:
        if self._finite is None:
            if self._summaries is not None:
                incoming, sent, grad = self._summaries
                self._finite = (all(s is None or s.finite for s in incoming),
                                all(s is None or s.finite for s in (*sent, grad)))
            else:
                kept = self.tensors
                self._finite = (_all_finite(kept.grad_outputs),
                                _all_finite((*kept.grad_inputs, kept.param_grad)))
        return self._finite

    def __repr__(self) -> str:
        return f"StepEvent({self.index}, {self.node!r}, {self.duration * 1e3:.3f} ms)"


_CACHED = "_gradviz_summary"


def _summary(tensor: torch.Tensor | None) -> TensorSummary | None:
    """Summarize once per tensor: what a node sends is, as a rule, the very tensor its
    child receives, so the summary rides on the tensor object (halves the work)."""
    if tensor is None:
        return None
    summary = getattr(tensor, _CACHED, None)
    if summary is None:
        summary = summarize(tensor)
        setattr(tensor, _CACHED, summary)
    return summary


def _all_finite(tensors) -> bool:
    """One reduction per tensor: a sum is NaN/Inf whenever an element is."""
    sums = [t.detach().sum() for t in tensors if t is not None and t.numel()]
    if not sums:
        return True
    if bool(torch.isfinite(torch.stack(sums).double().sum())):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)  # overflow?


class _Visit:
    """A node the engine has started: held in its pre-hook until granted, or running."""

    __slots__ = ("key", "grad_outputs", "thread", "command", "started", "event", "awaited",
                 "grad_was_empty")

    def __init__(self, key, grad_outputs, thread):
        self.key = key
        self.grad_outputs = grad_outputs  # the tensors flowing in
        self.grad_was_empty = False  # a leaf whose .grad was None before it ran
        self.thread = thread
        self.command: str | None = None  # "run" or "abort", set by the stepper's caller
        self.started = 0.0
        self.event: StepEvent | None = None
        self.awaited = False  # step() waits for this visit's event


_NEW, _RUNNING, _FINISHED, _FAILED, _ABORTED = "new", "running", "finished", "failed", "aborted"
_POLL = 0.05  # seconds between checks while waiting on the engine


class BackwardStepper:
    """Step through ``torch.autograd.backward(roots, gradient)`` one node at a time.

    ``graph``: a graph of these roots already built (say by ``rec.graph(loss)``);
    otherwise one is built, with ``model`` / ``params`` / ``modules`` as in
    :func:`gradviz.build_graph`. ``history_bytes`` bounds the full tensors kept.
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
        history_bytes: int = DEFAULT_HISTORY_BYTES,
    ):
        root_fns = root_nodes(roots)
        self._roots = _root_tensors(roots)
        self._gradient = _check_gradient(self._roots, gradient)
        self._retain_graph = retain_graph
        self._create_graph = create_graph
        if graph is None:
            graph, walk = walk_graph(roots, model=model, params=params, modules=modules)
        else:
            walk = discover(root_fns)
            _check_graph_matches(graph, walk)
        self.graph = graph
        self._keys = list(graph.nodes)
        self._fns = walk.nodes  # held while stepping: hooks live on these
        self._leaf_tensors = {
            key: fn.variable for key, fn in zip(self._keys, self._fns)
            if graph.nodes[key]["kind"] in ("param", "leaf")
        }
        self.breakpoints: set[str] = set()
        self.history_bytes = history_bytes

        self._cond = threading.Condition()
        self._state = _NEW
        self._returned_end = False
        self._error: BaseException | None = None
        self._error_node: str | None = None
        self._abort_requested = False
        self._free_run = False
        self._stop_when: Callable[[StepEvent], bool] | None = None
        self._children = {key: list(graph.successors(key)) for key in self._keys}
        self._ops = {key: (graph.nodes[key]["op"], graph.nodes[key].get("module"))
                     for key in self._keys}
        self._held: collections.deque[_Visit] = collections.deque()
        self._running: dict[int, list[_Visit]] = {}  # thread id -> visits started there
        self._events: list[StepEvent] = []
        self._kept: collections.deque[StepEvent] = collections.deque()
        self._kept_bytes = 0
        self._scanned = 0  # events checked for the first non-finite one
        self._first_nonfinite: StepEvent | None = None
        self._waiting_parents = {key: graph.in_degree(key) for key in self._keys}
        self._ready = {key for key in self._keys if self._waiting_parents[key] == 0}
        self._handles: list[Any] = []
        self._worker: threading.Thread | None = None

    # ----------------------------------------------------------------- state
    @property
    def done(self) -> bool:
        """Backward is over: finished, failed or aborted."""
        return self._state in (_FINISHED, _FAILED, _ABORTED)

    @property
    def finished(self) -> bool:
        return self._state == _FINISHED

    @property
    def aborted(self) -> bool:
        return self._state == _ABORTED

    @property
    def error(self) -> BaseException | None:
        """The exception backward raised, if it failed."""
        return self._error

    @property
    def events(self) -> list[StepEvent]:
        with self._cond:
            return list(self._events)

    @property
    def executed(self) -> list[str]:
        """Node keys in the order the engine ran them."""
        with self._cond:
            return [event.node for event in self._events]

    @property
    def ready(self) -> set[str]:
        """Nodes whose gradients have all arrived (as the graph tells) and that have not run."""
        with self._cond:
            return set(self._ready)

    @property
    def pending(self) -> str | None:
        """The node the engine is paused at, about to run; None when not paused."""
        with self._cond:
            return self._held[0].key if self._held else None

    @property
    def pending_grad_outputs(self) -> tuple[TensorSummary | None, ...]:
        """The gradients waiting to flow into :attr:`pending` (read while the engine waits)."""
        with self._cond:
            incoming = self._held[0].grad_outputs if self._held else ()
        return tuple(_summary(t) for t in incoming)

    @property
    def first_nonfinite(self) -> StepEvent | None:
        """The first node that made a NaN/Inf gradient out of finite ones."""
        with self._cond:
            events = self._events[self._scanned:]
        for event in events:
            if self._first_nonfinite is not None:
                break
            if event.nonfinite:
                self._first_nonfinite = event
            self._scanned = event.index + 1
        return self._first_nonfinite

    def __len__(self) -> int:
        return len(self._keys)

    # --------------------------------------------------------------- driving
    def start(self) -> None:
        """Start backward and wait until the engine is paused at its first node."""
        self._start()
        with self._cond:
            self._wait(lambda: self._held or self._state != _RUNNING)

    def step(self) -> StepEvent | None:
        """Run exactly one node and return what happened; None once backward has finished."""
        self.start()
        with self._cond:
            if not self._held:
                return self._at_end()
            visit = self._held.popleft()
            visit.command = "run"
            visit.awaited = True
            self._cond.notify_all()
            self._wait(lambda: visit.event is not None or self._state != _RUNNING)
            if visit.event is None:
                self._raise_failure()
            # Settle: paused at the next node, or finished, so `pending` and `done` are exact.
            self._wait(lambda: self._held or self._state != _RUNNING)
            return visit.event

    def run(self) -> list[StepEvent]:
        """Run to the end, or to the next breakpoint (which is not run); the events run."""
        return self._run(None)

    def run_until(self, target: str | Callable[[StepEvent], bool]) -> list[StepEvent]:
        """Run until the node ``target`` has run, or until ``target(event)`` is true."""
        if callable(target):
            stop_when = target
        else:
            if target not in self.graph:
                raise StepperError(f"no node {target!r} in this graph")
            if target in self.executed:
                raise StepperError(f"node {target!r} has already run in this backward")
            stop_when = functools.partial(_is_node, target)
        return self._run(stop_when)

    def abort(self) -> None:
        """End backward now: the engine stops before its next node. Idempotent."""
        with self._cond:
            if self._state == _NEW:
                self._state = _ABORTED
                return
            if self._state != _RUNNING:
                return
            self._abort_requested = True
            for visit in self._held:
                visit.command = "abort"
            self._cond.notify_all()
        self._join()

    def __enter__(self) -> BackwardStepper:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()
        self._join()

    # ------------------------------------------------------------- internals
    def _run(self, stop_when) -> list[StepEvent]:
        self.start()
        with self._cond:
            first = len(self._events)
            if self._state != _RUNNING and not self._held:
                self._at_end()
                return []
            self._free_run = True
            self._stop_when = stop_when
            for visit in self._held:  # let go of the node we are paused at
                visit.command = "run"
            self._held.clear()
            self._cond.notify_all()
            try:
                with frozen_heap():
                    self._wait(lambda: self._held or self._state != _RUNNING)
            finally:
                self._free_run = False
                self._stop_when = None
            events = self._events[first:]
            if self._state == _FAILED:
                self._raise_failure()
            if self._state == _FINISHED:
                self._returned_end = True
            return events

    def _start(self) -> None:
        with self._cond:
            if self._state == _ABORTED:
                raise StepperError("this stepper was aborted: start a new forward pass to step again")
            if self._state != _NEW:
                return
            with paused_gc():
                for key, fn in zip(self._keys, self._fns):
                    self._handles.append(
                        fn.register_prehook(functools.partial(self._pre_hook, key)))
                    self._handles.append(
                        fn.register_hook(functools.partial(self._post_hook, key)))
            self._state = _RUNNING
        previous = threading.stack_size()
        threading.stack_size(WORKER_STACK_BYTES)  # the worker may free a deep graph
        try:
            self._worker = threading.Thread(target=self._backward, name="gradviz-backward",
                                            daemon=True)
            self._worker.start()
        finally:
            threading.stack_size(previous)

    def _backward(self) -> None:
        outcome, error = _FINISHED, None
        try:
            torch.autograd.backward(self._roots, grad_tensors=self._gradient,
                                    retain_graph=self._retain_graph,
                                    create_graph=self._create_graph)
        except BackwardAborted:
            outcome = _ABORTED
        except BaseException as raised:  # handed to the caller of step()/run()
            outcome, error = _FAILED, raised
        finally:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            with self._cond:
                if error is not None:
                    self._error = error
                    self._error_node = self._innermost_running()
                    _annotate(error, self._error_node, self.graph)
                self._state = outcome
                self._running.clear()
                self._held.clear()
                self._cond.notify_all()

    def _pre_hook(self, key: str, grad_outputs):
        visit = _Visit(key, tuple(grad_outputs), threading.current_thread().name)
        leaf = self._leaf_tensors.get(key)
        if leaf is not None:
            visit.grad_was_empty = leaf.grad is None
        with self._cond:
            if self._abort_requested:
                raise BackwardAborted
            nested = any(self._running.values())
            if not nested and (not self._free_run or key in self.breakpoints):
                self._held.append(visit)
                self._cond.notify_all()
                while visit.command is None:
                    self._cond.wait()
                if visit.command == "abort":
                    raise BackwardAborted
            self._running.setdefault(threading.get_ident(), []).append(visit)
            visit.started = time.perf_counter()
        return None

    def _post_hook(self, key: str, grad_inputs, grad_outputs):
        ended = time.perf_counter()
        with self._cond:
            visit = self._running[threading.get_ident()].pop()
        leaf = self._leaf_tensors.get(key)
        param_grad = None
        if leaf is not None and leaf.grad is not None:
            if visit.grad_was_empty and len(visit.grad_outputs) == 1:
                param_grad = visit.grad_outputs[0]  # .grad = the gradient that came in
            else:  # accumulated: .grad changes in place later, so copy it
                param_grad = leaf.grad.detach().clone()
        with self._cond:
            op, module = self._ops[key]
            kept = KeptTensors(visit.grad_outputs, tuple(grad_inputs), param_grad,
                               _nbytes(visit.grad_outputs, grad_inputs, param_grad))
            event = StepEvent(len(self._events), key, op, module, ended - visit.started,
                              visit.thread, kept)
            self._events.append(event)
            self._keep(event)
            visit.event = event
            self._mark_run(key)
            if self._stop_when is not None and self._stop_when(event):
                self._free_run = False
            if visit.awaited:  # waking the caller for every node costs a GIL hand-over
                self._cond.notify_all()

    def _keep(self, event: StepEvent) -> None:
        """Hold the newest events' tensors within the budget; older ones keep summaries."""
        nbytes = event.tensors.nbytes
        if nbytes > self.history_bytes:
            event.release()
            return
        self._kept.append(event)
        self._kept_bytes += nbytes
        while self._kept_bytes > self.history_bytes:
            oldest = self._kept.popleft()
            self._kept_bytes -= oldest.tensors.nbytes
            oldest.release()

    def _mark_run(self, key: str) -> None:
        self._ready.discard(key)
        for child in self._children[key]:
            self._waiting_parents[child] -= 1
            if self._waiting_parents[child] == 0:
                self._ready.add(child)

    def _innermost_running(self) -> str | None:
        started = [visit for visits in self._running.values() for visit in visits]
        if not started:
            return None
        return max(started, key=lambda visit: visit.started).key

    def _wait(self, condition: Callable[[], Any]) -> None:
        """Wait (holding the lock) until ``condition()``, never past the worker's end."""
        while not condition():
            self._cond.wait(_POLL)
            if self._worker is not None and not self._worker.is_alive() and not condition():
                if self._state == _RUNNING:  # cannot happen: the worker always sets its end
                    raise StepperError("the backward worker ended without a word")
                return

    def _at_end(self) -> None:
        """Called with nothing left to run: None the first time, then an error."""
        if self._state == _FAILED:
            self._raise_failure()
        if self._state == _ABORTED:
            raise StepperError("this stepper was aborted: start a new forward pass to step again")
        if self._returned_end:
            raise StepperError("backward has finished: start a new forward pass to step again")
        self._returned_end = True
        return None

    def _raise_failure(self):
        """The user's exception the first time, then a StepperError that recalls it."""
        self._cond.release()
        try:
            self._join()
        finally:
            self._cond.acquire()
        if self._returned_end:
            where = f" at {self._error_node}" if self._error_node else ""
            raise StepperError(
                f"backward failed{where} ({type(self._error).__name__}): "
                "start a new forward pass to step again"
            )
        self._returned_end = True
        raise self._error

    def _join(self) -> None:
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()


def _nbytes(grad_outputs, grad_inputs, param_grad) -> int:
    total = 0
    if param_grad is not None and not any(param_grad is t for t in grad_outputs):
        total = param_grad.numel() * param_grad.element_size()
    for t in grad_outputs:
        if t is not None:
            total += t.numel() * t.element_size()
    for t in grad_inputs:
        if t is not None:
            total += t.numel() * t.element_size()
    return total


def _is_node(key: str, event: StepEvent) -> bool:
    return event.node == key


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


def _annotate(error: BaseException, node: str | None, graph: nx.DiGraph) -> None:
    """Say on the user's own exception which node raised it."""
    if node is None:
        where = "gradviz: raised in backward before any node ran"
    else:
        attrs = graph.nodes[node]
        module = attrs.get("module")
        where = f"gradviz: raised in backward at node {node} ({attrs['op']}" + (
            f", module {module!r})" if module else ")")
    try:
        error.gradviz_node = node
    except AttributeError:
        pass
    if hasattr(error, "add_note"):
        error.add_note(where)
