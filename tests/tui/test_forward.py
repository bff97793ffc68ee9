"""Stepping the forward in the app: autograd building the graph, op by op, then backward."""

from gradviz.model.state import Phase
from gradviz.tui.app import make_app
from gradviz.tui.widgets.graph_view import GraphView
from gradviz.tui.widgets.forward_log import ForwardLog
from gradviz.tui.widgets.inspector import Inspector

from .conftest import cell, press, settle

SIZE = (120, 40)


def status(app):
    return str(app.query_one("#status").render())


def log_rows(app):
    table = app.query_one(ForwardLog)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_the_tutorials_forward_step_by_step_then_its_backward():
    app = make_app("autograd-basics")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "s")
        assert app.state.view().phase is Phase.FORWARD
        assert "forward: 1 operation, 2 nodes" in status(app)  # pow: PowBackward0, a's leaf
        view = app.query_one(GraphView)
        assert [view.row_key(i) for i in range(len(view.rows))] == ["PowBackward0#0", "param:a"]
        inspector = app.query_one(Inspector).plain_text()
        assert "pow" in inspector and "autograd_basics.py:17" in inspector
        assert "recorded PowBackward0" in inspector
        await press(app, pilot, "s", "s", "s")
        assert [row[1] for row in log_rows(app)] == ["pow", "mul", "pow", "sub"]
        assert all(not row[2].startswith("none") for row in log_rows(app))  # each recorded a node
        await press(app, pilot, "s")  # the forward has returned: its graph, backward waits
        assert app.state.view().phase is Phase.PAUSED
        assert "step 0/6" in status(app) and "next: SubBackward0" in status(app)
        await press(app, pilot, "c")
        assert cell(app, "a", "grad") == "[36, 81]" and cell(app, "b", "grad") == "[-12, -8]"


async def test_finetune_shows_the_frozen_backbone_left_out_of_the_dag():
    app = make_app("finetune")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "s")
        rows = log_rows(app)
        assert rows[0][1] == "conv2d" and rows[0][3] == "conv1"
        assert "none: no input requires grad (conv1.weight has requires_grad=False)" in rows[0][2]
        assert len(app.query_one(GraphView).rows) == 0  # nothing recorded yet
        await press(app, pilot, "c")  # the rest of the forward
        assert app.state.view().phase is Phase.PAUSED and "step 0/6" in status(app)
        rows = log_rows(app)
        recorded = [row[1] for row in rows if not row[2].startswith("none")]
        assert recorded == ["linear", "sub", "sum"]  # only fc (and the loss) in the DAG
        assert len(rows) > 80


async def test_esc_abandons_a_stepped_forward_and_f_makes_a_graph_again():
    app = make_app("autograd-basics")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "s", "s")
        await pilot.press("escape")
        await settle(app, pilot)
        assert app.state.view().phase is Phase.NONE and "no graph" in status(app)
        assert app.check_action("step", ()) is None
        assert len(app.query_one(GraphView).rows) == 0  # the partial graph went with it
        assert "no graph" in app.query_one(GraphView).placeholder
        await press(app, pilot, "f")
        assert "step 0/6" in status(app)


async def test_a_parameter_without_grad_says_why():
    app = make_app("finetune")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "s", "c", "c")  # a recorded forward, then its backward
        table = app.query_one("#params")
        table.focus()
        table.move_cursor(row=table.get_row_index("conv1.weight"))
        await press(app, pilot, "enter")
        await pilot.pause(0.3)
        text = app.query_one(Inspector).plain_text()
        assert "conv1.weight" in text and "requires_grad=False" in text
        assert "used by conv2d at resnet.py" in text
