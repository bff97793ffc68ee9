"""The run view of a gradviz.watch record (Pilot): what its plots, heat maps and events show."""

import math
import time

import pytest
import torch
from textual.app import App
from torch import nn

import gradviz
from gradviz.model.runs.history import RunRecord
from gradviz.tui.widgets.heat_map import MISSING, NONFINITE, LayerHeatMap
from gradviz.tui.widgets.run_plots import HistoryPlot
from gradviz.tui.screens.run_view import CSS_PATH as RUN_VIEW_CSS
from gradviz.tui.screens.run_view import RunRecordApp, RunScreen, RunView, make_record_app

from .run_histories import synthetic_history

LOSS_NAN_AT, GRAD_NAN_AT, ITERATIONS = 3, 5, 8


def record_a_run(path):
    """A tiny model trained 8 iterations under gradviz.watch: at iteration 3 the loss is
    NaN (a NaN constant added: its gradients stay finite), at iteration 5 the gradient
    of the last layer's weight is NaN (a hook), cleaned before the step so the weights
    stay finite and training goes on."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    at = [0]
    model[2].weight.register_hook(lambda g: g * math.nan if at[0] == GRAD_NAN_AT else g)
    losses = []
    # the band the heat map's cursor is read against: (1e-4, 1e-2), given
    with gradviz.watch(model, optimizer, record=path, on_break="report", band=(1e-4, 1e-2)):
        optimizer.register_step_pre_hook(lambda *_: _clean(model))  # after the watch's check
        for i in range(1, ITERATIONS + 1):
            at[0] = i
            loss = nn.functional.mse_loss(model(x), y)
            if i == LOSS_NAN_AT:
                loss = loss + torch.tensor(math.nan)
            losses.append(loss.item())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return losses


def _clean(model):
    for p in model.parameters():
        p.grad.nan_to_num_(0.0)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.db"
    losses = record_a_run(path)
    return path, losses


def title(app, selector):
    return str(app.screen.query_one(selector).border_title)


async def test_a_record_with_nans_opens_on_its_loss_gradients_layers_and_events(recorded):
    path, losses = recorded
    app = make_record_app(path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        # the plots: every loss the loop saw, NaN marked at its iteration, not drawn as a number
        loss = app.screen.query_one("#run-loss", HistoryPlot)
        assert loss.iterations == list(range(1, ITERATIONS + 1))
        assert [v for v in loss.values if v == v] == [v for v in losses if v == v]
        assert math.isnan(loss.values[LOSS_NAN_AT - 1])
        assert loss.nonfinite == [(LOSS_NAN_AT, loss.values[LOSS_NAN_AT - 1])]
        assert "NaN at 3" in title(app, "#run-loss") and "(log)" not in title(app, "#run-loss")
        assert "total |grad| (log)" in title(app, "#run-grad")
        assert "NaN at 5" in title(app, "#run-grad")
        headline = str(app.screen.query_one("#run-headline").render())
        assert "run.db · run 1 · Sequential, SGD · finished · iterations 1..8" in headline
        assert "first NaN/Inf: iteration 3, the loss is NaN/Inf" in headline

        # the heat maps: one row per layer, one column per iteration, NaN where it was NaN
        heat = app.screen.query_one(LayerHeatMap)
        assert heat.data.rows == ["0", "2"]
        assert heat.columns == [(i, i) for i in range(1, ITERATIONS + 1)]
        grads_of_2 = heat.cells(0, 1)
        assert grads_of_2[GRAD_NAN_AT - 1][0] == NONFINITE
        assert all(kind == "value" for i, (kind, _) in enumerate(grads_of_2)
                   if i != GRAD_NAN_AT - 1)
        assert all(kind == "value" for kind, _ in heat.cells(0, 0))  # layer 0 stayed finite
        assert all(kind == "value" and v > 0 for kind, v in heat.cells(1, 0))  # |Δ|/|p|
        row = heat.render_line(1 + 1)  # header line, then layer "0", then layer "2"
        cell = [s for s in row if s.text.strip() == "×"]
        assert cell and cell[0].style.bgcolor.name == "#d7005f"
        assert "2 layers × 8 iterations" in str(heat.border_title)

        # the events: both NaNs, with what happened
        table = app.screen.query_one("#run-events-table")
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert rows == [["3", "nonfinite", "", "the loss is NaN/Inf", ""],
                        ["5", "nonfinite", "", "a gradient is NaN/Inf", ""]]
        assert "events: 2, 0 of them audits" in title(app, "#run-events")


async def test_at_80x24_the_heat_maps_titles_are_cut_with_an_ellipsis_not_mid_word(recorded):
    path, _ = recorded
    app = make_record_app(path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        heat = app.screen.query_one(LayerHeatMap)
        header = "".join(segment.text for segment in heat.render_line(0))
        assert "|grad| per layer" in header and "|Δ|/|p| per layer" in header
        label_width, map_width, _ = heat._geometry
        titles = [header[label_width:label_width + map_width],
                  header[label_width + map_width + 2:label_width + 2 * map_width + 2]]
        for title in titles:  # each map's title fits its map; what does not fit says so
            assert len(title) == map_width
            assert title.rstrip().endswith(("…", "step", "gradient")), titles


async def test_enter_on_an_event_puts_the_heat_maps_cursor_on_its_iteration(recorded):
    path, _ = recorded
    app = make_record_app(path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        heat = app.screen.query_one(LayerHeatMap)
        assert app.focused is heat and "iteration 8" in heat.cursor_text()
        await pilot.press("down")
        assert heat.cursor_text().startswith("2 · iteration 8")
        await pilot.press("tab", "down", "enter")
        assert app.focused is heat
        assert heat.cursor_text() == "2 · iteration 5 · |grad| NaN/Inf · " + \
            heat.cursor_text().split("· |grad| NaN/Inf · ")[1]
        assert "|Δ|/|p|" in heat.cursor_text() and "above band" in heat.cursor_text()
        detail = str(app.screen.query_one("#run-event-detail").render())
        assert detail.startswith("iteration 5 · nonfinite: a gradient is NaN/Inf")
        # a click on a cell: layer "0" (the first row under the maps' titles), iteration 2
        label = heat._geometry[0]
        second_column = 1 + label + heat._bins[0][2]  # the border, the labels, column 1
        await pilot.click(LayerHeatMap, offset=(second_column, 2))
        assert heat.cursor_text().startswith("0 · iteration 2 ·")
        await pilot.press("q")
    assert app.return_code == 0


async def test_at_80x24_the_view_fits_with_the_nan_line_and_rows_of_every_part(recorded):
    path, _ = recorded
    app = make_record_app(path)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        view = app.screen.query_one(RunView)
        assert view.has_class("-narrow")
        assert view.max_scroll_y == 0  # nothing pushed below the screen
        heat = app.screen.query_one(LayerHeatMap)
        assert heat.rows_shown >= 2
        assert app.screen.query_one("#run-events-table").size.height >= 2
        assert "first NaN/Inf: iteration 3" in str(app.screen.query_one("#run-headline").render())


async def test_thousands_of_iterations_and_hundreds_of_layers_bin_to_the_width_fast():
    history = synthetic_history(layers=300, iterations=5000, nan_at=2345)
    started = time.perf_counter()
    app = RunRecordApp(history, source="big.db")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        shown = time.perf_counter() - started
        heat = app.screen.query_one(LayerHeatMap)
        columns = heat.columns
        label, map_width, _ = heat._geometry
        assert len(columns) == map_width and columns[0][0] == 1 and columns[-1][1] == 5000
        assert all(b[0] == a[1] + 1 for a, b in zip(columns, columns[1:]))  # no gap, no overlap
        assert f"{heat.per_column} per column" in str(heat.border_title)
        # a single NaN iteration wins its column; the rows around it are untouched
        await pilot.press("end", *["pagedown"] * 40)
        assert heat.cursor_row == 299 and heat.top == 300 - heat.rows_shown
        kinds = [kind for kind, _ in heat.cells(0, 299)]
        nan_column = next(j for j, (a, b) in enumerate(columns) if a <= 2345 <= b)
        assert kinds[nan_column] == NONFINITE and kinds.count(NONFINITE) == 1
        assert MISSING not in kinds
        # colour by decade: rows 0..4 are 1e-3..1e1 on a scale from 1e-3 to 1e1
        first_cells = [heat.render_line(1 + r - heat.top).crop(label, label + 1)
                       for r in range(heat.top, heat.top + 5)]
        assert len({list(c)[0].style.bgcolor.name for c in first_cells}) == 5
        started = time.perf_counter()
        for _ in range(20):
            await pilot.press("up")
        await pilot.pause()
        moving = time.perf_counter() - started
    assert shown < 5.0 and moving < 3.0, (shown, moving)


def test_the_record_tells_a_nan_gradient_from_no_gradient(recorded):
    path, _ = recorded
    with RunRecord(path) as record:
        history = record.history()
    assert history.layers == ["0", "2"]
    assert history.layer_nonfinite == [[False] * ITERATIONS,
                                       [i == GRAD_NAN_AT for i in range(1, ITERATIONS + 1)]]
    assert math.isnan(history.layer_grad_norms[1][GRAD_NAN_AT - 1])


async def test_the_run_screen_over_another_app_closes_back_to_it():
    class Other(App):
        CSS_PATH = RUN_VIEW_CSS

    app = Other()
    async with app.run_test(size=(100, 30)) as pilot:
        app.push_screen(RunScreen(synthetic_history(4, 50, nan_at=20), source="a break"))
        await pilot.pause()
        assert isinstance(app.screen, RunScreen)
        assert "a break · run 1" in str(app.screen.query_one("#run-headline").render())
        await pilot.press("escape")
        assert not isinstance(app.screen, RunScreen) and app.is_running
