"""Scenarios: every demo builds and trains; user files fail with one line naming the file."""

import math
import textwrap

import pytest
import torch

import gradviz
from gradviz import ScenarioError
from gradviz.model.catalog import BUILTIN_NAMES


def backward(scenario):
    trace = scenario.trace()
    torch.autograd.backward(trace.roots, grad_tensors=scenario.gradient)
    return trace


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_demo_builds_and_backward_gives_finite_grads_but_nan_grad(name):
    scenario = gradviz.load_scenario(name)
    assert scenario.name == name and scenario.description
    trace = backward(scenario)
    grads = {n: t.grad for n, t in scenario.named_leaves().items() if t.grad is not None}
    assert grads, "no leaf received a gradient"
    finite = all(bool(g.isfinite().all()) for g in grads.values())
    assert finite == (name != "nan-grad")
    assert trace.graph.number_of_nodes() > 1


@pytest.mark.parametrize("name", ["mlp-dataloader", "lstm", "custom-function"])
def test_demos_are_seeded(name):
    first, second = gradviz.load_scenario(name), gradviz.load_scenario(name)
    one, two = first.trace(), second.trace()
    assert list(one.graph.nodes) == list(two.graph.nodes)
    assert torch.equal(one.roots[0], two.roots[0])


def test_autograd_basics_checks_hold_after_backward():
    scenario = gradviz.load_scenario("autograd-basics")
    before = scenario.run_checks()
    assert [c.passed for c in before] == [False, False]  # no gradients yet
    backward(scenario)
    results = scenario.run_checks()
    assert [(c.name, c.passed) for c in results] == [
        ("9*a**2 == a.grad", True), ("-2*b == b.grad", True)]
    assert scenario.params["a"].grad.tolist() == [36.0, 81.0]
    assert scenario.params["b"].grad.tolist() == [-12.0, -8.0]


def test_finetune_keeps_the_frozen_trunk_out_of_the_graph():
    scenario = gradviz.load_scenario("finetune")
    graph = backward(scenario).graph
    params = sorted(d["name"] for _, d in graph.nodes(data=True) if d["kind"] == "param")
    assert params == ["fc.bias", "fc.weight"]
    assert graph.number_of_nodes() == 6
    assert [c.passed for c in scenario.run_checks()] == [True]


def test_lstm_is_a_deep_graph():
    graph = gradviz.load_scenario("lstm").trace().graph
    assert graph.number_of_nodes() > 5000
    assert {d["module"] for _, d in graph.nodes(data=True)} == {"cell", "head", None}


def test_nan_grad_breaks_at_sqrt_in_abs():
    scenario = gradviz.load_scenario("nan-grad")
    backward(scenario)
    grads = dict(scenario.model.named_parameters())
    assert not grads["hidden.weight"].grad.isfinite().all()
    assert grads["out.weight"].grad.isfinite().all()
    assert [c.passed for c in scenario.run_checks()] == [False]


def test_mlp_dataloader_serves_a_new_batch_each_forward():
    scenario = gradviz.load_scenario("mlp-dataloader")
    losses = [scenario.trace().roots[0].item() for _ in range(20)]  # past one epoch of 16
    assert len(set(losses)) > 15 and all(math.isfinite(v) for v in losses)


def write(tmp_path, text, name="scenario.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


BAD_FILES = {
    "syntax": ("def build(:\n", ":1: syntax error"),
    "no build": ("x = 1\n", "defines no build() function"),
    "raises": ("def build():\n    raise RuntimeError('boom')\n", "build() raised RuntimeError: boom"),
    "wrong type": ("def build():\n    return 42\n", "build() returned int, not a gradviz.Scenario"),
    "import fails": ("import no_such_module_here\n", "importing it raised ModuleNotFoundError"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_broken_scenario_files_are_one_line_errors(tmp_path, case):
    text, expected = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as caught:
        gradviz.load_scenario(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(ScenarioError, match="scenario file .* does not exist"):
        gradviz.load_scenario(tmp_path / "absent.py")
    with pytest.raises(ScenarioError, match="no scenario named 'resnet19'"):
        gradviz.load_scenario("resnet19")


def test_forward_returning_a_non_tensor_is_named(tmp_path):
    path = write(tmp_path, """
        import gradviz
        def build():
            return gradviz.Scenario(name="odd", forward=lambda: "loss")
    """)
    scenario = gradviz.load_scenario(path)
    with pytest.raises(ScenarioError, match="'odd': forward\\(\\) returned str"):
        scenario.trace()


def test_a_user_file_with_a_model_and_its_docstring(tmp_path):
    path = write(tmp_path, '''
        """Two linear layers."""
        import torch, gradviz
        def build():
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
            return gradviz.Scenario(name="mine", model=model,
                                    forward=lambda: model(torch.ones(2, 3)).sum())
    ''')
    scenario = gradviz.load_scenario(str(path))
    assert scenario.description == "Two linear layers."
    graph = scenario.trace().graph
    assert graph.nodes["param:1.weight"]["module"] == "1"


def test_weights(tmp_path):
    good = tmp_path / "good.pt"
    torch.manual_seed(1)
    from torchvision.models import resnet18

    reference = resnet18()
    torch.save(reference.state_dict(), good)
    loaded = gradviz.load_scenario("resnet18", weights=good)
    assert torch.equal(loaded.model.conv1.weight, reference.conv1.weight)
    finetune = gradviz.load_scenario("finetune", weights=good)  # loads before fc is replaced
    assert torch.equal(finetune.model.conv1.weight, reference.conv1.weight)

    small = tmp_path / "small.pt"
    torch.save(resnet18(num_classes=10).state_dict(), small)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    cases = {
        tmp_path / "absent.pt": "does not exist",
        corrupt: "torch.load(weights_only=True) can read",
        small: "does not fit ResNet: 2 wrong shape (fc.weight (10, 512) vs (1000, 512)",
    }
    for path, expected in cases.items():
        with pytest.raises(ScenarioError) as caught:
            gradviz.load_scenario("resnet18", weights=path)
        assert expected in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ScenarioError, match="has no model"):
        gradviz.load_scenario("autograd-basics", weights=good)
