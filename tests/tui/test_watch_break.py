"""A watch break opens today's app (Pilot) on the iteration's own graph; closing it resumes."""

import asyncio

import pytest
import torch
from torch import nn

import gradviz
from gradviz.tui.app import make_app
from gradviz.tui.widgets.run_so_far import RunSoFar
from gradviz.tui.screens.run_view import RunScreen

from .conftest import press, settle


class DeadUnitNet(nn.Module):
    """sqrt(x**2) after a linear layer: once unit 0 is zeroed, SqrtBackward0 makes Inf."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        return self.out(torch.sqrt(self.hidden(x) ** 2))


def test_a_nonfinite_break_opens_the_app_on_that_graph_and_closing_it_resumes(monkeypatch):
    import gradviz.tui.app as app_module

    seen = []

    async def drive(pause):
        session = pause.session
        app = make_app(pause=pause)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            status = str(app.query_one("#status").render())
            assert "iteration 3" in status and "step 0/" in status  # paused before node 1
            await press(app, pilot, "n")
            seen.append(str(app.query_one("#status").render()))
            await press(app, pilot, "c")
            seen.append(session.stepper.first_nonfinite.node)
            await pilot.press("q")

    monkeypatch.setattr(app_module, "run_app", lambda pause: asyncio.run(drive(pause)))
    torch.manual_seed(0)
    model = DeadUnitNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="app") as w:
        for i in range(1, 6):
            if i == 3:
                with torch.no_grad():
                    model.hidden.weight[0].zero_()
                    model.hidden.bias[0].zero_()
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert "step 1/" in seen[0] and seen[1] == "SqrtBackward0#0"
    assert w.iteration == 5 and [b.iteration for b in w.breaks] == [3]


def test_the_break_shows_the_run_so_far_and_x_stops_training(monkeypatch):
    import gradviz.tui.app as app_module

    seen = {}

    async def drive(pause):
        app = make_app(pause=pause)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            panel = app.query_one(RunSoFar)
            seen["title"] = str(panel.border_title)
            seen["reason"] = str(app.query_one("#run-so-far-reason").render())
            seen["losses"] = app.query_one("#run-so-far-loss").iterations
            await pilot.press("r")
            seen["screen"] = type(app.screen)
            await pilot.press("escape")
            await pilot.press("x")

    monkeypatch.setattr(app_module, "run_app", lambda pause: asyncio.run(drive(pause)))
    torch.manual_seed(0)
    model = DeadUnitNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    with pytest.raises(gradviz.TrainingStopped, match="iteration 3"):
        with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="app"):
            for i in range(1, 6):
                if i == 3:
                    with torch.no_grad():
                        model.hidden.weight[0].zero_()
                        model.hidden.bias[0].zero_()
                loss = nn.functional.mse_loss(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    assert seen["title"] == "break at iteration 3 · the run so far"
    assert seen["reason"].startswith("nonfinite: a gradient is NaN/Inf")
    assert "started at SqrtBackward0#0" in seen["reason"]
    assert seen["losses"] == [1, 2] and seen["screen"] is RunScreen


def test_a_nan_made_in_the_forward_is_marked_on_its_node_when_the_app_opens(monkeypatch):
    import gradviz.tui.app as app_module
    from gradviz.model.progress import NodeState
    from gradviz.tui.widgets.graph_view import GraphView

    class Log(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)
            self.shift = -1.0

        def forward(self, x):
            return torch.log(self.fc(x).abs() - self.shift).sum(dim=1, keepdim=True)

    seen = []

    async def drive(pause):
        app = make_app(pause=pause)
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(app, pilot)
            node = pause.brk.node
            view = app.query_one(GraphView)
            row = view.row_of[node]
            seen.append((node, app.progress.state_of(node), view._row_text(row).plain))
            await pilot.press("q")

    monkeypatch.setattr(app_module, "run_app", lambda pause: asyncio.run(drive(pause)))
    torch.manual_seed(0)
    model = Log()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="app"):
        for i in range(1, 4):
            model.shift = 1e6 if i == 2 else -1.0
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    (node, state, text), = seen
    assert node.startswith("LogBackward0") and state is NodeState.BROKEN
    assert text.lstrip().startswith("✖") or "✖" in text.split(node.split("#")[0])[0]
