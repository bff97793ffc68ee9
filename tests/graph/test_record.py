"""record(): every node made inside the model gets its innermost module."""

import pytest
import torch
from torch import nn

import gradviz


def ops_by_module(graph):
    return {key: attrs["module"] for key, attrs in graph.nodes(data=True) if attrs["kind"] == "op"}


def test_resnet18_modules(resnet18_trace):
    _, trace = resnet18_trace
    modules = ops_by_module(trace.graph)
    assert modules["AddmmBackward0#0"] == "fc"
    assert modules["TBackward0#0"] == "fc"
    assert modules["MeanBackward1#0"] == "avgpool"
    assert modules["ViewBackward0#0"] == ""  # torch.flatten in ResNet.forward
    assert modules["SumBackward0#0"] is None and modules["SubBackward0#0"] is None
    assert all(m is not None for k, m in modules.items() if not k.startswith(("Sum", "Sub")))
    conv_modules = {m for k, m in modules.items() if k.startswith("ConvolutionBackward0")}
    assert "conv1" in conv_modules and "layer1.0.conv1" in conv_modules
    assert "layer4.0.downsample.0" in conv_modules
    # The residual add belongs to the block, not to any layer inside it.
    assert {m for k, m in modules.items() if k.startswith("AddBackward0")} == {
        f"layer{i}.{j}" for i in range(1, 5) for j in range(2)
    }


def test_hooks_are_removed_even_when_forward_raises():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(RuntimeError):
        with gradviz.record(model):
            model(torch.ones(3, 5))  # wrong width
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


def test_inner_failure_caught_by_outer_forward_keeps_attribution():
    class Fragile(nn.Module):
        def forward(self, x):
            raise ValueError("nope")

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fragile = Fragile()
            self.linear = nn.Linear(2, 2)

        def forward(self, x):
            try:
                self.fragile(x)
            except ValueError:
                pass
            return self.linear(x).exp()

    model = Outer()
    with gradviz.record(model) as rec:
        out = model(torch.ones(1, 2)).sum()
    modules = ops_by_module(rec.graph(out))
    assert modules == {"SumBackward0#0": None, "ExpBackward0#0": "", "AddmmBackward0#0": "linear",
                       "TBackward0#0": "linear"}


def test_recording_holds_no_graph_alive():
    import weakref

    model = nn.Linear(2, 2)
    with gradviz.record(model) as rec:
        out = model(torch.ones(1, 2)).sum()
    probe = weakref.ref(out)
    del out
    assert probe() is None
    assert all(isinstance(k, int) and isinstance(v, str) for k, v in rec.modules.items())


def test_record_needs_a_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        with gradviz.record(lambda x: x):
            pass
