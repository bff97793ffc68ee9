"""Opaque nodes: one autograd node that stands for a whole region of the forward.

Two kinds of node hide the ops inside them from autograd's graph:

- ``CompiledFunctionBackward`` (:data:`COMPILED`): ``torch.compile`` handed this
  part of the forward to AOTAutograd, which traced forward and backward together
  and compiled the backward into one function. Autograd sees one node; its
  children are the region's inputs, parameters included. Where AOTAutograd keeps
  the traced backward graph (before and after it compiles it lazily, on the first
  backward), the ops in it are listed.
- ``CheckpointFunctionBackward`` (:data:`CHECKPOINT`): ``torch.utils.checkpoint``
  with ``use_reentrant=True`` ran this part of the forward without recording a
  graph; backward re-runs it and backpropagates through the recomputed graph
  inside this one node. The parameters it uses are not children of the node at
  all; they are found through the checkpointed function (a module, a bound method
  or a ``functools.partial`` of one, or modules it closes over or was passed); a
  function that reaches its modules some other way (through a global) lists none.

(Non-reentrant checkpointing keeps every op in the graph; only its saved tensors
are recomputed, which :mod:`gradviz.graph.saved` describes.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.autograd.graph import Node

from gradviz.model.node_facts import CHECKPOINT, COMPILED

COMPILED_OP = "CompiledFunctionBackward"
CHECKPOINT_OP = "CheckpointFunctionBackward"
REGION_OPS = (COMPILED_OP, CHECKPOINT_OP)

COMPILED_NOTE = (
    "compiled region: torch.compile (AOTAutograd) traced this part of the forward and "
    "compiled its backward into one function, so autograd runs it as this one node; "
    "the ops inside cannot be stepped one by one"
)
CHECKPOINT_NOTE = (
    "checkpointed region (torch.utils.checkpoint, use_reentrant=True): its forward ran "
    "without recording a graph; backward re-runs it and backpropagates through the "
    "recomputed graph inside this one node, so the ops inside cannot be stepped one by "
    "one and its parameters get their gradients from within it"
)

NamesOf = Callable[[torch.Tensor], list[str]]


def describe_region(fn: Node, op: str, names_of: NamesOf) -> dict[str, Any] | None:
    """``{"kind", "params", "ops", "note"}`` for an opaque node, or None for any other.

    ``params``: the names of the parameters inside (one per parameter, its first
    name); ``ops``: the ops of the region's backward where torch exposes them, else ().
    """
    if op == COMPILED_OP:
        leaves = [child.variable for child, _ in fn.next_functions
                  if child is not None and hasattr(child, "variable")]
        return {"kind": COMPILED, "params": _names(leaves, names_of),
                "ops": compiled_backward_ops(fn), "note": COMPILED_NOTE}
    if op == CHECKPOINT_OP:
        modules = _modules_of(getattr(fn, "run_function", None))
        for value in getattr(fn, "inputs", None) or ():  # non-tensor inputs are kept here
            modules += _modules_of(value)
        params = [p for m in _distinct(modules) for p in m.parameters()]
        return {"kind": CHECKPOINT, "params": _names(params, names_of), "ops": (),
                "note": CHECKPOINT_NOTE}
    return None


def compiled_backward_ops(fn: Node) -> tuple[str, ...]:
    """The aten ops of a compiled region's backward graph, in order, where torch keeps it.

    AOTAutograd keeps the traced backward (an FX GraphModule) on the autograd
    Function it builds, in ``_lazy_backward_info.bw_module``. That is private to
    torch; when it is absent (a cache hit, another torch) the answer is ().
    """
    forward_cls = getattr(fn, "_forward_cls", None)
    info = getattr(forward_cls, "_lazy_backward_info", None)
    graph = getattr(getattr(info, "bw_module", None), "graph", None)
    if graph is None:
        return ()
    ops = []
    try:
        for node in graph.nodes:
            if node.op == "call_function":
                packet = getattr(node.target, "overloadpacket", None)
                ops.append(getattr(packet, "__name__", None) or getattr(
                    node.target, "__name__", str(node.target)))
    except (AttributeError, TypeError):
        return ()
    return tuple(ops)


def _modules_of(value: Any, depth: int = 0) -> list[torch.nn.Module]:
    """Modules a checkpointed callable runs: itself, its ``self``, a partial's parts,
    modules in its closure (one level down)."""
    if depth > 3 or value is None:
        return []
    if isinstance(value, torch.nn.Module):
        return [value]
    if isinstance(value, functools.partial):
        found = _modules_of(value.func, depth + 1)
        for arg in (*value.args, *value.keywords.values()):
            found += _modules_of(arg, depth + 1)
        return found
    owner = getattr(value, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        return [owner]
    found = []
    for cell in getattr(value, "__closure__", None) or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if isinstance(contents, torch.nn.Module):
            found.append(contents)
    return found


def _distinct(items: Iterable[Any]) -> list[Any]:
    seen: dict[int, Any] = {}
    for item in items:
        seen.setdefault(id(item), item)
    return list(seen.values())


def _names(tensors: Iterable[torch.Tensor], names_of: NamesOf) -> tuple[str, ...]:
    names = []
    for tensor in _distinct(tensors):
        found = names_of(tensor)
        if found:
            names.append(found[0])
    return tuple(names)
