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

import gc
from collections.abc import Mapping, Sequence
from typing import Any, Union

import networkx as nx
import torch
from torch.autograd.function import BackwardCFunction
from torch.autograd.graph import Node

from gradviz.core.deep_graphs import ensure_stack_for
from gradviz.core.errors import GraphError

Roots = Union[torch.Tensor, Node, Sequence[Union[torch.Tensor, Node]]]

ACCUMULATE_GRAD = "AccumulateGrad"
FREED = "freed"
_NO_SEQUENCE = 1 << 63  # AccumulateGrad and nodes made outside a forward carry UINT64_MAX
_SAVED_PREFIX = "_saved_"

_saved_attrs_by_type: dict[type, tuple[str, ...]] = {}


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
    root_fns = root_nodes(roots)
    model_names, extra_names = _parameter_names(model, params)
    describe = _Describer(model_names, extra_names, modules or {})

    # The walk allocates a few containers per node while a big graph keeps many
    # tensors alive: the cyclic GC's passes over them cost more than the walk itself
    # (measured: 3x on a 100,000-node chain). Nothing here makes cycles, so pause it.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        graph = _walk(root_fns, describe)
    finally:
        if gc_was_enabled:
            gc.enable()
    if model is not None:
        graph.graph["model"] = type(model).__name__
    ensure_stack_for(graph.number_of_nodes())
    return graph


def _walk(root_fns: list[Node], describe: _Describer) -> nx.DiGraph:
    """Depth-first from the roots; keys are handed out as nodes are first seen."""
    keys: dict[Node, str] = {}
    nodes: list[tuple[str, dict[str, Any]]] = []
    edges: list[tuple[str, str, dict[str, int]]] = []
    repeated_slots: dict[tuple[str, str], list[int]] = {}
    stack: list[Node] = []
    for fn in root_fns:
        key, attrs = describe(fn)
        attrs["root"] = True
        keys[fn] = key
        nodes.append((key, attrs))
        stack.append(fn)
    stack.reverse()  # the first root is walked first

    while stack:
        fn = stack.pop()
        parent = keys[fn]
        children = []
        seen_here: dict[str, int] = {}
        for slot, (child, _input_nr) in enumerate(fn.next_functions):
            if child is None:
                continue
            key = keys.get(child)
            if key is None:
                key, attrs = describe(child)
                keys[child] = key
                nodes.append((key, attrs))
                children.append(child)
            if key in seen_here:  # x * x: two slots, one DiGraph edge
                repeated_slots.setdefault((parent, key), [seen_here[key]]).append(slot)
                continue
            seen_here[key] = slot
            edges.append((parent, key, {"slot": slot}))
        stack.extend(reversed(children))  # slot 0's subtree first

    graph = nx.DiGraph(roots=[keys[fn] for fn in root_fns])
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    for (parent, child), slots in repeated_slots.items():
        graph.edges[parent, child]["slots"] = tuple(slots)
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
            "shape": tuple(tensor.shape),
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
    return tuple(metadata[0].shape)


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
                args[name] = _plain(value)
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
    if tensor is None:
        return None
    return {"shape": tuple(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}


def _plain(value: Any) -> Any:
    """A saved non-tensor value as plain data (numbers, strings, tuples), else its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    return repr(value)
