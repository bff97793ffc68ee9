"""Record which module's forward made each autograd node.

>>> with gradviz.record(model) as rec:          # doctest: +SKIP
...     loss = (model(x) - labels).sum()
>>> graph = rec.graph(loss)                    # doctest: +SKIP
>>> graph.nodes["AddmmBackward0#0"]["module"]  # doctest: +SKIP
'fc'

How: :class:`~gradviz.graph.modules.ModuleSpans` notes the span of autograd sequence
numbers each module call made (a forward pre-hook and a forward hook per module); a
node belongs to the innermost call whose span holds it, so ``torch.flatten`` in
``ResNet.forward`` between ``avgpool`` and ``fc`` belongs to the model itself (``""``).
Nodes are remembered by sequence number, so a recording holds no tensor and no graph
alive. Every hook is removed when the ``with`` block ends, even on error.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Mapping

import networkx as nx
import torch

from gradviz.graph.modules import ModuleSpans
from gradviz.graph.walk import Roots, build_graph


class Recording:
    """What :func:`record` saw: ``modules`` maps a node's sequence number to its module path."""

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.spans = ModuleSpans(model)
        self.modules: Mapping[int, str] = self.spans.modules

    def graph(
        self, roots: Roots, *, params: Mapping[str, torch.Tensor] | None = None
    ) -> nx.DiGraph:
        """:func:`gradviz.build_graph` of ``roots`` with ``module`` filled from this recording."""
        return build_graph(roots, model=self.model, params=params, modules=self.modules)


# The latest recording's modules per model, so gradviz.show(loss, model=model) can
# name modules without being handed the recording. Holds no model alive.
_latest_modules: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def recorded_modules(model: torch.nn.Module) -> Mapping[int, str]:
    """Node sequence number -> module path from the last ``record(model)``, or {}."""
    return _latest_modules.get(model, {})


@contextlib.contextmanager
def record(model: torch.nn.Module) -> Iterator[Recording]:
    """Context manager around a forward pass: remembers the module that made each node."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"record() needs a torch.nn.Module, got {type(model).__name__}")
    recording = Recording(model)
    try:
        with recording.spans.active():
            yield recording
    finally:
        _latest_modules[model] = recording.modules
