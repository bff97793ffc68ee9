"""The app, driven headless with Pilot: keys pressed, then what the widgets show."""

import io
import threading

from rich.console import Console

from gradviz.tui.app import make_app
from gradviz.tui.graph_view import GraphView

from .conftest import cell, press, settle

SIZE = (120, 40)


def status(app):
    return str(app.query_one("#status").render())


def text_of(app, selector):
    """A panel's text as the terminal shows it."""
    widget = app.query_one(selector)
    console = Console(width=max(widget.size.width, 40), file=io.StringIO(), color_system=None)
    console.print(widget.content)
    return console.file.getvalue()


async def test_stepping_autograd_basics_to_the_end_shows_the_tutorial_grads():
    app = make_app("autograd-basics")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "step 0/6" in status(app) and "next" not in status(app)
        assert cell(app, "a", "grad") == ""
        await press(app, pilot, "n")
        assert "step 1/6" in status(app) and "next: PowBackward0" in status(app)
        await press(app, pilot, *["n"] * 5)
        assert "step 6/6" in status(app) and "backward done" in status(app)
        assert cell(app, "a", "grad") == "[36, 81]"
        assert cell(app, "b", "grad") == "[-12, -8]"
        checks = text_of(app, "#checks")
        assert "pass  9*a**2 == a.grad" in checks and "pass  -2*b == b.grad" in checks
        inspector = text_of(app, "#inspector")
        assert "AccumulateGrad" in inspector and "[36, 81]" in inspector


async def test_resnet18_parameters_fill_in_as_their_accumulate_grad_runs():
    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, *["n"] * 4)  # Sum, Sub, Addmm, then fc.bias's AccumulateGrad
        assert cell(app, "fc.bias", "|grad|") != ""
        assert cell(app, "fc.weight", "|grad|") == ""  # its TBackward0 has not run
        assert cell(app, "conv1.weight", "|grad|") == ""
        await press(app, pilot, "n", "n")
        assert cell(app, "fc.weight", "|grad|") != ""
        await press(app, pilot, "c")
        assert "step 134/134" in status(app)
        assert all(cell(app, name, "|grad|") != "" for name in ("conv1.weight", "layer4.1.bn2.bias"))
        flow = text_of(app, "#flow")
        assert "conv1.weight" in flow or "fc.weight" in flow


async def test_optimizer_step_shows_nonzero_updates():
    app = make_app("finetune")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "o")  # not allowed before backward: nothing happens
        assert cell(app, "fc.weight", "|Δ|") == ""
        await press(app, pilot, "c", "o")
        assert "iteration 1" in status(app)
        assert float(cell(app, "fc.weight", "|Δ|")) > 0
        assert float(cell(app, "fc.bias", "|Δ|/|p|")) > 0
        assert "momentum_buffer" in cell(app, "fc.weight", "optimizer state")
        assert cell(app, "conv1.weight", "|Δ|") == "frozen"


async def test_train_and_forward_make_new_graphs_and_losses():
    app = make_app("mlp-dataloader")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "t", "t")
        assert "iteration 2" in status(app)
        assert len(app.session.losses) == 3  # the first forward, then one per iteration
        assert "3 forward passes" in text_of(app, "#loss")
        await press(app, pilot, "f")
        assert "step 0/" in status(app)


async def test_export_writes_a_dot_file(tmp_path):
    app = make_app("autograd-basics", export_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "e")
        dot = (tmp_path / "autograd-basics-0.dot").read_text()
        assert '"param:a"' in dot and "digraph" in dot


async def test_find_jumps_to_a_node_and_inspects_it():
    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("slash")
        await pilot.press(*"layer2.0.downsample")
        await pilot.press("enter")
        await pilot.pause(0.2)
        view = app.query_one(GraphView)
        key = view.row_key(view.cursor)
        assert app.session.graph.nodes[key]["module"].startswith("layer2.0.downsample")
        assert "layer2.0.downsample" in text_of(app, "#inspector")


async def test_modules_collapse_and_open():
    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        view = app.query_one(GraphView)
        assert len(view.rows) == 134
        await press(app, pilot, "m")
        assert len(view.rows) == 13
        group = next(i for i, r in enumerate(view.rows) if r.node == "module:layer1")
        view.cursor = group
        await press(app, pilot, "enter")
        assert "module:layer1" not in [r.node for r in view.rows] and len(view.rows) > 13
        await press(app, pilot, "m")
        assert len(view.rows) == 134


async def test_a_big_graph_starts_with_modules_collapsed():
    app = make_app("lstm")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        view = app.query_one(GraphView)
        assert [r.node for r in view.rows] == ["MseLossBackward0#0", "module:head", "module:cell"]
        await press(app, pilot, "n", "n")
        assert "step 2/6009" in status(app)


async def test_an_error_in_backward_is_shown_with_its_node(tmp_path):
    scenario = tmp_path / "broken.py"
    scenario.write_text(
        "import torch, gradviz\n"
        "x = torch.ones(3, requires_grad=True)\n"
        "def forward():\n"
        "    y = x.sigmoid()\n"
        "    loss = (y * 2).sum()\n"
        "    y.add_(1)  # breaks what SigmoidBackward0 saved\n"
        "    return loss\n"
        "def build():\n"
        "    return gradviz.Scenario(name='broken', params={'x': x}, forward=forward)\n"
    )
    app = make_app(str(scenario))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "c")
        assert "error: RuntimeError" in status(app)
        assert app.state.broken == "SigmoidBackward0#0"
        view = app.query_one(GraphView)
        assert view.row_key(view.cursor) == "SigmoidBackward0#0"


async def test_a_broken_scenario_file_is_an_error_on_screen_not_a_crash(tmp_path):
    scenario = tmp_path / "typo.py"
    scenario.write_text("def build(:\n")
    app = make_app(str(scenario))
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            await pilot.pause(0.05)
            if app.error:
                break
        assert "syntax error" in app.error and str(scenario) in app.error
        assert app.is_running


async def test_help_screen():
    app = make_app("autograd-basics")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert type(app.screen).__name__ == "Screen"


async def test_quit_mid_backward_leaves_no_thread():
    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "n", "n")
        await pilot.press("q")
        await pilot.pause(0.2)
    assert app.session.stepper.aborted
    assert not [t for t in threading.enumerate() if t.name.startswith("gradviz")]


async def test_small_terminal_still_shows_graph_and_status():
    app = make_app("resnet18")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "n")
        assert app.screen.has_class("-narrow")
        view = app.query_one(GraphView)
        assert view.size.height >= 8 and view.size.width >= 40
        assert "step 1/134" in status(app)


async def test_the_picker_opens_a_demo():
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "PickerScreen"
        await pilot.press("enter")  # the first demo: autograd-basics
        await settle(app, pilot)
        assert app.session.scenario.name == "autograd-basics"


async def test_a_session_from_show_cannot_make_a_new_forward():
    import torch

    import gradviz
    from gradviz.core.session import Session

    w = torch.tensor([1.0, 2.0], requires_grad=True)
    session = Session.for_roots((w * w).sum(), params={"w": w})
    app = make_app(session=session)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.check_action("forward", ()) is None
        await press(app, pilot, "c")
        assert torch.equal(w.grad, 2 * w.detach())
        assert gradviz.show is not None


async def test_escape_stops_continue_partway():
    app = make_app("resnet18")  # continued visibly, a node per frame
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("c")
        await pilot.pause(0.3)
        await pilot.press("escape")
        await settle(app, pilot)
        done = len(app.state.done)
        assert 0 < done < 134 and f"step {done}/134" in status(app)
        await press(app, pilot, "n")
        assert f"step {done + 1}/134" in status(app)  # stepping goes on from there
