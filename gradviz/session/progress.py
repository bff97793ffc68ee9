"""Progress: what the app shows after some backward nodes ran, read on the engine's thread.

The screen never touches torch, so everything it draws of a batch of
:class:`~gradviz.engine.backward.StepEvent` is read here first: the summaries of
the gradients (for every event of a small batch; for a big one, only the
parameters' and the last node's, the rest on request), each parameter's new
``.grad`` and its mean |grad|, where the engine waits, and where a NaN started.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import torch

from gradviz.model.layout import GraphLayout, lay_out

from gradviz.engine.backward import BackwardStepper
from gradviz.engine.events import StepEvent
from gradviz.model.summary import TensorSummary

#: A batch of up to this many events has every event summarized; a bigger one
#: (continue on a big graph) only its parameters and its last node.
SUMMARIZE_ALL_UP_TO = 256


@dataclass
class Progress:
    """Nodes that ran since the last report, and where backward stands now."""

    events: list[StepEvent] = field(default_factory=list)
    done: int = 0  # nodes run in all
    pending: str | None = None
    incoming: tuple[TensorSummary | None, ...] = ()  # the gradients waiting at ``pending``
    ready: frozenset[str] = frozenset()
    finished: bool = False
    grads: dict[str, TensorSummary] = field(default_factory=dict)  # parameter -> its .grad
    flow: dict[str, float] = field(default_factory=dict)  # parameter -> mean |grad|
    norms: dict[str, float] = field(default_factory=dict)  # node -> largest |grad| it sent,
    #                                                         for the events summarized here
    nonfinite: str | None = None  # the first node that made a NaN/Inf gradient


def describe(stepper: BackwardStepper, events: Sequence[StepEvent],
             leaves: Mapping[str, torch.Tensor], *, seconds: float | None = None) -> Progress:
    """A :class:`Progress` for ``events`` (just run by ``stepper``); ``leaves`` by name.

    Parameters' gradients and the last node are always summarized. Other nodes (their
    |g| on screen) are while there are few, and for at most ``seconds``: the engine
    waits meanwhile, and on maxvit_t reading every gradient doubled a continue. The
    rest are summarized when inspected."""
    progress = Progress(events=list(events))
    graph = stepper.graph
    summarize_all = len(events) <= SUMMARIZE_ALL_UP_TO
    deadline = math.inf if seconds is None else time.perf_counter() + seconds
    last = events[-1] if events else None
    for event in events:
        names = graph.nodes[event.node].get("names") or ()
        if summarize_all and time.perf_counter() > deadline:
            summarize_all = False
        if summarize_all or names or event is last:
            event.summarize()
            sent = [s.norm for s in (*event.grad_inputs, event.param_grad) if s is not None]
            if sent:
                progress.norms[event.node] = max(sent)
        for name in names:
            tensor = leaves.get(name)
            if tensor is not None and tensor.grad is not None and event.param_grad is not None:
                progress.grads[name] = event.param_grad
                progress.flow[name] = _mean_abs(tensor.grad)
    return _where(stepper, progress)


def _where(stepper: BackwardStepper, progress: Progress) -> Progress:
    progress.done = stepper.ended
    progress.pending = stepper.pending
    progress.incoming = stepper.pending_grad_outputs
    progress.ready = frozenset(stepper.ready)
    progress.finished = stepper.finished
    origin = stepper.first_nonfinite
    progress.nonfinite = None if origin is None else origin.node
    return progress


def at_start(stepper: BackwardStepper) -> Progress:
    """Where a new stepper stands before any node ran."""
    return _where(stepper, Progress())


def _mean_abs(grad: torch.Tensor) -> float:
    values = grad.detach()
    if values.is_complex():
        values = values.abs()
    return float(values.abs().float().mean())


@dataclass(frozen=True)
class ForwardStep:
    """One operation of a forward stepped op by op, as the screen shows it (plain data)."""

    index: int
    op: str
    module: str | None
    source: str  # file:line of the user's code that called it
    shape: tuple[int, ...] | None
    output: TensorSummary | None  # None: overwritten in place before it could be read
    zeros: float | None  # fraction of exact zeros (after a ReLU, say)
    node_type: str | None  # the node it recorded, or None
    reason: str | None  # why it recorded none
    new_nodes: tuple[str, ...]  # their keys in ``laid_out``'s graph (the graph so far)
    laid_out: GraphLayout | None  # the graph recorded so far, laid out
    summarized: bool = True  # False for the operations of a "run the rest" (not read)


def describe_forward_event(event, partial: nx.DiGraph | None, *,
                           summarize: bool = True) -> ForwardStep:
    """Read a :class:`~gradviz.engine.forward_ops.ForwardEvent` while its forward waits
    (summaries touch torch: never on the UI thread). ``summarize=False`` skips the
    output's summary (the rest of a forward run at full speed)."""
    new = ()
    laid_out = None
    if partial is not None:
        seqs = set(event.seqs)
        new = tuple(key for key, attrs in partial.nodes(data=True) if attrs.get("seq") in seqs)
        laid_out = lay_out(partial)
    source = event.source
    return ForwardStep(
        index=event.index, op=event.op, module=event.module,
        source=f"{source}" + (f" in {source.function}()" if source and source.function else "")
        if source is not None else "",
        shape=event.shapes[0] if event.shapes else None,
        output=event.output if summarize else None,
        zeros=event.zeros if summarize else None, node_type=event.node_type,
        reason=event.reason, new_nodes=new, laid_out=laid_out, summarized=summarize)
