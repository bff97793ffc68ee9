"""ForwardRecording: what each tensor operation of a forward pass did to the autograd graph.

>>> with gradviz.record_forward(model) as rec:        # doctest: +SKIP
...     loss = (model(x) - labels).sum()
>>> rec.events[0]                                      # doctest: +SKIP
ForwardEvent(0, conv2d, module 'conv1', resnet.py:268, ConvolutionBackward0)
>>> graph = rec.graph(loss)          # build_graph(loss, ...), and each event's key filled in

How: a ``torch.overrides.TorchFunctionMode`` on the thread that runs the forward sees
every torch function the forward calls (``conv2d``, ``Tensor.__rmul__``, ``relu_``),
with the user's line still on the Python stack, and the call's output comes back to
it after autograd has recorded the node: ``out.grad_fn`` is that node, or ``None``
and the mode can say why. A ``TorchDispatchMode`` would sit below autograd: it sees
aten ops (decompositions of what the user wrote) before autograd attaches the node
to the output, and costs one Python call per aten op. The price of the function
mode: a torch function implemented as one Python call that records several nodes
(``F.multi_head_attention_forward``) is one event with several nodes (``keys``).

Node identity. While the forward runs, an event knows its node by the autograd
sequence number (``seq``: per thread, unique within a forward run on one thread;
the ``seq`` attribute of a graph node) and holds the Node itself. Graph keys
(``Op#n``) are numbered from the roots, so they exist only once the roots do:
:meth:`ForwardRecording.graph` walks the roots with :func:`gradviz.build_graph`'s own
walk and fills ``key`` / ``keys`` of every event whose node is in that graph.

Which module: :class:`~gradviz.graph.modules.ModuleSpans` (the attribution
:func:`gradviz.record` and the watch use too) knows the module calls running on the
recording thread; an op, and the nodes it made, belong to the innermost. Nodes made
outside any torch function (a custom ``autograd.Function.apply``) are found when the
sequence counter has moved between two calls, and get an event of their own (op
``Name.apply``, no source line).

Summaries are lazy: an event keeps a reference to its output and summarizes it
when first read (while the forward is paused, or after it). An op about to change
a tensor in place (``relu_``, ``+=``, ``inplace=True``, ``out=``) first summarizes
the pending outputs that share its storage; past ``pending_bytes`` the oldest are
summarized at once. An in-place change gradviz did not predict shows as
``overwritten`` instead of a wrong summary.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import types
import weakref
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import networkx as nx
import torch
from torch._C._autograd import _get_sequence_nr
from torch._subclasses.fake_tensor import FakeTensor
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from gradviz.engine.forward_events import (
    CUTS,
    Exclusion,
    ForwardAborted,
    ForwardEvent,
)
from gradviz.engine.source_lines import SourceLine, apply_line, caller_line
from gradviz.engine.summary import summarize
from gradviz.errors import GraphError
from gradviz.graph.modules import ModuleSpans, compiling
from gradviz.graph.walk import Roots, walk_graph
from gradviz.runtime.quiet_gc import paused_gc

#: Outputs held for lazy summaries, at most this many bytes (then summarized at once).
DEFAULT_PENDING_BYTES = 512 << 20

_Tensor = torch.Tensor


_INPLACE_DUNDERS = frozenset(
    f"__i{name}__" for name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow",
                                "and", "or", "xor", "lshift", "rshift", "matmul"))
_DETACHING = frozenset(("detach", "detach_", "data"))
_SKIPPED = frozenset(("grad", "_base", "_grad", "grad_fn"))  # reads, not operations
_MAX_GAPS = 8
_FIRST = -1  # mutation rule: the first argument is changed in place
_UNKNOWN = object()


def _mutation_rule(func) -> int | None:
    """Which argument ``func`` may change in place: _FIRST, the position of an
    ``inplace`` flag (the first argument changes when it is true), or None."""
    name = getattr(func, "__name__", "")
    if name in _INPLACE_DUNDERS or name in ("__setitem__", "copy_") or (
            name.endswith("_") and not name.endswith("__")):
        return _FIRST
    if isinstance(func, types.FunctionType):
        try:
            names = list(inspect.signature(func).parameters)
        except (TypeError, ValueError):
            return None
        if "inplace" in names:
            return names.index("inplace")
    return None


_DISPATCH_CHECKS = frozenset(("has_torch_function", "has_torch_function_unary",
                              "has_torch_function_variadic"))
_PLAIN_TYPES = frozenset((torch.Tensor, torch.nn.Parameter))
_OPENED: dict[Any, types.FunctionType | None] = {}
# Reads and conversions whose bodies compute with torch but are not the user's math:
# printing a tensor in a forward is not thirty operations.
_NEVER_OPENED = frozenset(("__repr__", "__str__", "__format__", "__deepcopy__", "__reduce_ex__",
                           "__setstate__", "__array__", "__array_wrap__", "backward",
                           "register_hook", "storage"))
_open_globals: dict[int, dict[str, Any]] = {}


def _never(*args, **kwargs) -> bool:
    return False


def _open(func) -> types.FunctionType | None:
    """A copy of a Python torch function that skips its own torch-function check.

    ``F.multi_head_attention_forward`` is one torch function made of dozens of torch
    calls; the mode sees it with itself popped, so its body would be one event with
    ~40 nodes. Running the body again with the mode pushed would dispatch straight
    back to the mode (its first line asks ``has_torch_function``): this copy reads
    that name from a copy of its module's globals where it is always false, so the
    body runs and each torch call inside it reaches the mode as its own event.
    Only for calls whose arguments are plain tensors, so no subclass's
    ``__torch_function__`` is skipped.
    """
    if not isinstance(func, types.FunctionType) or func.__name__ in _NEVER_OPENED:
        return None
    code = func.__code__
    if not _DISPATCH_CHECKS.intersection(code.co_names):
        return None
    module_globals = func.__globals__
    patched = _open_globals.get(id(module_globals))
    if patched is None:
        patched = dict(module_globals)
        patched.update(dict.fromkeys(_DISPATCH_CHECKS, _never))
        _open_globals[id(module_globals)] = patched
    opened = types.FunctionType(code, patched, func.__name__, func.__defaults__,
                                func.__closure__)
    opened.__kwdefaults__ = func.__kwdefaults__
    return opened


def _op_name(func) -> str:
    name = getattr(func, "__name__", None)
    if name == "__get__":  # a property such as Tensor.T or Tensor.data
        name = getattr(getattr(func, "__self__", None), "__name__", None)
    return name or repr(func)


def _node_name(node) -> str:
    return node.name().rpartition("::")[2]


def _tensors_in(args, kwargs) -> list[torch.Tensor]:
    """Tensors among the arguments, one level into lists and tuples (``torch.cat``)."""
    found = []
    for value in (*args, *kwargs.values()) if kwargs else args:
        if isinstance(value, _Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found.extend(v for v in value if isinstance(v, _Tensor))
    return found


def _inputs_of(node) -> list[torch.Tensor]:
    """The leaf tensors a custom Function's node takes (for the data flow); others unknown."""
    return [child.variable for child, _ in node.next_functions
            if child is not None and hasattr(child, "variable")]


def _storage_key(tensor: torch.Tensor) -> int | None:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # sparse, nested, meta: no plain storage
        return None


def _real(tensor: torch.Tensor) -> bool:
    """Not one of torch.compile's fake tensors (dynamo works on them around its tracing)."""
    return type(tensor) in _PLAIN_TYPES or not isinstance(tensor, FakeTensor)


class _Mode(TorchFunctionMode):
    def __init__(self, recording: ForwardRecording):
        super().__init__()
        self.recording = recording

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if compiling():  # dynamo tracing a compiled region: it stays one opaque op
            return func(*args, **(kwargs or {}))
        return self.recording._call(func, types, args, kwargs or {})


class ForwardRecording:
    """The events of one forward pass, the module of each node, and the data flow.

    Made by :func:`record_forward` (on this thread) or by a :class:`ForwardStepper`
    (on its worker). ``modules`` maps node sequence numbers to module paths, as
    :func:`gradviz.record` does, so ``build_graph(roots, modules=rec.modules)`` names them.
    """

    def __init__(self, model: torch.nn.Module | None = None,
                 params: Mapping[str, torch.Tensor] | None = None):
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.params: dict[str, torch.Tensor] = dict(params or {})
        self.events: list[ForwardEvent] = []
        # Which module made each node: the one attribution (gradviz.graph.modules), whose
        # hooks also note the nodes made between ops as a module call starts and ends.
        self._spans = (ModuleSpans(model, on_enter=self._module_enters, on_exit=self._module_exits)
                       if model is not None else None)
        self.modules: Mapping[int, str] = self._spans.modules if self._spans is not None else {}
        self.pending_bytes = DEFAULT_PENDING_BYTES
        self.leaves: dict[str, torch.Tensor] = {}  # name -> tensor, for why_no_grad
        self._producer: dict[int, tuple[weakref.ref, int | str]] = {}
        self._frontier: dict[Any, None] = {}  # nodes made so far that no later node uses
        self._mode: _Mode | None = None
        self._opening: set = set()  # Python torch functions whose body is running
        self._thread: int | None = None
        self._seq_mark = 0
        # Sequence ranges made outside torch functions, with the line that likely made them.
        self._gaps: list[tuple[int, int, SourceLine | None]] = []
        self._abort = False
        self._rules: dict[Any, int | None] = {}
        self._names: dict[Any, str] = {}
        self._pending: dict[int, list[ForwardEvent]] = {}  # storage pointer -> events
        self._pending_order: deque[ForwardEvent] = deque()
        self._pending_sizes: dict[int, int] = {}  # storage pointer -> its bytes
        self._pending_total = 0
        self._lock = threading.RLock()
        self.failed_op: tuple[str, SourceLine | None, str | None] | None = None
        self.on_event = None  # called with each event on the recording thread
        if model is not None:
            for name, tensor in model.named_parameters(remove_duplicate=False):
                self._name_leaf(name, tensor)
        for name, tensor in self.params.items():
            self._name_leaf(name, tensor)

    # ------------------------------------------------------------- public
    @contextlib.contextmanager
    def active(self) -> Iterator[ForwardRecording]:
        """Record the torch operations run on this thread inside the block."""
        self._thread = threading.get_ident()
        self._seq_mark = _get_sequence_nr()
        try:
            if self._spans is not None:
                with paused_gc():  # GC passes over a big model's heap cost more than this
                    self._spans.install()
            self._mode = _Mode(self)
            with self._mode:
                yield self
        finally:
            if self._spans is not None:
                self._spans.remove()

    def name_inputs(self, args: tuple, kwargs: Mapping[str, Any]) -> None:
        """Name the forward's own tensor arguments (``args[0]``, keyword names) for why_no_grad."""
        for index, value in enumerate(args):
            if isinstance(value, _Tensor):
                self._name_leaf(f"args[{index}]", value)
        for name, value in kwargs.items():
            if isinstance(value, _Tensor):
                self._name_leaf(name, value)

    def finish(self, result: Any) -> None:
        """Note nodes made after the last torch function (a final ``Function.apply``)."""
        self._orphans([t for t in pytree.tree_leaves(result) if isinstance(t, _Tensor)],
                      _get_sequence_nr())

    def graph(self, roots: Roots, *, params: Mapping[str, torch.Tensor] | None = None
              ) -> nx.DiGraph:
        """``build_graph(roots, model=..., params=..., modules=self.modules)``; fills each
        event's ``key`` and ``keys`` from it (None for nodes not behind ``roots``)."""
        merged = {**self.params, **(params or {})}
        graph, walk = walk_graph(roots, model=self.model, params=merged, modules=self.modules)
        keys = list(graph.nodes)
        position = {node: index for index, node in enumerate(walk.nodes)}
        for event in self.events:
            if not event._nodes:
                continue
            found = [keys[position[n]] for n in event._nodes if n in position]
            event.keys = tuple(found)
            first = position.get(event._nodes[0])
            event.key = None if first is None else keys[first]
        return graph

    def partial_graph(self) -> nx.DiGraph:
        """The graph of every node recorded so far, rooted at those no later node uses.

        Its keys are numbered for this partial graph; match nodes to events by the
        ``seq`` attribute. Read it only while the forward is paused or over.
        """
        if not self._frontier:
            return nx.DiGraph(roots=[])
        roots = list(reversed(self._frontier))  # the newest first, as the roots of a forward
        return walk_graph(roots, model=self.model, params=self.params,
                          modules=self.modules)[0]

    def producer(self, tensor: torch.Tensor) -> int | str | None:
        """The event index that made ``tensor`` last, its leaf name, or None if unseen."""
        entry = self._producer.get(id(tensor))
        if entry is None or entry[0]() is not tensor:
            return None
        return entry[1]

    def summarize_all(self) -> None:
        """Summarize every event still pending (say before its tensors change)."""
        for event in list(self._pending_order):
            self._summarize(event)

    # ---------------------------------------------------------- the mode
    def _call(self, func, types_, args, kwargs):
        if self._abort:
            raise ForwardAborted("the forward was aborted")
        before = _get_sequence_nr()
        if before != self._seq_mark or self._gaps:
            self._orphans(_tensors_in(args, kwargs), before)
        if self._pending:
            self._protect(func, args, kwargs)
        opened = _OPENED.get(func, _UNKNOWN)
        if opened is _UNKNOWN:
            opened = _OPENED[func] = _open(func)
        if opened is not None and func not in self._opening and _PLAIN_TYPES.issuperset(types_):
            # A body that calls its own builtin (Tensor.unflatten -> super().unflatten)
            # comes back here with the same func: that call runs as a plain event.
            self._opening.add(func)
            try:
                with self._mode:  # the body's own torch calls are the events
                    out = opened(*args, **kwargs)
            finally:
                self._opening.discard(func)
            now = _get_sequence_nr()
            if now != self._seq_mark or self._gaps:
                self._orphans(_tensors_in((out,), {}), now)
            return out
        try:
            out = func(*args, **kwargs)
        except ForwardAborted:
            raise
        except BaseException:
            if self.failed_op is None:
                self.failed_op = (_op_name(func), caller_line(), self._module())
            raise
        after = _get_sequence_nr()
        self._seq_mark = after
        if isinstance(out, _Tensor):
            tensors = (out,)
        elif isinstance(out, (tuple, list)):
            tensors = tuple(t for t in out if isinstance(t, _Tensor))
            if not tensors:
                return out
        elif out is None and args and getattr(func, "__name__", "") == "__setitem__":
            tensors = (args[0],)
        else:
            return out
        name = self._names.get(func)
        if name is None:
            name = self._names[func] = _op_name(func)
        if name in _SKIPPED or not _real(tensors[0]):
            return out
        event = self._record(name, args, kwargs, tensors, before, after)
        if self.on_event is not None:
            self.on_event(event)
        return out

    def _record(self, name, args, kwargs, tensors, before, after) -> ForwardEvent:
        out = tensors[0]
        module = self._module()
        grad_enabled = torch.is_grad_enabled()
        event = ForwardEvent(len(self.events), name, module, caller_line(),
                             tuple(tuple(t.shape) for t in tensors), grad_enabled, self)
        inputs = _tensors_in(args, kwargs)
        sources = []
        producer = self._producer
        requires = False
        for tensor in inputs:
            requires = requires or tensor.requires_grad
            entry = producer.get(id(tensor))
            if entry is not None and entry[0]() is tensor:
                sources.append(entry[1])
        event.inputs = tuple(sources)
        fn = out.grad_fn
        if fn is not None and before <= fn._sequence_nr() < after:
            self._note_nodes(event, tensors, before, after)
        else:
            self._exclude(event, out, fn, requires, inputs)
        self.events.append(event)
        for tensor in tensors:
            producer[id(tensor)] = (weakref.ref(tensor), event.index)
        self._hold(event, out)
        return event

    def _note_nodes(self, event, tensors, before, after) -> None:
        """The nodes this op made: behind its outputs, numbered within [before, after)."""
        made = []
        children = []
        seen = set()
        stack = [t.grad_fn for t in reversed(tensors) if t.grad_fn is not None]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            seq = node._sequence_nr()
            if not before <= seq < after:
                continue
            made.append((seq, node))
            for child, _ in node.next_functions:
                if child is not None:
                    children.append(child)
                    stack.append(child)
        made.sort(key=lambda pair: pair[0])
        first = tensors[0].grad_fn
        event.node_type = _node_name(first)
        event.seq = first._sequence_nr()
        event.seqs = tuple(seq for seq, _ in made)
        event._nodes = (first, *(node for _, node in made if node is not first))
        for _, node in made:
            self._frontier[node] = None
        for child in children:
            self._frontier.pop(child, None)

    def _exclude(self, event, out, fn, requires, inputs) -> None:
        """Say why ``out`` has no new node; note where a gradient path was cut."""
        if fn is not None:
            event.exclusion = Exclusion.EXISTING_TENSOR
            return
        if torch.is_inference_mode_enabled():
            event.exclusion = Exclusion.INFERENCE_MODE
        elif not torch.is_grad_enabled():
            event.exclusion = Exclusion.GRAD_MODE_OFF  # (a view of a leaf still requires grad)
        elif out.requires_grad:
            made_here = not any(out is t for t in inputs)
            event.exclusion = Exclusion.NEW_LEAF if made_here else Exclusion.EXISTING_TENSOR
            return
        elif event.op in _DETACHING:
            event.exclusion = Exclusion.DETACH
        elif requires:
            event.exclusion = Exclusion.NOT_DIFFERENTIABLE
            dtype = str(out.dtype).removeprefix("torch.")
            event.detail = (f"{dtype} result" if not (out.is_floating_point() or out.is_complex())
                            else f"{event.op} has no derivative")
        if requires and event.exclusion in CUTS:
            event.cut = event.index
            return
        upstream = self._inherited_cut(event.inputs)
        if event.exclusion is None:
            if upstream is not None:
                origin = self.events[upstream]
                event.exclusion = (Exclusion.DETACHED_INPUT if origin.exclusion is Exclusion.DETACH
                                   else Exclusion.CUT_INPUT)
                event.detail = f"cut by {origin.op} at {origin.source}"
            else:
                event.exclusion = Exclusion.NO_INPUT_REQUIRES_GRAD
                frozen = [s for s in event.inputs
                          if isinstance(s, str) and not self.leaves[s].requires_grad]
                if frozen:
                    shown = ", ".join(frozen[:3]) + (", ..." if len(frozen) > 3 else "")
                    event.detail = f"{shown} {'has' if len(frozen) == 1 else 'have'} " \
                                   "requires_grad=False"
        event.cut = upstream

    def _inherited_cut(self, sources) -> int | None:
        for source in sources:
            if isinstance(source, int):
                cut = self.events[source].cut
                if cut is not None:
                    return cut
        return None

    def _orphans(self, tensors, now: int) -> None:
        """Note nodes made since the last torch function outside any (``Function.apply``
        makes its node before its forward's own ops run); claim them once a tensor
        whose node is among them turns up as an argument or output."""
        if now != self._seq_mark:
            self._gaps.append((self._seq_mark, now, apply_line()))
            del self._gaps[:-_MAX_GAPS]  # nodes nobody uses (a probe) are not waited for
            self._seq_mark = now
        for tensor in tensors:
            fn = tensor.grad_fn
            if fn is None or not _real(tensor):
                continue
            seq = fn._sequence_nr()
            for gap in self._gaps:
                if gap[0] <= seq < gap[1]:
                    self._gaps.remove(gap)
                    self._claim(tensor, gap)
                    break
            if not self._gaps:
                return

    def _claim(self, head: torch.Tensor, gap: tuple[int, int, SourceLine | None]) -> None:
        """An event for the nodes behind ``head`` numbered within ``gap``."""
        node = head.grad_fn
        forward_cls = getattr(type(node), "_forward_cls", None)
        name = f"{forward_cls.__name__}.apply" if forward_cls is not None else _node_name(node)
        event = ForwardEvent(len(self.events), name, self._module(), gap[2], (tuple(head.shape),),
                             torch.is_grad_enabled(), self)
        event.inputs = tuple(s for s in (self.producer(t) for t in _inputs_of(node))
                             if s is not None)
        self._note_nodes(event, (head,), gap[0], gap[1])
        self.events.append(event)
        self._producer[id(head)] = (weakref.ref(head), event.index)
        self._hold(event, head)
        if self.on_event is not None:
            self.on_event(event)

    def _module(self) -> str | None:
        return self._spans.current if self._spans is not None else None

    def _module_enters(self, args) -> None:
        """A module call starts (its span opens next): stop if asked; note nodes made since
        the last op, such as a ``Function.apply`` whose result is this call's input."""
        if self._abort:
            raise ForwardAborted("the forward was aborted")
        now = _get_sequence_nr()
        if now != self._seq_mark or self._gaps:
            with torch._C.DisableTorchFunction():  # our own reads are not events
                self._orphans(_tensors_in(args, {}), now)

    def _module_exits(self, output) -> None:
        """A module call ends (its span closes next): note nodes made since the last op."""
        now = _get_sequence_nr()
        if now != self._seq_mark or self._gaps:
            with torch._C.DisableTorchFunction():
                self._orphans([t for t in pytree.tree_leaves(output)
                               if isinstance(t, _Tensor)], now)

    def _name_leaf(self, name: str, tensor: torch.Tensor) -> None:
        if id(tensor) in self._producer and self.producer(tensor) is not None:
            return  # a tied weight keeps its first name
        self.leaves[name] = tensor
        self._producer[id(tensor)] = (weakref.ref(tensor), name)

    # --------------------------------------------------------- summaries
    def _hold(self, event: ForwardEvent, tensor: torch.Tensor) -> None:
        key = None if tensor.is_inference() else _storage_key(tensor)  # no version counter
        if key is None:
            self._summarize_now(event, tensor)
            return
        with self._lock:
            event._tensor = tensor
            event._version = tensor._version
            event._storage = key
            waiting = self._pending.get(key)
            if waiting is None:  # views share their base's storage: count it once
                waiting = self._pending[key] = []
                size = tensor.untyped_storage().nbytes()
                self._pending_sizes[key] = size
                self._pending_total += size
            waiting.append(event)
            self._pending_order.append(event)
            while self._pending_total > self.pending_bytes and self._pending_order:
                self._summarize(self._pending_order[0])

    def _protect(self, func, args, kwargs) -> None:
        """Before an op changes a tensor in place, summarize pending outputs it shares."""
        rule = self._rules.get(func, _UNKNOWN)
        if rule is _UNKNOWN:
            rule = self._rules[func] = _mutation_rule(func)
        targets = []
        if rule is not None:
            first = args[0] if args else kwargs.get("input", kwargs.get("self"))
            if rule == _FIRST or kwargs.get("inplace") or (len(args) > rule and args[rule]):
                targets.append(first)
        out = kwargs.get("out")
        if out is not None:
            targets.extend(out if isinstance(out, (tuple, list)) else (out,))
        for target in targets:
            if isinstance(target, _Tensor):
                with self._lock:
                    for event in list(self._pending.get(_storage_key(target), ())):
                        self._snapshot(event)

    def _snapshot(self, event: ForwardEvent) -> None:
        """Keep a copy of a pending output about to change in place (a copy costs far
        less than a summary), still summarized only when read."""
        tensor = event._tensor
        if tensor is None or tensor._version != event._version:
            self._summarize(event)
            return
        self._release(event)
        self._hold(event, tensor.detach().clone())

    def _summarize(self, event: ForwardEvent) -> None:
        if event._tensor is None:
            return
        with self._lock:
            tensor = event._tensor
            if tensor is None:
                return
            if tensor._version == event._version:
                self._summarize_now(event, tensor)
            self._release(event)

    def _release(self, event: ForwardEvent) -> None:
        """Take an event off the pending outputs (holding the lock)."""
        if event._tensor is not None:
            event._tensor = None
            try:
                self._pending_order.remove(event)
            except ValueError:
                pass
            waiting = self._pending.get(event._storage)
            if waiting is not None:
                waiting.remove(event)
                if not waiting:
                    del self._pending[event._storage]
                    self._pending_total -= self._pending_sizes.pop(event._storage)

    @staticmethod
    def _summarize_now(event: ForwardEvent, tensor: torch.Tensor) -> None:
        with torch._C.DisableTorchFunction():  # called from module hooks too: not an event
            _summarize_into(event, tensor)


def _summarize_into(event: ForwardEvent, tensor: torch.Tensor) -> None:
    summary = summarize(tensor)
    event._summary = summary
    if summary.numel:
        event._zeros = 1.0 - int(torch.count_nonzero(tensor.detach())) / summary.numel
    else:
        event._zeros = 0.0


@contextlib.contextmanager
def record_forward(model: torch.nn.Module | None = None,
                   params: Mapping[str, torch.Tensor] | None = None
                   ) -> Iterator[ForwardRecording]:
    """Record each torch operation run on this thread inside the block (no pausing).

    ``model`` names modules and parameters; ``params`` names other leaves, as in
    :func:`gradviz.build_graph`. Hooks and the mode are removed when the block ends.
    """
    recording = ForwardRecording(model, params)
    with recording.active():
        yield recording


def roots_of(result: Any) -> list[torch.Tensor]:
    """The tensors with a graph in what a forward returned (a tensor, a sequence, a dict...)."""
    if isinstance(result, _Tensor):
        return [result]
    tensors = [t for t in pytree.tree_leaves(result) if isinstance(t, _Tensor)]
    roots = [t for t in tensors if t.grad_fn is not None]
    if not roots:
        raise GraphError(
            "the forward returned no tensor with a graph: it must return the loss (or "
            "tensors computed from inputs that require grad)"
        )
    return roots
