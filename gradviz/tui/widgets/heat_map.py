"""LayerHeatMap: per-layer values over iterations as coloured cells (layers x iterations).

Each map is drawn through the Line API (``render_line``): a row is binned and
coloured only when it shows, and kept until the data or the width changes, so
a run of thousands of iterations and hundreds of layers costs the visible rows
only. Iterations are binned to the width: one column is one iteration while
they fit (wider cells when they are few), else several, coloured by the most
telling value among them (the largest gradient norm, the ratio farthest outside
the band); the axis line says how many iterations a column holds.

What a cell shows must not mislead: a NaN/Inf is a red ``×`` and wins its
column, a missing value (no gradient, no step) is a grey ``·``, an exact zero is
``0``; the colour scales are log scales and their legends say so, with the band
of |Δ|/|p| drawn in the legend. Several maps (the gradient norm, the update
ratio) share the layer labels, the rows, the columns and one cursor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.reactive import var
from textual.strip import Strip
from textual.widget import Widget

# Cell kinds besides a value.
NONFINITE, MISSING, ZERO = "nan", "none", "zero"

_NONFINITE_STYLE = Style(color="white", bgcolor="#d7005f", bold=True)
_MISSING_STYLE = Style(color="grey42")
_ZERO_STYLE = Style(color="grey62", bgcolor="grey11")
_CURSOR_MARK = "◆"
_MARK_STYLES = {"nonfinite": ("×", "bold #ff5f87"), "spike": ("▲", "bold yellow"),
                "at": ("▼", "bold cyan"), "signal": ("▼", "bold cyan")}
#: The line over the rows names each map; the lines under them: the iteration axis and
#: the legends (the cursor's cell is read out in the border's subtitle).
HEADER_LINES, FOOTER_LINES = 1, 2
_GAP = 2  # columns between two maps


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)


def _blend(anchors: Sequence[str], t: float) -> str:
    """The colour at ``t`` in 0..1 along ``anchors``, interpolated in RGB."""
    t = min(1.0, max(0.0, t))
    position = t * (len(anchors) - 1)
    i = min(int(position), len(anchors) - 2)
    a, b = _rgb(anchors[i]), _rgb(anchors[i + 1])
    f = position - i
    return "#{:02x}{:02x}{:02x}".format(*(round(x + (y - x) * f) for x, y in zip(a, b)))


def _ink(bg: str) -> str:
    """Black or white, whichever reads on ``bg``."""
    r, g, b = _rgb(bg)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


def sci(value: float) -> str:
    """A value as a heat map names it: 3 significant digits, NaN and Inf by name."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    return f"{value:.3g}"


def _decade(exponent: int) -> str:
    return f"1e{exponent}"


# ------------------------------------------------------------------ colour scales
_VIRIDIS = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
_BELOW = ("#c6dbef", "#4292c6", "#08306b")  # at the band's low edge -> far below
_ABOVE = ("#fdae6b", "#e6550d", "#7f2704")  # at the band's high edge -> far above
_IN_BAND = "#31a354"


@dataclass(frozen=True)
class LogScale:
    """Positive values on a log10 colour scale from ``10**low`` to ``10**high``."""

    low: int
    high: int

    @classmethod
    def spanning(cls, rows: Sequence[Sequence[float]]) -> LogScale:
        """The whole decades that hold every positive finite value of ``rows``."""
        positive = [v for row in rows for v in row if 0 < v < math.inf]
        if not positive:
            return cls(-1, 0)
        low = math.floor(math.log10(min(positive)))
        high = math.ceil(math.log10(max(positive)))
        return cls(low, high if high > low else low + 1)

    def colour(self, value: float) -> str:
        return _blend(_VIRIDIS, (math.log10(value) - self.low) / (self.high - self.low))

    def pick(self, values: list[float]) -> float:
        """The value that stands for a column of several iterations: the largest."""
        return max(values)

    def describe(self, value: float) -> str:
        return sci(value)

    def legend(self, width: int) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{_decade(self.low)} ")
        steps = max(4, min(16, width // 3))
        for i in range(steps):
            text.append(" ", Style(bgcolor=_blend(_VIRIDIS, i / (steps - 1))))
        text.append(f" {_decade(self.high)}")
        text.append("  log", "grey62")
        return text


@dataclass(frozen=True)
class BandScale:
    """A ratio against a band ``(low, high)``, log10: green inside, blue below, red above,
    darker with each decade outside, down to ``10**floor`` and up to ``10**ceiling``."""

    band: tuple[float, float]
    floor: int
    ceiling: int

    @classmethod
    def around(cls, band: Sequence[float], rows: Sequence[Sequence[float]]) -> BandScale:
        low, high = float(band[0]), float(band[1])
        positive = [v for row in rows for v in row if 0 < v < math.inf]
        floor = math.floor(math.log10(low)) - 1
        ceiling = math.ceil(math.log10(high)) + 1
        if positive:
            floor = min(floor, math.floor(math.log10(min(positive))))
            ceiling = max(ceiling, math.ceil(math.log10(max(positive))))
        return cls((low, high), floor, ceiling)

    def distance(self, value: float) -> float:
        """Decades outside the band: negative below, positive above, 0 inside."""
        low, high = self.band
        if value < low:
            return math.log10(value) - math.log10(low) if value > 0 else -math.inf
        if value > high:
            return math.log10(value) - math.log10(high)
        return 0.0

    def colour(self, value: float) -> str:
        d = self.distance(value)
        if d < 0:
            span = max(math.log10(self.band[0]) - self.floor, 1e-9)
            return _blend(_BELOW, -d / span)
        if d > 0:
            span = max(self.ceiling - math.log10(self.band[1]), 1e-9)
            return _blend(_ABOVE, d / span)
        return _IN_BAND

    def pick(self, values: list[float]) -> float:
        """The value farthest outside the band stands for the column: its lowest or
        its highest (one comparison, not a logarithm per value)."""
        low, high = min(values), max(values)
        return high if self.distance(high) >= -self.distance(low) else low

    def describe(self, value: float) -> str:
        d = self.distance(value)
        where = "in band" if d == 0 else ("below band" if d < 0 else "above band")
        return f"{sci(value)} {where}"

    def legend(self, width: int) -> Text:
        low, high = self.band
        text = Text(no_wrap=True, overflow="ellipsis")
        steps = max(2, min(6, width // 8))
        text.append(f"{_decade(self.floor)} ")
        for i in range(steps):
            text.append(" ", Style(bgcolor=_blend(_BELOW, 1 - i / (steps - 1))))
        text.append(f" {low:g}", "bold")
        text.append("  band ", Style(color="black", bgcolor=_IN_BAND))
        text.append(f"{high:g} ", "bold")
        for i in range(steps):
            text.append(" ", Style(bgcolor=_blend(_ABOVE, i / (steps - 1))))
        text.append(f" {_decade(self.ceiling)}")
        text.append("  log", "grey62")
        return text


# ------------------------------------------------------------------ binning
def column_bins(count: int, width: int) -> list[tuple[int, int, int]]:
    """``(first, end, cells)`` per column of a map ``width`` cells wide over ``count``
    iterations: iterations ``first..end-1`` drawn ``cells`` wide. While the iterations
    fit, each is a column (wider ones when they are few, filling the width); else a
    column holds several, as evenly as whole numbers allow."""
    if count <= 0 or width <= 0:
        return []
    if count <= width:
        edges = [i * width // count for i in range(count + 1)]
        return [(i, i + 1, edges[i + 1] - edges[i]) for i in range(count)]
    edges = [j * count // width for j in range(width + 1)]
    return [(edges[j], edges[j + 1], 1) for j in range(width)]


def bin_cell(values: Sequence[float], nonfinite: Sequence[bool] | None, first: int, end: int,
             scale) -> tuple[str, float]:
    """What a column of one row shows: (NONFINITE | MISSING | ZERO | "value", the value)."""
    if nonfinite is not None and any(nonfinite[first:end]):
        return NONFINITE, math.nan
    present = [v for v in values[first:end] if v == v]  # v != v: NaN, no value here
    if not present:
        return MISSING, math.nan
    positive = [v for v in present if v > 0]
    if not positive:
        return ZERO, 0.0
    return "value", scale.pick(positive)


# ------------------------------------------------------------------ the widget
@dataclass(frozen=True)
class HeatLayer:
    """One map: ``values[row][i]`` for the widget's rows and iterations.

    ``nonfinite[row][i]`` marks the NaN values that are NaN/Inf (the others are
    missing: no gradient, no step); ``missing`` names what a missing value means.
    """

    name: str  # short, for the cursor's line: "|grad|"
    title: str  # over the map: "|grad| per layer"
    values: Sequence[Sequence[float]]
    scale: LogScale | BandScale
    nonfinite: Sequence[Sequence[bool]] | None = None
    missing: str = "none"


@dataclass
class _Data:
    rows: list[str] = field(default_factory=list)
    iterations: list[int] = field(default_factory=list)
    maps: list[HeatLayer] = field(default_factory=list)
    marks: dict[int, str] = field(default_factory=dict)  # iteration -> event kind


class LayerHeatMap(Widget, can_focus=True):
    """Layers (rows) x iterations (columns) for one or more maps side by side.

    ``show(rows, iterations, maps, marks)`` with plain lists; the arrows (or a click)
    move a cursor whose cell is read out in numbers, for every map, in the border's
    subtitle.
    """

    BINDINGS = [
        Binding("up,k", "move(0, -1)", "layer up", show=False),
        Binding("down,j", "move(0, 1)", "layer down", show=False),
        Binding("left,h", "move(-1, 0)", "earlier", show=False),
        Binding("right,l", "move(1, 0)", "later", show=False),
        Binding("pageup", "move(0, -10)", show=False),
        Binding("pagedown", "move(0, 10)", show=False),
        Binding("home", "move(-100000, 0)", show=False),
        Binding("end", "move(100000, 0)", show=False),
    ]

    cursor_row = var(0)
    cursor_column = var(-1)  # a bin; -1: the last one

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data = _Data()
        self.top = 0  # first row shown
        self._cells: dict[tuple[int, int], list[tuple[str, float]]] = {}  # (map, row) -> cells
        self._strips: dict[int, Strip] = {}  # row -> drawn, for rows without the cursor
        self._bins: list[tuple[int, int, int]] = []
        self._geometry: tuple[int, int, int] = (0, 0, 0)  # label width, map width, width seen

    # ---------------------------------------------------------------- data in
    def show(self, rows: list[str], iterations: list[int], maps: list[HeatLayer],
             marks: dict[int, str] | None = None) -> None:
        """Draw ``maps`` (each ``values[row][i]``) for ``rows`` over ``iterations``;
        ``marks``: iteration -> event kind, marked on the axis."""
        self.data = _Data(list(rows), list(iterations), list(maps), dict(marks or {}))
        self.cursor_row = min(self.cursor_row, max(len(rows) - 1, 0))
        self._invalidate()
        self._show_cursor()

    def point_at(self, iteration: int) -> None:
        """Put the cursor on the column that holds ``iteration`` (or the nearest)."""
        self._lay_out()
        numbers = self.data.iterations
        if not numbers or not self._bins:
            return
        index = min(range(len(numbers)), key=lambda i: abs(numbers[i] - iteration))
        self.cursor_column = next(j for j, (first, end, _) in enumerate(self._bins)
                                  if first <= index < end)

    @property
    def columns(self) -> list[tuple[int, int]]:
        """(first, last) iteration number of each column as drawn now."""
        self._lay_out()
        numbers = self.data.iterations
        return [(numbers[first], numbers[end - 1]) for first, end, _ in self._bins]

    def cells(self, map_index: int, row: int) -> list[tuple[str, float]]:
        """What each column of ``row`` shows in map ``map_index``: (kind, value)."""
        self._lay_out()
        key = (map_index, row)
        cached = self._cells.get(key)
        if cached is None:
            layer = self.data.maps[map_index]
            values = layer.values[row]
            nonfinite = layer.nonfinite[row] if layer.nonfinite else None
            cached = [bin_cell(values, nonfinite, first, end, layer.scale)
                      for first, end, _ in self._bins]
            self._cells[key] = cached
        return cached

    def cursor_text(self) -> str:
        """The cursor's cell in words, as the border's subtitle says it."""
        return self._cursor_line().plain

    # ---------------------------------------------------------------- geometry
    @property
    def rows_shown(self) -> int:
        return max(0, self.size.height - HEADER_LINES - FOOTER_LINES)

    def _invalidate(self) -> None:
        self._cells.clear()
        self._strips.clear()
        self._geometry = (0, 0, 0)
        self.refresh()

    def _lay_out(self) -> None:
        width = self.size.width
        if self._geometry[2] == width and self._bins:
            return
        longest = max((len(_row_label(r)) for r in self.data.rows), default=4)
        label = max(6, min(longest, 22 if width >= 100 else 12)) + 1
        count = max(1, len(self.data.maps))
        map_width = max(1, (width - label - _GAP * (count - 1)) // count)
        self._geometry = (label, map_width, width)
        self._bins = column_bins(len(self.data.iterations), map_width)
        self._cells.clear()
        self._strips.clear()

    def on_resize(self, event: events.Resize) -> None:
        self._invalidate()
        self._keep_cursor_shown()
        self._show_cursor()

    # ---------------------------------------------------------------- cursor
    def action_move(self, dx: int, dy: int) -> None:
        self._lay_out()
        if not self.data.rows or not self._bins:
            return
        column = self._column()
        self.cursor_column = max(0, min(len(self._bins) - 1, column + dx))
        self.cursor_row = max(0, min(len(self.data.rows) - 1, self.cursor_row + dy))

    def _column(self) -> int:
        if not self._bins:
            return 0
        column = self.cursor_column
        return len(self._bins) - 1 if column < 0 or column >= len(self._bins) else column

    def watch_cursor_row(self) -> None:
        self._keep_cursor_shown()
        self._show_cursor()

    def watch_cursor_column(self) -> None:
        self._show_cursor()

    def _show_cursor(self) -> None:
        self.border_subtitle = self._cursor_line().plain
        self.refresh()

    def _keep_cursor_shown(self) -> None:
        shown = self.rows_shown
        if shown <= 0:
            return
        if self.cursor_row < self.top:
            self.top = self.cursor_row
        elif self.cursor_row >= self.top + shown:
            self.top = self.cursor_row - shown + 1
        self.top = max(0, min(self.top, max(0, len(self.data.rows) - shown)))

    def on_click(self, event: events.Click) -> None:
        """A click on a cell puts the cursor there."""
        self._lay_out()
        label, map_width, _ = self._geometry
        where = event.get_content_offset(self)
        if where is None:
            return
        line = where.y - HEADER_LINES
        row = self.top + line
        if not 0 <= line < self.rows_shown or row >= len(self.data.rows) or where.x < label:
            return
        offset = (where.x - label) % (map_width + _GAP)
        if offset >= map_width:
            return
        x = 0
        for j, (_, _, cells) in enumerate(self._bins):
            if x <= offset < x + cells:
                self.cursor_row, self.cursor_column = row, j
                return
            x += cells

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self._scroll(3)
        event.stop()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._scroll(-3)
        event.stop()

    def _scroll(self, delta: int) -> None:
        most = max(0, len(self.data.rows) - self.rows_shown)
        top = max(0, min(most, self.top + delta))
        if top != self.top:
            self.top = top
            self.cursor_row = max(top, min(self.cursor_row, top + self.rows_shown - 1))
            self.refresh()

    # ---------------------------------------------------------------- drawing
    def render_line(self, y: int) -> Strip:
        self._lay_out()
        width = self.size.width
        shown = self.rows_shown
        if not self.data.maps or not self.data.iterations:
            text = Text("no iterations recorded" if y == 0 else "", "grey62")
            return self._strip(text, width)
        if y < HEADER_LINES:
            return self._strip(self._header_line(), width)
        if y < HEADER_LINES + shown:
            row = self.top + y - HEADER_LINES
            if row >= len(self.data.rows):
                return Strip.blank(width)
            if row == self.cursor_row:
                return self._row_strip(row, width)
            strip = self._strips.get(row)
            if strip is None:
                strip = self._strips[row] = self._row_strip(row, width)
            return strip
        footer = y - HEADER_LINES - shown
        if footer == 0:
            return self._strip(self._axis_line(), width)
        if footer == 1:
            return self._strip(self._legend_line(), width)
        return Strip.blank(width)

    def _strip(self, text: Text, width: int) -> Strip:
        return _strip_segments(list(text.render(self.app.console)), width)

    def _row_strip(self, row: int, width: int) -> Strip:
        label_width = self._geometry[0]
        on_cursor = row == self.cursor_row
        label = _row_label(self.data.rows[row])
        label = label if len(label) < label_width else "…" + label[-(label_width - 2):]
        segments = [Segment(label.ljust(label_width),
                            Style(bold=True, reverse=True) if on_cursor and self.has_focus
                            else Style(bold=on_cursor, color=None if on_cursor else "grey85"))]
        column = self._column()
        for index, layer in enumerate(self.data.maps):
            if index:
                segments.append(Segment(" " * _GAP))
            for j, ((kind, value), (_, _, cells)) in enumerate(zip(self.cells(index, row),
                                                                   self._bins)):
                char, style = _cell_look(kind, value, layer.scale)
                if on_cursor and j == column:
                    ink = _ink(style.bgcolor.name if style.bgcolor and
                               style.bgcolor.name.startswith("#") else "#000000")
                    style = style + Style(color=ink, bold=True)
                    char = _CURSOR_MARK
                segments.append(Segment(char.center(cells) if cells > 1 else char, style))
        return _strip_segments(segments, width)

    def _header_line(self) -> Text:
        label_width, map_width, _ = self._geometry
        text = Text(no_wrap=True, overflow="ellipsis")
        hidden = len(self.data.rows) - self.rows_shown
        more = f"{self.top + 1}-{self.top + self.rows_shown}/{len(self.data.rows)}"
        more = more if hidden > 0 and len(more) < label_width else "layer"
        text.append(more.ljust(label_width), "grey62")
        for index, layer in enumerate(self.data.maps):
            if index:
                text.append(" " * _GAP)
            title = Text(layer.title, "bold")
            if layer.nonfinite:
                title.append("  ×", "bold #ff5f87")
                title.append(" NaN/Inf", "grey70")
            title.append("  ·", _MISSING_STYLE)
            title.append(f" {layer.missing}", "grey70")
            title.truncate(map_width, overflow="ellipsis", pad=True)
            text.append_text(title)
        return text

    def _axis_line(self) -> Text:
        """The first and last iteration at the ends, and the breaks where they fall
        (a label that a mark would cut is left out: "148×" would read as 148)."""
        label_width, map_width, _ = self._geometry
        numbers = self.data.iterations
        axis: list[tuple[str, str]] = [(" ", "grey62")] * map_width
        x = 0
        for first, end, cells in self._bins:
            kinds = {self.data.marks.get(numbers[i]) for i in range(first, end)} - {None}
            for kind in ("nonfinite", "spike", "at", "signal"):
                if kind in kinds:
                    axis[x + cells // 2] = _MARK_STYLES[kind]
                    break
            x += cells
        lo, hi = str(numbers[0]), str(numbers[-1])
        for text, start in ((lo, 0), (hi, map_width - len(hi))):
            span = range(start, start + len(text))
            if start >= 0 and span.stop <= map_width and all(axis[i][0] == " " for i in span):
                if text is hi and start <= len(lo):
                    continue  # no room for both
                for i, ch in zip(span, text):
                    axis[i] = (ch, "grey62")
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(("iteration" if label_width > 10 else "iter").ljust(label_width), "grey62")
        for index in range(len(self.data.maps)):
            if index:
                text.append(" " * _GAP)
            for ch, style in axis:
                text.append(ch, style)
        return text

    def _legend_line(self) -> Text:
        label_width, map_width, _ = self._geometry
        text = Text(" " * label_width, no_wrap=True, overflow="ellipsis")
        for index, layer in enumerate(self.data.maps):
            if index:
                text.append(" " * _GAP)
            legend = layer.scale.legend(map_width)
            legend.truncate(map_width, pad=True)
            text.append_text(legend)
        return text

    @property
    def per_column(self) -> int:
        """Iterations in the widest column as drawn now (1 while each has its own)."""
        self._lay_out()
        return max((end - first for first, end, _ in self._bins), default=1)

    def _cursor_line(self) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        if not self.data.rows or not self._bins:
            return text
        first, end, _ = self._bins[self._column()]
        numbers = self.data.iterations
        span = (f"iteration {numbers[first]}" if end - first == 1
                else f"iterations {numbers[first]}..{numbers[end - 1]}")
        text.append(f"{_row_label(self.data.rows[self.cursor_row])}", "bold")
        text.append(f" · {span}", "grey70")
        for index, layer in enumerate(self.data.maps):
            kind, value = self.cells(index, self.cursor_row)[self._column()]
            text.append(f" · {layer.name} ")
            if kind == NONFINITE:
                text.append("NaN/Inf", "bold #ff5f87")
            elif kind == MISSING:
                text.append(layer.missing, "grey62")
            elif kind == ZERO:
                text.append("0")
            else:
                text.append(layer.scale.describe(value), "bold")
                if end - first > 1:
                    text.append(" (max)" if isinstance(layer.scale, LogScale)
                                else " (farthest out)", "grey62")
        return text


def _row_label(layer: str) -> str:
    return layer or "(model)"


def _cell_look(kind: str, value: float, scale) -> tuple[str, Style]:
    if kind == NONFINITE:
        return "×", _NONFINITE_STYLE
    if kind == MISSING:
        return "·", _MISSING_STYLE
    if kind == ZERO:
        return "0", _ZERO_STYLE
    bg = scale.colour(value)
    if math.isinf(value):  # a norm that overflowed, a ratio of a parameter that was 0
        return "∞", Style(color=_ink(bg), bgcolor=bg, bold=True)
    return " ", _style_of(bg)


_STYLES: dict[str, Style] = {}


def _style_of(bg: str) -> Style:
    style = _STYLES.get(bg)
    if style is None:
        style = _STYLES[bg] = Style(bgcolor=bg)
    return style


def _strip_segments(segments: list[Segment], width: int) -> Strip:
    return Strip(Segment.adjust_line_length(list(Segment.simplify(segments)), width), width)
