"""GraphView: the autograd graph, one row per node, drawn with lanes (see model.layout).

A Line API widget (``ScrollView.render_line``): only the visible rows are built,
so a 6,000-node LSTM scrolls as fast as the tutorial's six nodes. Modules can be
collapsed into one row each; the node the engine waits at is highlighted and
followed.
"""

from __future__ import annotations

import textwrap

import networkx as nx
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.strip import Strip

from gradviz.model.layout import GROUP, LEFT, NODE, RIGHT, GraphLayout, Row, cell_char
from gradviz.model.progress import BackwardProgress, NodeState, group_progress

#: Each node state's glyph and style in the graph (the help screen's legend says them).
GLYPHS = {NodeState.DONE: ("●", "green"), NodeState.READY: ("◉", "yellow"),
          NodeState.PENDING: ("▶", "bold reverse magenta"), NodeState.WAITING: ("○", "grey50"),
          NodeState.BROKEN: ("✖", "bold red"), NodeState.NEW: ("✚", "bold magenta")}


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

    class Scrolled(Message):
        """Other rows came into sight."""

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if round(old_value) != round(new_value):
            self.post_message(self.Scrolled())

    def visible_keys(self) -> list[str]:
        top = self.scroll_offset.y
        bottom = min(top + (self.scrollable_content_region.height or 1), len(self.rows))
        return [self.rows[index].node for index in range(top, bottom)]

    cursor = var(0)  # drawn row by row (see _move_to): no repaint of the whole view
    follow = var(True)  # keep the cursor on the node the engine waits at

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.graph = nx.DiGraph()
        self.progress = BackwardProgress()  # what ran on it: read as rows are drawn
        self.rows: list[Row] = []
        self.members: dict[str, list[str]] = {}  # row key -> original nodes in it
        self.row_of: dict[str, int] = {}  # original node -> row index
        self._strips: dict[int, tuple[Strip, int]] = {}  # row -> (strip, cells used)
        self.placeholder = ""  # shown when the graph has no node

    # ---------------------------------------------------------------- data in
    def show_layout(self, laid_out: GraphLayout) -> None:
        """Show a graph laid out by :func:`gradviz.model.layout.lay_out` (off the UI thread)."""
        self.graph = laid_out.graph
        self.rows = laid_out.rows
        self.members = laid_out.members
        self.row_of = laid_out.row_of
        self.virtual_size = Size(laid_out.width, len(self.rows))
        self.cursor = min(self.cursor, max(len(self.rows) - 1, 0))
        self._strips.clear()
        self.refresh()

    def show_progress(self, progress: BackwardProgress,
                      changed: set[str] | frozenset[str] | None = None) -> None:
        """Show ``progress``; ``changed`` (node keys) limits the rows redrawn, None redraws
        all."""
        self.progress = progress
        if changed is None:
            self._strips.clear()
            self.refresh()
        else:  # only the rows that changed are drawn again: a full redraw costs a frame
            top = self.scroll_offset.y
            bottom = top + (self.scrollable_content_region.height or 1)
            row_of, strips = self.row_of, self._strips
            for key in changed:
                row = row_of.get(key)
                if row is not None:
                    strips.pop(row, None)
                    if top <= row < bottom:  # rows out of sight are drawn when scrolled to
                        self.refresh_line(row)
        if self.follow and progress.pending in self.row_of:
            self._move_to(self.row_of[progress.pending], announce=False)

    def row_key(self, index: int) -> str | None:
        return self.rows[index].node if 0 <= index < len(self.rows) else None

    def mark_node(self, key: str) -> None:
        """Put the cursor on ``key``'s row without asking to inspect it (the app shows
        something else about it, such as the forward operation that made it)."""
        if key in self.row_of:
            self._move_to(self.row_of[key], announce=False)

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
        if not self.scroll_to_region_row(row):
            self.refresh_line(old)
            self.refresh_line(row)
        if announce and self.row_key(row) is not None:
            self.post_message(self.NodeSelected(self.row_key(row)))

    def scroll_to_region_row(self, row: int) -> bool:
        """Scroll so that ``row`` shows (a third of the way down); whether it scrolled."""
        height = self.scrollable_content_region.height or 1
        top = self.scroll_offset.y
        if row < top or row >= top + height:
            self.scroll_to(y=max(0, row - height // 3), animate=False)
            self.refresh()
            return True
        return False

    # ---------------------------------------------------------------- drawing
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        if not self.rows and self.placeholder:
            lines = textwrap.wrap(self.placeholder, max(self.size.width - 1, 10))
            line = lines[y] if y < len(lines) else ""
            return Strip([Segment(line.ljust(self.size.width),
                                  self.rich_style + Style(color="grey50"))])
        if index >= len(self.rows):
            return Strip.blank(self.size.width, self.rich_style)
        cached = self._strips.get(index)
        if cached is None:
            text = self._row_text(index)
            if index == self.cursor:
                text.stylize(Style(bgcolor="grey23"))
            segments = list(text.render(self.app.console))
            width = max(self.virtual_size.width, text.cell_len)
            cached = (Strip(Segment.adjust_line_length(segments, width)), text.cell_len)
            self._strips[index] = cached
        strip, used = cached
        right = scroll_x + self.scrollable_content_region.width
        if used <= right:
            return strip.crop(scroll_x, right)
        # Cut at the panel's edge: say so, rather than show "|g out|=0" for 0.0007.
        style = Style(bgcolor="grey23") if index == self.cursor else Style()
        return Strip.join([strip.crop(scroll_x, right - 1),
                           Strip([Segment("…", style + Style(color="grey50"))])])

    def _row_text(self, index: int) -> Text:
        row = self.rows[index]
        key = row.node
        text = Text(no_wrap=True, overflow="ellipsis")
        state = self._row_state(key)
        glyph, style = GLYPHS[state]
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

    def _row_state(self, key: str) -> NodeState:
        if not key.startswith(GROUP):
            return self.progress.state_of(key)
        return group_progress(self.progress, self.members.get(key, ())).state

    def _label(self, key: str, state: NodeState) -> Text:
        if key.startswith(GROUP):
            group = group_progress(self.progress, self.members.get(key, ()))
            return Text.assemble(("▸ ", "bold"), (key.removeprefix(GROUP), "bold cyan"),
                                 (f"  {_count(group.members, 'node')}, {group.run} run",
                                  "grey62"))
        attrs = self.graph.nodes[key]
        label = Text()
        op = attrs["kind"] == "op"
        if op:
            label.append(attrs["op"], "bold" if state is NodeState.PENDING else "")
        else:
            label.append(attrs.get("name") or "leaf", "bold blue")
        # The value beside the name, before the module and shape: what a narrow panel
        # cuts is the longer text, not the number. It is the largest gradient the node
        # sent on (a leaf's: its .grad), and says so: the inspector shows what came in.
        norm = self.progress.norm_of(key)
        if norm is not None:
            label.append(f"  {'|g out|' if op else '|grad|'}={norm:.3g}",
                         "red" if state is NodeState.BROKEN else "green")
        if op and attrs.get("module"):
            label.append(f"  {attrs['module']}", "cyan")
        elif not op:
            label.append("  " + ("parameter" if attrs["kind"] == "param" else "leaf"), "grey50")
        if attrs.get("shape") is not None:
            label.append(f"  {tuple(attrs['shape'])}", "grey62")
        return label


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
