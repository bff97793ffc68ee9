"""Finding nodes of a graph by op, module, parameter name or key (the app's ``/``).

Best first: ``/ b`` means the parameter ``b`` before every ``SubBackward0`` that has a
b in it. A node matches exactly (its name, op, module or key is the query), as a
whole word (a dotted part of a module path, ``conv1`` in ``layer1.0.conv1``), or as
any part of one of them; ties keep the order given (the rows on screen).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

import networkx as nx


class Match(enum.IntEnum):
    """How well a node matches a query; lower is better."""

    EXACT = 0
    WORD = 1
    PART = 2


def match(attrs: Mapping, key: str, query: str) -> Match | None:
    """How the node ``key`` (with its ``attrs``) matches a lower-case ``query``, if at all."""
    fields = [attrs.get("name") or "", attrs["op"], attrs.get("module") or "", key]
    fields = [field.lower() for field in fields if field]
    if query in fields:
        return Match.EXACT
    word = re.compile(rf"(?<![a-z0-9]){re.escape(query)}(?![a-z0-9])")
    if any(word.search(field) for field in fields):
        return Match.WORD
    if any(query in field for field in fields):
        return Match.PART
    return None


def find_nodes(graph: nx.DiGraph, query: str, order: Mapping[str, int] | None = None
               ) -> list[str]:
    """The nodes matching ``query`` (case-insensitive), best first; ties in ``order``
    (say, the row each node is drawn on), else in the graph's order. None for an empty
    query."""
    query = query.strip().lower()
    if not query:
        return []
    found = []
    for position, (key, attrs) in enumerate(graph.nodes(data=True)):
        how = match(attrs, key, query)
        if how is not None:
            found.append((how, order.get(key, position) if order else position, key))
    found.sort()
    return [key for _, _, key in found]
