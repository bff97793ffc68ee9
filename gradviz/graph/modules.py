"""Which module's forward made each autograd node: one attribution, used by
:func:`gradviz.record`, :func:`gradviz.watch` and forward recording.

Autograd numbers the nodes a thread makes in order (``Node._sequence_nr()``), and
torch tells the next number without making a node (:func:`next_sequence_nr`). So a
module call is a span ``[first, end)`` of numbers, read when its forward starts and
ends (two Python hooks per call; no node is walked), and a node belongs to the
innermost call whose span holds it: ``torch.flatten`` in ``ResNet.forward`` between
``avgpool`` and ``fc`` belongs to the model itself (``""``), a node made outside every
module call to none (None). Spans are kept as numbers, so a recording holds no tensor
and no graph alive.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch._guards import TracingContext

#: The sequence number of nodes made outside a forward (``AccumulateGrad``): UINT64_MAX,
#: which Python reads as 2**64 - 1; anything from here up is "none".
NO_SEQUENCE = 1 << 63

#: The number the next node made on this thread will get (no node is made to read it).
next_sequence_nr: Callable[[], int] = torch._C._autograd._get_sequence_nr


def sequence_nr(node) -> int | None:
    """A node's sequence number, None for one made outside a forward (a leaf's)."""
    seq = node._sequence_nr()
    return None if seq >= NO_SEQUENCE else seq


def compiling() -> bool:
    """Inside torch.compile's tracing (of the user's code, or dynamo's own work on fake
    tensors): module calls there are not calls at run time, and make no nodes."""
    return torch.compiler.is_compiling() or TracingContext.try_get() is not None


class ModuleSpans:
    """The module calls of one model on one thread, as spans of sequence numbers.

    ``with spans.active():`` hooks every module of ``model`` (the hooks are removed when
    the block ends, even on error); ``spans.current`` is the innermost call running now;
    ``spans.modules`` maps a node's sequence number to its module path. ``thread``: only
    calls on that thread count (default: the thread that enters ``active``).
    ``on_enter(args)`` / ``on_exit(output)`` run in the hooks before a span opens and
    after it closes (forward recording notes the nodes made between ops there).
    """

    #: Spans kept at most (a watch clears them every iteration).
    MAX_SPANS = 1_000_000

    def __init__(self, model: torch.nn.Module, *, on_enter: Callable | None = None,
                 on_exit: Callable | None = None):
        self.model = model
        self.spans: list[tuple[int, int, str]] = []  # (first, end) half-open, path
        self._open: list[tuple[torch.nn.Module, int, str]] = []
        self._on_enter = on_enter
        self._on_exit = on_exit
        self._thread: int | None = None
        self._handles: list = []
        self.modules = SpanMap(self)

    @property
    def current(self) -> str | None:
        """The innermost module call running now, None outside the model."""
        return self._open[-1][2] if self._open else None

    @contextlib.contextmanager
    def active(self) -> Iterator[ModuleSpans]:
        self.install()
        try:
            yield self
        finally:
            self.remove()

    def install(self) -> None:
        self._thread = threading.get_ident()
        for path, module in self.model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook_for(path)))
            self._handles.append(module.register_forward_hook(self._post_hook,
                                                              always_call=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._open.clear()

    def clear(self) -> None:
        """Forget the spans so far (a new iteration)."""
        self.spans.clear()
        self.modules = SpanMap(self)

    def of(self, sequence_numbers: Iterable[int]) -> dict[int, str]:
        """Sequence number -> module path, for the numbers some span holds."""
        found = {}
        for seq in sequence_numbers:
            path = self.modules.get(seq)
            if path is not None:
                found[seq] = path
        return found

    def of_graph(self, roots) -> dict[int, str]:
        """The modules of every node behind ``roots`` (a graph kept for a NaN's origin)."""
        from gradviz.graph.walk import discover, root_nodes

        return self.of(fn._sequence_nr() for fn in discover(root_nodes(roots)).nodes)

    # ---------------------------------------------------------------- hooks
    def _pre_hook_for(self, path: str):
        def pre_hook(module, args) -> None:
            if compiling() or threading.get_ident() != self._thread:
                return
            if self._on_enter is not None:
                self._on_enter(args)
            self._open.append((module, next_sequence_nr(), path))

        return pre_hook

    def _post_hook(self, module, args, output) -> None:
        if compiling() or threading.get_ident() != self._thread:
            return
        if self._on_exit is not None:  # still inside the call: what it notes is the call's
            self._on_exit(output)
        while self._open:  # an inner forward that raised was closed by always_call already
            started, first, path = self._open.pop()
            if started is module:
                end = next_sequence_nr()
                if end > first and len(self.spans) < self.MAX_SPANS:
                    self.spans.append((first, end, path))
                    self.modules._stale = True
                break


class SpanMap(Mapping[int, str]):
    """Sequence number -> module path, read from :class:`ModuleSpans` by bisection (no
    entry per node is stored); iterating lists every number some closed span holds."""

    def __init__(self, spans: ModuleSpans):
        self._owner = spans
        self._stale = True
        self._sorted: list[tuple[int, int, str]] = []
        self._starts: list[int] = []

    def _index(self) -> None:
        if self._stale:
            # By start, and of two spans that start together the inner one last: the
            # narrower, or of two equal ones (a wrapper around a module, DDP's, that makes
            # no node of its own) the one that closed first.
            spans = self._owner.spans
            order = sorted(range(len(spans)), key=lambda i: (spans[i][0], -spans[i][1], -i))
            self._sorted = [spans[i] for i in order]
            self._starts = [span[0] for span in self._sorted]
            self._stale = False

    def __getitem__(self, seq: int) -> str:
        self._index()
        if 0 <= seq < NO_SEQUENCE:
            # Spans nest or are disjoint: among those starting at or before seq, the
            # latest-starting one that still holds it is the innermost.
            position = bisect.bisect_right(self._starts, seq) - 1
            while position >= 0:
                first, end, path = self._sorted[position]
                if seq < end:
                    return path
                position -= 1
            # A call still running (a forward paused inside it) holds what it made so far;
            # any closed span holding seq started inside it, so it was checked first.
            for _, first, path in reversed(self._owner._open):
                if first <= seq:
                    return path
        raise KeyError(seq)

    def __iter__(self) -> Iterator[int]:
        self._index()
        seen = set()
        for first, end, _ in self._sorted:
            for seq in range(first, end):
                if seq not in seen:
                    seen.add(seq)
                    yield seq

    def __len__(self) -> int:
        return sum(1 for _ in self)
