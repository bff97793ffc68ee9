"""RunSoFar: the run up to a break of :func:`gradviz.watch`, beside the graph it opened.

What the app shows when a break opened it (``TrainingPause``): why it stopped
here (the reason, and where a NaN/Inf started), and the loss and total gradient
norm of the iterations before, with the break's iteration as a line, so a spike
or a slow divergence is seen for what it is. Plain data in (the run's history
and the break's attributes); the "stop training" action itself is the app's.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static

from gradviz.tui.widgets.run_plots import HistoryPlot

if TYPE_CHECKING:
    from gradviz.model.run_history import RunHistory
    from gradviz.training.breaks import WatchBreak

#: What the break's keys do, as the panel's subtitle says it (the app binds them).
KEYS_HINT = "q resume training · x stop it · r whole run"


def break_text(brk: WatchBreak) -> Text:
    """The break in a few short lines: the reason and detail, the loss and gradient
    norm it saw, where a NaN/Inf started (the iteration is in the panel's title)."""
    text = Text()
    text.append(brk.reason, "bold #ff5f87" if brk.reason == "nonfinite" else "bold yellow")
    text.append(f": {brk.detail}")
    values = []
    if brk.loss is not None:
        values.append(f"loss {_number(brk.loss)}")
    if brk.grad_norm is not None:
        values.append(f"total |grad| {_number(brk.grad_norm)}")
    if values:
        text.append(f" · {' · '.join(values)}", "grey70")
    if brk.node is not None:
        text.append("\nstarted at ", "grey70")
        text.append(brk.node, "bold")
        if brk.op and not brk.node.startswith(brk.op):
            text.append(f" ({brk.op})")
        if brk.module:
            text.append(f" in {brk.module!r}")
        elif brk.module is not None:
            text.append(" in the model's own forward")
        if brk.file:
            text.append(f" · {os.path.basename(brk.file)}:{brk.line}", "grey70")
    elif brk.origin is not None:
        text.append(f"\norigin not found: {brk.origin.detail}", "grey70")
    if brk.rank:
        text.append(f" · rank {brk.rank}", "grey70")
    return text


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return f"{value:.4g}" if math.isfinite(value) else "Inf"


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

    def show(self, history: RunHistory, brk: WatchBreak) -> None:
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
