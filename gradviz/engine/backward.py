"""BackwardStepper: PyTorch's own backward engine, paused between autograd nodes.

``torch.autograd.backward`` runs on a backward thread (see
:mod:`gradviz.engine.threads`). Every node of the graph gets
a pre-hook and a post-hook (``Node.register_prehook`` / ``Node.register_hook``).
The pre-hook, on whichever thread the engine runs that node (CPU nodes: the
backward thread; CUDA nodes: the engine's device threads), records that the node started
and, when the caller steps one node at a time (or a breakpoint, a target or a
time limit says so), waits until :meth:`BackwardStepper.step` lets it go; the
post-hook records what the node sent along each edge. The order is the engine's,
the gradients are the engine's: nothing is replayed or recomputed here.

What the hooks do is kept to a few attribute writes: no copies (one for a leaf's
accumulated ``.grad``), no waking the caller unless it waits for that very node.
Events keep their tensors in a bounded history (``history_bytes``, the newest
first) and are summarized when first read or when they leave it. When backward will
make more gradients than the history holds (the graph's shapes tell), the nodes that
cannot stay are summarized in their hooks as they run, while their tensors are in
cache, and hold nothing. A CUDA tensor's summary is only queued there (no sync). A
view op's gradient takes the statistics of the one it received.

A node that starts while another is running is not held: that happens inside a
reentrant backward (``checkpoint(use_reentrant=True)`` runs one inside its node),
and holding it would deadlock the node waiting for it. Such a node's event says
``inside`` which node it ran; a node that runs twice in one backward (a
parameter's ``AccumulateGrad``, once inside the checkpoint and once outside) has
two events, the second with ``repeat == 1``.

>>> with BackwardStepper(loss) as stepper:                # doctest: +SKIP
...     event = stepper.step()           # the root node ran; the engine waits
...     stepper.run_until("param:fc.weight")
...     while not stepper.done:          # to the end, handing back control
...         stepper.run(seconds=0.05)    # every 50 ms (say, to draw)
"""

from __future__ import annotations

import collections
import enum
import functools
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch

from gradviz.engine import threads as backward_threads
from gradviz.errors import GradvizError, GraphError
from gradviz.graph.walk import Roots, discover, root_nodes, walk_graph
from gradviz.runtime.quiet_gc import frozen_heap, paused_gc
from gradviz.engine.summary import (
    PendingSummary,
    TensorSummary,
    same_elements,
    summarize,
    summarize_as,
    summarize_later,
)

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


class StepperError(GradvizError):
    """The stepper cannot do what was asked (it has finished, was aborted, ...)."""


class BackwardAborted(Exception):
    """Raised inside the engine by :meth:`BackwardStepper.abort` to end backward."""


class Pause(enum.Enum):
    """Why the engine is paused at :attr:`BackwardStepper.pending`."""

    STEPPING = "stepping"  # one node at a time: start() and step() pause at every node
    BREAKPOINT = "breakpoint"  # the node is in ``breakpoints``
    TARGET = "target"  # run_until()'s node has run
    TIME = "time"  # run(seconds=...) ran out of time: run again to go on


@dataclass(slots=True)
class KeptTensors:
    """The tensors behind an event's summaries, while they fit the history budget.

    ``nbytes`` counts all of them; the budget counts a tensor once however many events
    hold it (what a node sends is, as a rule, what its child receives).
    """

    grad_outputs: tuple[torch.Tensor | None, ...]
    grad_inputs: tuple[torch.Tensor | None, ...]
    param_grad: torch.Tensor | None
    nbytes: int


class StepEvent:
    """One run of an autograd node by the engine.

    ``index``: its place in the order the engine *started* nodes (the order of
    :attr:`BackwardStepper.executed`). ``grad_outputs``: summaries of the gradients
    flowing into the node (one per output of the forward op). ``grad_inputs``: what
    it sent along each ``next_functions`` slot, ``None`` where nothing flows.
    ``param_grad``: for a parameter or leaf node, its accumulated ``.grad``.
    ``nonfinite``: the node made a NaN/Inf gradient out of finite ones (where a NaN
    starts). ``repeat``: how many times this node had already run in this backward
    (0 but for a node run again inside a reentrant backward). ``inside``: the node
    inside whose run this one ran (a reentrant backward), else None. ``tensors``:
    the full tensors, until the history budget drops them.
    """

    __slots__ = ("index", "node", "op", "module", "duration", "thread", "repeat", "inside",
                 "tensors", "_summaries", "_queued", "_finite", "_incoming", "_at_once",
                 "_grad_was_empty", "_started")

    def __init__(self, index, node, op, module, thread, repeat, inside, incoming, at_once,
                 grad_was_empty):
        self.index = index
        self.node = node
        self.op = op
        self.module = module
        self.thread = thread
        self.repeat = repeat
        self.inside = inside
        self.duration: float | None = None  # set when the node has finished
        self.tensors: KeptTensors | None = None
        self._summaries: tuple | None = None
        self._queued = False  # _summaries holds summaries still queued on a device
        self._finite: tuple[bool, bool] | None = None  # (what came in, what went out)
        self._incoming = incoming  # the gradients flowing in, until the node finishes
        self._at_once = at_once  # summarized in the hooks: the history could not keep it
        self._grad_was_empty = grad_was_empty  # a leaf whose .grad was None before it ran
        self._started = 0.0

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
        """Drop the full tensors, keeping their summaries. Called in the engine's
        post-hook when the history is full: a CUDA tensor's summary is queued on its
        device there, not waited for (it is read when first asked for)."""
        kept = self.tensors
        if self._summaries is None and kept is not None:
            queued = (
                tuple(_summary_later(t) for t in kept.grad_outputs),
                _sent_summaries(kept.grad_inputs, kept.grad_outputs, _summary_later),
                _summary_later(kept.param_grad),
            )
            self._queued = True  # first: a reader on another thread then reads them all
            self._summaries = queued
        self.tensors = None

    def _summarized(self) -> tuple:
        summaries = self._summaries
        if summaries is None:
            kept = self.tensors
            if kept is None:  # released by another thread, which summarized it first
                summaries = self._summaries
            else:
                summaries = (
                    tuple(_summary(t) for t in kept.grad_outputs),
                    _sent_summaries(kept.grad_inputs, kept.grad_outputs, _summary),
                    _summary(kept.param_grad),
                )
                self._summaries = summaries
                return summaries
        if self._queued:
            incoming, sent, grad = summaries
            summaries = (tuple(_read(s) for s in incoming), tuple(_read(s) for s in sent),
                         _read(grad))
            self._summaries = summaries
            self._queued = False
        return summaries

    def _finiteness(self) -> tuple[bool, bool]:
        if self._finite is None:
            kept = self.tensors
            if self._summaries is not None or kept is None:
                incoming, sent, grad = self._summarized()
                self._finite = (all(s is None or s.finite for s in incoming),
                                all(s is None or s.finite for s in (*sent, grad)))
            else:
                self._finite = (_all_finite(kept.grad_outputs),
                                _all_finite((*kept.grad_inputs, kept.param_grad)))
        return self._finite

    def __repr__(self) -> str:
        ran = "running" if self.duration is None else f"{self.duration * 1e3:.3f} ms"
        again = f", repeat {self.repeat}" if self.repeat else ""
        return f"StepEvent({self.index}, {self.node!r}, {ran}{again})"


_CACHED = "_gradviz_summary"


def _summary(tensor: torch.Tensor | None) -> TensorSummary | None:
    """Summarize once per tensor: what a node sends is, as a rule, the very tensor its
    child receives, so the summary rides on the tensor object (halves the work), with
    the tensor's version: the engine may add into a gradient buffer nobody else holds."""
    if tensor is None:
        return None
    version = tensor._version
    cached = getattr(tensor, _CACHED, None)
    if cached is None or cached[0] != version:
        summary = summarize(tensor)
    elif type(cached[1]) is PendingSummary:
        summary = cached[1].result()
    else:
        return cached[1]
    setattr(tensor, _CACHED, (version, summary))
    return summary


def _summary_later(tensor: torch.Tensor | None) -> TensorSummary | PendingSummary | None:
    """:func:`_summary`, queued on the tensor's device rather than waited for."""
    if tensor is None:
        return None
    version = tensor._version
    cached = getattr(tensor, _CACHED, None)
    if cached is not None and cached[0] == version:
        return cached[1]
    summary = summarize_later(tensor)
    setattr(tensor, _CACHED, (version, summary))
    return summary


def _sent_summaries(sent, received, summary_of) -> tuple:
    """Summaries of what a node sent (``summary_of`` is :func:`_summary` or
    :func:`_summary_later`). A view op's backward sends the gradient it received,
    viewed, permuted or reshaped: its statistics are those of what came in (about half
    of all gradient bytes in swin_t and convnext_tiny), only its first elements differ."""
    summaries = []
    for tensor in sent:
        summary = None
        if tensor is not None:
            for other in received:
                if other is not None and other is not tensor and same_elements(tensor, other):
                    summary = summarize_as(summary_of(other), tensor)
                    setattr(tensor, _CACHED, (tensor._version, summary))
                    break
            else:
                summary = summary_of(tensor)
        summaries.append(summary)
    return tuple(summaries)


def _read(summary: TensorSummary | PendingSummary | None) -> TensorSummary | None:
    return summary.result() if type(summary) is PendingSummary else summary


def _all_finite(tensors) -> bool:
    """One reduction per tensor: a sum is NaN/Inf whenever an element is."""
    sums = [t.detach().sum() for t in tensors if t is not None and t.numel()]
    if not sums:
        return True
    if bool(torch.isfinite(torch.stack(sums).double().sum())):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors if t is not None)  # overflow?


def _all_finite_together(events: list[StepEvent]) -> None:
    """Settle the finiteness of many events' kept tensors in a few torch calls (a sum is
    NaN/Inf whenever an element is): small tensors flattened into one (torch's
    ``_flatten_dense_tensors``, as DDP buckets them), big ones summed each. Calls per
    event cost 5 s on a 200,000-node chain. Where a sum is not finite (or the tensors
    do not suit this), the events are left to :meth:`StepEvent._finiteness`, which
    tells which side, and overflow, exactly."""
    small, sums, seen, checked = [], [], set(), []
    for event in events:
        kept = event.tensors
        if kept is None or event._finite is not None or event._summaries is not None:
            continue
        checked.append(event)
        for tensor in (*kept.grad_outputs, *kept.grad_inputs, kept.param_grad):
            if tensor is None or id(tensor) in seen:  # what one node sent, the next received
                continue
            seen.add(id(tensor))
            if tensor.numel() <= _FLATTEN_UP_TO:
                small.append(tensor.detach())
            else:
                sums.append(tensor.detach().sum())
    if not (small or sums):
        return
    try:
        if small:
            sums.append(torch._utils._flatten_dense_tensors(small).sum())
        finite = bool(torch.isfinite(torch.stack(sums).double().sum()))
    except (RuntimeError, TypeError, NotImplementedError):  # sparse, mixed devices...
        return
    if finite:
        for event in checked:
            event._finite = (True, True)


_FLATTEN_UP_TO = 1 << 14  # elements: copying a bigger tensor costs more than its own sum


class _Hold:
    """A node the engine wants to start, waiting in its pre-hook for the caller's word."""

    __slots__ = ("key", "grad_outputs", "reason", "command", "event")

    def __init__(self, key, grad_outputs, reason: Pause):
        self.key = key
        self.grad_outputs = grad_outputs
        self.reason = reason
        self.command: str | None = None  # "run" or "abort", set by the caller
        self.event: StepEvent | None = None  # its event, once it has started


_NEW, _RUNNING, _FINISHED, _FAILED, _ABORTED = "new", "running", "finished", "failed", "aborted"
_POLL = 0.1  # seconds between checks that backward is alive, while waiting on it


class _Backward:
    """One ``torch.autograd.backward`` on a backward thread, and what its hooks share.

    Separate from :class:`BackwardStepper` so that neither that thread nor the hooks
    keep the stepper alive: dropping the last reference to a stepper ends its
    backward (a ``weakref.finalize`` calls :meth:`request_abort`).
    """

    def __init__(self, roots, gradient, retain_graph, create_graph, graph, keys, fns,
                 breakpoints, history_bytes):
        self.roots = roots
        self.gradient = gradient
        self.retain_graph = retain_graph
        self.create_graph = create_graph
        self.graph = graph
        self.keys = keys
        self.fns = fns  # the hooks live on these; held as long as the stepper
        self.breakpoints = breakpoints
        self.history_bytes = history_bytes

        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.state = _NEW
        self.error: BaseException | None = None
        self.error_node: str | None = None
        self.error_where = ""  # "at X", "after node X ran", ...: for StepperError
        self.abort_requested = False
        self.hold_next: Pause | None = Pause.STEPPING  # hold the next node that starts
        self.pausing = True  # hold_next is set, or abort was asked: hooks look closer
        self.deadline: float | None = None  # hold the next node that starts after this
        self.target: str | None = None  # hold after this node has run
        self.stop_when: Callable[[StepEvent], bool] | None = None
        self.awaited: _Hold | None = None  # step() waits for this node to finish
        self.held: collections.deque[_Hold] = collections.deque()
        self.stacks: dict[int, list[StepEvent]] = {}  # thread id -> events running there
        self.runs: dict[str, int] = {}  # node -> times started
        self.thread_names: dict[int, str] = {}
        self.events: list[StepEvent] = []  # in the order the engine started them
        self.last_finished: StepEvent | None = None
        self.kept: collections.deque[StepEvent] = collections.deque()
        self.kept_bytes = 0  # of the distinct tensors kept events hold
        self.kept_refs: dict[int, int] = {}  # id(tensor) -> kept events holding it
        # Gradients still to come, told from the graph's shapes (as float32): while more
        # than the history holds are to come, the node now running will be evicted for
        # sure, so its hooks summarize it at once (while its tensors are in cache) and
        # keep none (the engine may then reuse those buffers, and .grad take the last).
        self.expected_bytes = sum(4 * math.prod(attrs["shape"] or ())
                                  for attrs in graph._node.values())
        self.produced_bytes = 0  # gradients that have flowed into nodes so far
        self.handles: list[Any] = []
        self.job: backward_threads.Job | None = None

        # networkx's own adjacency dicts, as its algorithms read them: a view per node
        # (successors, in_degree) cost 0.75 s on a 200,000-node chain, a list of
        # children per node 0.1 s
        self.children = graph._succ  # node -> {child: edge attributes}
        pred = graph._pred
        with paused_gc():
            self.waiting_parents = dict(zip(pred, map(len, pred.values())))
        self.ready = {key for key, count in self.waiting_parents.items() if count == 0}
        self.readied = 0  # events[:readied] are counted in `ready`

    # ------------------------------------------------------------- starting
    def start(self) -> None:
        with self.lock:
            if self.state != _NEW:
                return
            nodes = self.graph.nodes
            pre_hook, post_hook = self.make_hooks()
            partial = functools.partial
            with paused_gc():
                for key, fn in zip(self.keys, self.fns):
                    attrs = nodes[key]
                    leaf = fn.variable if attrs["kind"] != "op" else None
                    node = (key, attrs["op"], attrs.get("module"), leaf)
                    self.handles.append(fn.register_prehook(partial(pre_hook, node)))
                    self.handles.append(fn.register_hook(partial(post_hook, node)))
            self.state = _RUNNING
        self.job = backward_threads.submit(self.backward)

    def backward(self) -> bool:
        """Run backward to its end (on a backward thread); whether that thread may wait
        for another pass: not after an abort (the app quitting, a new forward pass)."""
        outcome, error = _FINISHED, None
        try:
            torch.autograd.backward(self.roots, grad_tensors=self.gradient,
                                    retain_graph=self.retain_graph,
                                    create_graph=self.create_graph)
        except BackwardAborted:
            outcome = _ABORTED
        except BaseException as raised:  # handed to the caller of step()/run()
            outcome, error = _FAILED, raised
        finally:
            # The graph itself (roots, fns) is kept until the stepper goes: freeing it
            # here would make run() pay for what a plain backward leaves to `del loss`.
            for handle in self.handles:
                handle.remove()
            self.handles.clear()
            with self.lock:
                if error is not None:
                    self.error = error
                    self.error_node, self.error_where, sentence = self.attribute_error()
                    _annotate(error, self.error_node, sentence)
                self.state = outcome
                self.stacks.clear()
                self.held.clear()
                self.cond.notify_all()
        return outcome != _ABORTED

    # ---------------------------------------------------------------- hooks
    def make_hooks(self):
        """The pre-hook and post-hook every node gets (bound to it with ``partial``).

        They run for every node of every backward, on the engine's threads, so they
        are closures over what they touch (no attribute lookups for those) and take
        the lock once each.
        """
        lock = self.lock
        events = self.events
        stacks = self.stacks
        runs = self.runs
        names = self.thread_names
        kept = self.kept
        kept_refs = self.kept_refs
        breakpoints = self.breakpoints
        perf_counter = time.perf_counter
        get_ident = threading.get_ident

        def pre_hook(node, grad_outputs):
            key, op, module, leaf = node
            grad_was_empty = leaf is not None and leaf.grad is None
            ident = get_ident()
            incoming_bytes = 0
            if self.expected_bytes > self.history_bytes:  # else nothing is summarized at once
                for tensor in grad_outputs:
                    if tensor is not None:
                        incoming_bytes += tensor.nbytes
            lock.acquire()  # not `with`: 0.25 us less per use, twice per node
            try:
                deadline = self.deadline
                if (self.pausing or key in breakpoints
                        or (deadline is not None and perf_counter() >= deadline)):
                    hold = self.maybe_hold(key, grad_outputs)  # may wait, or raise to abort
                else:
                    hold = None
                stack = stacks.get(ident)
                if stack is None:
                    stack = stacks[ident] = []
                    names[ident] = threading.current_thread().name
                repeat = runs.get(key, 0)
                runs[key] = repeat + 1
                self.produced_bytes += incoming_bytes
                at_once = self.expected_bytes - self.produced_bytes > self.history_bytes
                event = StepEvent(len(events), key, op, module, names[ident], repeat,
                                  stack[-1].node if stack else None, grad_outputs, at_once,
                                  grad_was_empty)
                events.append(event)
                stack.append(event)
                if hold is not None:
                    hold.event = event
            finally:
                lock.release()
            if at_once:
                event._incoming = tuple(_summary_later(t) for t in grad_outputs)
            event._started = perf_counter()

        def post_hook(node, grad_inputs, grad_outputs):
            ended = perf_counter()
            leaf = node[3]
            stack = stacks[get_ident()]
            event = stack[-1]
            incoming = event._incoming
            if event._at_once:
                param = None
                if leaf is not None and leaf.grad is not None:
                    param = _summary_later(leaf.grad)  # version-checked: .grad changes later
                event._queued = True
                event._summaries = (incoming,
                                    _sent_summaries(grad_inputs, grad_outputs, _summary_later),
                                    param)
                incoming = grad_inputs = ()
            else:
                param_grad = None
                if leaf is not None and leaf.grad is not None:
                    if event._grad_was_empty and len(incoming) == 1:
                        param_grad = incoming[0]  # .grad = the gradient that came in
                    else:  # accumulated: .grad changes in place later, so copy it
                        param_grad = leaf.grad.detach().clone()
                event.tensors = KeptTensors(incoming, grad_inputs, param_grad, 0)
            event._incoming = ()
            stop_when = self.stop_when
            stop = stop_when is not None and stop_when(event)
            lock.acquire()
            try:
                stack.pop()
                event.duration = ended - event._started
                self.last_finished = event
                held = event.tensors
                if held is not None:
                    kept.append(event)
                    nbytes = 0
                    for tensor in (*incoming, *grad_inputs, held.param_grad):
                        if tensor is not None:
                            size = tensor.nbytes
                            nbytes += size
                            key = id(tensor)
                            count = kept_refs.get(key)
                            if count is None:
                                kept_refs[key] = 1
                                self.kept_bytes += size
                            else:
                                kept_refs[key] = count + 1
                    held.nbytes = nbytes
                    evicted = self.evict() if self.kept_bytes > self.history_bytes else ()
                else:
                    evicted = ()
                if stop or node[0] == self.target:
                    self.hold_next_node(Pause.TARGET)
                awaited = self.awaited
                if awaited is not None and awaited.event is event:
                    self.cond.notify_all()  # waking the caller costs a GIL hand-over: only then
            finally:
                lock.release()
            for old in evicted:
                old.release()

        return pre_hook, post_hook

    def maybe_hold(self, key: str, grad_outputs) -> _Hold | None:
        """In a pre-hook, holding the lock: hold the node here until the caller lets it
        go, if it must wait; raise to end backward if the caller aborts."""
        if self.abort_requested:
            raise BackwardAborted
        if any(self.stacks.values()):  # a node that starts inside another is never held
            return None
        reason = self.hold_reason(key)
        if reason is None:
            return None
        hold = _Hold(key, grad_outputs, reason)
        self.held.append(hold)
        self.cond.notify_all()
        while hold.command is None:
            self.cond.wait()
        if hold.command == "abort":
            raise BackwardAborted
        return hold

    def hold_next_node(self, reason: Pause | None) -> None:
        """Hold the next node that starts (None: let nodes run); holding the lock."""
        self.hold_next = reason
        self.pausing = reason is not None or self.abort_requested

    def hold_reason(self, key: str) -> Pause | None:
        """Why the node ``key``, about to start, must wait for the caller; None: it runs."""
        if key in self.breakpoints:
            return Pause.BREAKPOINT
        if self.hold_next is not None:
            return self.hold_next
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return Pause.TIME
        return None

    def evict(self) -> list[StepEvent]:
        """The oldest events whose tensors no longer fit the budget, taken out of the
        history (holding the lock); they are summarized and released outside it."""
        evicted = []
        kept_refs = self.kept_refs
        while self.kept_bytes > self.history_bytes and self.kept:
            oldest = self.kept.popleft()
            held = oldest.tensors
            for tensor in (*held.grad_outputs, *held.grad_inputs, held.param_grad):
                if tensor is not None:
                    key = id(tensor)
                    count = kept_refs[key] - 1
                    if count:
                        kept_refs[key] = count
                    else:
                        del kept_refs[key]
                        self.kept_bytes -= tensor.nbytes
            evicted.append(oldest)
        return evicted

    # -------------------------------------------------------- caller's side
    def wait(self, condition: Callable[[], Any]) -> None:
        """Wait (holding the lock) until ``condition()``, never past backward's end."""
        while not condition():
            self.cond.wait(_POLL)
            job = self.job
            if job is not None and job.done.is_set() and not condition():
                if self.state == _RUNNING:  # cannot happen: backward always sets its end
                    raise StepperError("the backward thread ended without a word")
                return

    def paused(self) -> bool:
        return bool(self.held) or self.state != _RUNNING

    def update_ready(self) -> None:
        """Count the events finished since last time into `ready` (holding the lock)."""
        events = self.events
        while self.readied < len(events) and events[self.readied].duration is not None:
            event = events[self.readied]
            self.readied += 1
            if event.repeat:
                continue
            self.ready.discard(event.node)
            for child in self.children[event.node]:
                self.waiting_parents[child] -= 1
                if self.waiting_parents[child] == 0:
                    self.ready.add(child)

    def attribute_error(self) -> tuple[str | None, str, str]:
        """Where an exception from backward was raised, told truly (holding the lock):
        the node it belongs to (or None), a short phrase and the full sentence."""
        running = [event for stack in self.stacks.values() for event in stack]
        if running:
            node = max(running, key=lambda event: event._started).node
            return node, f"at {node}", f"raised in backward at node {self.describe(node)}"
        last = self.last_finished
        if last is None:
            return None, "before any node ran", "raised in backward before any node ran"
        self.update_ready()
        after = f"after node {last.node} ran"
        if len(self.ready) == 1:
            (upcoming,) = self.ready
            return upcoming, f"{after}, before {upcoming} started", (
                f"raised in backward after node {self.describe(last.node)} ran, before node "
                f"{self.describe(upcoming)} started: in a hook on that node or on a gradient "
                "flowing into it (a tensor hook), or in the engine")
        if not self.ready:
            return None, f"{after}, the last node", (
                f"raised in backward after its last node, {self.describe(last.node)}, ran")
        return None, f"between nodes, {after}", (
            f"raised in backward between nodes, after node {self.describe(last.node)} ran "
            "(in a hook on a gradient, a tensor hook, or in the engine)")

    def describe(self, node: str) -> str:
        attrs = self.graph.nodes[node]
        module = attrs.get("module")
        return f"{node} ({attrs['op']}" + (f", module {module!r})" if module else ")")

    def request_abort(self) -> bool:
        """Ask the engine to stop before its next node; True if a backward is running."""
        with self.lock:
            if self.state == _NEW:
                self.state = _ABORTED
                return False
            if self.state != _RUNNING:
                return False
            self.abort_requested = True
            self.pausing = True
            for hold in self.held:
                hold.command = "abort"
            self.cond.notify_all()
            return True

    def join(self) -> None:
        job = self.job
        if job is not None and job.thread is not threading.current_thread():
            job.join()


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
        self._backward = _Backward(tensors, checked_gradient, retain_graph, create_graph,
                                   graph, list(graph.nodes), walk.nodes, self._breakpoints,
                                   history_bytes)
        self._returned_end = False
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
        return self._backward.state in (_FINISHED, _FAILED, _ABORTED)

    @property
    def finished(self) -> bool:
        return self._backward.state == _FINISHED

    @property
    def aborted(self) -> bool:
        return self._backward.state == _ABORTED

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
        return tuple(_summary(t) for t in incoming)

    @property
    def first_nonfinite(self) -> StepEvent | None:
        """The first node that made a NaN/Inf gradient out of finite ones."""
        with self._backward.lock:
            events = self._backward.events[self._scanned:]
        if self._first_nonfinite is None and len(events) > 8:
            _all_finite_together([event for event in events if event.duration is not None])
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
        if backward.state == _ABORTED:
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
                              or backward.state != _RUNNING)
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
            if backward.state == _FAILED:
                self._raise_failure()
            if backward.state == _FINISHED:
                self._returned_end = True
            return events

    def _at_end(self) -> None:
        """Called with nothing left to run: None the first time, then an error."""
        backward = self._backward
        if backward.state == _FAILED:
            self._raise_failure()
        if backward.state == _ABORTED:
            raise StepperError("this stepper was aborted: start a new forward pass to step again")
        if self._returned_end:
            raise StepperError("backward has finished: start a new forward pass to step again")
        self._returned_end = True
        return None

    def _raise_failure(self):
        """The user's exception the first time, then a StepperError that recalls it
        (called holding the lock)."""
        backward = self._backward
        backward.lock.release()
        try:
            backward.join()
        finally:
            backward.lock.acquire()
        error = backward.error
        if self._returned_end:
            raise StepperError(
                f"backward failed {backward.error_where} ({type(error).__name__}): "
                "start a new forward pass to step again"
            )
        self._returned_end = True
        raise error


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


def _annotate(error: BaseException, node: str | None, where: str) -> None:
    """Say on the user's own exception where in backward it was raised, and to which
    node it belongs (``error.gradviz_node``, as :attr:`BackwardStepper.error_node`)."""
    try:
        error.gradviz_node = node
    except AttributeError:
        pass
    if hasattr(error, "add_note"):
        error.add_note("gradviz: " + where)
