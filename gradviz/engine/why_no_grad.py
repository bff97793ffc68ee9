"""why_no_grad: why a parameter or input gets no ``.grad`` from a forward's result.

>>> stepper = gradviz.ForwardStepper(forward, model=model)   # doctest: +SKIP
>>> stepper.run()                                           # doctest: +SKIP
>>> print(gradviz.why_no_grad(stepper, "encoder.weight"))   # doctest: +SKIP
encoder.weight: its path to the loss was cut by detach at model.py:31 (module 'encoder')

The answer comes from what a :class:`ForwardRecording` saw: which operations took
the tensor, which tensors flowed from those into which operations (by tensor
identity), and where the gradient path stopped: an operation whose input carried
a gradient from the tensor but whose output recorded no node. Checked in order:

1. ``requires_grad=False``: autograd never tracks it.
2. It is in the graph behind the roots: backward gives it a gradient (if ``.grad``
   is None, backward has not reached it yet).
3. Never used in the forward.
4. Something computed from it reaches the roots, but the gradient path was cut on
   the way: under ``torch.no_grad()`` / ``inference_mode`` (its uses, or a later
   op), by ``detach`` / ``.data``, or by an operation without a derivative (an
   integer or boolean result, ``argmax``). The first such cut is named, with its line.
5. Used, but nothing computed from it reaches the roots.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from gradviz.engine.forward_events import Exclusion, ForwardEvent
from gradviz.engine.forward_ops import ForwardRecording, roots_of
from gradviz.errors import GradvizError
from gradviz.graph.walk import ACCUMULATE_GRAD, Roots, root_nodes


class NoGradReason(str, enum.Enum):
    """Why a tensor has no gradient after backward."""

    HAS_PATH = "in the graph: backward gives it a gradient"
    REQUIRES_GRAD_FALSE = "requires_grad=False"
    NEVER_USED = "never used in the forward"
    NO_GRAD = "used only under torch.no_grad()"
    INFERENCE_MODE = "used only under torch.inference_mode()"
    DETACHED = "its path to the loss was cut by a detach"
    NOT_DIFFERENTIABLE = "its path to the loss goes through an operation without a derivative"
    NOT_REACHING = "nothing computed from it reaches the loss"
    UNKNOWN = "no gradient path found, and no operation that cut one"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class NoGradExplanation:
    """The answer of :func:`why_no_grad`: the reason, the event behind it, one line of text."""

    name: str
    reason: NoGradReason
    message: str
    event: ForwardEvent | None = None  # the use or the cut that decided it

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"


def why_no_grad(seen, name: str | torch.Tensor, roots: Roots | None = None) -> NoGradExplanation:
    """Why ``name`` (a parameter or input name, or the tensor) gets no gradient.

    ``seen``: a :class:`ForwardStepper` that has run (its result are the roots), or a
    :class:`ForwardRecording` (from :func:`record_forward`) with ``roots`` given, such
    as the loss; without them, the output of the recording's last recorded node.
    """
    recording: ForwardRecording = getattr(seen, "recording", seen)
    if not isinstance(recording, ForwardRecording):
        raise TypeError(f"why_no_grad needs a ForwardStepper or a ForwardRecording, "
                        f"got {type(seen).__name__}")
    if roots is None and hasattr(seen, "recording"):
        roots = roots_of(seen.result)
    label, tensor = _find(recording, name)
    uses = [e for e in recording.events if label in e.inputs]
    where = _describe(uses[0]) if uses else ""

    if not tensor.requires_grad:
        used = f"; used by {where}" if uses else ""
        return NoGradExplanation(label, NoGradReason.REQUIRES_GRAD_FALSE,
                                 f"requires_grad=False: autograd never tracks it{used} "
                                 f"(set {label}.requires_grad_(True) to train it)",
                                 uses[0] if uses else None)
    root_events = _root_events(recording, roots)
    if _in_graph(tensor, recording, roots):
        return NoGradExplanation(label, NoGradReason.HAS_PATH,
                                 "it is in the graph behind the loss: backward gives it a "
                                 "gradient (None only until backward reaches it)")
    if not uses:
        return NoGradExplanation(label, NoGradReason.NEVER_USED,
                                 "never used in the forward: no operation took it as input")

    consumers: dict[int | str, list[int]] = {}
    for event in recording.events:
        for source in event.inputs:
            consumers.setdefault(source, []).append(event.index)
    downstream = _closure([label], consumers)
    upstream = _ancestors(root_events, recording.events)
    on_path = downstream & upstream
    if not on_path:
        return NoGradExplanation(label, NoGradReason.NOT_REACHING,
                                 f"used by {where}, but nothing computed from it reaches "
                                 "the loss", uses[0])

    carrying: set[int | str] = {label}  # what carries a gradient from the tensor
    cuts: list[ForwardEvent] = []
    for index in sorted(downstream):
        event = recording.events[index]
        if not any(source in carrying for source in event.inputs):
            continue
        if event.recorded:
            carrying.add(index)
        elif index in on_path:
            cuts.append(event)
    if not cuts:
        return NoGradExplanation(label, NoGradReason.UNKNOWN,
                                 f"used by {where} and its values reach the loss, but no "
                                 "gradient path and no operation that cut one was seen",
                                 uses[0])
    cut = cuts[0]
    if cut.exclusion in (Exclusion.GRAD_MODE_OFF, Exclusion.INFERENCE_MODE):
        inference = cut.exclusion is Exclusion.INFERENCE_MODE
        reason = NoGradReason.INFERENCE_MODE if inference else NoGradReason.NO_GRAD
        block = "torch.inference_mode()" if inference else "torch.no_grad()"
        if all(not e.recorded for e in uses) and all(
                e.exclusion is cut.exclusion for e in uses):
            message = f"used only under {block}: {_describe(cut)}"
        else:
            message = f"its path to the loss ran under {block} at {_describe(cut)}"
        return NoGradExplanation(label, reason, message, cut)
    if cut.exclusion is Exclusion.DETACH:
        return NoGradExplanation(label, NoGradReason.DETACHED,
                                 f"its path to the loss was cut by {_describe(cut)}", cut)
    detail = f" ({cut.detail})" if cut.detail else ""
    return NoGradExplanation(label, NoGradReason.NOT_DIFFERENTIABLE,
                             f"its path to the loss goes through {_describe(cut)}, which has "
                             f"no derivative{detail}", cut)


def _find(recording: ForwardRecording, name: str | torch.Tensor) -> tuple[str, torch.Tensor]:
    if isinstance(name, torch.Tensor):
        label = recording.producer(name)
        if not isinstance(label, str):
            raise GradvizError("that tensor is not a parameter or named input of this forward: "
                               "name it with params= or pass it to the forward")
        return label, name
    tensor = recording.leaves.get(name)
    if tensor is None:
        known = ", ".join(list(recording.leaves)[:6])
        raise GradvizError(f"no parameter or input named {name!r} in this forward "
                           f"(known: {known}{', ...' if len(recording.leaves) > 6 else ''})")
    return name, tensor


def _describe(event: ForwardEvent) -> str:
    module = f" (module {event.module!r})" if event.module else ""
    where = f" at {event.source}" if event.source is not None else ""
    return f"{event.op}{where}{module}"


def _root_events(recording: ForwardRecording, roots: Roots | None) -> list[int]:
    if roots is None:
        recorded = [e.index for e in recording.events if e.recorded]
        return recorded[-1:]
    tensors = [roots] if isinstance(roots, torch.Tensor) else list(roots)
    found = []
    for tensor in tensors:
        source = recording.producer(tensor) if isinstance(tensor, torch.Tensor) else None
        if isinstance(source, int):
            found.append(source)
    return found


def _in_graph(tensor: torch.Tensor, recording: ForwardRecording, roots) -> bool:
    """Whether the tensor's AccumulateGrad node is behind the roots (an iterative walk)."""
    if roots is None:
        events = [e for e in recording.events if e.recorded]
        if not events:
            return False
        nodes = list(events[-1]._nodes[:1])
    else:
        try:
            nodes = root_nodes(roots if isinstance(roots, (torch.Tensor, Sequence)) else [roots])
        except GradvizError:
            return False
    seen = set()
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.name().endswith(ACCUMULATE_GRAD) and node.variable is tensor:
            return True
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return False


def _closure(starts, consumers) -> set[int]:
    found: set[int] = set()
    stack = list(starts)
    while stack:
        for index in consumers.get(stack.pop(), ()):
            if index not in found:
                found.add(index)
                stack.append(index)
    return found


def _ancestors(indices: list[int], events: list[ForwardEvent]) -> set[int]:
    found = set(indices)
    stack = list(indices)
    while stack:
        for source in events[stack.pop()].inputs:
            if isinstance(source, int) and source not in found:
                found.add(source)
                stack.append(source)
    return found
