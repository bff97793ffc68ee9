"""Session: forward, stepped backward, checks and the optimizer, one iteration at a time."""

import threading
import time

import pytest
import torch

import gradviz
from gradviz import ScenarioError, Session, StepperError


def test_autograd_basics_iteration_by_hand():
    session = Session(gradviz.load_scenario("autograd-basics"))
    stepper = session.forward()
    assert session.losses == [53.0]  # sum(gradient * Q) = (24 - 36) + (81 - 16)
    assert session.graph.number_of_nodes() == 6
    with pytest.raises(StepperError, match="finish backward"):
        session.optimizer_step()
    while not session.step().finished:
        pass
    assert stepper.finished
    assert [(c.name, c.passed) for c in session.checks] == [
        ("9*a**2 == a.grad", True), ("-2*b == b.grad", True)]
    a = session.scenario.params["a"]
    report = session.optimizer_step()
    assert session.iteration == 1
    assert torch.allclose(a.detach(), torch.tensor([2.0, 3.0]) - 0.01 * torch.tensor([36.0, 81.0]))
    assert report["a"].update.sample == pytest.approx((-0.36, -0.81))


def test_training_lowers_the_loss_and_zeroes_grads_each_time():
    session = Session(gradviz.load_scenario("custom-function"))
    reports = [session.train_iteration() for _ in range(5)]
    assert [r.iteration for r in reports] == [1, 2, 3, 4, 5]
    assert session.losses[-1] < session.losses[0]
    assert all(r.checks[0].passed for r in reports)
    # Gradients are zeroed before each forward: this backward's grad is its own alone.
    params = session.scenario.params
    session.forward()
    session.run_backward()
    stepped = {n: p.grad.clone() for n, p in params.items()}
    for p in params.values():
        p.grad = None
    session.scenario.run_forward()[0][0].backward()
    assert all(torch.equal(stepped[n], p.grad) for n, p in params.items())
    assert session.step().ran == () and session.run_backward() is None  # finished stays so


def test_forward_mid_backward_ends_the_old_backward():
    session = Session(gradviz.load_scenario("resnet18"))
    old = session.forward()
    old.step()
    new = session.forward()
    assert old.aborted and new is not old and not new.done
    session.close()
    assert new.aborted


def test_a_scenario_without_optimizer(tmp_path):
    path = tmp_path / "plain.py"
    path.write_text(
        "import torch, gradviz\n"
        "w = torch.ones(2, requires_grad=True)\n"
        "def build():\n"
        "    return gradviz.Scenario(name='plain', params={'w': w}, forward=lambda: (w * 2).sum())\n"
    )
    session = Session(gradviz.load_scenario(path))
    report = session.train_iteration()
    assert report.update is None and report.loss == 4.0
    with pytest.raises(ScenarioError, match="no optimizer"):
        session.optimizer_step()


# ---------------------------------------------------------------- failures, each on record

from gradviz.engine.interrupt import Interrupted  # noqa: E402
from gradviz.session.session import BackwardError  # noqa: E402
from gradviz.model.state import Action, Activity, Phase, SessionState  # noqa: E402





@pytest.mark.parametrize(("body", "message"), [
    ("    raise ValueError('bad batch')",
     "scenario 's': forward() raised ValueError: bad batch"),
    ("    return w", "the root has no autograd graph: it is a leaf tensor"),
])
def test_a_load_that_fails_says_why_in_one_line_and_leaves_nothing_running(scenario_file, body,
                                                                            message):
    state = SessionState()
    with pytest.raises(gradviz.GradvizError) as raised:
        Session.load(scenario_file(body), state=state)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    view = state.view()
    assert view.activity is Activity.IDLE and view.failure.message == str(raised.value)
    assert view.scenario is None


def test_a_root_that_is_not_a_scalar_loads_its_graph_and_refuses_backward_with_why(
        scenario_file):
    state = SessionState()
    session = Session.load(scenario_file("    return w * 2"), state=state)
    view = state.view()
    assert view.phase is Phase.PAUSED and view.nodes == 2 and session.graph is not None
    reason = state.request(Action.STEP)
    assert reason.verdict == "refused"
    assert reason.reason.startswith("the root is not a scalar (shape (3,)): backward needs a "
                                    "gradient of its shape")
    assert "Scenario(gradient=...)" in reason.reason
    assert not state.view().allowed(Action.CONTINUE) and not state.view().allowed(Action.TRAIN)
    assert state.view().allowed(Action.EXPORT)  # it can be drawn, as gradviz export does
    session.close()


def test_a_syntax_error_and_a_missing_weights_file_fail_the_load(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def build(:\n")
    state = SessionState()
    with pytest.raises(ScenarioError, match="broken.py:1: syntax error"):
        Session.load(str(broken), state=state)
    with pytest.raises(ScenarioError, match="weights file .*missing.pt does not exist"):
        Session.load("resnet18", weights=str(tmp_path / "missing.pt"), state=state)
    assert "missing.pt does not exist" in state.view().failure.message


def test_an_error_between_nodes_while_stepping_is_reported_at_once(scenario_file):
    body = ("    y = w * 2\n"
            "    y.register_hook(lambda grad: 1 / 0)\n"
            "    return (y * y).sum()")
    session = Session.load(scenario_file(body))
    session.step()  # SumBackward0 ran; the hook on y fails before the next node
    with pytest.raises(BackwardError, match="ZeroDivisionError: division by zero") as raised:
        while True:
            session.step()
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    view = session.state.view()
    assert view.phase is Phase.FAILED and "ZeroDivisionError" in view.failure.message
    assert not view.allowed(Action.STEP) and view.allowed(Action.FORWARD)


def test_a_forward_that_fails_leaves_the_old_backward_paused_where_it_was(scenario_file):
    body = ("    if len(calls) > 1:\n"
            "        raise RuntimeError('the second batch is bad')\n"
            "    return (w * w).sum()")
    session = Session.load(scenario_file(body))
    old = session.stepper
    session.step()
    with pytest.raises(ScenarioError, match="second batch is bad"):
        session.forward()
    assert session.stepper is old and not old.done
    session.run_backward()  # the old backward goes on to its end
    assert session.backward_done
    assert torch.equal(session.scenario.params["w"].grad, 2 * torch.tensor([1.0, 2.0, 3.0]))


def test_stopping_a_slow_forward_keeps_the_graph_shown(scenario_file):
    session = Session.load(scenario_file("    return (w * w).sum()"))
    first = session.stepper
    session.scenario.forward = lambda: _slow(session.scenario.params["w"])
    session.state.request(Action.FORWARD)
    timer = threading.Timer(0.2, lambda: session.state.request(Action.STOP))
    timer.start()
    started = time.perf_counter()
    assert session.perform(Action.FORWARD) is None
    assert time.perf_counter() - started < 5
    assert session.stepper is first and session.state.view().note == "stopped"


def _slow(w):
    y = w
    for _ in range(2_000_000):
        y = y * 1.0
    return y.sum()


def test_the_optimizer_cannot_step_the_same_gradients_twice():
    session = Session(gradviz.load_scenario("autograd-basics"))
    session.forward()
    session.run_backward()
    session.optimizer_step()
    with pytest.raises(StepperError, match="already stepped these gradients"):
        session.optimizer_step()
    assert session.iteration == 1


def test_show_refuses_a_graph_already_backwarded_and_a_non_tensor():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = (w.sin() * 2).sum()
    loss.backward()
    with pytest.raises(gradviz.GraphError, match="already backwarded"):
        Session.for_roots(loss, params={"w": w})
    with pytest.raises(gradviz.GraphError, match="got int"):
        Session.for_roots(3)


def test_a_base_exception_in_build_is_a_scenario_error(tmp_path):
    path = tmp_path / "exits.py"
    path.write_text("class Stop(BaseException):\n    pass\n"
                    "def build():\n    raise Stop('no')\n")
    with pytest.raises(ScenarioError, match="build\\(\\) raised Stop: no"):
        gradviz.load_scenario(path)


def test_interrupted_is_not_an_error_of_the_users_forward():
    scenario = gradviz.load_scenario("autograd-basics")

    def stopped():
        raise Interrupted("stopped")

    scenario.forward = stopped
    with pytest.raises(Interrupted):
        scenario.run_forward()


def test_a_training_step_says_the_scenarios_train_note(scenario_file):
    path = scenario_file("    return (w * w).sum()", extra="train_note='this loss has no minimum',")
    session = Session.load(path)
    session.perform(Action.TRAIN, lambda made: None)
    assert session.state.view().note == "loss 14 before this step: this loss has no minimum"
    session.close()


def test_the_demos_with_the_tutorials_loss_say_it_has_no_minimum():
    from pathlib import Path

    demos = Path(__file__).resolve().parents[2] / "demos"
    for name in ("resnet18.py", "finetune.py"):
        assert "has no minimum" in gradviz.load_scenario(str(demos / name)).train_note
