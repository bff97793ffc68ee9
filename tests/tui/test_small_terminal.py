"""The app at 80x24, as a laptop's default terminal shows it: nothing hidden, nothing cut
silently, the keys where the help says."""

from textual.widgets import DataTable

from gradviz.tui.app import make_app
from gradviz.tui.widgets.inspector import Inspector

from .conftest import press, settle

SMALL = (80, 24)


def status(app):
    return str(app.query_one("#status").render())


def columns_in_sight(table: DataTable) -> list[str]:
    """The columns drawn whole; asserts that none is drawn in part at the right edge."""
    width = table.scrollable_content_region.width
    shown, start = [], 0
    for column in table.ordered_columns:
        end = start + column.get_render_width(table)
        assert end <= width or start >= width, (str(column.label), start, end, width)
        if end <= width:
            shown.append(str(column.label))
        start = end
    return shown


async def test_resnet18_at_80x24_shows_grad_norms_beside_names_cut_in_the_middle():
    app = make_app("resnet18")
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "c")
        table = app.query_one("#params", DataTable)
        assert columns_in_sight(table)[:2] == ["parameter", "|grad|"]
        names = [str(table.get_cell_at((row, 0))) for row in range(table.row_count)]
        assert "layer4.1.conv2.weight" in names  # a name that fits stays whole
        assert "layer2.0.downsample.0.weight" not in names  # too long for the panel ...
        assert "layer2.…ample.0.weight" in names  # ... its top module and end stay
        for row in range(table.row_count):  # ... and every |grad| is there, whole
            norm = str(table.get_cell_at((row, 1)))
            assert norm and "…" not in norm and float(norm) > 0


async def test_the_tutorial_at_80x24_shows_a_grad_and_a_tall_enough_inspector():
    app = make_app("autograd-basics")
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        await press(app, pilot, *["n"] * 6)
        table = app.query_one("#params", DataTable)
        assert columns_in_sight(table)[:3] == ["parameter", "|grad|", "grad"]
        assert str(table.get_cell("a", "grad")) == "[36, 81]"
        assert app.query_one(Inspector).size.height >= 8
        assert "pass" in str(app.query_one("#checks").render())


async def test_the_status_line_keeps_scenario_and_step_and_follows_a_resize():
    app = make_app("resnet18")
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "n")
        assert status(app).startswith("resnet18  ·  iteration 0  ·  step 1/134")
        await pilot.resize_terminal(40, 10)
        await pilot.pause(0.3)
        line = status(app)
        assert line.startswith("resnet18  ·  step 1/134") and line.endswith("…")
        assert len(line) <= 38
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.3)
        assert status(app).startswith("resnet18  ·  iteration 0  ·  step 1/134  ·  next:")
        assert not status(app).endswith("…")


async def test_tab_tab_enter_inspects_a_parameter_as_the_help_says():
    app = make_app("autograd-basics")
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        assert app.focused.id == "graph"
        await pilot.press("tab")
        assert app.focused.id == "inspector"
        await pilot.press("tab")
        assert app.focused.id == "params"
        await pilot.press("down", "enter")
        await settle(app, pilot)
        shown = app.query_one(Inspector).plain_text()
        assert shown.startswith("b  (2,)") and "requires_grad=True" in shown


async def test_the_graph_and_the_inspector_say_which_gradient_they_show():
    app = make_app("autograd-basics")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "n", "n")  # SubBackward0, then PowBackward0 (of b**2)
        view = app.query_one("#graph")
        row = view._row_text(view.row_of["PowBackward0#0"]).plain
        assert "PowBackward0  |g out|=14.4" in row
        await pilot.press("up")  # to PowBackward0's row: it took 1.414 in, sent 14.4 out
        await settle(app, pilot)
        shown = app.query_one(Inspector).plain_text()
        assert "|g in|=1.414" in shown and "|g out|=14.42" in shown


async def test_find_b_goes_to_the_parameter_and_its_count_follows_the_query():
    app = make_app("autograd-basics")
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        await pilot.press("slash", "b")
        await pilot.pause(0.1)
        count = app.query_one("#find-count")
        assert str(count.render()) == "5 matches"  # b, and every *Backward0 with a b in it
        await pilot.press("enter")
        await pilot.pause(0.1)
        view = app.query_one("#graph")
        assert view.row_key(view.cursor) == "param:b"
        assert str(count.render()) == "1 of 5: param:b"
        await pilot.press("backspace", "p", "o", "w")
        await pilot.pause(0.1)
        assert str(count.render()) == "2 matches"  # edited: counted again, at once
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert str(count.render()).startswith("1 of 2: PowBackward0")


async def test_a_root_that_is_not_a_scalar_shows_its_graph_and_says_why_it_cannot_step(
        scenario_file):
    app = make_app(scenario_file("    return w * 2"))
    async with app.run_test(size=SMALL) as pilot:
        await settle(app, pilot)
        assert len(app.query_one("#graph").rows) == 2  # MulBackward0 and w, as export draws
        assert "no backward: the root is not a scalar (shape (3,))" in status(app)
        assert not app.check_action("step", ())
        await pilot.press("n")
        await pilot.pause(0.2)
        assert app.state.view().done == 0
        assert any("backward needs a gradient" in str(n.message) for n in app._notifications)
