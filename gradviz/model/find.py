"""Finding nodes of a graph by op, module, parameter name or key (the app's ``/``)."""

from __future__ import annotations

import networkx as nx


def find_nodes(graph: nx.DiGraph, query: str) -> list[str]:
    """The nodes whose op, module, name or key contains ``query`` (case-insensitive), in
    the graph's order; none for an empty query."""
    query = query.strip().lower()
    if not query:
        return []
    return [key for key, attrs in graph.nodes(data=True)
            if query in attrs["op"].lower() or query in (attrs.get("module") or "").lower()
            or query in (attrs.get("name") or "").lower() or query in key.lower()]
