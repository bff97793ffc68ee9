"""StepEvent: one run of an autograd node by the engine, and its gradients' summaries.

Events keep their tensors in a bounded history (``history_bytes``, the newest first:
see :mod:`gradviz.engine.backward_hooks`) and are summarized when first read or when
they leave it. A summary rides on its tensor (what a node sends is, as a rule, the very
tensor its child receives, so each is read once); a CUDA tensor's summary can be
queued on its device instead of waited for. A view op's gradient takes the statistics
of the one it received.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradviz.model.cells import step_event_html
from gradviz.engine.summary import (
    PendingSummary,
    TensorSummary,
    same_elements,
    summarize,
    summarize_as,
    summarize_later,
)


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
                 "_leaf", "_grad_was_empty", "_started")

    def __init__(self, index, node, op, module, thread, repeat, inside, incoming, at_once,
                 leaf, grad_was_empty):
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
        self._leaf = leaf  # a leaf node's tensor, until the node finishes
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
                tuple(summary_later(t) for t in kept.grad_outputs),
                sent_summaries(kept.grad_inputs, kept.grad_outputs, summary_later),
                summary_later(kept.param_grad),
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
                    tuple(summary_of(t) for t in kept.grad_outputs),
                    sent_summaries(kept.grad_inputs, kept.grad_outputs, summary_of),
                    summary_of(kept.param_grad),
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

    def _repr_html_(self) -> str:
        """A notebook cell shows the event as a table of its gradients."""
        return step_event_html(self)

    def __repr__(self) -> str:
        ran = "running" if self.duration is None else f"{self.duration * 1e3:.3f} ms"
        again = f", repeat {self.repeat}" if self.repeat else ""
        return f"StepEvent({self.index}, {self.node!r}, {ran}{again})"


_CACHED = "_gradviz_summary"


def summary_of(tensor: torch.Tensor | None) -> TensorSummary | None:
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


def summary_later(tensor: torch.Tensor | None) -> TensorSummary | PendingSummary | None:
    """:func:`summary_of`, queued on the tensor's device rather than waited for."""
    if tensor is None:
        return None
    version = tensor._version
    cached = getattr(tensor, _CACHED, None)
    if cached is not None and cached[0] == version:
        return cached[1]
    summary = summarize_later(tensor)
    setattr(tensor, _CACHED, (version, summary))
    return summary


def sent_summaries(sent, received, summary_of) -> tuple:
    """Summaries of what a node sent (``summary_of`` is :func:`summary_of` or
    :func:`summary_later`). A view op's backward sends the gradient it received,
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


def all_finite_together(events: list[StepEvent]) -> None:
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
