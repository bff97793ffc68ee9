"""WatchReport: a run of :func:`gradviz.watch` summed up in a few tables.

``str(report)`` is plain text (``print(w.report())``); ``gradviz report RUN.db``
draws the same :meth:`WatchReport.sections` as Rich tables.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime

from gradviz.model.runs.events import EventKind, origin_text
from gradviz.model.runs.history import EventRecord, RunHistory

#: Rows shown per table; the rest are counted in its note.
ROWS_SHOWN = 12
#: Iterations a report reads at most (evenly spaced over a longer run).
REPORT_POINTS = 2000
#: Iterations shown before the first bad one (a NaN/Inf, a spike, a break).
FOCUS_BEFORE = 4
#: Layers shown at the bad iteration.
LAYERS_SHOWN = 8
#: Iterations a layer's |Δ|/|p| needs (after the first quarter) to be called out of band.
BAND_ITERATIONS = 10


def first_bad(history: RunHistory) -> EventRecord | None:
    """The first NaN/Inf, spike or break of the run."""
    return next((e for e in history.events if e.is_break), None)


@dataclass(frozen=True)
class Section:
    """One table: a title, column names, rows of text, and a line under it."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    note: str = ""


@dataclass(frozen=True)
class LayerBand:
    """A layer's |update|/|param| over the run, against the band."""

    layer: str
    median: float
    last: float
    outside: float  # share of its iterations outside the band
    iterations: int


class WatchReport:
    """The run in ``history`` as tables; ``source`` is where it was read from; ``focus``:
    the iterations up to the first bad one, every one of them (``history`` may be
    thinned). :meth:`of` reads both."""

    def __init__(self, history: RunHistory, *, source: str = "", focus: RunHistory | None = None):
        self.history = history
        self.source = source
        self.focus = focus
        settings = history.info.settings
        self.band: tuple[float, float] = tuple(settings.get("band", (1e-4, 1e-2)))

    @classmethod
    def of(cls, read, *, source: str = "") -> WatchReport:
        """The report of a run that ``read(points=..., span=...)`` returns as a RunHistory
        (``RunRecord(...).history`` with its run bound, or ``Watch.history``)."""
        history = read(points=REPORT_POINTS)
        bad = first_bad(history)
        focus = None if bad is None else read(span=(max(1, bad.iteration - FOCUS_BEFORE),
                                                    bad.iteration))
        return cls(history, source=source, focus=focus)

    # -------------------------------------------------------------- findings
    @property
    def first_nonfinite(self) -> EventRecord | None:
        return self.history.first_nonfinite

    @property
    def audits(self) -> list[EventRecord]:
        return self.history.audits

    @property
    def layers_out_of_band(self) -> list[LayerBand]:
        """Layers whose median |update|/|param| is outside the band, over the run after its
        first quarter (Adam's first steps move every layer by about lr / rms(p), far more
        than it settles at)."""
        low, high = self.band
        found = []
        for layer, ratios in zip(self.history.layers, self.history.layer_update_ratios):
            finite = [r for r in ratios if math.isfinite(r)]
            finite = finite[len(finite) // 4:]
            if len(finite) < BAND_ITERATIONS:  # as the audit: a few steps say nothing
                continue
            median = statistics.median(finite)
            if low <= median <= high:
                continue
            outside = sum(1 for r in finite if not low <= r <= high) / len(finite)
            found.append(LayerBand(layer or "(model)", median, finite[-1], outside, len(finite)))
        return sorted(found, key=lambda b: -abs(math.log10(max(b.median, 1e-30)
                                                          / math.sqrt(low * high))))

    # -------------------------------------------------------------- sections
    def headline(self) -> str:
        info = self.history.info
        rows = self.history.iterations
        started = datetime.fromtimestamp(info.started).strftime("%Y-%m-%d %H:%M:%S")
        rank = f", rank {info.rank} of {info.world_size}" if info.world_size > 1 else ""
        where = f"{self.source}: " if self.source else ""
        span = (f"iterations {rows[0].iteration}..{rows[-1].iteration}" if rows
                else "no iteration finished")
        optimizer = info.optimizer or "no optimizer"
        return (f"{where}run {info.run}{rank}, {info.model} with {optimizer}, started {started}, "
                f"{info.status}; {span}")

    def sections(self) -> list[Section]:
        return [section for section in (self._iterations(), self._nonfinite(), self._bad(),
                                        self._layers_at_bad(), self._breaks(), self._growth(),
                                        self._lr(), self._audits(), self._band())
                if section is not None]

    def _bad(self) -> Section | None:
        """The first bad iteration's numbers, with the few before it."""
        bad = first_bad(self.history)
        if bad is None or self.focus is None or not self.focus.iterations:
            return None
        rows = [(str(r.iteration), _num(r.loss), _num(r.grad_norm),
                 "-" if r.grad_norm_clipped is None else _num(r.grad_norm_clipped),
                 "-" if r.lr is None else f"{r.lr:.3g}", "NaN/Inf" if r.nonfinite else "")
                for r in self.focus.iterations]
        kind = getattr(bad.kind, "value", bad.kind)
        return Section(f"iteration {bad.iteration} ({kind}) and the {len(rows) - 1} before it",
                       ("iteration", "loss", "total |grad|", "after clipping", "lr", ""), rows)

    def _layers_at_bad(self) -> Section | None:
        """Each layer's gradient norm at the first bad iteration, NaN/Inf and largest first."""
        bad = first_bad(self.history)
        focus = self.focus
        if bad is None or focus is None or not focus.iterations or \
                focus.iterations[-1].iteration != bad.iteration:
            return None
        at = len(focus.iterations) - 1
        before = at - 1 if at > 0 else None
        layers = []
        for j, layer in enumerate(focus.layers):
            norm = focus.layer_grad_norms[j][at]
            bad_norm = focus.layer_nonfinite[j][at] if focus.layer_nonfinite else False
            earlier = focus.layer_grad_norms[j][before] if before is not None else math.nan
            layers.append((bad_norm, norm if math.isfinite(norm) else -1.0, layer or "(model)",
                           norm, earlier))
        if not layers:
            return None
        layers.sort(key=lambda row: (not row[0], -row[1]))
        rows = [(layer, "NaN/Inf" if nonfinite else _num(norm), _num(earlier))
                for nonfinite, _, layer, norm, earlier in layers[:LAYERS_SHOWN]]
        return Section(f"layers at iteration {bad.iteration} (gradient norm)",
                       ("layer", f"|grad| at {bad.iteration}", "the iteration before"), rows,
                       _more(len(layers), LAYERS_SHOWN))

    def _growth(self) -> Section | None:
        """A loss or gradient norm that grew past the spike factor with no spike told."""
        if any(e.kind is EventKind.SPIKE for e in self.history.events):
            return None
        factor = float(self.history.info.settings.get("spike", 10.0))
        numbers = self.history.iteration_numbers
        rows = []
        for name, values in (("loss", self.history.losses),
                             ("total |grad|", self.history.grad_norms)):
            rise = _largest_rise(values)
            if rise is not None and values[rise[1]] > factor * values[rise[0]]:
                low, high = rise
                rows.append((name, f"{values[high] / values[low]:.3g}x",
                             f"{_num(values[low])} at {numbers[low]}",
                             f"{_num(values[high])} at {numbers[high]}"))
        if not rows:
            return None
        return Section("growth", ("what", "grew", "from", "to"), rows,
                       f"no spike break fired (a spike is {factor:g}x the recent median, "
                       "or a climb at every one of 3 iterations): read it as a trend")

    def _lr(self) -> Section | None:
        """The learning rate over the run: its range and where it jumped."""
        rows = [r for r in self.history.iterations if r.lr is not None]
        if not rows:
            return None
        values = [r.lr for r in rows]
        # a jump breaks a steady lr (a step schedule, a restart), not a warmup's ramp
        jumps = [(rows[i - 1], rows[i]) for i in range(2, len(rows))
                 if _jumped(rows[i - 1].lr, rows[i].lr) and not _jumped(rows[i - 2].lr,
                                                                          rows[i - 1].lr, 1.2)]
        table = [("first -> last", f"{values[0]:.3g} -> {values[-1]:.3g}"),
                 ("range", f"{min(values):.3g} .. {max(values):.3g}")]
        table += [("jump", f"{a.lr:.3g} at {a.iteration} -> {b.lr:.3g} at {b.iteration}")
                  for a, b in jumps[:ROWS_SHOWN]]
        if len(table) == 2 and values[0] == values[-1] == min(values) == max(values):
            table = [("constant", f"{values[0]:.3g}")]
        return Section("learning rate (the first param group's)", ("", ""), table,
                       _more(len(jumps)))

    def _iterations(self) -> Section:
        rows = self.history.iterations
        total = self.history.total_iterations or len(rows)
        if not rows:
            return Section("iterations", ("", ""), [("recorded", "0")])
        losses = [r.loss for r in rows if math.isfinite(r.loss)]
        norms = [r.grad_norm for r in rows if math.isfinite(r.grad_norm)]
        table = [
            ("recorded", f"{total} ({rows[0].iteration}..{rows[-1].iteration})"),
            ("loss, first -> last", f"{_num(rows[0].loss)} -> {_num(rows[-1].loss)}"),
            ("loss range", f"{_num(min(losses))} .. {_num(max(losses))}" if losses else "-"),
            ("total |grad|, median / max",
             f"{_num(statistics.median(norms))} / {_num(max(norms))}" if norms else "-"),
            ("time per iteration, median",
             f"{statistics.median(r.seconds for r in rows) * 1e3:.1f} ms"),
            ("with NaN/Inf", str(sum(r.nonfinite for r in rows))),
        ]
        skipped = sum(r.skipped for r in rows)
        if skipped:
            table.append(("steps skipped by GradScaler", str(skipped)))
        note = f"(read {len(rows)} of them, evenly spaced)" if len(rows) < total else ""
        return Section("iterations", ("", ""), table, note)

    def _nonfinite(self) -> Section | None:
        event = self.first_nonfinite
        if event is None:
            return None
        origin = event.origin
        if origin is None:
            where = "not traced (break_on 'nonfinite' or nan_origin=True traces it)"
        else:
            where = origin_text(origin) if origin.found else f"not found: {origin.detail}"
        return Section("first NaN/Inf", ("iteration", "what", "where it started"),
                       [(str(event.iteration), event.detail, where)])

    def _breaks(self) -> Section | None:
        events = [e for e in self.history.events
                  if not e.is_audit and e.kind is not EventKind.NONFINITE]
        if not events:
            return None
        rows = [(str(e.iteration), str(getattr(e.kind, "value", e.kind)), e.detail)
                for e in events[:ROWS_SHOWN]]
        return Section("breaks and events", ("iteration", "kind", "detail"), rows,
                       _more(len(events)))

    def _audits(self) -> Section:
        audits = self.audits
        if not audits:
            return Section("audits", ("result",), [("no parameter left out, frozen layer moved "
                                                    "or gradient stuck at zero",)])
        by_kind: dict[EventKind, list[EventRecord]] = {}
        for event in audits:
            by_kind.setdefault(event.kind, []).append(event)
        rows = []
        for kind, events in by_kind.items():
            subjects = ", ".join(e.subject for e in events[:4])
            if len(events) > 4:
                subjects += f" and {len(events) - 4} more"
            rows.append((kind.title, str(len(events)), str(events[0].iteration), subjects,
                         events[0].detail))
        return Section("audits (each reported once, when first seen)",
                       ("audit", "count", "first at", "parameters / layers", "first detail"), rows)

    def _band(self) -> Section | None:
        bands = self.layers_out_of_band
        if not bands:
            return None
        low, high = self.band
        rows = [(b.layer, _num(b.median), _num(b.last), f"{b.outside:.0%}", str(b.iterations))
                for b in bands[:ROWS_SHOWN]]
        title = (f"layers out of band (|Δ|/|p| outside {low:g}..{high:g}, median over the run "
                 "after its first quarter)")
        return Section(title,
                       ("layer", "median |Δ|/|p|", "last", "iterations outside", "of"), rows,
                       _more(len(bands)))

    def __str__(self) -> str:
        parts = [self.headline()]
        for section in self.sections():
            parts.append("")
            parts.append(_text_table(section))
        return "\n".join(parts)


def _text_table(section: Section) -> str:
    widths = [max(len(section.columns[i]), *(len(row[i]) for row in section.rows))
              for i in range(len(section.columns))]
    lines = [section.title]
    if any(section.columns):
        lines += ["  ".join(name.ljust(w) for name, w in zip(section.columns, widths)).rstrip(),
                  "  ".join("-" * w for w in widths)]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
              for row in section.rows]
    if section.note:
        lines.append(section.note)
    return "\n".join(lines)


def _num(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:.4g}"


def _more(count: int, shown: int = ROWS_SHOWN) -> str:
    return f"and {count - shown} more" if count > shown else ""


def _largest_rise(values: list[float]) -> tuple[int, int] | None:
    """Positions (low, high), low before high, of the largest ratio high / low among the
    finite positive values."""
    best, low, found = 1.0, None, None
    for i, value in enumerate(values):
        if not (math.isfinite(value) and value > 0):
            continue
        if low is not None and value / values[low] > best:
            best, found = value / values[low], (low, i)
        if low is None or value < values[low]:
            low = i
    return found


def _jumped(before: float, after: float, factor: float = 2.0) -> bool:
    """A change of the learning rate by ``factor`` or more (a step, not a gentle slope)."""
    if before == after:
        return False
    if before <= 0 or after <= 0:
        return True
    return max(before, after) / min(before, after) >= factor
