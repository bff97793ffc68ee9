"""Issue 8, item by item, in the app: what a user sees when something fails or keys come fast."""

import io

from rich.console import Console
from textual.widgets import Input, OptionList

from gradviz.model.state import Phase
from gradviz.tui.app import make_app
from gradviz.tui.widgets.graph_view import GraphView
from gradviz.tui.widgets.inspector import Inspector

from .conftest import press, settle

SIZE = (120, 40)





def status(app):
    return str(app.query_one("#status").render())


def text(widget):
    console = Console(width=200, file=io.StringIO(), color_system=None)
    console.print(widget.content)
    return console.file.getvalue()


async def failed(app, pilot, timeout=60.0):
    waited = 0.0
    while waited < timeout:
        await pilot.pause(0.05)
        waited += 0.05
        if app.state.view().failure is not None and not app.state.view().busy:
            return
    raise AssertionError(f"no failure appeared: {app.state.view()}")


# Item 1: a scenario that fails to load: the error stays, nothing spins, keys work, exit 1.
async def test_a_scenario_that_fails_to_load_stays_on_screen_and_quits_with_1(scenario_file):
    app = make_app(scenario_file("    raise ValueError('no data')"))
    async with app.run_test(size=SIZE) as pilot:
        await failed(app, pilot)
        welcome = text(app.query_one("#welcome"))
        assert "could not open it" in welcome and "forward() raised ValueError: no data" in welcome
        assert "p: choose a scenario" in welcome
        assert "error: scenario 's': forward() raised ValueError: no data" in status(app)
        assert not app.state.view().busy
        await pilot.press("p")  # the way on: the picker
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "PickerScreen"
        await pilot.press("escape")
        await pilot.pause(0.1)
        await pilot.press("q")
        await pilot.pause(0.2)
    assert app.return_code == 1


async def test_a_failed_cli_scenario_then_a_good_one_quits_with_0(scenario_file):
    app = make_app(scenario_file("    return w"))  # a leaf as root
    async with app.run_test(size=SIZE) as pilot:
        await failed(app, pilot)
        assert "it is a leaf tensor" in status(app)
        app.open_scenario("autograd-basics")
        await settle(app, pilot)
        assert app.session.scenario.name == "autograd-basics"
        await pilot.press("q")
        await pilot.pause(0.2)
    assert app.return_code == 0


async def test_the_loading_screen_says_what_is_loading(tmp_path):
    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.05)
        seen = text(app.query_one("#welcome"))
        await settle(app, pilot)
    assert "loading resnet18" in seen and "esc stops" in seen


# Item 2: the picker's path input is reachable with tab and a typed path opens that file.
async def test_tab_reaches_the_pickers_path_and_it_opens_that_file(scenario_file):
    path = scenario_file("    return (w * w).sum()", name="mine.py")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        screen = app.screen
        field = screen.query_one("#path", Input)
        assert field.region.bottom <= 24 and field.region.height > 0  # visible at 80x24
        assert isinstance(app.focused, OptionList)
        await pilot.press("tab")
        assert app.focused is field
        await pilot.press(*path)
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.session.scenario.name == "s" and "step 0/3" in status(app)


# Item 3: the inspector scrolls and takes focus; nothing it holds is out of reach.
async def test_the_inspector_scrolls_to_what_a_big_node_sent_on():
    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "n", "n", "n")  # AddmmBackward0 ran
        view = app.query_one(GraphView)
        view.select_node("AddmmBackward0#0")
        await pilot.pause(0.2)
        inspector = app.query_one(Inspector)
        body = app.query_one(Inspector).plain_text()
        assert "sent on:" in body and "→ slot 2" in body and "gradient in:" in body
        assert inspector.max_scroll_y > 0  # taller than its panel at 120x40: it scrolls
        await pilot.press("tab")
        assert app.focused is inspector
        await pilot.press("end")
        await pilot.pause(0.1)
        assert inspector.scroll_y == inspector.max_scroll_y


# Item 4: an exception raised between nodes while stepping shows, with a way on.
async def test_an_error_between_nodes_while_stepping_is_on_screen(scenario_file):
    body = ("    y = w * 2\n"
            "    y.register_hook(lambda grad: 1 / 0)\n"
            "    return (y * y).sum()")
    app = make_app(scenario_file(body))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for _ in range(4):
            await press(app, pilot, "n")
        view = app.state.view()
        assert view.phase is Phase.FAILED
        assert "ZeroDivisionError: division by zero" in status(app)
        assert "next:" not in status(app)  # item 6: no stale "next" after a failure
        assert app.check_action("step", ()) is None and app.check_action("forward", ())
        assert "error: backward failed" in app.query_one(Inspector).plain_text()


async def test_an_error_inside_a_node_marks_it(scenario_file):
    body = ("    y = w.sigmoid()\n"
            "    loss = (y * 2).sum()\n"
            "    y.add_(1)  # breaks what SigmoidBackward0 saved\n"
            "    return loss")
    app = make_app(scenario_file(body))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "c")
        assert "error: backward failed at SigmoidBackward0#0" in status(app)
        assert app.progress.broken == "SigmoidBackward0#0"
        view = app.query_one(GraphView)
        assert view.row_key(view.cursor) == "SigmoidBackward0#0"
        await press(app, pilot, "f")  # the way on: a new forward clears it
        assert app.state.view().failure is None and "step 0/" in status(app)


# Item 6: f whose forward fails keeps the old backward, paused where it was.
async def test_a_failing_forward_keeps_the_old_backward(scenario_file):
    body = ("    if len(calls) > 1:\n"
            "        raise RuntimeError('the second batch is bad')\n"
            "    return (w * w).sum()")
    app = make_app(scenario_file(body))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "n", "f")
        assert "second batch is bad" in status(app) and "step 1/3" in status(app)
        await press(app, pilot, "n")
        assert "step 2/3" in status(app) and app.state.view().failure is None


# Item 7: keys that arrive while busy are queued, never dropped.
async def test_twenty_steps_fifty_ms_apart_are_twenty_steps():
    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for _ in range(20):
            await pilot.press("n")
            await pilot.pause(0.05)
        await settle(app, pilot)
        assert app.state.view().done == 20 and "step 20/134" in status(app)


async def test_two_hundred_steps_in_a_burst_are_two_hundred_steps():
    app = make_app("lstm")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press(*["n"] * 200)
        await settle(app, pilot)
        assert app.state.view().done == 200 and "step 200/6009" in status(app)


# Item 8: opening another demo during continue.
async def test_opening_a_demo_during_continue_switches_cleanly(scenario_file):
    chain = scenario_file("    y = w\n    for _ in range(40_000):\n"
                                    "        y = y.sin()\n    return y.sum()")
    app = make_app(chain)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        old = app.session
        await pilot.press("c")
        await pilot.pause(0.3)
        app.open_scenario("autograd-basics")  # what the palette's "Open demo" does
        await settle(app, pilot)
        assert app.session.scenario.name == "autograd-basics"
        assert app.state.view().failure is None and "step 0/6" in status(app)
        assert old.stepper.done  # the old backward was ended, not left waiting
        await press(app, pilot, "n")
        assert "step 1/6" in status(app)


# Item 9: esc during a slow forward stops it; the graph shown stays.
async def test_escape_stops_a_slow_forward(scenario_file):
    body = ("    if len(calls) > 1:\n"
            "        y = w\n"
            "        for _ in range(3_000_000):\n"
            "            y = y * 1.0\n"
            "        return y.sum()\n"
            "    return (w * w).sum()")
    app = make_app(scenario_file(body))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        graph = app.shown_graph
        await pilot.press("f")
        await pilot.pause(0.3)
        assert "forward pass" in status(app)
        await pilot.press("escape")
        await settle(app, pilot, timeout=5)
        assert "stopped" in status(app) and app.shown_graph is graph


# Item 11: a resize while a dialog is open reaches the main screen.
async def test_a_resize_under_the_help_screen_reaches_the_main_screen():
    app = make_app("autograd-basics")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.query_one("#flow").display
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.2)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "Screen"
        assert not app.query_one("#flow").display  # the narrow layout, without another resize


# Item 12: at 80x24 the footer shows help and quit.
async def test_the_footer_at_80x24_shows_help_and_quit():
    app = make_app("autograd-basics")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        shown = {key.key_display or key.key: key for key in app.screen.query("FooterKey")}
        for key, what in (("?", "help"), ("q", "quit")):
            region = shown[key].region
            assert region.width > 0 and region.right <= 80, (key, region)
            assert what in str(shown[key].render())
        keys = list(app.screen.query("FooterKey"))  # none drawn over another (the palette's)
        assert not any(a.region.overlaps(b.region) for a in keys for b in keys if a is not b)


async def test_with_nothing_loaded_the_footer_shows_only_open_help_and_quit_whole():
    app = make_app(None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot, loaded=False)
        await pilot.press("escape")  # the picker it opens with
        await pilot.pause(0.2)
        footer = {key.key_display or key.key: key for key in app.screen.query("FooterKey")}
        assert {"p", "?", "q"} <= set(footer) and not {"n", "c", "o", "t"} & set(footer)
        assert "quit" in str(footer["q"].render()) and footer["q"].region.right <= 80


# Item 13: a row cut at the panel's edge ends in an ellipsis, not a misleading number.
async def test_a_row_cut_at_the_edge_ends_in_an_ellipsis():
    app = make_app("resnet18")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "c")
        view = app.query_one(GraphView)
        lines = ["".join(s.text for s in view.render_line(y)) for y in range(view.size.height)]
        assert any(line.rstrip().endswith("…") for line in lines)


# Item 14: a greyed key says why it did nothing, in a toast over neither the status
# line nor the node inspector.
async def test_toasts_do_not_cover_the_status_line():
    app = make_app("autograd-basics")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "o")  # greyed before backward: a toast says why
        await pilot.pause(0.3)
        toasts = list(app.screen.query("Toast"))
        assert toasts and "finish backward first" in str(toasts[0].render())
        status_row = app.query_one("#status").region.y
        inspector = app.query_one("#inspector").region
        assert all(toast.region.bottom <= status_row for toast in toasts)
        assert all(toast.region.y >= inspector.bottom for toast in toasts)


async def test_timers_that_fire_while_quitting_do_nothing():
    # Quitting closes the screens before the app's own timers: a timer that then read
    # the graph view raised NoMatches over the terminal (seen after `c` on a 200k chain).
    app = make_app("autograd-basics")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("c")
        await settle(app, pilot)
        assert app.progress.done  # what the timers would draw
    app._describe_visible()
    app._draw_panels()
    app._show_busy()


_SWITCH_THEN_EXIT = """
import asyncio
from gradviz.tui.app import make_app


async def main():
    app = make_app("resnet18")
    async with app.run_test(size=(120, 40)) as pilot:
        while app.session is None or app.state.view().busy:
            await pilot.pause(0.05)
        await pilot.press("c")
        while not app.session.backward_done or app.state.view().busy:
            await pilot.pause(0.05)
        first = app.session
        app.open_scenario("autograd-basics")
        while app.session is first or app.state.view().busy:
            await pilot.pause(0.05)

asyncio.run(main())
print("ended")
"""


def test_a_process_that_switched_scenarios_exits_cleanly(tmp_path):
    # The old session was freed on the engine's daemon thread as Python finalized: a
    # tensor's dealloc took the GIL back then, and the process aborted ("terminate
    # called without an active exception", exit 134), every time, with gradviz.show()
    # too. Now the engine frees a job's objects after running it, and quitting waits
    # for the engine.
    import subprocess
    import sys

    script = tmp_path / "switch.py"
    script.write_text(_SWITCH_THEN_EXIT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-500:]
    assert "ended" in result.stdout and "terminate called" not in result.stderr
