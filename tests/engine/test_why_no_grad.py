"""why_no_grad: each reason a parameter or input ends backward with .grad None, from what the forward did."""

import pytest
import torch
from torch import nn

import gradviz
from gradviz import ForwardStepper, GradvizError, NoGradReason, why_no_grad


@pytest.fixture
def leaves():
    torch.manual_seed(0)
    return {name: torch.randn(3, requires_grad=True) for name in
            ("used", "no_grad", "detached", "argmax", "compared", "dead", "unused", "inference")}


def run(forward, **params):
    stepper = ForwardStepper(forward, params=params)
    stepper.run()
    loss = stepper.result
    loss.backward()
    return stepper


def test_each_reason_is_found_and_named_with_its_op_and_line(leaves):
    w = leaves
    frozen = torch.randn(3)
    x = torch.randn(3)

    def forward():
        y = w["used"] * x
        with torch.no_grad():
            quiet = w["no_grad"] * 2                      # line: no_grad
        cut = (w["detached"] * 3).detach()                # line: detach
        index = (w["argmax"] * 1).argmax()                # line: argmax
        sign = (w["compared"] > 0).float()                # line: compare
        w["dead"] * 5                                     # line: dead
        with torch.inference_mode():
            inferred = w["inference"] + 1                 # line: inference
        return (y + quiet + cut + x[index] + sign + frozen + inferred.clone()).sum()

    stepper = run(forward, **w, frozen=frozen)
    assert all(w[name].grad is None for name in w if name != "used")

    def explain(name):
        answer = why_no_grad(stepper, name)
        assert stepper.why_no_grad(name) == answer
        return answer

    def line(tag):
        import inspect
        source, start = inspect.getsourcelines(forward)
        return start + next(i for i, text in enumerate(source) if f"# line: {tag}" in text)

    assert explain("used").reason is NoGradReason.HAS_PATH
    assert explain("unused").reason is NoGradReason.NEVER_USED
    assert str(explain("unused")) == "unused: never used in the forward: no operation took it as input"

    frozen_answer = explain("frozen")
    assert frozen_answer.reason is NoGradReason.REQUIRES_GRAD_FALSE
    assert "requires_grad=False" in frozen_answer.message and "used by add" in frozen_answer.message

    no_grad = explain("no_grad")
    assert no_grad.reason is NoGradReason.NO_GRAD
    assert no_grad.message == f"used only under torch.no_grad(): mul at test_why_no_grad.py:{line('no_grad')}"

    inference = explain("inference")
    assert inference.reason is NoGradReason.INFERENCE_MODE
    assert inference.event.source.line == line("inference")

    detached = explain("detached")
    assert detached.reason is NoGradReason.DETACHED
    assert detached.message == ("its path to the loss was cut by detach at "
                                f"test_why_no_grad.py:{line('detach')}")
    assert detached.event.op == "detach"

    argmax = explain("argmax")
    assert argmax.reason is NoGradReason.NOT_DIFFERENTIABLE
    assert argmax.event.op == "argmax" and "int64 result" in argmax.message

    compared = explain("compared")
    assert compared.reason is NoGradReason.NOT_DIFFERENTIABLE
    assert compared.event.op == "gt" and "bool result" in compared.message

    dead = explain("dead")
    assert dead.reason is NoGradReason.NOT_REACHING
    assert dead.event.source.line == line("dead")


def test_a_frozen_parameter_of_a_model_and_the_trained_one():
    scenario = gradviz.load_scenario("finetune")
    stepper = ForwardStepper(scenario.forward, model=scenario.model)
    stepper.run()
    frozen = why_no_grad(stepper, "layer1.0.conv1.weight")
    assert frozen.reason is NoGradReason.REQUIRES_GRAD_FALSE
    assert frozen.event.module == "layer1.0.conv1"
    assert why_no_grad(stepper, "fc.weight").reason is NoGradReason.HAS_PATH


def test_a_detach_deep_in_a_model_is_found_by_its_module():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(3, 3)
            self.head = nn.Linear(3, 1)

        def forward(self, x):
            features = self.inner(x).detach()   # the bug
            return self.head(features)

    model = Encoder()
    x = torch.randn(4, 3)
    stepper = ForwardStepper(lambda: model(x).sum(), model=model)
    stepper.run()
    answer = why_no_grad(stepper, "inner.weight")
    assert answer.reason is NoGradReason.DETACHED
    assert answer.event.module == "" and answer.event.op == "detach"
    assert "(module ''" not in answer.message
    assert why_no_grad(stepper, "head.weight").reason is NoGradReason.HAS_PATH


def test_an_input_of_the_forward_is_asked_by_its_argument_name():
    w = torch.randn(3, requires_grad=True)
    x = torch.randn(3, requires_grad=True)

    def forward(inputs, scale):
        with torch.no_grad():
            shifted = inputs + 1
        return (shifted * w * scale).sum()

    stepper = ForwardStepper(forward, x, scale=torch.tensor(2.0), params={"w": w})
    stepper.run()
    assert why_no_grad(stepper, "args[0]").reason is NoGradReason.NO_GRAD
    assert why_no_grad(stepper, x).reason is NoGradReason.NO_GRAD
    assert why_no_grad(stepper, "scale").reason is NoGradReason.REQUIRES_GRAD_FALSE


def test_on_a_recording_of_your_own_forward():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    model[0].weight.requires_grad_(False)
    x = torch.randn(2, 3)
    with gradviz.record_forward(model) as recording:
        loss = model(x).sum()
    assert why_no_grad(recording, "0.weight", loss).reason is NoGradReason.REQUIRES_GRAD_FALSE
    assert why_no_grad(recording, "1.weight", loss).reason is NoGradReason.HAS_PATH
    assert why_no_grad(recording, "1.weight").reason is NoGradReason.HAS_PATH  # last node


def test_an_unknown_name_says_which_names_there_are():
    w = torch.randn(2, requires_grad=True)
    stepper = ForwardStepper(lambda: (w * 2).sum(), params={"w": w})
    stepper.run()
    with pytest.raises(GradvizError, match=r"no parameter or input named 'v' .*known: w"):
        why_no_grad(stepper, "v")
