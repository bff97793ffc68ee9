"""Where a NaN/Inf was made in the forward, and by which line: the iteration's own forward,
run again.

A NaN/Inf loss tells nothing of where it started: the graph keeps what ops *saved*,
and the op that made a NaN often saves only its finite input (``log(x)`` keeps ``x``),
so its consumer is blamed. And a node says nothing of the line that made it. So the
watch notes each call of the model's forward (:class:`ForwardCalls`: its arguments, the
random number generators' state, autocast and grad mode; a reference each, no copy),
and when an iteration goes NaN/Inf it runs that forward again (:func:`replay`) under a
``TorchFunctionMode`` that checks every op's output. Models make Inf on purpose (a causal
mask's ``masked_fill(..., -inf)`` that softmax turns into zeros, T5's ``log(0)`` cast to
an integer bucket), so the first op to make a NaN/Inf is not enough: each non-finite
tensor carries the op that started its line of descent (the op that made it out of
finite inputs, or the first to take a non-finite parameter, buffer or input), a line
that ends where an op turns it finite again, and the origin is where the line reaching
the forward's output started, with the user's line that called it (the first frame
outside torch and gradviz) and the module running it. The replay makes the same nodes
in the same order, so an op's node is matched to the kept graph's by its sequence
number (counted from the call's first); its saved tensors are dropped as they are made.

What the replay changes is put back: BatchNorm's running statistics (every buffer),
the random number generators (dropout draws the same masks, and the loop's own stream
goes on as if nothing ran). It runs the module the user wrote, inside DDP and
torch.compile (DDP's forward would talk to the other ranks; a compiled forward is one
op). Not replayed: a model sharded by FSDP (its forward gathers parameters with
collectives the other ranks would not join); state a model keeps outside its buffers
(a cache, a call counter) is not put back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from gradviz.engine.source_lines import SourceLine, caller_line
from gradviz.graph.modules import ModuleSpans, next_sequence_nr

_DEVICE_TYPES = ("cpu", "cuda")


@dataclass
class ForwardCall:
    """One call of the model's forward, as it was made."""

    args: tuple
    kwargs: dict
    first_seq: int  # the sequence number of the first node it could make
    grad_enabled: bool
    autocast: dict[str, torch.dtype]  # device type -> dtype, where autocast was on
    cpu_rng: torch.Tensor
    cuda_rng: list[torch.Tensor] = field(default_factory=list)


class ForwardCalls:
    """Notes the calls of ``model``'s forward (a pre-hook on it); :meth:`clear` per iteration."""

    def __init__(self, model: torch.nn.Module):
        self.calls: list[ForwardCall] = []
        self.paused = False  # while a replay runs its forward
        self._handle = model.register_forward_pre_hook(self._note, with_kwargs=True)

    def remove(self) -> None:
        self._handle.remove()

    def clear(self) -> None:
        self.calls.clear()

    def _note(self, module, args, kwargs) -> None:
        if torch.compiler.is_compiling() or self.paused:
            return
        autocast = {device: torch.get_autocast_dtype(device) for device in _DEVICE_TYPES
                    if torch.is_autocast_enabled(device)}
        cuda = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())] \
            if torch.cuda.is_initialized() else []
        self.calls.append(ForwardCall(args, dict(kwargs), next_sequence_nr(),
                                      torch.is_grad_enabled(), autocast, torch.get_rng_state(),
                                      cuda))


@dataclass(frozen=True)
class ReplayedOp:
    """An op of the replayed forward: its torch function, the module running it, the user's
    line, and the node it made (its type and sequence number, as in the original)."""

    op: str
    module: str | None
    source: SourceLine | None
    node_type: str | None
    seq: int | None  # its node's sequence number, counted from the start of its call


@dataclass
class Replay:
    """What a replay found: the op that started the line of NaN/Inf values the forward
    returned, either by making them out of finite inputs (``made``) or by taking them
    (``took``, with ``what`` it took: the model's input, a parameter, a buffer), and
    every op's line by node (``by_seq``)."""

    made: ReplayedOp | None = None
    took: ReplayedOp | None = None
    what: str = ""
    by_seq: dict[int, ReplayedOp] = field(default_factory=dict)  # by seq from call start
    call: int = 0  # which forward call of the iteration
    starts: list[int] = field(default_factory=list)  # each call's first sequence number

    def in_graph(self, seq: int) -> int | None:
        """A node's sequence number in the kept graph as counted from the start of the call
        that made it (gradient accumulation calls the forward several times)."""
        start = max((s for s in self.starts if s <= seq), default=None)
        return None if start is None else seq - start

    def graph_seq(self, op: ReplayedOp, graph_seqs) -> int | None:
        """The sequence number ``op``'s node has in a graph whose nodes have ``graph_seqs``:
        the same op of the call that made that graph."""
        if op.seq is None:
            return None
        low = min((s for s in graph_seqs if s >= 0), default=None)
        if low is None:
            return None
        start = max((s for s in self.starts if s <= low), default=None)
        return None if start is None else start + op.seq


def replay(model: torch.nn.Module, noted: ForwardCalls, spans: ModuleSpans | None,
           *, find: bool = True) -> Replay | None:
    """Run the calls ``noted`` of ``model``'s forward again and watch each op (see the module
    docstring); None when this model cannot be replayed. ``find=False`` runs every call
    to the end, only to learn each node's line."""
    calls = list(noted.calls)
    if not calls or _sharded(model):
        return None
    found = Replay(starts=[call.first_seq for call in calls])
    noted.paused = True
    with _put_back(model), contextlib.ExitStack() as resume:
        resume.callback(setattr, noted, "paused", False)
        for number, call in enumerate(calls):
            mode = _Watcher(found, call, spans, model, find=find)
            try:
                with _as_called(call), mode, _no_saved_tensors(), _seeing_functions(mode):
                    output = model(*call.args, **call.kwargs)
            except Exception:  # the forward did not run again as it did: tell what was seen
                mode.conclude(None)
                break
            mode.conclude(output)
            if found.made is not None or found.took is not None:
                found.call = number
                break
    return found


class _Watcher(TorchFunctionMode):
    """Checks each op's output; notes each op's node, line and module."""

    def __init__(self, found: Replay, call: ForwardCall, spans: ModuleSpans | None,
                 model: torch.nn.Module, *, find: bool):
        super().__init__()
        self.found = found
        self.spans = spans
        self.find = find
        self.offset = 0
        self.call = call
        self.names = {id(t): f"the parameter {name}" for name, t in model.named_parameters()}
        self.names.update({id(t): f"the buffer {name}" for name, t in model.named_buffers()})
        #: id -> (the non-finite tensor, kept so that its id stays its own; the op that
        #: started its line; made: True, or what it took)
        self.lines: dict[int, tuple[torch.Tensor, ReplayedOp, str | None]] = {}
        self.first_line: tuple[ReplayedOp, str | None] | None = None

    def __enter__(self):
        self.offset = next_sequence_nr() - self.call.first_seq
        return super().__enter__()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outputs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outputs:
            return out
        with torch._C.DisableTorchFunction():
            self._note(func, args, kwargs, outputs)
        return out

    def function_applied(self, cls, args, out) -> None:
        """A custom ``autograd.Function`` ran (its node is made outside any torch function)."""
        outputs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        if outputs:
            with torch._C.DisableTorchFunction():
                self._note(_Applied(cls), args, {}, outputs)

    def _note(self, func, args, kwargs, outputs) -> None:
        node = outputs[0].grad_fn
        seq = None
        if node is not None and node._sequence_nr() >= self.call.first_seq + self.offset:
            seq = node._sequence_nr() - self.offset - self.call.first_seq
        op = ReplayedOp(_op_name(func), self.spans.current if self.spans is not None else None,
                        caller_line(), None if node is None else type(node).__name__, seq)
        if seq is not None:
            self.found.by_seq.setdefault(seq, op)
        if not self.find:
            return
        bad_outputs = [t for t in outputs if not _finite(t)]
        if not bad_outputs:  # a line of non-finite values ends here (softmax of a mask)
            return
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        line = None
        for tensor in inputs:
            line = self._line_of(tensor)
            if line is not None:
                break
            if not _finite(tensor):  # a parameter, a buffer, the model's input: taken
                line = (op, self._what(tensor, args))
                break
        if line is None:  # made out of finite inputs
            line = (op, None)
        for tensor in bad_outputs:
            self.lines[id(tensor)] = (tensor, *line)
        if self.first_line is None:
            self.first_line = line

    def _line_of(self, tensor: torch.Tensor) -> tuple[ReplayedOp, str | None] | None:
        """The line ``tensor`` belongs to (where it started, what it took), if it has one."""
        known = self.lines.get(id(tensor))
        return known[1:] if known is not None and known[0] is tensor else None

    def conclude(self, output) -> None:
        """The origin: where the line of the first non-finite tensor the forward returned
        started; with no such tensor (the forward failed, or returned none: the NaN was
        made after it, in the loop's own code), the first line started."""
        if not self.find:
            return
        leaves = [t for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor)]
        line = next((found for found in map(self._line_of, leaves) if found is not None), None)
        if line is None and (output is None or not leaves
                             or not all(_finite(t) for t in leaves)):
            line = self.first_line  # (a returned tensor changed where no op was seen)
        self.lines.clear()
        if line is None:
            return
        op, what = line
        if what is None:
            self.found.made = op
        else:
            self.found.took, self.found.what = op, what

    def _what(self, tensor: torch.Tensor, args) -> str:
        named = self.names.get(id(tensor))
        if named is not None:
            return named
        for index, value in enumerate(self.call.args):
            if value is tensor:
                return f"the model's input args[{index}]"
        for key, value in self.call.kwargs.items():
            if value is tensor:
                return f"the model's input {key}"
        return "a NaN/Inf input"


class _Applied:
    """A custom Function's ``apply``, named as forward events name it."""

    def __init__(self, cls):
        self.__name__ = f"{cls.__name__}.apply"


@contextlib.contextmanager
def _seeing_functions(watcher: _Watcher) -> Iterator[None]:
    """Custom ``autograd.Function`` s run their forward under no_grad and make their node
    after it, where a TorchFunctionMode sees nothing: their ``apply`` is watched too, for
    the replay only."""
    function = torch.autograd.Function
    original = function.__dict__["apply"]

    def apply(cls, *args, **kwargs):
        out = original.__get__(None, cls)(*args, **kwargs)  # a C classmethod, bound
        watcher.function_applied(cls, args, out)
        return out

    function.apply = classmethod(apply)
    try:
        yield
    finally:
        function.apply = original


def _finite(tensor: torch.Tensor) -> bool:
    """Read without making nodes: ``isfinite`` is built of differentiable ops, which would
    take sequence numbers the replayed forward's nodes must keep."""
    if not (tensor.is_floating_point() or tensor.is_complex()) or tensor.numel() == 0:
        return True
    with torch.no_grad():
        return bool(torch.isfinite(tensor.detach()).all())


def _op_name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    return name


def _sharded(model: torch.nn.Module) -> bool:
    """Parameters that are DTensors (FSDP2, tensor parallel): a forward gathers them."""
    return any(type(p).__name__ == "DTensor" or hasattr(p, "_local_tensor")
               for p in model.parameters())


@contextlib.contextmanager
def _put_back(model: torch.nn.Module) -> Iterator[None]:
    """Buffers (BatchNorm's running statistics) and the random number generators as they
    were before the replay."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    cpu = torch.get_rng_state()
    cuda = [torch.cuda.get_rng_state(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_initialized() else []
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        torch.set_rng_state(cpu)
        for index, state in enumerate(cuda):
            torch.cuda.set_rng_state(state, index)


@contextlib.contextmanager
def _as_called(call: ForwardCall) -> Iterator[None]:
    """The random number generators, autocast and grad mode as the call found them."""
    torch.set_rng_state(call.cpu_rng)
    for index, state in enumerate(call.cuda_rng):
        torch.cuda.set_rng_state(state, index)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.set_grad_enabled(call.grad_enabled))
        for device, dtype in call.autocast.items():
            stack.enter_context(torch.autocast(device, dtype=dtype))
        yield


def _no_saved_tensors():
    """Nodes are made (their numbers match the original's) but keep nothing alive."""
    return torch.autograd.graph.saved_tensors_hooks(lambda tensor: None, lambda nothing: None)
