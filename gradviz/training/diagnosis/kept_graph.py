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
- :class:`~gradviz.graph.modules.ModuleSpans` (the one attribution of modules) names
  the nodes of a kept graph by module, as :func:`gradviz.record` does.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import torch


class _Box:
    __slots__ = ("tensor",)
    #: The walker (:mod:`gradviz.graph.saved`) describes the tensor in a box like this as
    #: saved, not as "held by a saved-tensors hook": the hook is gradviz's, not the user's.
    holds_saved_tensor = True

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
    def freeze(boxes: Iterable[_Box], params: Iterable[torch.Tensor]) -> None:
        """Copy the saved tensors that training goes on to change in place (the
        parameters, which ``optimizer.step()`` updates, and their views, such as the
        ``weight.t()`` a linear layer saves), so that the graph can be stepped later and
        still give this iteration's gradients: a saved tensor unpacked through a hook is
        not checked against its version."""
        storages = {p.untyped_storage().data_ptr() for p in params}
        for box in boxes:
            tensor = box.tensor
            if tensor is not None and tensor.untyped_storage().data_ptr() in storages:
                box.tensor = tensor.detach().clone()

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


#: Nodes looked at, at most, for a compiled region behind a loss.
_REGION_SEARCH = 20_000


def has_compiled_region(roots) -> bool:
    """Whether a ``torch.compile``d region's node is behind ``roots``: its backward may
    have been compiled with donated buffers, and then runs only without retain_graph.
    Looked for only once torch.compile has compiled something in this process."""
    dynamo = sys.modules.get("torch._dynamo.utils")
    if dynamo is None or not dynamo.counters["stats"].get("unique_graphs"):
        return False
    stack = [r.grad_fn for r in roots if isinstance(r, torch.Tensor) and r.grad_fn is not None]
    seen = set()
    while stack and len(seen) < _REGION_SEARCH:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if type(node).__name__.startswith("CompiledFunctionBackward"):
            return True
        stack.extend(child for child, _ in node.next_functions if child is not None)
    return False
