"""RunSoFar: the break and the run before it, as the app a watch break opened shows it."""

import math

from textual.app import App, ComposeResult

from gradviz.model.runs.events import Origin
from gradviz.training.breaks import WatchBreak
from gradviz.tui.widgets.run_plots import HistoryPlot
from gradviz.tui.widgets.run_so_far import RunSoFar
from gradviz.tui.screens.run_view import CSS_PATH

from .run_histories import synthetic_history


class Host(App):
    """The panel alone, styled as in the app."""

    CSS_PATH = CSS_PATH

    def compose(self) -> ComposeResult:
        yield RunSoFar(id="run-so-far")


def nan_break(iteration: int) -> WatchBreak:
    origin = Origin("backward", "SqrtBackward0#0", "SqrtBackward0", "abs",
                    "/home/me/train.py", 27, "made NaN/Inf from finite inputs")
    return WatchBreak(iteration, "nonfinite", "a gradient is NaN/Inf", origin=origin,
                      loss=0.93, grad_norm=math.nan)


async def test_a_nan_break_shows_where_it_started_and_the_run_before_it_with_a_line_at_it():
    history = synthetic_history(layers=3, iterations=29)
    app = Host()
    async with app.run_test(size=(60, 20)) as pilot:
        panel = app.query_one(RunSoFar)
        panel.show(history, nan_break(30))
        await pilot.pause()
        reason = str(app.query_one("#run-so-far-reason").render())
        assert reason.splitlines() == [
            "nonfinite: a gradient is NaN/Inf · loss 0.93 · total |grad| NaN",
            "started at SqrtBackward0#0 in 'abs' · train.py:27"]
        assert str(panel.border_title) == "break at iteration 30 · the run so far"
        assert "x stop it" in str(panel.border_subtitle)
        loss = app.query_one("#run-so-far-loss", HistoryPlot)
        grad = app.query_one("#run-so-far-grad", HistoryPlot)
        assert loss.iterations == list(range(1, 30)) and loss.breaks == [30]
        assert grad.log_scale and str(grad.border_title).startswith("total |grad| (log)")


async def test_a_spike_break_without_an_origin_says_only_what_it_saw():
    history = synthetic_history(layers=2, iterations=12)
    spike = WatchBreak(12, "spike", "gradient norm 51.2 is 48x the median of the last 11 "
                       "iterations (1.06)", loss=2.5, grad_norm=51.2)
    app = Host()
    async with app.run_test(size=(60, 20)) as pilot:
        app.query_one(RunSoFar).show(history, spike)
        await pilot.pause()
        reason = str(app.query_one("#run-so-far-reason").render())
        assert reason.startswith("spike: gradient norm 51.2 is 48x")
        assert "started at" not in reason and "loss 2.5 · total |grad| 51.2" in reason
