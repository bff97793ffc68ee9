"""Lay a DAG out the way ``git log --graph`` does: one row per node, a few lanes.

Written here rather than taken from a library, on measurements (../shared/STYLE.md):
autograd graphs are deep and narrow (a 48-layer encoder: 3,647 nodes, never more
than 3 wide), and on a 10,000-node residual chain networkx's text drawing grows
12,000+ columns wide, grandalf's Sugiyama layout takes over 100 s and asciidag
breaks on diamonds. Lanes cost O(nodes x lanes).

Rows come in a topological order (every edge points down) that keeps chains
together: Kahn's algorithm with a stack, taking a node's short branches (the
parameters, say) right after it and its long chain last. A lane carries
one pending edge down to the node it waits for; at that node every lane waiting
for it joins, and its children leave in its own lane (the first) or new ones.

Each row is a list of cells, one per lane; a cell is a set of directions
(``UP``, ``DOWN``, ``LEFT``, ``RIGHT``) that :func:`cell_char` turns into a
box-drawing character, or ``NODE`` for the row's node.

:func:`lay_out` is what a screen asks for: modules folded into one row each
where asked (:func:`collapse`), the rows, and where each node ended up. It is
plain Python, so it runs off the UI thread for a graph of 200,000 nodes.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import networkx as nx

from gradviz.runtime.quiet_gc import paused_gc

UP, DOWN, LEFT, RIGHT, NODE = 1, 2, 4, 8, 16

GROUP = "module:"  # key prefix of a folded module's row

_CHARS = {
    0: " ", UP | DOWN: "│", LEFT | RIGHT: "─", UP | LEFT: "╯", UP | RIGHT: "╰",
    DOWN | LEFT: "╮", DOWN | RIGHT: "╭", UP | DOWN | LEFT: "┤", UP | DOWN | RIGHT: "├",
    LEFT | RIGHT | UP: "┴", LEFT | RIGHT | DOWN: "┬", UP | DOWN | LEFT | RIGHT: "┼",
    UP: "╵", DOWN: "╷", LEFT: "╴", RIGHT: "╶",
}


def cell_char(cell: int) -> str:
    return _CHARS[cell & ~NODE]


@dataclass(frozen=True)
class Row:
    node: Hashable
    lane: int
    cells: tuple[int, ...]  # one per lane; the node's own cell has NODE set


class Rows(Sequence[Row]):
    """A layout's rows, kept as three columns; a :class:`Row` is made when one is read.

    A Row object per node cost a third of the layout of a 200,000-node chain, and the
    screen reads only the rows in sight.
    """

    def __init__(self) -> None:
        self.nodes: list[Hashable] = []
        self.lanes: list[int] = []
        self.cells: list[tuple[int, ...]] = []

    def append(self, node: Hashable, lane: int, cells: tuple[int, ...]) -> None:
        self.nodes.append(node)
        self.lanes.append(lane)
        self.cells.append(cells)

    def __len__(self) -> int:
        return len(self.nodes)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self.nodes)))]
        return Row(self.nodes[index], self.lanes[index], self.cells[index])

    def __iter__(self) -> Iterator[Row]:
        return map(Row, self.nodes, self.lanes, self.cells)


@dataclass
class GraphLayout:
    """A graph ready to draw: its rows, and for each node the row that shows it."""

    graph: nx.DiGraph  # the full graph (folded rows stand for several of its nodes)
    rows: Sequence[Row]
    members: dict[Hashable, list[Hashable]]  # folded row's key -> the graph's nodes in it
    row_of: dict[Hashable, int]  # graph node -> row index
    width: int  # columns the widest row may need: lanes and a label
    folded: bool = False  # some rows stand for a module's nodes


def lay_out(graph: nx.DiGraph, depth: int | None = None,
            opened: frozenset[str] = frozenset()) -> GraphLayout:
    """Rows for ``graph``; ``depth`` folds the modules at that depth, but those in ``opened``."""
    # The rows and their dicts are a few objects per node made in one go: a GC pass
    # over a deep graph's heap for each of them cost more than the layout itself.
    with paused_gc():
        return _lay_out(graph, depth, opened)


def _lay_out(graph: nx.DiGraph, depth: int | None, opened: frozenset[str]) -> GraphLayout:
    if depth is None or not any(attrs.get("module") for attrs in graph._node.values()):
        shown, unit_of = graph, None  # no module to fold: collapse() would copy the graph
        # (1 s on a 200,000-node chain; networkx's own node dict, as in layout)
    else:
        shown, unit_of = collapse(graph, depth, opened)
    rows = layout(shown)
    index = dict(zip(rows.nodes, range(len(rows))))
    members: dict[Hashable, list[Hashable]] = {}
    if unit_of is None:
        row_of = index
    else:
        for key, unit in unit_of.items():
            if unit != key:
                members.setdefault(unit, []).append(key)
        row_of = {key: index[unit] for key, unit in unit_of.items()}
    lanes = max(map(len, rows.cells), default=0)
    return GraphLayout(graph, rows, members, row_of,
                       lanes * 2 + 1 + _label_room(graph, shown), folded=bool(members))


def _label_room(graph: nx.DiGraph, shown: nx.DiGraph) -> int:
    """Columns the widest row's label may need: op or name, module, shape, a gradient's norm.

    Deep graphs repeat a few ops, modules and shapes: each distinct triple is measured once.
    """
    widest = 0
    seen = set()
    nodes = graph._node  # networkx's own dict: a NodeView lookup per node costs 3x more
    for key in shown:
        if isinstance(key, str) and key.startswith(GROUP):
            widest = max(widest, len(key) + 30)
            continue
        attrs = nodes[key]
        text = attrs["op"] if attrs["kind"] == "op" else (attrs.get("name") or "leaf")
        triple = (text, attrs.get("module"), attrs.get("shape"))
        if triple not in seen:
            seen.add(triple)
            widest = max(widest, len(text) + len(triple[1] or "")
                         + len(str(triple[2])) + 18)
    return widest


def layout(graph: nx.DiGraph) -> Rows:
    """Rows for every node of the DAG ``graph``; children are ordered by edge ``slot``."""
    succ = graph._succ  # networkx's own adjacency: its views cost 3x more per node
    parents = graph._pred
    waiting = dict(zip(parents, map(len, parents.values())))
    first_waiting = dict(waiting)
    height: dict[Hashable, int] | None = None  # read only where a node has two ready children
    stack = [n for n, count in waiting.items() if count == 0]
    stack.reverse()
    lanes: list[Hashable | None] = []  # lane -> the node its edge is waiting for
    rows = Rows()
    nodes, row_lanes, row_cells = rows.nodes, rows.lanes, rows.cells
    while stack:
        node = stack.pop()
        edges = succ[node]
        if len(edges) == 1 and len(lanes) == 1 and lanes[0] == node:
            # A run of chain links, one lane wide: what the code below does for each,
            # at a fifth of the cost (most of a deep chain's layout).
            while True:
                (child,) = edges
                lanes[0] = child
                nodes.append(node)
                row_lanes.append(0)
                row_cells.append(_LINK)
                left = waiting[child] - 1
                waiting[child] = left
                if left:
                    break
                node, edges = child, succ[child]
                if len(edges) != 1:
                    stack.append(node)
                    break
            continue
        kids = _in_slot_order(edges)
        rows.append(node, *_place(node, kids, lanes))
        ready = []
        for child in kids:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
        # Short branches first (a parameter, the weight transpose an unrolled RNN
        # makes at every step): they end soon and free their lanes. The long chain
        # goes last, so the lanes do not pile up beside it.
        if len(ready) > 1:
            if height is None:
                height = _heights(succ, first_waiting)
            ready.sort(key=height.__getitem__)
            stack.extend(reversed(ready))
        else:
            stack.extend(ready)
    if len(rows) != len(waiting):  # the nodes of a cycle never have all parents placed
        raise ValueError("layout needs a DAG: the graph has a cycle")
    return rows


def _in_slot_order(edges: dict[Hashable, dict]) -> list[Hashable]:
    """A node's children (networkx's adjacency dict of it) in ``slot`` order."""
    if len(edges) <= 1:
        return list(edges)
    return sorted(edges, key=lambda child: edges[child].get("slot", 0))


def _heights(children: dict[Hashable, dict], waiting: dict[Hashable, int]) -> dict[Hashable, int]:
    """Longest path from each node down to a leaf (Kahn's order, then back up it);
    ``children``: networkx's adjacency (each node's dict of children)."""
    order = [n for n, count in waiting.items() if count == 0]
    position = 0
    while position < len(order):
        for child in children[order[position]]:
            waiting[child] -= 1
            if waiting[child] == 0:
                order.append(child)
        position += 1
    if len(order) != len(children):
        raise ValueError("layout needs a DAG: the graph has a cycle")
    height: dict[Hashable, int] = {}
    for node in reversed(order):
        kids = children[node]
        height[node] = 1 + max(height[c] for c in kids) if kids else 0
    return height


_LINK = (NODE,)


def _place(node: Hashable, kids: list[Hashable], lanes: list) -> tuple[int, tuple[int, ...]]:
    """The lane and cells of ``node``'s row; updates ``lanes`` for the edges it sends down."""
    joining = [i for i, waited in enumerate(lanes) if waited == node]
    lane = joining[0] if joining else _free_lane(lanes)
    for i in joining:
        lanes[i] = None
    passing = [i for i, waited in enumerate(lanes) if waited is not None]

    leaving: list[int] = []
    for child in kids:
        if child in lanes:  # a lane already goes to it: join that lane
            leaving.append(lanes.index(child))
            continue
        target = lane if lane >= len(lanes) or lanes[lane] is None else _free_lane(lanes)
        while len(lanes) <= target:
            lanes.append(None)
        lanes[target] = child
        leaving.append(target)

    cells = [0] * max(len(lanes), lane + 1, (joining[-1] + 1) if joining else 0)
    for i in passing:
        cells[i] |= UP | DOWN
    cells[lane] |= NODE
    for i in joining:
        if i != lane:
            _connect(cells, lane, i, UP)
    for i in leaving:
        if i != lane:
            _connect(cells, lane, i, DOWN)
    while lanes and lanes[-1] is None:
        lanes.pop()
    return lane, tuple(cells)


def _connect(cells: list[int], lane: int, other: int, vertical: int) -> None:
    """A horizontal run from the node's lane to ``other``, turning ``vertical`` there."""
    step = 1 if other > lane else -1
    for i in range(lane + step, other, step):
        cells[i] |= LEFT | RIGHT
    cells[other] |= vertical | (LEFT if step == 1 else RIGHT)


def _free_lane(lanes: list) -> int:
    for i, waited in enumerate(lanes):
        if waited is None:
            return i
    return len(lanes)


def collapse(
    graph: nx.DiGraph, depth: int, opened: frozenset[str] = frozenset()
) -> tuple[nx.DiGraph, dict[str, str]]:
    """The graph with each module at ``depth`` (1 = the model's children) as one row,
    except the modules in ``opened``.

    Returns the smaller graph and, for each original node, the row it belongs to.
    A collapse that would make a cycle (a module called twice with other work in
    between) merges the cycle into one row.
    """
    unit_of: dict[str, str] = {}
    for key, attrs in graph.nodes(data=True):
        module = attrs.get("module")
        group = ".".join(module.split(".")[:depth]) if module else ""
        unit_of[key] = key if not module or group in opened else GROUP + group
    quotient = nx.DiGraph()
    quotient.add_nodes_from(dict.fromkeys(unit_of.values()))
    for u, v, data in graph.edges(data=True):
        a, b = unit_of[u], unit_of[v]
        if a != b and not quotient.has_edge(a, b):
            quotient.add_edge(a, b, slot=data.get("slot", 0))
    if nx.is_directed_acyclic_graph(quotient):
        return quotient, unit_of
    merged = nx.condensation(quotient)
    names = {}
    for component, data in merged.nodes(data=True):
        members = sorted(data["members"])
        names[component] = members[0] if len(members) == 1 else GROUP + "+".join(
            m.removeprefix(GROUP) for m in members)
    unit_of = {k: names[merged.graph["mapping"][u]] for k, u in unit_of.items()}
    return nx.relabel_nodes(merged, names), unit_of
