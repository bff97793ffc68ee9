"""Record which module's forward made each autograd node.

>>> with gradviz.record(model) as rec:          # doctest: +SKIP
...     loss = (model(x) - labels).sum()
>>> graph = rec.graph(loss)                    # doctest: +SKIP
>>> graph.nodes["AddmmBackward0#0"]["module"]  # doctest: +SKIP
'fc'

How: a forward pre-hook notes the autograd sequence number in force when a module's
forward starts (by making one throwaway node: torch has no public read of the
counter), and a forward hook walks back from the module's outputs over the nodes
numbered after it. Forward hooks fire innermost first, and a node keeps the first
module that claims it, so the innermost module wins; a walk passes through claimed
nodes, so ``torch.flatten`` in ``ResNet.forward`` behind ``fc``'s input still goes
to ``""``. Nodes are remembered by sequence number, so a recording holds no tensor
and no graph alive. Every hook is removed when the ``with`` block ends, even on error.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping, Sequence

import networkx as nx
import torch
from torch.utils import _pytree as pytree

from gradviz.graph.walk import Roots, build_graph


class Recording:
    """What :func:`record` saw: node sequence number -> module path."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.modules: dict[int, str] = {}
        self._starts: list[tuple[torch.nn.Module, int]] = []
        self._probe = torch.zeros((), requires_grad=True)

    def graph(
        self, roots: Roots, *, params: Mapping[str, torch.Tensor] | None = None
    ) -> nx.DiGraph:
        """:func:`gradviz.build_graph` of ``roots`` with ``module`` filled from this recording."""
        return build_graph(roots, model=self.model, params=params, modules=self.modules)

    def _current_sequence_nr(self) -> int:
        with torch.enable_grad():
            return (self._probe * 1).grad_fn._sequence_nr()

    def _pre_hook(self, module, args) -> None:
        self._starts.append((module, self._current_sequence_nr()))

    def _hook_for(self, path: str):
        def hook(module, args, output) -> None:
            # Pop up to this module's own start: an inner forward that raised (and was
            # caught by its caller) never ran its hook.
            while self._starts:
                started, start = self._starts.pop()
                if started is module:
                    self._claim(path, start, pytree.tree_leaves(output))
                    return

        return hook

    def _claim(self, path: str, start: int, outputs: Sequence[object]) -> None:
        """Give ``path`` every unclaimed node made after ``start`` behind ``outputs``."""
        stack = [
            t.grad_fn for t in outputs if isinstance(t, torch.Tensor) and t.grad_fn is not None
        ]
        seen = set()
        while stack:
            fn = stack.pop()
            if fn in seen:
                continue
            seen.add(fn)
            seq = fn._sequence_nr()
            if seq <= start or seq >= 1 << 63:  # made before this call, or a leaf
                continue
            self.modules.setdefault(seq, path)
            stack.extend(child for child, _ in fn.next_functions if child is not None)


# The latest recording's modules per model, so gradviz.show(loss, model=model) can
# name modules without being handed the recording. Holds no model alive.
_latest_modules: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def recorded_modules(model: torch.nn.Module) -> dict[int, str]:
    """Node sequence number -> module path from the last ``record(model)``, or {}."""
    return _latest_modules.get(model, {})


@contextlib.contextmanager
def record(model: torch.nn.Module) -> Iterator[Recording]:
    """Context manager around a forward pass: remembers the module that made each node."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"record() needs a torch.nn.Module, got {type(model).__name__}")
    recording = Recording(model)
    handles = []
    try:
        for path, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(recording._pre_hook))
            handles.append(module.register_forward_hook(recording._hook_for(path)))
        yield recording
    finally:
        for handle in handles:
            handle.remove()
        _latest_modules[model] = recording.modules
