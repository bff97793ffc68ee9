"""OptimizerWatch: the update each parameter really got, for every common optimizer."""

import copy
import math

import pytest
import torch
from torch import nn

import gradviz
from gradviz import OptimizerWatch


def model_with_grads(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    model[0].bias.requires_grad_(False)  # frozen
    x = torch.randn(8, 4)
    return model, x


def backward(model, x):
    model.zero_grad(set_to_none=True)
    model(x).pow(2).mean().backward()


OPTIMIZERS = {
    "sgd": (lambda p: torch.optim.SGD(p, lr=0.1), []),
    "sgd-momentum": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), ["momentum_buffer"]),
    "sgd-nesterov": (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                     ["momentum_buffer"]),
    "adam": (lambda p: torch.optim.Adam(p, lr=0.01), ["step", "exp_avg", "exp_avg_sq"]),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
              ["step", "exp_avg", "exp_avg_sq"]),
    "rmsprop": (lambda p: torch.optim.RMSprop(p, lr=0.01), ["step", "square_avg"]),
    "adagrad": (lambda p: torch.optim.Adagrad(p, lr=0.1), ["step", "sum"]),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_updates_match_the_optimizer_itself(name):
    make, state_keys = OPTIMIZERS[name]
    watched, x = model_with_grads()
    reference = copy.deepcopy(watched)
    watch = OptimizerWatch(make(watched.parameters()), model=watched)
    plain = make(reference.parameters())
    for step in range(2):
        backward(watched, x)
        backward(reference, x)
        before = {n: p.detach().clone() for n, p in reference.named_parameters()}
        report = watch.step()
        plain.step()
        assert report.step == step + 1 and report.optimizer == type(plain).__name__
        for (n, p), update in zip(reference.named_parameters(), report.params):
            assert update.name == n and update.shape == tuple(p.shape)
            if n == "0.bias":
                assert update.skipped == "frozen" and update.update is None
                continue
            true_update = p.detach() - before[n]
            assert update.update.norm == pytest.approx(float(true_update.norm()), rel=1e-5)
            assert update.ratio == pytest.approx(float(true_update.norm() / before[n].norm()),
                                                 rel=1e-5)
            assert update.param_norm == pytest.approx(float(before[n].norm()))
            assert update.grad.norm == pytest.approx(float(p.grad.norm()))
            assert update.lr == plain.param_groups[0]["lr"]
            assert sorted(update.state) == sorted(state_keys)
        for p1, p2 in zip(watched.parameters(), reference.parameters()):
            assert torch.equal(p1, p2)
    assert report.settings[0]["lr"] == plain.param_groups[0]["lr"]


def test_plain_sgd_update_is_minus_lr_times_grad():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    (w**2).sum().backward()
    report = OptimizerWatch(torch.optim.SGD([w], lr=0.25), names={"w": w}).step()
    (update,) = report.params
    assert update.name == "w" and report["w"] is update
    assert update.update.sample == (-0.5, 1.0)  # -0.25 * 2w
    assert update.ratio == pytest.approx(math.sqrt(1.25) / math.sqrt(5))


def test_lbfgs_through_its_closure():
    torch.manual_seed(0)
    w = torch.randn(3, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=0.5, max_iter=5)

    def closure():
        optimizer.zero_grad()
        loss = ((w - 1) ** 2).sum()
        loss.backward()
        return loss

    first = float(((w - 1) ** 2).sum())
    report = OptimizerWatch(optimizer, names={"w": w}).step(closure)
    assert report.loss == pytest.approx(first)
    assert report["w"].updated and report["w"].update.norm > 0
    assert float(((w - 1) ** 2).sum()) < first / 10
    assert "prev_flat_grad" in report["w"].state or report["w"].state == {}


def test_unnamed_params_and_params_without_grad():
    used, unused = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    (used * 3).sum().backward()
    report = OptimizerWatch(torch.optim.SGD([used, unused], lr=0.1)).step()
    assert [(p.name, p.skipped) for p in report.params] == [("group0[0]", ""),
                                                            ("group0[1]", "no grad")]


def test_finetune_skips_the_frozen_trunk():
    session = gradviz.Session(gradviz.load_scenario("finetune"))
    session.forward()
    session.run_backward()
    report = session.optimizer_step()
    assert [p.name for p in report.updated] == ["fc.weight", "fc.bias"]
    assert {p.skipped for p in report.params if not p.updated} == {"frozen"}
    assert len(report.params) == 62


def test_watch_needs_an_optimizer():
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        OptimizerWatch("sgd")
