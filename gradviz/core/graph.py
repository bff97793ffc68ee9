"""Walk an autograd graph into a networkx DiGraph, one graph node per autograd Node.

>>> import torch, gradviz
>>> a = torch.tensor([2., 3.], requires_grad=True)
>>> b = torch.tensor([6., 4.], requires_grad=True)
>>> g = gradviz.build_graph(3 * a**3 - b**2, params={"a": a, "b": b})
>>> sorted(g.nodes[k]["op"] for k in g)  # doctest: +NORMALIZE_WHITESPACE
['AccumulateGrad', 'AccumulateGrad', 'MulBackward0', 'PowBackward0', 'PowBackward0',
 'SubBackward0']

Node attributes: ``kind`` ("op", "param" or "leaf"), ``op``, ``name``, ``names``
(every name of a tied parameter), ``shape``, ``seq``, ``module``, ``saved``
(tensor name -> {"shape", "dtype"}, or "freed"), ``args`` (saved non-tensor values
such as a power's exponent) and ``root``. Edges follow the gradient, from a node to
each entry of its ``next_functions``, with the entry's index as ``slot``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import networkx as nx
import torch
from torch.autograd.function import BackwardCFunction
from torch.autograd.graph import Node

from gradviz.core.deep_graphs import ensure_stack_for
from gradviz.core.errors import GraphError
from gradviz.core.quiet_gc import paused_gc
from gradviz.core.summary import plain

Roots = Union[torch.Tensor, Node, Sequence[Union[torch.Tensor, Node]]]

ACCUMULATE_GRAD = "AccumulateGrad"
FREED = "freed"
_NO_SEQUENCE = 1 << 63  # AccumulateGrad and nodes made outside a forward carry UINT64_MAX
_SAVED_PREFIX = "_saved_"

_saved_attrs_by_type: dict[type, tuple[str, ...]] = {}

# Deep graphs repeat a few shapes and saved-tensor descriptions over and over: one
# shared object per distinct value keeps a 1M-node graph's attributes small. Treat
# attribute values as read-only.
_shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
_metas: dict[tuple[tuple[int, ...], torch.dtype], dict[str, Any]] = {}


def build_graph(
    roots: Roots,
    *,
    model: torch.nn.Module | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    modules: Mapping[int, str] | None = None,
) -> nx.DiGraph:
    """The autograd graph behind ``roots`` as a networkx DiGraph.

    ``roots``: a tensor with a ``grad_fn``, an autograd Node, or a sequence of them.
    ``model`` / ``params`` name the leaves (``params`` like torchviz's ``make_dot``).
    ``modules`` maps a node's sequence number to the dotted path of the module whose
    forward made it, as :func:`gradviz.record` collects; without it ``module`` is
    ``None`` for op nodes. Each autograd Node appears once; the walk is iterative, so
    depth is limited only by memory.
    """
    return walk_graph(roots, model=model, params=params, modules=modules)[0]


def walk_graph(
    roots: Roots,
    *,
    model: torch.nn.Module | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    modules: Mapping[int, str] | None = None,
) -> tuple[nx.DiGraph, Walk]:
    """:func:`build_graph`, and the :class:`Walk` whose ``nodes[i]`` is the graph's i-th key."""
    root_fns = root_nodes(roots)
    model_names, extra_names = _parameter_names(model, params)
    describe = _Describer(model_names, extra_names, modules or {})

    # GC passes over the big heap a forward leaves cost more than the walk itself
    # (3x on a 100,000-node chain); the walk makes no cycles.
    with paused_gc():
        walk = discover(root_fns)
        graph = _graph_of(walk, describe)
    if model is not None:
        graph.graph["model"] = type(model).__name__
    ensure_stack_for(graph.number_of_nodes())
    return graph, walk


class Walk:
    """The nodes behind some roots in discovery order, and the edges between them.

    Discovery order is depth-first from the roots, slot 0 first, numbering a node
    when first seen; ``build_graph`` and the stepper both key nodes by it.
    """

    def __init__(self, nodes: list[Node], edges: list[tuple[int, int, int]], roots: int):
        self.nodes = nodes  # index -> autograd Node
        self.edges = edges  # (parent index, child index, slot)
        self.roots = roots  # the first ``roots`` nodes are the roots


def discover(root_fns: list[Node]) -> Walk:
    """Every autograd Node behind ``root_fns``, each once (by identity), iteratively."""
    index: dict[Node, int] = {fn: i for i, fn in enumerate(root_fns)}
    nodes = list(root_fns)
    edges: list[tuple[int, int, int]] = []
    stack = list(reversed(root_fns))  # the first root is walked first
    while stack:
        fn = stack.pop()
        parent = index[fn]
        children = []
        for slot, (child, _input_nr) in enumerate(fn.next_functions):
            if child is None:
                continue
            position = index.get(child)
            if position is None:
                position = index[child] = len(nodes)
                nodes.append(child)
                children.append(child)
            edges.append((parent, position, slot))
        stack.extend(reversed(children))  # slot 0's subtree first
    return Walk(nodes, edges, len(root_fns))


def _graph_of(walk: Walk, describe: _Describer) -> nx.DiGraph:
    keys = []
    attributes = []
    for fn in walk.nodes:
        key, attrs = describe(fn)
        keys.append(key)
        attributes.append(attrs)
    for attrs in attributes[: walk.roots]:
        attrs["root"] = True
    edges = {}
    for parent, child, slot in walk.edges:
        pair = (keys[parent], keys[child])
        if pair in edges:  # x * x: two slots, one DiGraph edge
            edges[pair].setdefault("slots", [edges[pair]["slot"]]).append(slot)
        else:
            edges[pair] = {"slot": slot}
    for data in edges.values():
        if "slots" in data:
            data["slots"] = tuple(data["slots"])
    graph = nx.DiGraph(roots=keys[: walk.roots])
    graph.add_nodes_from(zip(keys, attributes))
    graph.add_edges_from((u, v, d) for (u, v), d in edges.items())
    return graph


def root_nodes(roots: Roots) -> list[Node]:
    """The distinct autograd Nodes of ``roots``, or a :class:`GraphError` saying why not."""
    if isinstance(roots, (torch.Tensor, Node)):
        roots = [roots]
    elif not isinstance(roots, Sequence) or isinstance(roots, (str, bytes)):
        raise GraphError(
            f"expected a tensor with a grad_fn, an autograd Node or a sequence of them, "
            f"got {type(roots).__name__}"
        )
    if len(roots) == 0:
        raise GraphError("no roots given: pass the tensor to walk back from, such as the loss")
    fns: list[Node] = []
    for index, root in enumerate(roots):
        where = "the root" if len(roots) == 1 else f"root {index}"
        if isinstance(root, torch.Tensor):
            fn = root.grad_fn
            if fn is None:
                raise GraphError(f"{where} has no autograd graph: {_why_no_grad_fn(root)}")
        elif isinstance(root, Node):
            fn = root
        else:
            raise GraphError(
                f"{where} is a {type(root).__name__}, not a tensor or an autograd Node"
            )
        if fn not in fns:
            fns.append(fn)
    return fns


def _why_no_grad_fn(tensor: torch.Tensor) -> str:
    shape = tuple(tensor.shape)
    if tensor.requires_grad:
        return (
            f"it is a leaf tensor (requires_grad=True, shape {shape}) with no grad_fn; "
            "pass a result computed from it, such as the loss"
        )
    return (
        f"the tensor (shape {shape}) does not require grad; make an input or parameter "
        "requires_grad=True and compute it outside torch.no_grad()"
    )


def _parameter_names(
    model: torch.nn.Module | None, params: Mapping[str, torch.Tensor] | None
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    """Names by tensor identity: the model's (every name of a tied weight), then extras."""
    model_names: dict[int, list[str]] = {}
    if model is not None:
        for name, tensor in model.named_parameters(remove_duplicate=False):
            model_names.setdefault(id(tensor), []).append(name)
    extra_names: dict[int, list[str]] = {}
    for name, tensor in (params or {}).items():
        if not isinstance(tensor, torch.Tensor):
            raise GraphError(f"params[{name!r}] is a {type(tensor).__name__}, not a tensor")
        if name not in model_names.get(id(tensor), ()):
            extra_names.setdefault(id(tensor), []).append(name)
    return model_names, extra_names


class _Describer:
    """Key and attributes of one autograd Node; keys are unique within one walk."""

    def __init__(self, model_names, extra_names, modules: Mapping[int, str]):
        self.model_names = model_names
        self.extra_names = extra_names
        self.modules = modules
        self.counts: dict[str, int] = {}

    def _key(self, stem: str, *, bare_first: bool = False) -> str:
        """``stem#n`` for the n-th node of that stem; ``bare_first`` leaves the first bare."""
        count = self.counts.get(stem, 0)
        self.counts[stem] = count + 1
        return stem if bare_first and count == 0 else f"{stem}#{count}"

    def __call__(self, fn: Node) -> tuple[str, dict[str, Any]]:
        op = fn.name().rpartition("::")[2]
        if op == ACCUMULATE_GRAD:
            return self._leaf(fn)
        seq = fn._sequence_nr()
        if seq >= _NO_SEQUENCE:
            seq = -1
        saved, args = describe_saved(fn)
        return self._key(op), {
            "kind": "op",
            "op": op,
            "name": "",
            "shape": _incoming_shape(fn),
            "seq": seq,
            "module": self.modules.get(seq),
            "saved": saved,
            "args": args,
            "root": False,
        }

    def _leaf(self, fn: Node) -> tuple[str, dict[str, Any]]:
        tensor = fn.variable
        from_model = self.model_names.get(id(tensor), [])
        names = from_model + self.extra_names.get(id(tensor), [])
        # Two tensors may share a name (a model's and a params= entry): number the second.
        key = self._key(f"param:{names[0]}", bare_first=True) if names else self._key("leaf")
        return key, {
            "kind": "param" if names else "leaf",
            "op": ACCUMULATE_GRAD,
            "name": ", ".join(names),
            "names": tuple(names),
            "shape": shape_tuple(tensor.shape),
            "seq": -1,
            "module": from_model[0].rpartition(".")[0] if from_model else None,
            "saved": {},
            "args": {},
            "root": False,
        }


def _incoming_shape(fn: Node) -> tuple[int, ...] | None:
    """Shape of the gradient flowing into ``fn`` (its first output's), if torch tells."""
    metadata = getattr(fn, "_input_metadata", None)  # torch >= 2.3
    if not metadata:
        return None
    return shape_tuple(metadata[0].shape)


def shape_tuple(size: torch.Size | list[int]) -> tuple[int, ...]:
    """``tuple(size)``, one shared tuple per distinct shape."""
    key = size if isinstance(size, tuple) else tuple(size)  # metadata shapes are lists
    shape = _shapes.get(key)
    if shape is None:
        shape = _shapes.setdefault(tuple(key), tuple(key))
    return shape


def describe_saved(fn: Node) -> tuple[dict[str, Any] | str, dict[str, Any]]:
    """(saved tensors as name -> {"shape", "dtype"} or "freed", saved non-tensor values)."""
    saved: dict[str, Any] = {}
    args: dict[str, Any] = {}
    try:
        if isinstance(fn, BackwardCFunction):  # a Python autograd.Function's ctx
            for index, tensor in enumerate(fn.saved_tensors):
                saved[f"saved_tensors[{index}]"] = tensor_meta(tensor)
            return saved, args
        for attr in _saved_attrs(type(fn)):
            value = getattr(fn, attr)
            name = attr[len(_SAVED_PREFIX):]
            if isinstance(value, torch.Tensor):
                saved[name] = tensor_meta(value)
            elif isinstance(value, (tuple, list)) and value and all(
                isinstance(v, torch.Tensor) for v in value
            ):
                saved[name] = [tensor_meta(v) for v in value]
            elif value is not None:  # None: an input that did not need saving
                args[name] = plain(value)
    except RuntimeError:  # "... saved tensors after they have already been freed"
        return FREED, args
    return saved, args


def _saved_attrs(node_type: type) -> tuple[str, ...]:
    attrs = _saved_attrs_by_type.get(node_type)
    if attrs is None:
        attrs = tuple(a for a in dir(node_type) if a.startswith(_SAVED_PREFIX))
        _saved_attrs_by_type[node_type] = attrs
    return attrs


def tensor_meta(tensor: torch.Tensor | None) -> dict[str, Any] | None:
    """{"shape", "dtype"} of a tensor, one shared dict per distinct pair."""
    if tensor is None:
        return None
    key = (tensor.shape, tensor.dtype)
    meta = _metas.get(key)
    if meta is None:
        shape = shape_tuple(tensor.shape)
        meta = {"shape": shape, "dtype": str(tensor.dtype).removeprefix("torch.")}
        _metas[(shape, tensor.dtype)] = meta
    return meta
