"""The app, driven headless with Pilot: keys pressed, then what the widgets show."""

import io
import threading

from rich.console import Console

from gradviz.tui.app import make_app
from gradviz.tui.widgets.graph_view import GraphView
from gradviz.tui.widgets.plots import GradFlow, LossPlot

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


def inspector_text(app):
    from gradviz.tui.widgets.inspector import Inspector

    return app.query_one(Inspector).plain_text()


async def test_stepping_autograd_basics_to_the_end_shows_the_tutorial_grads():
    app = make_app("autograd-basics")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "step 0/6" in status(app) and "next: SubBackward0" in status(app)
        assert cell(app, "a", "grad") == ""
        await press(app, pilot, "n")
        assert "step 1/6" in status(app) and "next: PowBackward0" in status(app)
        await press(app, pilot, *["n"] * 5)
        assert "step 6/6" in status(app) and "backward done" in status(app)
        assert cell(app, "a", "grad") == "[36, 81]"
        assert cell(app, "b", "grad") == "[-12, -8]"
        checks = text_of(app, "#checks")
        assert "pass  9*a**2 == a.grad" in checks and "pass  -2*b == b.grad" in checks
        inspector = inspector_text(app)
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
        assert all(cell(app, name, "|grad|") != ""
                   for name in ("conv1.weight", "layer4.1.bn2.bias"))
        flow = app.query_one(GradFlow)
        assert "of 62 parameters" in flow.border_title  # every one, not the first six


async def test_optimizer_steps_once_per_backward_and_shows_nonzero_updates():
    app = make_app("finetune")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.check_action("optimizer", ()) is None  # not before backward
        await press(app, pilot, "o")
        assert cell(app, "fc.weight", "|Δ|") == ""
        await press(app, pilot, "c", "o")
        assert "iteration 1" in status(app) and "optimizer stepped" in status(app)
        weight = app.session.scenario.model.fc.weight.detach().clone()
        assert float(cell(app, "fc.weight", "|Δ|")) > 0
        assert float(cell(app, "fc.bias", "|Δ|/|p|")) > 0
        assert "momentum_buffer" in cell(app, "fc.weight", "optimizer state")
        assert cell(app, "conv1.weight", "|Δ|") == "frozen"
        # Item 10: a second o on the same gradients does nothing, and says why.
        assert app.check_action("optimizer", ()) is None
        await press(app, pilot, "o")
        assert "iteration 1" in status(app)
        assert (app.session.scenario.model.fc.weight.detach() == weight).all()
        # A new forward: the last step's updates are not shown as if they were this one's.
        await press(app, pilot, "f")
        assert cell(app, "fc.weight", "|Δ|") == "" and cell(app, "fc.bias", "|Δ|/|p|") == ""


async def test_after_a_big_continue_every_node_in_sight_shows_its_gradient(tmp_path):
    # Nodes run in big slices are not all summarized as they run (the engine would
    # wait): those in sight are read once the work ends, and when scrolled to.
    path = tmp_path / "chain.py"
    path.write_text(CHAIN.format(depth=5000))
    app = make_app(str(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        view = app.query_one(GraphView)
        await press(app, pilot, "c")
        await pilot.pause(0.5)
        await settle(app, pilot)
        assert all(app.progress.norm_of(key) is not None for key in view.visible_keys())
        view.scroll_to(y=2000, animate=False)
        await pilot.pause(0.5)
        await settle(app, pilot)
        shown = view.visible_keys()
        assert view.row_of[shown[0]] == 2000
        assert all(app.progress.norm_of(key) is not None for key in shown)


async def test_the_graph_shows_the_last_node_after_continue_and_the_root_after_f():
    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        view = app.query_one(GraphView)
        await press(app, pilot, "c")
        last = app.session.stepper.executed[-1]
        assert view.cursor == view.row_of[last] and view.cursor > 40  # below the first screen
        top = view.scroll_offset.y
        assert top <= view.cursor < top + view.scrollable_content_region.height
        await press(app, pilot, "f")
        root = app.session.graph.graph["roots"][0]
        assert view.cursor == view.row_of[root] and view.scroll_offset.y == 0


async def test_a_zero_parameter_has_no_update_ratio_not_inf():
    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "c", "o")
        assert cell(app, "bn1.bias", "|Δ|/|p|") == "p was 0"  # BatchNorm biases start at 0
        assert float(cell(app, "bn1.weight", "|Δ|/|p|")) > 0


async def test_train_and_forward_make_new_graphs_and_losses():
    app = make_app("mlp-dataloader")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "t", "t")
        assert "iteration 2" in status(app)
        assert len(app.session.losses) == 3  # the first forward, then one per iteration
        assert "3 forward passes" in app.query_one(LossPlot).border_title
        await press(app, pilot, "f")
        assert "step 0/" in status(app) and "4 forward passes" in app.query_one(LossPlot).border_title


async def test_train_without_an_optimizer_says_the_step_was_skipped(tmp_path):
    path = tmp_path / "no_optimizer.py"
    path.write_text("import torch, gradviz\n"
                    "w = torch.tensor([1.0, 2.0], requires_grad=True)\n"
                    "def build():\n"
                    "    return gradviz.Scenario(name='plain', params={'w': w},\n"
                    "                            forward=lambda: (w * w).sum())\n")
    app = make_app(str(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "t")
        assert "no optimizer step: the scenario has no optimizer" in status(app)
        assert len(app.session.losses) == 2 and app.session.backward_done


async def test_export_writes_a_dot_file(tmp_path):
    app = make_app("autograd-basics", export_dir=tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "e")
        dot = (tmp_path / "autograd-basics-0.dot").read_text()
        assert '"param:a"' in dot and "digraph" in dot
        assert "exported the graph to" in status(app)


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
        assert "layer2.0.downsample" in inspector_text(app)


async def test_modules_fold_and_open():
    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        view = app.query_one(GraphView)
        assert len(view.rows) == 134
        await press(app, pilot, "m")
        await pilot.pause(0.3)
        assert len(view.rows) == 13
        view.cursor = next(i for i, r in enumerate(view.rows) if r.node == "module:layer1")
        await press(app, pilot, "enter")
        await pilot.pause(0.3)
        assert "module:layer1" not in [r.node for r in view.rows] and len(view.rows) > 13
        await press(app, pilot, "m")
        await pilot.pause(0.3)
        assert len(view.rows) == 134


async def test_m_on_a_graph_without_modules_says_why(monkeypatch):
    app = make_app("autograd-basics")
    notes = []
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        monkeypatch.setattr(app, "notify", lambda message, **kw: notes.append(message))
        await press(app, pilot, "m")
        assert len(app.query_one(GraphView).rows) == 6
        assert notes and "no module names" in notes[0]


async def test_a_big_graph_starts_with_modules_folded():
    app = make_app("lstm")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        view = app.query_one(GraphView)
        assert [r.node for r in view.rows] == ["MseLossBackward0#0", "module:head", "module:cell"]
        await press(app, pilot, "n", "n")
        assert "step 2/6009" in status(app)


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
    for _ in range(50):
        if not [t for t in threading.enumerate() if t.name.startswith("gradviz")]:
            break
        await _sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("gradviz")]


async def _sleep(seconds):
    import asyncio

    await asyncio.sleep(seconds)


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

    from gradviz.session.session import Session

    w = torch.tensor([1.0, 2.0], requires_grad=True)
    session = Session.for_roots((w * w).sum(), params={"w": w})
    app = make_app(session=session)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert app.check_action("forward", ()) is None
        await press(app, pilot, "c")
        assert torch.equal(w.grad, 2 * w.detach())


CHAIN = """
import torch, gradviz
x = torch.ones(8, requires_grad=True)
def forward():
    y = x
    for _ in range({depth}):
        y = y.sin()
    return y.sum()
def build():
    return gradviz.Scenario(name="chain", params={{"x": x}}, forward=forward)
"""

SLOW_CHAIN = """
import time, torch, gradviz
x = torch.ones(8, requires_grad=True)
class Slow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y):
        return y.clone()
    @staticmethod
    def backward(ctx, grad):
        time.sleep(0.001)  # a backward of {depth} ms: long enough to stop partway
        return grad
def forward():
    y = x
    for _ in range({depth}):
        y = Slow.apply(y)
    return y.sum()
def build():
    return gradviz.Scenario(name="chain", params={{"x": x}}, forward=forward)
"""


def slow_chain_scenario(tmp_path, depth):
    path = tmp_path / "chain.py"
    path.write_text(SLOW_CHAIN.format(depth=depth))
    return str(path)


async def test_escape_stops_continue_partway_and_stepping_goes_on(tmp_path):
    app = make_app(slow_chain_scenario(tmp_path, 3000))  # above ANIMATE_UP_TO: full speed
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        total = app.state.view().nodes
        await pilot.press("c")
        await pilot.pause(0.3)
        await pilot.press("escape")
        await settle(app, pilot)
        done = app.state.view().done
        assert 0 < done < total and f"step {done}/{total}" in status(app)
        assert "paused" in status(app)
        await press(app, pilot, "n")
        assert f"step {done + 1}/{total}" in status(app)


async def test_continue_on_resnet18_finishes_within_a_second_and_a_half():
    import time

    app = make_app("resnet18")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        started = time.perf_counter()
        await pilot.press("c")
        await settle(app, pilot)
        assert "step 134/134" in status(app)
        assert time.perf_counter() - started < 1.5 + 0.5  # its animation is time-boxed to 1 s
