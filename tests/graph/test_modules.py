"""ModuleSpans: the one attribution of nodes to modules (record, the watch, forward steps)."""

import torch
from torch import nn

import gradviz
from gradviz.graph.modules import (
    NO_SEQUENCE,
    ModuleSpans,
    next_sequence_nr,
    sequence_nr,
)


class Wrapper(nn.Module):
    """Makes no node of its own, as DDP around a model: its span equals the inner one's."""

    def __init__(self, inner):
        super().__init__()
        self.module = inner

    def forward(self, x):
        return self.module(x)


def modules_of(graph):
    return {key: attrs["module"] for key, attrs in graph.nodes(data=True) if attrs["kind"] == "op"}


def test_a_wrapper_with_the_same_span_leaves_the_node_to_the_module_inside():
    model = Wrapper(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    with gradviz.record(model) as rec:
        loss = model(torch.ones(1, 2)).sum()
    modules = modules_of(rec.graph(loss))
    assert modules["ReluBackward0#0"] == "module.1"
    assert modules["AddmmBackward0#0"] == "module.0"
    assert modules["SumBackward0#0"] is None  # made outside the model


def test_a_node_made_inside_a_call_still_running_belongs_to_it():
    model = nn.Sequential(nn.Linear(2, 2))
    spans = ModuleSpans(model)
    seen = {}

    def peek(module, args, output):  # runs inside the call, before its span closes
        seen["module"] = spans.modules.get(sequence_nr(output.grad_fn))

    handle = model[0].register_forward_hook(peek)
    with spans.active():
        model(torch.ones(1, 2))
    handle.remove()
    assert seen["module"] == "0"
    assert spans.current is None and not spans._open


def test_the_sequence_numbers_read_one_way():
    x = torch.ones(2, requires_grad=True)
    upcoming = next_sequence_nr()
    y = x * 2
    assert sequence_nr(y.grad_fn) == upcoming
    assert sequence_nr(y.grad_fn.next_functions[0][0]) is None  # AccumulateGrad: no number
    assert y.grad_fn.next_functions[0][0]._sequence_nr() >= NO_SEQUENCE


def test_iterating_the_map_lists_each_number_once_with_its_innermost_module():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.Tanh()))
    with gradviz.record(model) as rec:
        model(torch.ones(1, 2)).sum()
    pairs = list(rec.modules.items())
    assert len(pairs) == len({seq for seq, _ in pairs}) == len(rec.modules)
    assert {path for _, path in pairs} == {"0", "1.0", "1.1"}
