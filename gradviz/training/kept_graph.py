"""Keep a training iteration's autograd graph until its gradients have been checked.

To name where a NaN started *in the backward that made it*, that backward's graph
must still exist once its gradients are seen to be bad, so it can be stepped again.
``retain_graph=True`` alone would keep every activation alive until the user drops
the loss (in the next iteration's forward: twice the activation memory). Instead:

- :class:`SavedTensorKeeper` packs every saved tensor into a small box
  (``torch.autograd.graph.saved_tensors_hooks``) and notes the boxes a watched
  backward unpacks; the watch runs that backward with ``retain_graph=True`` and, once
  the gradients are checked, empties those boxes: the activations are freed at the
  check, a few milliseconds after backward, not an iteration later;
- :class:`ForwardSpans` notes, for each module call, the autograd sequence numbers
  made during its forward (two Python hooks per call; no node is walked), so the
  nodes of a kept graph can be named by module as :func:`gradviz.record` does.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import torch

_NO_SEQUENCE = 1 << 63
_peek_sequence_nr = torch._C._autograd._get_sequence_nr  # the next node's number (this thread)


class _Box:
    __slots__ = ("tensor",)

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensorKeeper:
    """Saved-tensor hooks that let a watched backward's activations be freed on demand."""

    def __init__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(_Box, self._unpack)
        self._noting: list[_Box] | None = None

    def install(self) -> None:
        self._hooks.__enter__()

    def remove(self) -> None:
        self._hooks.__exit__(None, None, None)

    def start_noting(self) -> list[_Box]:
        """From now on, note each box a backward unpacks; the list they go to."""
        self._noting = []
        return self._noting

    def stop_noting(self) -> None:
        self._noting = None

    @staticmethod
    def release(boxes: Iterable[_Box]) -> None:
        """Free the tensors in ``boxes`` (the graph they belong to can no longer run)."""
        for box in boxes:
            box.tensor = None

    def _unpack(self, box: _Box) -> torch.Tensor:
        tensor = box.tensor
        if tensor is None:
            raise RuntimeError(
                "Trying to backward through the graph a second time: gradviz.watch freed its "
                "saved tensors after the first backward. Pass retain_graph=True to the first "
                "backward() to keep them.")
        noting = self._noting
        if noting is not None:
            noting.append(box)
        return tensor


class ForwardSpans:
    """Module path of the forward that made each autograd node, for the current iteration.

    A node belongs to the innermost module call whose span of sequence numbers holds
    it. Spans are kept until :meth:`clear` (the watch clears them every iteration);
    calls that made no node (``torch.no_grad()`` evaluation) leave nothing.
    """

    MAX_SPANS = 100_000

    def __init__(self, model: torch.nn.Module):
        self.spans: list[tuple[int, int, str]] = []  # (first, end) half-open, path
        self._open: list[tuple[torch.nn.Module, int]] = []
        self._handles = []
        for path, module in model.named_modules():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook))
            self._handles.append(module.register_forward_hook(self._hook_for(path),
                                                              always_call=True))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        self.spans.clear()

    def modules(self, sequence_numbers: Iterable[int]) -> dict[int, str]:
        """Sequence number -> module path, for the numbers some span holds."""
        # By start, and the narrower of two spans that start together last (it is inside).
        spans = sorted(self.spans, key=lambda span: (span[0], -span[1]))
        starts = [span[0] for span in spans]
        found = {}
        for seq in sequence_numbers:
            if seq < 0 or seq >= _NO_SEQUENCE:
                continue
            # Spans nest or are disjoint: among those starting at or before seq, the
            # latest-starting one that still holds it is the innermost.
            position = bisect.bisect_right(starts, seq) - 1
            while position >= 0:
                first, end, path = spans[position]
                if seq < end:
                    found[seq] = path
                    break
                position -= 1
        return found

    def modules_of_graph(self, roots) -> dict[int, str]:
        from gradviz.graph.walk import discover, root_nodes

        walk = discover(root_nodes(roots))
        return self.modules(fn._sequence_nr() for fn in walk.nodes)

    def _pre_hook(self, module, args) -> None:
        self._open.append((module, _peek_sequence_nr()))

    def _hook_for(self, path: str):
        def hook(module, args, output) -> None:
            while self._open:  # an inner forward that raised never closed its span
                started, first = self._open.pop()
                if started is module:
                    end = _peek_sequence_nr()
                    if end > first and len(self.spans) < self.MAX_SPANS:
                        self.spans.append((first, end, path))
                    return

        return hook
