"""RunView: a training run recorded by :func:`gradviz.watch`, on one screen.

From a :class:`~gradviz.model.runs.history.RunHistory` (plain data: this module
reads no file and imports no torch): the loss and the total gradient norm over
iterations, the gradient norm of every layer and its update ratio |Δ|/|p| against
the band as heat maps (layers x iterations), and the events and audits in a
table. ``gradviz open RUN.db`` shows it as its own small app
(:func:`make_record_app`), without the stepping app's engine and without torch,
so a record opens at once, also on a box where the training ran.

A distributed run's headline says whether its ranks agree, or where they part
(:mod:`gradviz.model.runs.ranks`). ``gradviz open A.db --against B.db`` draws run B
on the plots' axes beside A, in another colour, with the iteration where they part
(:mod:`gradviz.model.runs.diff`); the heat maps stay A's.

>>> app = make_record_app("run.db")       # doctest: +SKIP  (RecordError if it is not one)
>>> app.run()                             # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Static
from textual.worker import Worker, WorkerState

from gradviz.model.runs.diff import RunDiff, diff_runs, verdict_text
from gradviz.model.runs.events import BREAK_KINDS, EventKind, origin_text
from gradviz.model.runs.history import EventRecord, RunHistory, RunRecord, event_parts
from gradviz.model.runs.ranks import RankComparison, compare_ranks, comparison_text, find_job
from gradviz.tui.widgets.footer import KeysFooter
from gradviz.tui.widgets.heat_map import (
    FOOTER_LINES,
    HEADER_LINES,
    BandScale,
    HeatLayer,
    LayerHeatMap,
    LogScale,
)
from gradviz.tui.widgets.run_plots import AGAINST_COLOR, HistoryPlot

#: Iterations read from a record at most, evenly spaced over a longer run: the plots
#: and heat maps have fewer columns than that, and a read stays well under a second.
VIEW_POINTS = 4000
#: Parameter rows (parameters x iterations read) whose layer sums are read before the
#: first frame; a bigger read (a long run of a big model: 4,000 x 500 rows) fills the
#: heat maps in after it, from a thread, so the view opens as fast whatever the size.
LAYER_ROWS_BEFORE_FRAME = 50_000
#: Below this width or height the view packs tighter (see run_view.tcss).
NARROW_WIDTH, NARROW_HEIGHT = 100, 30
#: Heat maps this high or less (layers, their header, axis, legend, border) get just
#: their height; taller ones share the rest of the screen with the events.
SMALL_HEAT_MAP = 14
DEFAULT_BAND = (1e-4, 1e-2)
#: The events table cuts its cells (the line under it has the highlighted one whole).
SUBJECT_WIDTH, WHERE_WIDTH, MIN_DETAIL_WIDTH = 24, 44, 16
EVENT_COLUMNS = ("iteration", "kind", "subject", "detail", "where")
CSS_PATH = Path(__file__).parent.parent / "run_view.tcss"


@dataclass(frozen=True)
class Against:
    """Run B beside run A (``--against``): its history, thinned as A's, and the diff."""

    history: RunHistory
    source: str
    diff: RunDiff


def band_of(history: RunHistory) -> tuple[float, float]:
    low, high = history.info.settings.get("band", DEFAULT_BAND)
    return float(low), float(high)


def break_iterations(history: RunHistory) -> list[int]:
    """Iterations drawn as lines on the plots: where a break was hit, first NaN/Inf too."""
    return sorted({e.iteration for e in history.events
                   if e.kind in (EventKind.AT, EventKind.SIGNAL)}
                  | ({history.first_nonfinite.iteration} if history.first_nonfinite else set()))


def event_marks(history: RunHistory) -> dict[int, str]:
    """Iteration -> the weightiest break kind at it, for the heat maps' axis."""
    marks: dict[int, EventKind] = {}
    for event in history.events:
        if event.is_break:
            old = marks.get(event.iteration)
            if old is None or BREAK_KINDS.index(event.kind) < BREAK_KINDS.index(old):
                marks[event.iteration] = event.kind
    return {iteration: kind.value for iteration, kind in marks.items()}


def event_row(event: EventRecord) -> tuple[str, str, str, str, str]:
    """(iteration, kind, subject, detail, where) as the events table shows them: each
    field of the event in its column, the file of its origin without its folder."""
    kind = event.kind.value if isinstance(event.kind, EventKind) else event.kind
    where = "" if event.origin is None else origin_text(event.origin, short=True)
    return (str(event.iteration), kind, event.subject, event.detail, where)


def headline(history: RunHistory, source: str = "", *, against: Against | None = None,
             ranks: RankComparison | None = None) -> Text:
    """Which run, how far it got, whether its ranks agree, the first NaN/Inf, and the
    run it is compared with: the lines above it all (the band is in the heat maps'
    legend)."""
    info = history.info
    rows = history.iterations
    text = Text(no_wrap=False)
    text.append(f"{source} · " if source else "", "bold")
    text.append(f"run {info.run}", "bold")
    if info.world_size > 1:
        text.append(f" (rank {info.rank} of {info.world_size})")
    text.append(f" · {info.model}, {info.optimizer or 'no optimizer'} · {info.status}")
    span = (f"iterations {rows[0].iteration}..{rows[-1].iteration}" if rows
            else "no iteration finished")
    text.append(f" · {span}")
    shown, total = len(rows), history.total_iterations
    if total and shown < total:
        text.append(f" · showing {shown} of {total} iterations, evenly spaced", "yellow")
    if ranks is not None and ranks.agree:
        text.append(f" · the {len(ranks.ranks)} ranks agree", "green")
    elif ranks is not None and ranks.parting is not None:
        text.append("\nranks: ", "bold #ff5f87")
        text.append(comparison_text(ranks))
    elif ranks is not None and ranks.world_size > 1:  # not compared, and why
        text.append(f"\n{comparison_text(ranks)}", "grey62")
    first = history.first_nonfinite
    if first is not None:
        text.append("\nfirst NaN/Inf: ", "bold #ff5f87")
        text.append(f"iteration {first.iteration}, {first.detail}")
        if first.origin is None:
            text.append(" · origin not traced (break_on 'nonfinite' or nan_origin=True "
                        "traces it)", "grey62")
        else:
            text.append(f"; {event_parts(first)[2]}")
    if against is not None:
        text.append("\nB", f"bold {AGAINST_COLOR}")
        text.append(f" ({AGAINST_COLOR} on the plots): {against.source} run "
                    f"{against.diff.run_b} · ")
        text.append(verdict_text(against.diff), "bold" if against.diff.parted_at else "")
    return text


class RunView(Vertical):
    """One run: plots, layer heat maps, events. ``show(history, source)``."""

    def compose(self) -> ComposeResult:
        yield Static(id="run-headline")
        with Horizontal(id="run-plots"):
            yield HistoryPlot(id="run-loss")
            yield HistoryPlot(id="run-grad")
        yield LayerHeatMap(id="run-layers")
        with Vertical(id="run-events"):
            yield DataTable(id="run-events-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="run-event-detail")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history: RunHistory | None = None
        self._events: list[EventRecord] = []
        self._table_width = 0


    def show(self, history: RunHistory, source: str = "", *, against: Against | None = None,
             ranks: RankComparison | None = None,
             layers: Callable[[], RunHistory] | None = None) -> None:
        """Show ``history``; ``against``: another run drawn on the plots beside it;
        ``ranks``: its ranks compared, said in the headline; ``layers``: where
        ``history`` was read without its layers' norms, a function that reads them
        (run in a thread; the heat maps fill in when it returns)."""
        self.history = history
        self.query_one("#run-headline", Static).update(
            headline(history, source, against=against, ranks=ranks))
        numbers = history.iteration_numbers
        breaks = break_iterations(history)
        other = against.history if against is not None else None
        parted = against.diff.parted_at if against is not None else None
        self.query_one("#run-loss", HistoryPlot).show(
            numbers, history.losses, name="loss", breaks=breaks, parted_at=parted,
            against=None if other is None else (other.iteration_numbers, other.losses))
        self.query_one("#run-grad", HistoryPlot).show(
            numbers, history.grad_norms, name="total |grad|", log=True, breaks=breaks,
            parted_at=parted,
            against=None if other is None else (other.iteration_numbers, other.grad_norms))
        if history.layers_read or layers is None:
            self._show_layers(history)
        else:
            self.query_one(LayerHeatMap).border_title = (
                f"reading {len(history.layers)} layers × {len(history.iterations)} "
                "iterations …")
            # after the first frame: a read in a thread slows the drawing it would race
            self.call_after_refresh(self.run_worker, layers, name="layers", thread=True,
                                    exclusive=True)
        self._show_events(history.events)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "layers":
            return
        if event.state is WorkerState.SUCCESS:
            self.history = event.worker.result
            self._show_layers(self.history)
        elif event.state is WorkerState.ERROR:
            self.query_one(LayerHeatMap).border_title = (
                f"the layers' norms could not be read: {event.worker.error}")

    def _show_layers(self, history: RunHistory) -> None:
        """The heat maps: every layer's |grad| and |Δ|/|p| over the iterations."""
        grads, ratios = history.layer_grad_norms, history.layer_update_ratios
        maps = [HeatLayer("|grad|", "|grad| per layer", grads, LogScale.spanning(grads),
                          nonfinite=history.layer_nonfinite or None, missing="no gradient"),
                HeatLayer("|Δ|/|p|", "update |Δ|/|p| per layer", ratios,
                          BandScale.around(band_of(history), ratios), missing="no step")]
        heat = self.query_one(LayerHeatMap)
        heat.show(history.layers, history.iteration_numbers, maps, event_marks(history))
        self._title_heat_map()
        # A small model's few layers leave the rows below them to the events (a fixed
        # height: a max-height under the CSS min-height upsets Textual's fr sharing).
        needed = len(history.layers) + HEADER_LINES + FOOTER_LINES + 2
        heat.styles.height = needed if needed <= SMALL_HEAT_MAP else None

    def _title_heat_map(self) -> None:
        heat = self.query_one(LayerHeatMap)
        per = heat.per_column
        heat.border_title = (f"{len(self.history.layers)} layers × "
                             f"{len(self.history.iterations)} iterations"
                             + (f", {per} per column" if per > 1 else ""))

    def _show_events(self, events: list[EventRecord]) -> None:
        self._events = list(events)
        self._fill_table()
        audits = sum(1 for e in events if e.is_audit)
        box = self.query_one("#run-events")
        box.border_title = (f"events: {len(events)}, {audits} of them audits" if events
                            else "events: none (no break, no NaN/Inf, no audit)")
        self._describe(0 if events else None)

    def _fill_table(self) -> None:
        """The events' rows, each detail cut to what the table's width leaves it (the
        line under the table has it whole), so that "where" stays on screen."""
        table = self.query_one("#run-events-table", DataTable)
        width = table.size.width or 118
        subject_width = min(SUBJECT_WIDTH, max(10, width // 6))
        where_width = min(WHERE_WIDTH, max(12, width // 4))
        rows = [(i, k, _cut(s, subject_width), d, _cut(w, where_width))
                for i, k, s, d, w in map(event_row, self._events)]
        others = sum(max([len(EVENT_COLUMNS[c]), *(len(row[c]) for row in rows)])
                     for c in (0, 1, 2, 4))
        room = max(MIN_DETAIL_WIDTH, width - others - 2 * 5 - 1)
        cursor = table.cursor_row
        table.clear(columns=True)  # columns too: their widths only ever grow
        table.add_columns(*EVENT_COLUMNS)
        for index, (iteration, kind, subject, detail, where) in enumerate(rows):
            table.add_row(iteration, kind, subject, _cut(detail, room), where, key=str(index))
        if rows:
            table.move_cursor(row=min(max(cursor, 0), len(rows) - 1))
        self._table_width = table.size.width

    def _describe(self, index: int | None) -> None:
        """The highlighted event in full under the table (the table cuts long cells)."""
        line = self.query_one("#run-event-detail", Static)
        if index is None or not 0 <= index < len(self._events):
            line.update("")
            return
        head, words, where = event_parts(self._events[index])
        text = Text(head, "bold")
        text.append(f": {words}" if words else "")
        text.append(f"; {where}" if where else "", "grey70")
        line.update(text)

    def on_data_table_row_highlighted(self, message: DataTable.RowHighlighted) -> None:
        self._describe(message.cursor_row)

    def on_data_table_row_selected(self, message: DataTable.RowSelected) -> None:
        index = message.cursor_row
        if 0 <= index < len(self._events):
            heat = self.query_one(LayerHeatMap)
            heat.point_at(self._events[index].iteration)
            subject = self._events[index].subject
            layer = next((i for i, name in enumerate(self.history.layers)
                          if subject and (subject == name or subject.startswith(name + "."))),
                         None)
            if layer is not None:
                heat.cursor_row = layer
            heat.focus()

    def on_resize(self, event) -> None:
        self.set_class(event.size.width < NARROW_WIDTH or event.size.height < NARROW_HEIGHT,
                       "-narrow")
        self.call_after_refresh(self._refit_table)

    def _refit_table(self) -> None:
        if self.history is not None and self.history.layers_read:
            self._title_heat_map()
        table = self.query_one("#run-events-table", DataTable)
        if self._events and table.size.width != self._table_width:
            self._fill_table()


class RunScreen(Screen[None]):
    """The run view as a screen: of its own app (``gradviz open RUN.db``), or pushed
    over the stepping app (escape goes back)."""

    BINDINGS = [
        Binding("escape,q", "close", "close", id="close"),
        Binding("tab", "app.focus_next", "heat maps / events", id="next-panel"),
    ]
    AUTO_FOCUS = "#run-layers"

    def __init__(self, history: RunHistory, source: str = "", *, against: Against | None = None,
                 ranks: RankComparison | None = None,
                 layers: Callable[[], RunHistory] | None = None) -> None:
        super().__init__()
        self.history = history
        self.source = source
        self.against = against
        self.ranks = ranks
        self.layers_later = layers

    def compose(self) -> ComposeResult:
        yield RunView(id="run-view")
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        self.query_one(RunView).show(self.history, self.source, against=self.against,
                                     ranks=self.ranks, layers=self.layers_later)

    def action_close(self) -> None:
        if len(self.app.screen_stack) > 1 and self.app.screen_stack[0] is not self:
            self.dismiss()
        else:
            self.app.exit(0)


class RunRecordApp(App[int]):
    """``gradviz open RUN.db``: only the run view. Its own small app, not a mode of
    the stepping app: a record has no session, no engine thread and needs no torch,
    and none of the stepping app's keys would mean anything here."""

    CSS_PATH = CSS_PATH
    TITLE = "gradviz"

    def __init__(self, history: RunHistory, source: str = "", *, against: Against | None = None,
                 ranks: RankComparison | None = None,
                 layers: Callable[[], RunHistory] | None = None) -> None:
        super().__init__()
        self.history = history
        self.source = source
        self.against = against
        self.ranks = ranks
        self.layers_later = layers

    def get_default_screen(self) -> Screen:
        return RunScreen(self.history, self.source, against=self.against, ranks=self.ranks,
                         layers=self.layers_later)


def make_record_app(path: str | os.PathLike, run: int | None = None, *,
                    against: str | os.PathLike | None = None) -> RunRecordApp:
    """The app on the record at ``path`` (its latest run, or ``run``), for the CLI and
    the tests; ``against``: another record whose latest run is drawn beside it. The
    files are read here (a distributed run's ranks compared, the two runs diffed), so a
    bad one, or two runs of different models, raises a one-line RecordError before
    anything takes the screen. The layers' norms of a big read come after the first
    frame (:data:`LAYER_ROWS_BEFORE_FRAME`)."""
    with RunRecord(path) as record:
        history = record.history(run, points=VIEW_POINTS, layers=False)
        if len(history.params) * len(history.iterations) <= LAYER_ROWS_BEFORE_FRAME:
            history = record.read_layers(history)
    layers = None if history.layers_read else partial(_read_layers, path, history)
    ranks = None
    if history.info.world_size > 1:
        ranks = compare_ranks(find_job([path], run=history.info.run))
    beside = None
    if against is not None:
        result = diff_runs(path, against, run_a=history.info.run)
        with RunRecord(against) as other:  # B's plots only: its layers are not drawn
            beside = Against(other.history(result.run_b, points=VIEW_POINTS, layers=False),
                             str(against), result)
    return RunRecordApp(history, source=str(path), against=beside, ranks=ranks, layers=layers)


def _read_layers(path: str | os.PathLike, history: RunHistory) -> RunHistory:
    """``history`` with its layers' norms, read on the worker's own connection."""
    with RunRecord(path) as record:
        return record.read_layers(history)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
