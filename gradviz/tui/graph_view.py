"""GraphView: the autograd graph, one row per node, drawn with lanes (see core.layout).

A Line API widget (``ScrollView.render_line``): only the visible rows are built,
so a 6,000-node LSTM scrolls as fast as the tutorial's six nodes. Modules can be
collapsed into one row each; the node the engine waits at is highlighted and
followed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from gradviz.core.layout import LEFT, NODE, RIGHT, Row, cell_char, layout

GROUP = "module:"  # key prefix of a collapsed module's row

DONE, READY, PENDING, WAITING, BROKEN = "done", "ready", "pending", "waiting", "broken"
_GLYPH = {DONE: ("●", "green"), READY: ("◉", "yellow"), PENDING: ("▶", "bold reverse magenta"),
          WAITING: ("○", "grey50"), BROKEN: ("✖", "bold red")}


@dataclass
class GraphState:
    """What the engine has done so far, as the graph view shows it."""

    done: set[str] = field(default_factory=set)
    ready: set[str] = field(default_factory=set)
    pending: str | None = None
    broken: str | None = None  # where a NaN started, or where backward raised
    norms: dict[str, float] = field(default_factory=dict)  # |grad sent| per run node

    def of(self, key: str) -> str:
        if key == self.broken:
            return BROKEN
        if key == self.pending:
            return PENDING
        if key in self.done:
            return DONE
        return READY if key in self.ready else WAITING


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


class GraphView(ScrollView, can_focus=True):
    """The graph, scrolled to follow the engine; up/down/enter move and select."""

    BINDINGS = [
        Binding("up,k", "cursor(-1)", "up", show=False),
        Binding("down,j", "cursor(1)", "down", show=False),
        Binding("pageup", "cursor(-10)", "page up", show=False),
        Binding("pagedown", "cursor(10)", "page down", show=False),
        Binding("enter", "select", "inspect / expand", show=False),
    ]

    class NodeSelected(Message):
        """The user moved the cursor to a node (``key``) or a collapsed module row."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    class GroupOpened(Message):
        def __init__(self, module: str) -> None:
            super().__init__()
            self.module = module

    cursor = reactive(0)
    follow = reactive(True)  # keep the cursor on the node the engine waits at

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.graph = nx.DiGraph()
        self.state = GraphState()
        self.rows: list[Row] = []
        self.members: dict[str, list[str]] = {}  # row key -> original nodes in it
        self.row_of: dict[str, int] = {}  # original node -> row index
        self._strips: dict[int, Strip] = {}

    # ---------------------------------------------------------------- data in
    def show_graph(self, graph: nx.DiGraph, depth: int | None = None,
                   opened: frozenset[str] = frozenset()) -> None:
        """Lay out ``graph``; ``depth`` collapses modules at that depth but ``opened``."""
        self.graph = graph
        if depth is None:
            shown, unit_of = graph, {key: key for key in graph}
        else:
            shown, unit_of = collapse(graph, depth, opened)
        self.rows = layout(shown)
        self.members = {}
        for key, unit in unit_of.items():
            self.members.setdefault(unit, []).append(key)
        index = {row.node: i for i, row in enumerate(self.rows)}
        self.row_of = {key: index[unit] for key, unit in unit_of.items()}
        lanes = max((len(r.cells) for r in self.rows), default=0)
        label = max((self._label_width(r.node) for r in self.rows), default=0)
        self.virtual_size = Size(lanes * 2 + 1 + label, len(self.rows))
        self.cursor = min(self.cursor, max(len(self.rows) - 1, 0))
        self._strips.clear()
        self.refresh()

    def show_state(self, state: GraphState, changed: set[str] | None = None) -> None:
        """Show ``state``; ``changed`` (node keys) limits the rows redrawn, None redraws all."""
        self.state = state
        if changed is None:
            self._strips.clear()
        else:
            for key in changed:
                self._strips.pop(self.row_of.get(key, -1), None)
        if self.follow and state.pending in self.row_of:
            self._move_to(self.row_of[state.pending], announce=False)
        self.refresh()

    def row_key(self, index: int) -> str | None:
        return self.rows[index].node if 0 <= index < len(self.rows) else None

    def select_node(self, key: str) -> None:
        """Put the cursor on ``key``'s row (found by the user, say) and stop following."""
        if key in self.row_of:
            self.follow = False
            self._move_to(self.row_of[key], announce=True)

    # ---------------------------------------------------------------- actions
    def action_cursor(self, delta: int) -> None:
        if self.rows:
            self.follow = False
            self._move_to(max(0, min(len(self.rows) - 1, self.cursor + delta)), announce=True)

    def action_select(self) -> None:
        key = self.row_key(self.cursor)
        if key is not None and key.startswith(GROUP):
            self.post_message(self.GroupOpened(key.removeprefix(GROUP)))
        elif key is not None:
            self.post_message(self.NodeSelected(key))

    def _move_to(self, row: int, *, announce: bool) -> None:
        old = self.cursor
        self.cursor = row
        self._strips.pop(old, None)
        self._strips.pop(row, None)
        self.scroll_to_region_row(row)
        if announce and self.row_key(row) is not None:
            self.post_message(self.NodeSelected(self.row_key(row)))
        self.refresh()

    def scroll_to_region_row(self, row: int) -> None:
        height = self.scrollable_content_region.height or 1
        top = self.scroll_offset.y
        if row < top or row >= top + height:
            self.scroll_to(y=max(0, row - height // 3), animate=False)

    # ---------------------------------------------------------------- drawing
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        if index >= len(self.rows):
            return Strip.blank(self.size.width, self.rich_style)
        strip = self._strips.get(index)
        if strip is None:
            text = self._row_text(index)
            if index == self.cursor:
                text.stylize(Style(bgcolor="grey23"))
            segments = list(text.render(self.app.console))
            strip = Strip(Segment.adjust_line_length(segments, self.virtual_size.width))
            self._strips[index] = strip
        return strip.crop(scroll_x, scroll_x + self.size.width)

    def _row_text(self, index: int) -> Text:
        row = self.rows[index]
        key = row.node
        text = Text(no_wrap=True, overflow="ellipsis")
        state = self._row_state(key)
        glyph, style = _GLYPH[state]
        for lane, cell in enumerate(row.cells):
            if cell & NODE:
                text.append(glyph, style)
            else:
                text.append(cell_char(cell), "blue")
            nxt = row.cells[lane + 1] if lane + 1 < len(row.cells) else 0
            text.append("─" if (cell & RIGHT or nxt & LEFT) else " ", "blue")
        text.append(" ")
        text.append_text(self._label(key, state))
        return text

    def _label_width(self, key: str) -> int:
        """Room the label may need, its |grad| included (for the horizontal scroll)."""
        if key.startswith(GROUP):
            return len(key) + 30
        attrs = self.graph.nodes[key]
        text = attrs["op"] if attrs["kind"] == "op" else (attrs.get("name") or "leaf")
        return len(text) + len(attrs.get("module") or "") + len(str(attrs.get("shape"))) + 18

    def _row_state(self, key: str) -> str:
        if not key.startswith(GROUP):
            return self.state.of(key)
        states = {self.state.of(k) for k in self.members.get(key, ())}
        for state in (BROKEN, PENDING, READY):
            if state in states:
                return state
        return DONE if states == {DONE} else WAITING

    def _label(self, key: str, state: str) -> Text:
        if key.startswith(GROUP):
            members = self.members.get(key, [])
            run = sum(1 for k in members if k in self.state.done)
            return Text.assemble(("▸ ", "bold"), (key.removeprefix(GROUP), "bold cyan"),
                                 (f"  {_count(len(members), 'node')}, {run} run", "grey62"))
        attrs = self.graph.nodes[key]
        label = Text()
        if attrs["kind"] == "op":
            label.append(attrs["op"], "bold" if state == PENDING else "")
            if attrs.get("module"):
                label.append(f"  {attrs['module']}", "cyan")
        else:
            label.append(attrs.get("name") or "leaf", "bold blue")
            label.append("  " + ("parameter" if attrs["kind"] == "param" else "leaf"), "grey50")
        if attrs.get("shape") is not None:
            label.append(f"  {tuple(attrs['shape'])}", "grey62")
        norm = self.state.norms.get(key)
        if norm is not None:
            label.append(f"  |g|={norm:.3g}", "red" if state == BROKEN else "green")
        return label


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
