"""Frozen views of what a widget draws: a node, a parameter, a forward operation, a check.

Each is plain data made off the UI thread (or, for :func:`node_view`, from plain data:
the graph's attributes and a :class:`~gradviz.model.progress.BackwardProgress`), so a
widget reads typed fields instead of an untyped attribute dict, and never a tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx

from gradviz.model.derivatives import local_derivative
from gradviz.model.layout import GraphLayout
from gradviz.model.progress import BackwardProgress, NodeRun
from gradviz.model.summary import TensorSummary


@dataclass(frozen=True)
class NodeView:
    """Everything the inspector says about one node of the graph on screen.

    ``module``: the module path (``""`` the model itself, None outside the model).
    ``saved``: each saved tensor's ``{"shape", "dtype", "state"}``, or the string
    ``"freed"`` once backward ran through the node. ``children``: ``(slot, child key)``
    along each edge. ``run``: its run once the engine has run it; ``incoming``: the
    gradients waiting when the engine is paused before it (else None).
    """

    key: str
    op: str
    kind: str  # "op", "param" or "leaf"
    name: str | None
    module: str | None
    shape: tuple[int, ...] | None
    input_shapes: dict[str, tuple[int, ...]]
    saved: dict[str, Any] | str | None
    args: dict[str, Any]
    derivative: str | None
    region: dict[str, Any] | None
    children: tuple[tuple[int, str], ...]
    run: NodeRun | None = None
    incoming: tuple[TensorSummary | None, ...] | None = None

    @property
    def reading(self) -> bool:
        """It ran, and its gradients are being read (a node of a big slice)."""
        return self.run is not None and not self.run.summarized


def node_view(key: str, graph: nx.DiGraph, progress: BackwardProgress | None) -> NodeView:
    """The view of ``key`` in ``graph``, with what ``progress`` knows of its run."""
    attrs = graph.nodes[key]
    children = tuple(sorted((graph.edges[key, child]["slot"], child)
                            for child in graph.successors(key)))
    run = progress.run_of(key) if progress is not None else None
    incoming = None
    if progress is not None and run is None and progress.pending == key:
        incoming = progress.incoming
    shape = attrs.get("shape")
    return NodeView(
        key=key, op=attrs["op"], kind=attrs["kind"], name=attrs.get("name"),
        module=attrs.get("module"), shape=None if shape is None else tuple(shape),
        input_shapes={name: tuple(s) for name, s in (attrs.get("input_shapes") or {}).items()},
        saved=attrs.get("saved"), args=dict(attrs.get("args") or {}),
        derivative=local_derivative(attrs["op"], attrs.get("args")),
        region=attrs.get("region"), children=children, run=run, incoming=incoming)


@dataclass(frozen=True)
class ParamRow:
    """A parameter (or a named leaf) as the parameters table lists it."""

    name: str
    shape: tuple[int, ...]
    frozen: bool  # requires_grad=False


@dataclass(frozen=True)
class ParamView:
    """What a selected parameter is, and its ``.grad`` or, without one, why (read on the
    engine's thread by the session's ``describe_param``)."""

    name: str
    shape: tuple[int, ...]
    requires_grad: bool
    grad: TensorSummary | None
    why_no_grad: str | None = None  # the answer, when it has no .grad
    unknown: str | None = None  # why the answer could not be given


@dataclass(frozen=True)
class CheckResult:
    """One of a scenario's checks, after backward: passed or not, and what it saw."""

    name: str
    passed: bool
    detail: str


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

    def as_progress(self) -> BackwardProgress | None:
        """The graph so far as the graph view shows it: the new nodes marked."""
        if self.laid_out is None:
            return None
        return BackwardProgress(self.laid_out.graph, new=self.new_nodes)
