"""What the screen shows of a backward, read on the engine's thread.

The screen never touches torch, so everything it draws of a batch of
:class:`~gradviz.engine.events.StepEvent` is read here first, into the session's
:class:`~gradviz.model.progress.BackwardProgress`: each node's run (its gradients'
summaries, for every event of a small batch; for a big one, only the parameters'
and the last node's, the rest on request), each parameter's new ``.grad`` and its
mean |grad|, where the engine waits, and where a NaN started. Forward operations
become :class:`~gradviz.model.views.ForwardStep`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence

import networkx as nx
import torch

from gradviz.engine.backward import BackwardStepper
from gradviz.engine.events import StepEvent
from gradviz.model.layout import lay_out
from gradviz.model.progress import BackwardProgress, NodeRun, ProgressDelta
from gradviz.model.summary import TensorSummary
from gradviz.model.views import ForwardStep

#: A batch of up to this many events has every event summarized; a bigger one
#: (continue on a big graph) only its parameters and its last node.
SUMMARIZE_ALL_UP_TO = 256


def report(stepper: BackwardStepper, events: Sequence[StepEvent],
           leaves: Mapping[str, torch.Tensor], progress: BackwardProgress, *,
           seconds: float | None = None) -> ProgressDelta:
    """Record ``events`` (just run by ``stepper``) in ``progress``; ``leaves`` by name.

    Parameters' gradients and the last node are always summarized. Other nodes (their
    |g| on screen) are while there are few, and for at most ``seconds``: the engine
    waits meanwhile, and on maxvit_t reading every gradient doubled a continue. The
    rest are summarized when in sight or inspected (:func:`read_runs`)."""
    graph = stepper.graph
    summarize_all = len(events) <= SUMMARIZE_ALL_UP_TO
    deadline = math.inf if seconds is None else time.perf_counter() + seconds
    last = events[-1] if events else None
    runs, grads, flow = [], {}, {}
    for event in events:
        names = graph.nodes[event.node].get("names") or ()
        if summarize_all and time.perf_counter() > deadline:
            summarize_all = False
        read = summarize_all or bool(names) or event is last
        runs.append(node_run(event, read=read))
        for name in names:
            tensor = leaves.get(name)
            if tensor is not None and tensor.grad is not None and event.param_grad is not None:
                grads[name] = event.param_grad
                flow[name] = _mean_abs(tensor.grad)
    origin = stepper.first_nonfinite
    return progress.record(runs, pending=stepper.pending, incoming=stepper.pending_grad_outputs,
                           ready=stepper.ready, finished=stepper.finished,
                           nonfinite=None if origin is None else origin.node,
                           grads=grads, flow=flow)


def node_run(event: StepEvent, *, read: bool) -> NodeRun:
    """``event`` as the screen shows it; ``read``: with its gradients' summaries (which
    reads them now, on this thread)."""
    duration = event.duration or 0.0
    if not read:
        return NodeRun(event.node, event.index, duration)
    event.summarize()
    sent = [s.norm for s in (*event.grad_inputs, event.param_grad) if s is not None]
    return NodeRun(event.node, event.index, duration, True, event.grad_outputs,
                   event.grad_inputs, event.param_grad, max(sent) if sent else None,
                   event.nonfinite)


def read_runs(events: Iterable[StepEvent], progress: BackwardProgress) -> frozenset[str]:
    """Read the summaries of ``events`` (nodes that ran in a big slice) into ``progress``."""
    return progress.read(node_run(event, read=True) for event in events)


def _mean_abs(grad: torch.Tensor) -> float:
    values = grad.detach()
    if values.is_complex():
        values = values.abs()
    return float(values.abs().float().mean())


def forward_step(event, partial: nx.DiGraph | None, *, summarize: bool = True) -> ForwardStep:
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
    output: TensorSummary | None = event.output if summarize else None
    return ForwardStep(
        index=event.index, op=event.op, module=event.module,
        source=f"{source}" + (f" in {source.function}()" if source and source.function else "")
        if source is not None else "",
        shape=event.shapes[0] if event.shapes else None,
        output=output, zeros=event.zeros if summarize else None, node_type=event.node_type,
        reason=event.reason, new_nodes=new, laid_out=laid_out, summarized=summarize)
