"""Walk an autograd graph into a networkx DiGraph, one graph node per autograd Node.

>>> import torch, gradviz
>>> a = torch.tensor([2., 3.], requires_grad=True)
>>> b = torch.tensor([6., 4.], requires_grad=True)
>>> g = gradviz.build_graph(3 * a**3 - b**2, params={"a": a, "b": b})
>>> sorted(g.nodes[k]["op"] for k in g)  # doctest: +NORMALIZE_WHITESPACE
['AccumulateGrad', 'AccumulateGrad', 'MulBackward0', 'PowBackward0', 'PowBackward0',
 'SubBackward0']

Node attributes, on every node:

- ``kind``: "op", "param" (a named leaf) or "leaf"; ``op``: the autograd Node's
  name ("AccumulateGrad" for leaves); ``name`` / ``names``: a leaf's name and
  every name of a tied parameter (``names`` on leaves only).
- ``shape``: the gradient's shape flowing into the node (a leaf's own shape), or
  None; ``seq``: the node's sequence number (-1 for leaves); ``module``: the
  dotted path of the module whose forward made it, "" for the model itself, None
  when unknown; ``root``: whether it is one of the roots.
- ``saved``: tensor name -> ``{"shape", "dtype"}`` (a list of them for a tensor
  list), with ``"state"`` "recomputed in backward" (held by non-reentrant
  checkpointing), "modified in place" or "held by a saved-tensors hook" where it
  cannot be read as saved ("freed" for one a watch kept and has let go); or the one
  string "freed" once backward freed them. A tensor the watch keeps for a NaN's origin
  reads as saved: that hook is gradviz's own.
  Nothing a hook packed is ever unpacked (see :mod:`gradviz.graph.saved`).
- ``args``: saved non-tensor values such as a power's exponent, made readable:
  signed integers, a loss's ``reduction`` by name; values torch saved only to lay
  out an input's gradient (``*_sym_sizes``, ``*_sym_strides``, ...) are not here.

Only where they apply:

- ``input_shapes``: input name -> shape, for inputs whose shape torch saved but
  not the tensor itself (a sum's or a view's input).
- ``region``: on a node that stands for a whole region of the forward, either a
  ``torch.compile``d one or one checkpointed with ``use_reentrant=True``:
  ``{"kind": "compiled" | "checkpoint", "params": names of the parameters inside,
  "ops": the ops of its backward where torch exposes them, "note": why its inside
  cannot be stepped}`` (see :mod:`gradviz.graph.regions`).

Edges follow the gradient, from a node to each entry of its ``next_functions``,
with the entry's index as ``slot`` (and ``slots`` when one child fills several).
``graph.graph["roots"]`` lists the roots' keys; ``graph.graph["model"]`` the
model's class name when a model was given.

Attribute values are shared between nodes where they are equal (shapes, saved
descriptions, args): treat them as read-only, and set a new value rather than
changing one in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import networkx as nx
import torch
from torch.autograd.graph import Node

from gradviz.errors import GraphError
from gradviz.graph.modules import NO_SEQUENCE
from gradviz.graph.regions import REGION_OPS, describe_region
from gradviz.graph.saved import (
    EMPTY,
    CheckpointRecords,
    careful_saved,
    function_saved,
    meta_pool,
    plain_saved,
    saved_plan,
    saved_tensors,
    saved_values,
    shape_pool,
    shape_tuple,
)
from gradviz.runtime.deep_graphs import ensure_stack_for
from gradviz.runtime.quiet_gc import built_to_last

Roots = Union[torch.Tensor, Node, Sequence[Union[torch.Tensor, Node]]]

ACCUMULATE_GRAD = "AccumulateGrad"


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
    depth is limited only by memory. The walk runs nothing of the user's: saved
    tensors behind hooks (checkpointing) are described, not unpacked.
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
    # (3x on a 100,000-node chain); the walk makes no cycles, and the graph lives on.
    with built_to_last():
        graph, walk = _build(root_fns, describe)
    if model is not None:
        graph.graph["model"] = type(model).__name__
    ensure_stack_for(graph.number_of_nodes())
    return graph, walk


class Walk:
    """The autograd Nodes behind some roots, in discovery order.

    Discovery order is depth-first from the roots, slot 0 first, numbering a node
    when first seen; ``build_graph`` and the stepper both key nodes by it.
    """

    def __init__(self, nodes: list[Node], roots: int):
        self.nodes = nodes  # index -> autograd Node
        self.roots = roots  # the first ``roots`` nodes are the roots


def discover(root_fns: list[Node]) -> Walk:
    """Every autograd Node behind ``root_fns``, each once (by identity), iteratively."""
    seen = set(root_fns)
    nodes = list(root_fns)
    stack = list(reversed(root_fns))  # the first root is walked first
    while stack:
        children = []
        for child, _input_nr in stack.pop().next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                children.append(child)
        nodes += children
        stack += reversed(children)  # slot 0's subtree first
    return Walk(nodes, len(root_fns))


class _RootsParent:
    """Stands in as the parent of the roots, so that roots are found like any child."""

    def __init__(self, root_fns: list[Node]):
        self.next_functions = tuple((fn, 0) for fn in root_fns)


def _build(root_fns: list[Node], describe: _Describer) -> tuple[nx.DiGraph, Walk]:
    """The graph and its walk in one pass: each node is described when first seen.

    The nodes and edges go straight into the DiGraph's own dicts (``_node``,
    ``_succ``, ``_pred``: the dict-of-dicts networkx documents) rather than through
    ``add_node`` / ``add_edge``, which copy every attribute dict and look every node
    up again: through them the graph cost as much as the walk, twice the memory at
    its peak. The result is an ordinary DiGraph; tests/graph/test_graph.py checks it
    equals one built through the public API.

    This loop is where a deep graph's time goes, so an op node of a type already
    planned (see :class:`_Describer`) is described right here, with the loop's
    locals; every other node goes through ``describe``. Describing inline took
    about 15% off a 100,000-node chain (tests/graph/test_graph.py checks that both
    ways describe a node alike).
    """
    graph = nx.DiGraph()
    node_attrs, succ, pred = graph._node, graph._succ, graph._pred
    keys: dict[Node, str] = {}
    nodes: list[Node] = []
    plans, counts, modules = describe.plans, describe.counts, describe.modules
    checkpoints = describe.checkpoints
    metas = meta_pool
    succ[None] = {}  # the roots' stand-in parent, removed below
    stack: list[tuple[Any, Any]] = []
    fn, parent = _RootsParent(root_fns), None
    while True:
        out = succ[parent]
        children = []
        slot = -1
        for child, _input_nr in fn.next_functions:
            slot += 1
            if child is None:
                continue
            key = keys.get(child)
            if key is not None:
                if key in out:  # x * x: two slots, one DiGraph edge
                    data = out[key]
                    data["slots"] = (*data.get("slots", (data["slot"],)), slot)
                else:
                    out[key] = pred[key][parent] = {"slot": slot}
                continue
            plan = plans.get(child.__class__)
            if plan is None:  # the general path; it plans types it has not seen
                key, attrs = describe(child)
            else:  # what describe() does for a planned op type, written out
                op, tensors, others, pool, blank = plan
                saved = None
                if len(tensors) == 1:  # plain_saved's common case, written out too
                    raw_attr, attr, _name = tensors[0]
                    try:
                        if getattr(child, raw_attr).unpack_hook is None:
                            value = getattr(child, attr)
                            saved = pool.get(id(metas.get((value.shape, value.dtype, None))))
                    except (RuntimeError, AttributeError):  # see plain_saved
                        pass
                if saved is None:
                    saved = plain_saved(child, tensors, pool) if tensors else EMPTY
                if saved is None:  # hooks, in-place changes, tensor lists, a freed graph
                    saved = careful_saved(child, tensors, checkpoints)
                args = input_shapes = EMPTY
                if others:
                    args, input_shapes = saved_values(child, others, saved)
                seq = child._sequence_nr()
                if seq >= NO_SEQUENCE:
                    seq = -1
                metadata = child._input_metadata  # planned types have it
                shape = None
                if metadata:
                    shape = metadata[0].shape  # a list
                    shape = shape_pool.get(tuple(shape)) or shape_tuple(shape)
                attrs = blank.copy()  # a dict display of nine items costs a quarter more
                attrs["shape"] = shape
                attrs["seq"] = seq
                attrs["module"] = modules.get(seq)
                attrs["saved"] = saved
                attrs["args"] = args
                if input_shapes:
                    attrs["input_shapes"] = input_shapes
                count = counts.get(op, 0)
                counts[op] = count + 1
                key = f"{op}#{count}"
            node_attrs[key] = attrs
            keys[child] = key
            nodes.append(child)
            succ[key] = {}
            out[key] = data = {"slot": slot}
            pred[key] = {parent: data}
            children.append((child, key))
        if len(children) == 1:  # a chain's link: on to the child, the stack untouched
            fn, parent = children[0]
        elif children:
            children.reverse()  # slot 0's subtree first
            stack += children
            fn, parent = stack.pop()
        elif stack:
            fn, parent = stack.pop()
        else:
            break
    del succ[None]
    roots = [keys[fn] for fn in root_fns]
    for key in roots:
        node_attrs[key]["root"] = True
        del pred[key][None]
    graph.graph["roots"] = roots
    return graph, Walk(nodes, len(root_fns))


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
    """Key and attributes of one autograd Node; keys are unique within one walk.

    Deep graphs are mostly a few node types over and over, so what can be known
    from a node's type (its op name, which saved attributes to read) is worked out
    once per type; ``__call__`` is the hot loop of every walk.
    """

    def __init__(self, model_names, extra_names, modules: Mapping[int, str]):
        self.model_names = model_names
        self.extra_names = extra_names
        self.modules = modules
        self.counts: dict[str, int] = {}
        self.checkpoints = CheckpointRecords()
        # node type -> (op, *saved_plan, blank attributes), or None for the types that
        # take the general path: leaves, Python Functions, opaque regions, C++ nodes
        # without a Python type of their own (whose name is per node), torch without
        # _input_metadata.
        self.plans: dict[type, tuple | None] = {}

    def _key(self, stem: str, *, bare_first: bool = False) -> str:
        """``stem#n`` for the n-th node of that stem; ``bare_first`` leaves the first bare."""
        count = self.counts.get(stem, 0)
        self.counts[stem] = count + 1
        return stem if bare_first and count == 0 else f"{stem}#{count}"

    def names_of(self, tensor: torch.Tensor) -> list[str]:
        return self.model_names.get(id(tensor), []) + self.extra_names.get(id(tensor), [])

    def __call__(self, fn: Node) -> tuple[str, dict[str, Any]]:
        """Any node: plans its type on first sight. (``_build`` describes the op nodes of
        planned types itself, the same way as ``_op``.)"""
        plan = self.plans.get(fn.__class__, _UNPLANNED)
        if plan is _UNPLANNED:
            plan = self._plan(fn)
        if plan is None:
            return self._general(fn)
        op, tensors, others, pool, _blank = plan
        saved = saved_tensors(fn, tensors, pool, self.checkpoints) if tensors else EMPTY
        args, input_shapes = saved_values(fn, others, saved) if others else (EMPTY, EMPTY)
        return self._op(fn, op, saved, args, input_shapes)

    def _plan(self, fn: Node) -> tuple | None:
        node_type = fn.__class__
        op = fn.name().rpartition("::")[2]
        plan = saved_plan(node_type)
        if (op != node_type.__name__ or op == ACCUMULATE_GRAD or plan is None
                or op in REGION_OPS or not hasattr(fn, "_input_metadata")):
            self.plans[node_type] = None
            return None
        # An op node's attributes as _op() makes them, in its order, to be filled in.
        blank = {"kind": "op", "op": op, "name": "", "shape": None, "seq": None,
                 "module": None, "saved": None, "args": None, "root": False}
        self.plans[node_type] = (op, *plan, blank)
        return self.plans[node_type]

    def _general(self, fn: Node) -> tuple[str, dict[str, Any]]:
        op = fn.name().rpartition("::")[2]
        if op == ACCUMULATE_GRAD:
            return self._leaf(fn)
        plan = saved_plan(fn.__class__)
        args = input_shapes = EMPTY
        if plan is None:  # a Python autograd.Function's ctx
            saved = function_saved(fn, self.checkpoints)
        else:
            tensors, others, pool = plan
            saved = saved_tensors(fn, tensors, pool, self.checkpoints) if tensors else EMPTY
            if others:
                args, input_shapes = saved_values(fn, others, saved)
        key, attrs = self._op(fn, op, saved, args, input_shapes)
        region = describe_region(fn, op, self.names_of)
        if region is not None:
            attrs["region"] = region
        return key, attrs

    def _op(self, fn: Node, op: str, saved, args, input_shapes) -> tuple[str, dict[str, Any]]:
        seq = fn._sequence_nr()
        if seq >= NO_SEQUENCE:
            seq = -1
        try:
            metadata = fn._input_metadata  # torch >= 2.3
        except AttributeError:
            metadata = None
        attrs = {
            "kind": "op",
            "op": op,
            "name": "",
            # The shape of the gradient flowing in: the node's first output's.
            "shape": shape_tuple(metadata[0].shape) if metadata else None,
            "seq": seq,
            "module": self.modules.get(seq),
            "saved": saved,
            "args": args,
            "root": False,
        }
        if input_shapes:
            attrs["input_shapes"] = input_shapes
        return self._key(op), attrs

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
            "saved": EMPTY,
            "args": EMPTY,
            "root": False,
        }


_UNPLANNED = object()
