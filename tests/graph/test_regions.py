"""Opaque regions: a torch.compile'd part and a reentrant checkpoint are each one node,
labelled as such, with the parameters inside named."""

import functools

import pydot
import pytest
import torch
from torch.utils.checkpoint import checkpoint

import gradviz
from gradviz.model.node_facts import CHECKPOINT, COMPILED


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())


def regions(graph):
    return {key: attrs for key, attrs in graph.nodes(data=True) if "region" in attrs}


@pytest.fixture(scope="module")
def compiled_loss():
    torch.manual_seed(0)
    model = TwoLayers()
    compiled = torch.compile(model, backend="aot_eager")
    return model, compiled(torch.rand(3, 4)).sum()


def test_compiled_region_is_labelled_with_its_parameters(compiled_loss):
    model, loss = compiled_loss
    graph = gradviz.build_graph(loss, model=model)
    ((key, attrs),) = regions(graph).items()
    assert attrs["op"] == "CompiledFunctionBackward"
    region = attrs["region"]
    assert region["kind"] == COMPILED
    assert region["params"] == ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    assert "cannot be stepped" in region["note"] and "AOTAutograd" in region["note"]
    assert {"mm", "threshold_backward"} <= set(region["ops"])  # the backward AOTAutograd traced
    assert set(graph.successors(key)) == {f"param:{name}" for name in region["params"]}
    # The graph is walked again unchanged, and backward still runs.
    assert gradviz.build_graph(loss, model=model).nodes[key] == attrs
    loss.backward(retain_graph=True)
    assert model.fc1.weight.grad is not None


def test_compiled_region_is_drawn_distinctly(compiled_loss):
    model, loss = compiled_loss
    (dot,) = pydot.graph_from_dot_data(gradviz.to_dot(gradviz.build_graph(loss, model=model)))
    (node,) = [n for n in dot.get_nodes() if "Compiled" in n.get_name()]
    assert node.get("shape") == "box3d"
    assert "compiled region: 4 parameters inside" in node.get("label")


def test_reentrant_checkpoint_region_names_the_parameters_it_runs():
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(
        torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh()) for _ in range(3))
    calls = []

    def counted(block):
        def run(x):
            calls.append(block)
            return block(x)
        return run

    h = torch.rand(2, 8, requires_grad=True)
    h = checkpoint(blocks[0], h, use_reentrant=True)  # the module itself
    h = checkpoint(functools.partial(blocks[1].__call__), h, use_reentrant=True)  # as HF does
    h = checkpoint(counted(blocks[2]), h, use_reentrant=True)  # a closure over it
    graph = gradviz.build_graph(h.sum(), model=blocks)
    found = sorted(attrs["region"]["params"] for attrs in regions(graph).values())
    assert found == [(f"{i}.0.weight", f"{i}.0.bias") for i in range(3)]
    assert all(attrs["region"]["kind"] == CHECKPOINT and "use_reentrant=True" in
               attrs["region"]["note"] for attrs in regions(graph).values())
    assert len(calls) == 1  # the walk re-ran nothing
    assert not any(attrs["kind"] == "param" for _, attrs in graph.nodes(data=True))
