"""The run view beside another run (``--against``) and over a distributed run's ranks:
B on A's axes in another colour, where they part, and the ranks' verdict in the headline."""

import pytest
from synthetic_records import make_record

from gradviz.model.runs.schema import RecordError
from gradviz.tui.screens.run_view import make_record_app
from gradviz.tui.widgets.run_plots import AGAINST_COLOR, HistoryPlot

N = 300
GREEN, MAGENTA = "color(2)", "color(5)"  # as plotext's ANSI output names them


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("against")
    return {"a": make_record(folder / "a.db", iterations=N),
            "seed": make_record(folder / "seed.db", iterations=N, seed_change_at=120),
            "same": make_record(folder / "same.db", iterations=N),
            "faulty": make_record(folder / "faulty.db", iterations=N, ranks=3,
                                  fault=(2, 40, 1, 1.001)),
            "agree": make_record(folder / "agree.db", iterations=N, ranks=2),
            "other": make_record(folder / "other.db", iterations=N, names=["head.weight"])}


def headline(app) -> str:
    return str(app.screen.query_one("#run-headline").render())


def colors_drawn(plot: HistoryPlot) -> set[str]:
    """The colours of what plotext drew in the plot (its text's styles)."""
    return {span.style.color.name for span in plot.render().spans
            if not isinstance(span.style, str) and span.style.color is not None}


async def test_b_is_drawn_on_a_s_axes_with_where_they_part(records):
    app = make_record_app(records["a"], against=records["seed"])
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        loss = app.screen.query_one("#run-loss", HistoryPlot)
        assert loss.against is not None and loss.against[0] == list(range(1, N + 1))
        assert loss.against[1][:119] == loss.values[:119]  # the same run up to 119
        assert loss.against[1][119] != loss.values[119]
        assert loss.parted_at == 120
        grad = app.screen.query_one("#run-grad", HistoryPlot)
        assert grad.parted_at == 120 and len(grad.against[1]) == N
        assert " · B " in str(grad.border_title)
        text = headline(app)
        assert f"B ({AGAINST_COLOR} on the plots): {records['seed']} run 1 · parted at " \
               "iteration 120: loss 0.6917" in text
        # what plotext drew: A's line in green, B's (and the parting's line) in magenta
        assert {GREEN, MAGENTA} <= colors_drawn(loss)


async def test_identical_runs_are_said_to_be_identical(records):
    app = make_record_app(records["a"], against=records["same"])
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "the runs are identical" in headline(app)
        loss = app.screen.query_one("#run-loss", HistoryPlot)
        assert loss.parted_at is None
        assert GREEN in colors_drawn(loss) and MAGENTA not in colors_drawn(loss)  # B under A


def test_runs_of_different_models_are_refused_before_the_screen(records):
    with pytest.raises(RecordError, match="record different models"):
        make_record_app(records["a"], against=records["other"])


async def test_the_headline_names_the_rank_that_parts_or_says_they_agree(records):
    app = make_record_app(records["faulty"])
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "ranks: iteration 40: rank 2 parts from the others on layers.0.bias" in \
            headline(app)
    app = make_record_app(records["agree"])
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "run 1 (rank 0 of 2)" in headline(app) and "the 2 ranks agree" in headline(app)


async def test_a_big_read_draws_its_first_frame_then_fills_the_heat_maps_in(records, monkeypatch):
    """Over LAYER_ROWS_BEFORE_FRAME parameter rows the layers' norms are read after the
    first frame, in a thread: the plots and the events are there at once, the heat
    maps when the read is done, with the values a whole read gives."""
    import gradviz.tui.screens.run_view as run_view
    from gradviz.model.runs.history import RunRecord
    from gradviz.tui.widgets.heat_map import LayerHeatMap

    monkeypatch.setattr(run_view, "LAYER_ROWS_BEFORE_FRAME", 100)
    app = make_record_app(records["a"])
    assert not app.history.layers_read and app.layers_later is not None
    async with app.run_test(size=(120, 40)) as pilot:
        assert len(app.screen.query_one("#run-loss", HistoryPlot).values) == N
        await app.workers.wait_for_complete()
        await pilot.pause()
        heat = app.screen.query_one(LayerHeatMap)
        with RunRecord(records["a"]) as record:
            whole = record.history(points=run_view.VIEW_POINTS)
        assert heat.data.rows == whole.layers == [f"layers.{j}" for j in range(4)]
        assert heat.data.maps[0].values == whole.layer_grad_norms
        assert "4 layers × 300 iterations" in str(heat.border_title)
