"""HistoryPlot: one value per iteration of a training run (the loss, the total
gradient norm), drawn by plotext through textual-plotext.

A long run is thinned to the plot's width before plotext sees it (plotext draws
every point it is given): each column keeps the lowest and the highest value of
its iterations, so a spike stays a spike. NaN and Inf are not plotted as numbers:
they are red ``x`` marks along the top with their count in the title, and the
iterations of breaks are vertical lines. A log scale is chosen where the values
span decades, and the title says so first: "total |grad| (log)".

A second run (``gradviz open A.db --against B.db``) is drawn on the same axes in
another colour, under the first: where the two are equal only the first shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual import events
from textual_plotext import PlotextPlot

_LINE_COLOR = "green"
#: The colour of the run compared with (``--against``), and of its parting iteration.
AGAINST_COLOR = "magenta"
_NONFINITE_COLOR = "red"
_BREAK_COLOR = "orange"
#: A positive series whose largest value is this many times its smallest is drawn on a log scale.
LOG_SPAN = 1e3
#: Plots lower than this many rows (inside their border) drop their frame and x labels.
SHORT_HEIGHT = 7


def envelope(xs: Sequence[int], ys: Sequence[float], columns: int) -> tuple[list, list]:
    """``xs, ys`` thinned to about ``2 * columns`` points: each of ``columns`` equal
    runs of points keeps its lowest and its highest (in their order), so the line
    still reaches every extreme. Fewer points than that come back unchanged."""
    if len(xs) <= 2 * columns or columns < 1:
        return list(xs), list(ys)
    out_x, out_y = [], []
    count = len(xs)
    for j in range(columns):
        first, end = j * count // columns, (j + 1) * count // columns
        if first >= end:
            continue
        segment = range(first, end)
        low = min(segment, key=ys.__getitem__)
        high = max(segment, key=ys.__getitem__)
        for i in sorted({low, high}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    return out_x, out_y


def decade_ticks(low: float, high: float, rows: int) -> list[int]:
    """Whole decades from ``low`` to ``high`` (log10), no more than ``rows`` of them."""
    decades = list(range(math.floor(low), math.ceil(high) + 1))
    step = max(1, math.ceil(len(decades) / max(2, rows)))
    return decades[::step]


def _unbroken(xs: list, ys: list, gaps: set[int]) -> list[tuple[list, list]]:
    """The line cut where a NaN/Inf was: no segment drawn across an iteration without
    a number (``gaps``), so a straight line never stands in for a NaN."""
    if not gaps:
        return [(xs, ys)]
    parts: list[tuple[list, list]] = [([], [])]
    ordered = sorted(gaps)
    k = 0
    for x, y in zip(xs, ys):
        crossed = False
        while k < len(ordered) and ordered[k] < x:
            k += 1
            crossed = True
        if crossed and parts[-1][0]:
            parts.append(([], []))
        parts[-1][0].append(x)
        parts[-1][1].append(y)
    return [part for part in parts if part[0]]


def nonfinite_name(value: float) -> str:
    return "NaN" if math.isnan(value) else "Inf"


class HistoryPlot(PlotextPlot):
    """A value over iterations: ``show(iterations, values, name=..., breaks=...)``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.iterations: list[int] = []
        self.values: list[float] = []
        self.metric = ""
        self.scale_wanted: bool | None = None
        self.breaks: list[int] = []
        self.log_scale = False  # as drawn now
        self.against: tuple[list[int], list[float]] | None = None
        self.parted_at: int | None = None

    def show(self, iterations: Sequence[int], values: Sequence[float], *, name: str,
             log: bool | None = None, breaks: Sequence[int] = (),
             against: tuple[Sequence[int], Sequence[float]] | None = None,
             parted_at: int | None = None) -> None:
        """Plot ``values[i]`` at ``iterations[i]``; ``log``: True, False, or None to
        choose (log where positive values span ``LOG_SPAN``); ``breaks``: iterations
        drawn as vertical lines; ``against``: another run's (iterations, values) on the
        same axes in :data:`AGAINST_COLOR`, ``parted_at`` the iteration where they part."""
        self.iterations = list(iterations)
        self.values = list(values)
        self.metric = name
        self.scale_wanted = log
        self.breaks = list(breaks)
        self.against = None if against is None else (list(against[0]), list(against[1]))
        self.parted_at = parted_at
        self._draw()

    def on_resize(self, event: events.Resize) -> None:
        self._draw()

    @property
    def nonfinite(self) -> list[tuple[int, float]]:
        return [(x, v) for x, v in zip(self.iterations, self.values) if not math.isfinite(v)]

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        # A short plot (80x24) keeps its rows for the line: no frame, no x labels
        # (the iterations are on the heat maps' axis and in the headline).
        short = self.size.height < SHORT_HEIGHT
        plt.frame(not short)
        if not self.iterations:
            self.border_title = f"{self.metric}: no iteration recorded"
            self.refresh()
            return
        finite = [(x, v) for x, v in zip(self.iterations, self.values) if math.isfinite(v)]
        other = [] if self.against is None else [
            (x, v) for x, v in zip(*self.against) if math.isfinite(v)]
        positive = [v for _, v in finite + other if v > 0]
        log = self.scale_wanted
        if log is None:
            log = (bool(positive) and len(positive) == len(finite) + len(other)
                   and max(positive) / min(positive) >= LOG_SPAN)
        log = log and bool(positive)
        self.log_scale = log
        shown = [(x, math.log10(v)) for x, v in finite if v > 0] if log else finite
        shown_other = [(x, math.log10(v)) for x, v in other if v > 0] if log else other
        width = max(10, self.size.width - 10)
        low = high = 0.0
        drawn: list[float] = []
        if shown_other:  # under the first run's line: where both agree, the first shows
            xs, ys = envelope(*zip(*shown_other), width)
            gaps = {x for x, v in zip(*self.against) if not math.isfinite(v)}
            for part_x, part_y in _unbroken(xs, ys, gaps):
                plt.plot(part_x, part_y, marker="braille", color=AGAINST_COLOR)
            drawn += ys
        if shown:
            xs, ys = envelope(*zip(*shown), width)
            for part_x, part_y in _unbroken(xs, ys, {x for x, _ in self.nonfinite}):
                plt.plot(part_x, part_y, marker="braille", color=_LINE_COLOR)
            drawn += ys
        if drawn:
            low, high = min(drawn), max(drawn)
            if high == low:
                pad = 1.0 if log else (abs(low) * 0.1 or 1.0)
                low, high = low - pad, high + pad
            plt.ylim(low, high)
            decades = [t for t in decade_ticks(low, high, max(2, self.size.height - 4))
                       if low <= t <= high]
            if log and len(decades) >= 2:
                plt.yticks(decades, [f"1e{t}" for t in decades])
            elif log:  # within about a decade: the values themselves
                ticks = [low, (low + high) / 2, high]
                plt.yticks(ticks, [f"{10 ** t:.3g}" for t in ticks])
            else:
                ticks = [low, (low + high) / 2, high]
                plt.yticks(ticks, [f"{t:.4g}" for t in ticks])
        ends = [self.iterations[0], self.iterations[-1], *self.breaks]
        if self.against is not None and self.against[0]:
            ends += [self.against[0][0], self.against[0][-1]]
        first, last = min(ends), max(ends)
        plt.xlim(first - 0.5, last + 0.5) if last > first else plt.xlim(first - 1, first + 1)
        step = max(1, math.ceil((last - first + 1) / max(2, self.size.width // 12)))
        plt.xticks([] if short else list(range(first, last + 1, step)))
        for x in self.breaks:
            plt.vline(x, _BREAK_COLOR)
        if self.parted_at is not None:
            plt.vline(self.parted_at, AGAINST_COLOR)
        bad = self.nonfinite
        if bad:
            plt.scatter([x for x, _ in bad], [high] * len(bad), marker="x",
                        color=_NONFINITE_COLOR)
        self.border_title = self._title(finite, bad, log)
        self.refresh()

    def _title(self, finite, bad, log: bool) -> str:
        last = self.values[-1]
        parts = [f"{self.metric} (log)" if log else self.metric,
                 f"last {last:.4g}" if math.isfinite(last) else f"last {nonfinite_name(last)}"]
        if self.against is not None and self.against[1]:
            theirs = self.against[1][-1]
            parts.append(f"B {theirs:.4g}" if math.isfinite(theirs)
                         else f"B {nonfinite_name(theirs)}")
        if bad:
            first_x, first_v = bad[0]
            count = f"{len(bad)} NaN/Inf, first" if len(bad) > 1 else ""
            parts.append(f"{count} {nonfinite_name(first_v)} at {first_x}".strip())
        return " · ".join(parts)
