"""The engine's hot path: the pre- and post-hook every node of a stepped backward gets.

``torch.autograd.backward`` runs on a backward thread (see
:mod:`gradviz.engine.threads`). Every node of the graph gets a pre-hook and a
post-hook (``Node.register_prehook`` / ``Node.register_hook``). The pre-hook, on
whichever thread the engine runs that node (CPU nodes: the backward thread; CUDA
nodes: the engine's device threads), records that the node started and, when the
caller steps one node at a time (or a breakpoint, a target or a time limit says so),
waits until the caller lets it go; the post-hook records what the node sent along
each edge. The order is the engine's, the gradients are the engine's: nothing is
replayed or recomputed here.

What the hooks do is kept to a few attribute writes: no copies (one for a leaf's
accumulated ``.grad``), no waking the caller unless it waits for that very node.
When backward will make more gradients than the history holds (the graph's shapes
tell), the nodes that cannot stay are summarized in their hooks as they run, while
their tensors are in cache, and hold nothing. A CUDA tensor's summary is only queued
there (no sync).

A node that starts while another is running is not held: that happens inside a
reentrant backward (``checkpoint(use_reentrant=True)`` runs one inside its node),
and holding it would deadlock the node waiting for it. Such a node's event says
``inside`` which node it ran; a node that runs twice in one backward (a
parameter's ``AccumulateGrad``, once inside the checkpoint and once outside) has
two events, the second with ``repeat == 1``.
"""

from __future__ import annotations

import collections
import enum
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from gradviz.engine import threads as backward_threads
from gradviz.engine.events import KeptTensors, StepEvent, sent_summaries, summary_later
from gradviz.engine.lifecycle import StepperError, StepperState
from gradviz.runtime.quiet_gc import freeze_new, paused_gc


class BackwardAborted(Exception):
    """Raised inside the engine by :meth:`BackwardStepper.abort` to end backward."""


class Pause(enum.Enum):
    """Why the engine is paused at :attr:`BackwardStepper.pending`."""

    STEPPING = "stepping"  # one node at a time: start() and step() pause at every node
    BREAKPOINT = "breakpoint"  # the node is in ``breakpoints``
    TARGET = "target"  # run_until()'s node has run
    TIME = "time"  # run(seconds=...) ran out of time: run again to go on


class Hold:
    """A node the engine wants to start, waiting in its pre-hook for the caller's word."""

    __slots__ = ("key", "grad_outputs", "reason", "command", "event")

    def __init__(self, key, grad_outputs, reason: Pause):
        self.key = key
        self.grad_outputs = grad_outputs
        self.reason = reason
        self.command: str | None = None  # "run" or "abort", set by the caller
        self.event: StepEvent | None = None  # its event, once it has started


POLL = 0.1  # seconds between checks that backward is alive, while waiting on it


class BackwardRun:
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
        self.state = StepperState.NEW
        self.error: BaseException | None = None
        self.error_node: str | None = None
        self.error_where = ""  # "at X", "after node X ran", ...: for StepperError
        self.abort_requested = False
        self.hold_next: Pause | None = Pause.STEPPING  # hold the next node that starts
        self.pausing = True  # hold_next is set, or abort was asked: hooks look closer
        self.deadline: float | None = None  # hold the next node that starts after this
        self.target: str | None = None  # hold after this node has run
        self.stop_when: Callable[[StepEvent], bool] | None = None
        self.awaited: Hold | None = None  # step() waits for this node to finish
        self.held: collections.deque[Hold] = collections.deque()
        self.stacks: dict[int, list[StepEvent]] = {}  # thread id -> events running there
        self.runs: dict[str, int] = {}  # node -> times started
        self.thread_names: dict[int, str] = {}
        self.events: list[StepEvent] = []  # in the order the engine started them
        self.last_finished: StepEvent | None = None
        self.kept: collections.deque[StepEvent] = collections.deque()
        # What kept events hold is counted per tensor (kept_refs, kept_bytes: what a node
        # sends is, as a rule, what its child receives) only once the history could be
        # full: until then the sum of every event's nbytes (gross_bytes), which is never
        # less, says it is not, for half the work per tensor.
        self.counted = False
        self.gross_bytes = 0
        self.kept_bytes = 0  # of the distinct tensors kept events hold, once counted
        self.kept_refs: dict[int, int] = {}  # id(tensor) -> kept events holding it
        # Gradients still to come, told from the graph's shapes (as float32), beyond what
        # the history holds: while some are, the node now running will be evicted for
        # sure, so its hooks summarize it at once (while its tensors are in cache) and
        # keep none (the engine may then reuse those buffers, and .grad take the last).
        # Each node's incoming gradients count off as it starts.
        self.unkept_bytes = sum(4 * math.prod(attrs["shape"] or ())
                                for attrs in graph._node.values()) - history_bytes
        self.handles: list[Any] = []
        self.key_of: dict[Any, str] = {}  # autograd Node -> its key, while hooked
        self.free_start = -1  # the event at this index starts without being held
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

    def set_history_bytes(self, value: int) -> None:
        with self.lock:
            self.unkept_bytes += self.history_bytes - value
            self.history_bytes = value

    # ------------------------------------------------------------- starting
    def start(self, hold_first: bool = True, target: str | None = None,
              stop_when: Callable[[StepEvent], bool] | None = None) -> None:
        """Hook every node and start backward on a backward thread. ``hold_first``: hold
        the first node that starts (as :meth:`BackwardStepper.start` does); otherwise run
        to the end, to ``target`` or ``stop_when`` (see :meth:`BackwardStepper.run_until`)
        or to a breakpoint, letting the first node run even if it is one (as a run() that
        started the pass paused at its first node would)."""
        with self.lock:
            if self.state is not StepperState.NEW:
                return
            fns = self.fns
            # One hook function for all nodes (each finds its node through the engine):
            # a partial per node and hook cost 0.5 us more per node to make, call and free.
            self.key_of = dict(zip(fns, self.keys))
            pre_hook, post_hook = self.make_hooks()
            handles = self.handles
            try:
                with paused_gc():
                    for fn in fns:
                        handles.append(fn.register_prehook(pre_hook))
                        handles.append(fn.register_hook(post_hook))
                    freeze_new()  # they live as long as backward: no collection need scan them
            except BaseException:  # no hook is left behind on a graph that never ran
                for handle in handles:
                    handle.remove()
                handles.clear()
                raise
            if not hold_first:
                self.hold_next_node(None)
                self.target = target
                self.stop_when = stop_when
                self.free_start = 0
            self.state = StepperState.RUNNING
        self.job = backward_threads.submit(self.backward)

    def backward(self) -> bool:
        """Run backward to its end (on a backward thread); whether that thread may wait
        for another pass: not after an abort (the app quitting, a new forward pass)."""
        outcome, error = StepperState.FINISHED, None
        try:
            torch.autograd.backward(self.roots, grad_tensors=self.gradient,
                                    retain_graph=self.retain_graph,
                                    create_graph=self.create_graph)
        except BackwardAborted:
            outcome = StepperState.ABORTED
        except BaseException as raised:  # handed to the caller of step()/run()
            outcome, error = StepperState.FAILED, raised
        finally:
            # The graph itself (roots, fns) is kept until the stepper goes: freeing it
            # here would make run() pay for what a plain backward leaves to `del loss`.
            for handle in self.handles:
                handle.remove()
            self.handles.clear()
            self.key_of = {}
            with self.lock:
                if error is not None:
                    self.error = error
                    self.error_node, self.error_where, sentence = self.attribute_error()
                    annotate(error, self.error_node, sentence)
                self.state = outcome
                self.stacks.clear()
                self.held.clear()
                self.cond.notify_all()
        return outcome is not StepperState.ABORTED

    # ---------------------------------------------------------------- hooks
    def make_hooks(self):
        """The pre-hook and post-hook every node gets, the same two for all nodes: the
        pre-hook asks the engine which node it runs (``torch._C._current_autograd_node``,
        as torch's own autograd logging hooks do; the node's Python object is the one in
        ``fns``, which keeps it alive), the post-hook takes the event on top of its
        thread's stack.

        They run for every node of every backward, on the engine's threads, so they
        are closures over what they touch (no attribute lookups for those) and take
        the lock once each. What they cost is counted in instructions (callgrind) as
        well as timed: about 20,000 per node for both, against 37,000 for registering,
        calling and removing a no-op pair (benchmarks/zoo_rows.py: bench_hot_path).
        """
        acquire = self.lock.acquire  # not `with`: 0.25 us less per use, twice per node
        release = self.lock.release
        key_of = self.key_of
        node_attrs = self.graph._node
        current_node = torch._C._current_autograd_node
        accumulate_grad = torch._C._functions.AccumulateGrad
        events = self.events
        stacks = self.stacks
        runs = self.runs
        names = self.thread_names
        kept = self.kept
        breakpoints = self.breakpoints
        perf_counter = time.perf_counter
        get_ident = threading.get_ident

        def pre_hook(grad_outputs):
            fn = current_node()
            key = key_of[fn]
            if fn.__class__ is accumulate_grad:
                leaf = fn.variable
                grad_was_empty = leaf.grad is None
            else:
                leaf = None
                grad_was_empty = False
            ident = get_ident()
            summarizing = self.unkept_bytes > 0  # as a rule not: the graph fits the history
            if summarizing:
                incoming_bytes = 0
                for tensor in grad_outputs:
                    if tensor is not None:
                        incoming_bytes += tensor.nbytes
            acquire()
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
                if summarizing:
                    self.unkept_bytes -= incoming_bytes
                    at_once = self.unkept_bytes > 0
                else:
                    at_once = False
                attrs = node_attrs[key]
                event = StepEvent(len(events), key, attrs["op"], attrs.get("module"),
                                  names[ident], repeat, stack[-1].node if stack else None,
                                  grad_outputs, at_once, leaf, grad_was_empty)
                events.append(event)
                stack.append(event)
                if hold is not None:
                    hold.event = event
            finally:
                release()
            if at_once:
                event._incoming = tuple(summary_later(t) for t in grad_outputs)
            event._started = perf_counter()

        def post_hook(grad_inputs, grad_outputs):
            ended = perf_counter()
            stack = stacks[get_ident()]
            event = stack[-1]
            incoming = event._incoming
            leaf = event._leaf
            held = None
            if event._at_once:
                param = None
                if leaf is not None and leaf.grad is not None:
                    param = summary_later(leaf.grad)  # version-checked: .grad changes later
                event._queued = True
                event._summaries = (incoming,
                                    sent_summaries(grad_inputs, grad_outputs, summary_later),
                                    param)
            else:
                nbytes = 0
                for tensor in incoming:
                    if tensor is not None:
                        nbytes += tensor.nbytes
                for tensor in grad_inputs:
                    if tensor is not None:
                        nbytes += tensor.nbytes
                param_grad = None
                if leaf is not None:
                    grad = leaf.grad
                    if grad is not None:
                        if event._grad_was_empty and len(incoming) == 1:
                            param_grad = incoming[0]  # .grad = the gradient that came in
                        else:  # accumulated: .grad changes in place later, so copy it
                            param_grad = grad.detach().clone()
                        nbytes += param_grad.nbytes
                held = event.tensors = KeptTensors(incoming, grad_inputs, param_grad, nbytes)
            event._incoming = ()
            if leaf is not None:
                event._leaf = None
            stop_when = self.stop_when
            stop = stop_when is not None and stop_when(event)
            acquire()
            try:
                stack.pop()
                event.duration = ended - event._started
                self.last_finished = event
                evicted = ()
                if held is not None:
                    kept.append(event)
                    if self.counted:
                        self.count_in(held)
                        if self.kept_bytes > self.history_bytes:
                            evicted = self.evict()
                    else:
                        self.gross_bytes += nbytes
                        if self.gross_bytes > self.history_bytes:
                            self.count_all()
                            evicted = self.evict()
                if stop or event.node == self.target:
                    self.hold_next_node(Pause.TARGET)
                awaited = self.awaited
                if awaited is not None and awaited.event is event:
                    self.cond.notify_all()  # waking the caller costs a GIL hand-over: only then
            finally:
                release()
            for old in evicted:
                old.release()
            if not event.index & 63:
                # What the hooks made so far lives on with the events: out of the young
                # generation before it is full (else each collection scans it, a few
                # hundred tensors, and promotes it to be scanned again).
                freeze_new()

        return pre_hook, post_hook

    def maybe_hold(self, key: str, grad_outputs) -> Hold | None:
        """In a pre-hook, holding the lock: hold the node here until the caller lets it
        go, if it must wait; raise to end backward if the caller aborts."""
        if self.abort_requested:
            raise BackwardAborted
        if any(self.stacks.values()):  # a node that starts inside another is never held
            return None
        if len(self.events) == self.free_start:  # a run() that started the pass lets it go
            return None
        reason = self.hold_reason(key)
        if reason is None:
            return None
        hold = Hold(key, grad_outputs, reason)
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

    def count_in(self, held: KeptTensors) -> None:
        """Count an event's tensors into the history (holding the lock, once counted)."""
        kept_refs = self.kept_refs
        for tensor in (*held.grad_outputs, *held.grad_inputs, held.param_grad):
            if tensor is not None:
                key = id(tensor)
                count = kept_refs.get(key)
                if count is None:
                    kept_refs[key] = 1
                    self.kept_bytes += tensor.nbytes
                else:
                    kept_refs[key] = count + 1

    def count_all(self) -> None:
        """Count every kept event's tensors, from now on as each event comes (holding
        the lock): the history may be full."""
        self.counted = True
        for event in self.kept:
            self.count_in(event.tensors)

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
            self.cond.wait(POLL)
            job = self.job
            if job is not None and job.done.is_set() and not condition():
                if self.state is StepperState.RUNNING:  # cannot happen: backward always sets its end
                    raise StepperError("the backward thread ended without a word")
                return

    def paused(self) -> bool:
        return bool(self.held) or self.state is not StepperState.RUNNING

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
            if self.state is StepperState.NEW:
                self.state = StepperState.ABORTED
                return False
            if self.state is not StepperState.RUNNING:
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


def annotate(error: BaseException, node: str | None, where: str) -> None:
    """Say on the user's own exception where in backward it was raised, and to which
    node it belongs (``error.gradviz_node``, as :attr:`BackwardStepper.error_node`)."""
    try:
        error.gradviz_node = node
    except AttributeError:
        pass
    if hasattr(error, "add_note"):
        error.add_note("gradviz: " + where)
