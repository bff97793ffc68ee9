"""Session: forward, stepped backward, checks and the optimizer, one iteration at a time."""

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
    assert session.step().events == [] and session.run_backward() is None  # finished stays so


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
