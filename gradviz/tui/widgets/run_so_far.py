"""RunSoFar: the run up to a break of :func:`gradviz.watch`, beside the graph it opened.

What the app shows when a break opened it (``TrainingPause``): why it stopped
here (the reason, and where a NaN/Inf started), and the loss and total gradient
norm of the iterations before, with the break's iteration as a line, so a spike
or a slow divergence is seen for what it is. Plain data in (the run's history
and the break's attributes); the "stop training" action itself is the app's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from gradviz.model.runs.events import BreakInfo, EventKind, number_text, origin_text
from gradviz.tui.widgets.run_plots import HistoryPlot

if TYPE_CHECKING:
    from gradviz.model.runs.history import RunHistory

#: What the break's keys do, as the panel's subtitle says it (the app binds them).
KEYS_HINT = "q resume training · x stop it · i no more of these · r whole run"


def break_text(brk: BreakInfo) -> Text:
    """The break in a few short lines: the reason and detail, the loss and gradient
    norm it saw, where a NaN/Inf started (the iteration is in the panel's title)."""
    text = Text()
    reason = brk.reason.value if isinstance(brk.reason, EventKind) else str(brk.reason)
    text.append(reason, "bold #ff5f87" if brk.reason == EventKind.NONFINITE else "bold yellow")
    text.append(f": {brk.detail}")
    values = []
    if brk.loss is not None:
        values.append(f"loss {number_text(brk.loss)}")
    if brk.grad_norm is not None:
        values.append(f"total |grad| {number_text(brk.grad_norm)}")
    if values:
        text.append(f" · {' · '.join(values)}", "grey70")
    origin = brk.origin
    if origin is not None and origin.found:
        text.append("\nstarted at ", "grey70")
        text.append(origin_text(origin, short=True))
    elif origin is not None:
        text.append(f"\norigin not found: {origin.detail}", "grey70")
    if brk.rank:
        text.append(f" · rank {brk.rank}", "grey70")
    return text


class RunSoFar(Vertical):
    """The break and the run before it: ``show(history, brk)``."""

    def compose(self) -> ComposeResult:
        yield Static(id="run-so-far-reason")
        with Horizontal(id="run-so-far-plots"):
            yield HistoryPlot(id="run-so-far-loss")
            yield HistoryPlot(id="run-so-far-grad")

    def on_mount(self) -> None:
        self.border_title = "the run so far"
        self.border_subtitle = KEYS_HINT

    def show(self, history: RunHistory, brk: BreakInfo) -> None:
        """``history``: the iterations before the break (``TrainingPause.history``);
        ``brk``: the break (``TrainingPause.brk``)."""
        self.query_one("#run-so-far-reason", Static).update(break_text(brk))
        numbers = history.iteration_numbers
        self.query_one("#run-so-far-loss", HistoryPlot).show(
            numbers, history.losses, name="loss", breaks=[brk.iteration])
        self.query_one("#run-so-far-grad", HistoryPlot).show(
            numbers, history.grad_norms, name="total |grad|", log=True, breaks=[brk.iteration])
        shown = len(numbers)
        total = history.total_iterations or shown
        self.border_title = (f"break at iteration {brk.iteration} · the run so far"
                             + (f" ({shown} of {total} iterations shown)" if shown < total
                                else ""))
