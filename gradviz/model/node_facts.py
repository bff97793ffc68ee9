"""How a graph node's attributes read as words: saved-tensor states and regions.

The walker (:mod:`gradviz.graph.saved`, :mod:`gradviz.graph.regions`) writes these
values into the graph; the inspector, export and the tests read them. One vocabulary,
defined here, without torch.
"""

from __future__ import annotations

from typing import Any

#: ``saved`` of a node whose saved tensors backward has already freed.
FREED = "freed"
#: A saved tensor's ``state``: held by ``torch.utils.checkpoint``, re-run in backward.
RECOMPUTED = "recomputed in backward"
#: Changed in place after it was saved: backward through the node raises.
MODIFIED_IN_PLACE = "modified in place"
#: Packed by another saved-tensors hook (``save_on_cpu``, a user's own).
HOOKED = "held by a saved-tensors hook"

#: ``region["kind"]`` of a ``torch.compile``d region and of a reentrant checkpoint.
COMPILED = "compiled"
CHECKPOINT = "checkpoint"
REGION_TITLES = {COMPILED: "compiled region", CHECKPOINT: "checkpointed region"}


def meta_text(meta: dict[str, Any] | list | None) -> str:
    """A saved tensor (or tensor list) as people read it: "(2, 3) float32",
    "(2, 3) float32 (modified in place)", "(held by a saved-tensors hook)"."""
    parts = []
    for one in meta if isinstance(meta, list) else [meta]:
        if not one:
            continue
        text = "" if one.get("shape") is None else f"{tuple(one['shape'])} {one['dtype']}"
        if one.get("state"):
            text = f"{text} ({one['state']})".lstrip()
        parts.append(text)
    return ", ".join(parts)


def saved_states(saved: Any) -> set[str]:
    """The states (:data:`MODIFIED_IN_PLACE`, :data:`RECOMPUTED`, ...) of a node's saved
    tensors; empty for none, or once they are freed."""
    if not isinstance(saved, dict):
        return set()
    states = set()
    for meta in saved.values():
        for one in meta if isinstance(meta, list) else [meta]:
            if one and one.get("state"):
                states.add(one["state"])
    return states


def region_summary(region: dict[str, Any]) -> str:
    """One line: "compiled region: 4 parameters inside"."""
    count = len(region.get("params", ()))
    title = REGION_TITLES.get(region.get("kind"), "region")
    return f"{title}: {count} parameter{'' if count == 1 else 's'} inside"
