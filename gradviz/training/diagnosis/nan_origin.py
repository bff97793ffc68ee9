"""Where a NaN/Inf started, found on the very iteration that made it.

Forward: when the loss itself is NaN/Inf, backward only carries it. The iteration's
forward is replayed (:mod:`gradviz.training.diagnosis.replay`): the origin is the first op that
made a NaN/Inf out of finite inputs, or, when none did, the first that took one (the
model's input, a parameter an earlier step spoiled). Where the forward cannot be
replayed (FSDP) or the NaN was made outside the model's forward (in the loss), the
kept graph tells what it can: the earliest op (by sequence number, forward order)
that saved a NaN/Inf tensor, which is the op *after* the one that made it (of a
sharded model, only the activations are read: FSDP2 frees the gathered weights).

Backward: the kept graph (see :mod:`gradviz.training.diagnosis.kept_graph`) is stepped again by a
:class:`~gradviz.engine.backward.BackwardStepper` on restored gradient state: every
leaf's ``.grad`` is set aside and ``None`` while it runs, so an accumulated NaN from
an earlier micro-batch cannot be mistaken for a new one, and put back afterwards, so
the user's gradients are exactly those of their own backward. The stepper stops at
the first node that made a NaN/Inf gradient out of finite ones (its
``first_nonfinite``) and the rest of backward is not run. A sharded model's backward is
not stepped again: its graph holds FSDP's hooks, which reduce-scatter the gradients, and
one rank stepping them alone would wait for the others forever.

The origin names the node (its graph key, as the app shows it), its op, the module
whose forward made it, and the user's own line that called the op, from the replay
(without one, the module's ``forward`` line, said to be only that).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence

import networkx as nx
import torch

from gradviz.engine.backward import BackwardStepper
from gradviz.engine.events import StepEvent
from gradviz.graph.walk import ACCUMULATE_GRAD, walk_graph
from gradviz.model.runs.events import Origin, OriginPhase
from gradviz.training.diagnosis.replay import Replay, ReplayedOp
from gradviz.training.norms.sharded import NOT_STEPPED, is_dtensor, is_sharded


def backward_origin(roots: Sequence[torch.Tensor], gradient, *, model: torch.nn.Module | None,
                    modules, lines: Replay | None = None) -> Origin:
    """Step the kept graph of ``roots`` again and name its first node to make a NaN/Inf;
    ``lines``: a replay of the forward, which knows each node's line.

    The graph stays retained (the app may step it once more); ``.grad`` is restored.
    """
    if model is not None and is_sharded(model):
        return Origin(OriginPhase.BACKWARD, None, None, None, None, None, NOT_STEPPED)
    graph, walk = walk_graph(list(roots), model=model, modules=modules)
    leaves = [fn.variable for fn in walk.nodes if fn.name().endswith(ACCUMULATE_GRAD)]
    with set_aside_grads(leaves):
        stepper = BackwardStepper(list(roots), gradient=gradient, graph=graph, retain_graph=True)
        try:
            stepper.run_until(_made_nonfinite)
            event = stepper.first_nonfinite
        finally:
            stepper.abort()
    if event is None:
        return Origin(OriginPhase.BACKWARD, None, None, None, None, None,
                      "no node made a NaN/Inf when this backward was stepped again (it came "
                      "from elsewhere, such as another rank's gradients)")
    detail = f"{event.op} made a NaN/Inf gradient out of finite ones"
    fn = dict(zip(graph.nodes, walk.nodes)).get(event.node)
    backward = getattr(getattr(type(fn), "_forward_cls", None), "backward", None)
    if backward is not None:  # a custom autograd.Function: its own backward did it
        try:
            file = os.path.relpath(inspect.getsourcefile(backward))
            line = inspect.getsourcelines(backward)[1]
            detail += f" (in {backward.__qualname__}, {file}:{line})"
        except (OSError, TypeError):
            pass
    return _origin(OriginPhase.BACKWARD, graph, event.node, model, lines, detail)


def forward_origin(roots: Sequence[torch.Tensor], gradient, *, model: torch.nn.Module | None,
                   modules, replayed: Replay | None = None) -> Origin:
    """Where a NaN/Inf loss came from: what the replay of the forward found; failing that,
    the earliest op of the kept graph that saved a NaN/Inf tensor; failing that, the
    first node of a backward re-step to make one; failing that, the loss's own op."""
    graph, walk = walk_graph(list(roots), model=model, modules=modules)
    if replayed is not None and (replayed.made or replayed.took):
        return replayed_origin(graph, replayed)
    first: tuple[int, str, list[torch.Tensor]] | None = None
    for key, fn in zip(graph.nodes, walk.nodes):
        seq = graph.nodes[key]["seq"]
        if seq < 0 or (first is not None and seq >= first[0]):
            continue
        bad = [t for t in _saved_tensors(fn) if not bool(torch.isfinite(t).all())]
        if bad:
            first = (seq, key, bad)
    if first is not None:
        attrs = graph.nodes[first[1]]
        names = {id(p): name for name, p in model.named_parameters()} if model is not None else {}
        weights = [names[id(t)] for t in first[2] if id(t) in names]
        if weights:
            detail = (f"{attrs['op']} took the NaN/Inf parameter {weights[0]} (an earlier "
                      "optimizer.step() made it)")
        elif replayed is not None:  # the model's forward ran again and made none
            between = _after_the_model(graph, first[0])
            detail = (f"the model's forward made no NaN/Inf (run again): it was made after it, "
                      f"in the loop's own code, before {attrs['op']} took it"
                      + (f", by one of {', '.join(between)}" if between else ""))
        else:
            detail = (f"{attrs['op']} was the first op to save a NaN/Inf input: the op "
                      "before it made it")
        return _origin(OriginPhase.FORWARD, graph, first[1], model, replayed, detail)
    in_backward = backward_origin(roots, gradient, model=model, modules=modules,
                                  lines=replayed)
    if in_backward.node is not None:
        return Origin(OriginPhase.FORWARD, in_backward.node, in_backward.op, in_backward.module,
                      in_backward.file, in_backward.line,
                      f"{in_backward.op} is the first op whose gradient is NaN/Inf")
    root = graph.graph["roots"][0]
    return _origin(OriginPhase.FORWARD, graph, root, model, replayed,
                   "the loss's own op made it out of finite inputs (an overflow?)")


def _after_the_model(graph: nx.DiGraph, before: int) -> list[str]:
    """The ops made outside the model after its forward and before sequence number
    ``before``, in forward order: where a NaN made in the loop's own code can be."""
    inside = [a["seq"] for _, a in graph.nodes(data=True)
              if a.get("module") is not None and a.get("seq", -1) >= 0]
    start = max(inside, default=-1)
    found = sorted((a["seq"], a["op"]) for _, a in graph.nodes(data=True)
                   if a.get("module") is None and a["kind"] == "op" and start < a["seq"] < before)
    return [op for _, op in found][:6]


def replayed_origin(graph: nx.DiGraph | None, replayed: Replay) -> Origin:
    """The replay's op, named by its node in the kept graph where there is one."""
    op: ReplayedOp = replayed.made or replayed.took
    seq = None if graph is None else replayed.graph_seq(
        op, (a.get("seq", -1) for _, a in graph.nodes(data=True)))
    key = None
    if seq is not None:
        key = next((k for k, attrs in graph.nodes(data=True) if attrs.get("seq") == seq
                    and attrs["op"] == op.node_type), None)
    module = graph.nodes[key].get("module") if key is not None else op.module
    if replayed.made is not None:
        detail = f"{op.op} made a NaN/Inf out of finite inputs"
    else:
        detail = f"{op.op} was the first op to take a NaN/Inf: {replayed.what} held it"
    file, line = _where(op)
    return Origin(OriginPhase.FORWARD, key, op.node_type or op.op,
                  module if module is not None else op.module, file, line, detail)

class set_aside_grads:
    """Set each tensor's ``.grad`` to None for the ``with`` block, then put it back."""

    def __init__(self, tensors: Sequence[torch.Tensor]):
        self.tensors = list(tensors)
        self.grads: list[torch.Tensor | None] = []

    def __enter__(self) -> set_aside_grads:
        self.grads = [t.grad for t in self.tensors]
        for tensor in self.tensors:
            tensor.grad = None
        return self

    def __exit__(self, *exc_info) -> None:
        for tensor, grad in zip(self.tensors, self.grads):
            tensor.grad = grad


def forward_location(model: torch.nn.Module | None, path: str | None
                     ) -> tuple[str | None, int | None]:
    """File and first line of the ``forward`` of ``model``'s submodule ``path``."""
    if model is None or path is None:
        return None, None
    try:
        module = model.get_submodule(path) if path else model
        forward = inspect.unwrap(type(module).forward)
        file = inspect.getsourcefile(forward)
        line = inspect.getsourcelines(forward)[1]
    except (AttributeError, OSError, TypeError):
        return None, None
    if file is None:
        return None, None
    relative = os.path.relpath(file)
    return (file if relative.startswith("..") else relative), line


def _made_nonfinite(event: StepEvent) -> bool:
    return event.nonfinite


def _origin(phase, graph: nx.DiGraph, node: str, model, lines: Replay | None,
            detail: str) -> Origin:
    """``node`` of ``graph`` as an origin, at the user's line that made it: from the replay
    where there is one, else (said so) the line of its module's ``forward``."""
    attrs = graph.nodes[node]
    module = attrs.get("module")
    replayed = None
    if lines is not None and attrs.get("seq") is not None:
        relative = lines.in_graph(attrs["seq"])
        replayed = lines.by_seq.get(relative) if relative is not None else None
    if replayed is not None and replayed.source is not None:
        file, line = _where(replayed)
    else:
        file, line = forward_location(model, module)
        if file is not None:
            detail += f" (the line is {module or 'the model'}'s forward: no replay told the op's)"
    return Origin(phase, node, attrs["op"], module, file, line, detail)


def _where(op: ReplayedOp) -> tuple[str | None, int | None]:
    if op.source is None:
        return None, None
    relative = os.path.relpath(op.source.file)
    return (op.source.file if relative.startswith("..") else relative), op.source.line


_SAVED_ATTRS: dict[type, tuple[str, ...]] = {}


def _saved_attrs(node_type: type) -> tuple[str, ...]:
    """A C++ node type's ``_saved_*`` attributes, found once per type."""
    attrs = _SAVED_ATTRS.get(node_type)
    if attrs is None:
        attrs = _SAVED_ATTRS[node_type] = tuple(a for a in dir(node_type)
                                                if a.startswith("_saved_"))
    return attrs


def _saved_tensors(fn) -> list[torch.Tensor]:
    """The tensors an autograd node saved for backward (empty once freed)."""
    tensors = []
    try:
        if hasattr(fn, "saved_tensors"):  # a Python autograd.Function's ctx
            values = list(fn.saved_tensors)
        else:
            values = [getattr(fn, attr) for attr in _saved_attrs(type(fn))]
    except RuntimeError:  # freed
        return []
    for value in values:
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, (tuple, list)):
            tensors.extend(v for v in value if isinstance(v, torch.Tensor))
    # a DTensor (tensor parallel) is read on this rank's part: a whole one's isfinite()
    # would be a collective that only this rank runs
    tensors = [t.to_local() if is_dtensor(t) else t for t in tensors]
    return [t for t in tensors if (t.is_floating_point() or t.is_complex()) and _held(t)]


def _held(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s elements are still in its storage. FSDP2 frees a layer's
    gathered weights after its forward (their storage resized to nothing) while the
    graph still saves them; reading one would read freed memory (a segfault, seen)."""
    if tensor.numel() == 0 or tensor.layout != torch.strided or tensor.is_meta:
        return True
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):  # a tensor subclass without one: unread
        return False
    extent = tensor.storage_offset() + 1 + sum((size - 1) * abs(stride) for size, stride
                                               in zip(tensor.shape, tensor.stride()))
    return storage.nbytes() >= extent * tensor.element_size()
