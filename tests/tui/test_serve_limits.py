"""Under ``gradviz serve`` (``files=False``) the app opens the demos and the scenario it was
started with, never a file by its path: whoever reaches the port would run it."""

from textual.widgets import Input

from gradviz.tui.app import make_app
from gradviz.tui.screens.picker import PickerScreen

from .conftest import settle


async def test_without_files_the_picker_has_no_path_and_a_path_is_refused(tmp_path):
    other = tmp_path / "other.py"
    other.write_text("raise SystemExit('must never run')\n")
    app = make_app("autograd-basics", files=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("p")
        await pilot.pause(0.2)
        picker = app.screen
        assert isinstance(picker, PickerScreen) and not picker.query(Input)
        await pilot.press("escape")
        app.open_scenario(str(other))
        await pilot.pause(0.2)
        assert app.state.view().scenario == "autograd-basics"  # nothing was loaded
        assert any("no file by its path" in str(n.message) for n in app._notifications)
        app.open_scenario("finetune")  # a demo is fine
        await settle(app, pilot)
        assert app.state.view().scenario == "finetune"


async def test_without_files_the_scenario_it_was_started_with_stays_in_the_picker(scenario_file):
    path = scenario_file("    return (w * w).sum()")
    app = make_app(path, files=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("p")
        await pilot.pause(0.2)
        options = app.screen.query_one("#demos")
        assert options.get_option_at_index(0).id == path
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.state.view().scenario == "s"
