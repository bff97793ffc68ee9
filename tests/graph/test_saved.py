"""What build_graph says about saved tensors and saved values: true, readable, and read
without running anything of the user's (checkpointed forwards, saved-tensors hooks)."""

import gc

import pytest
import torch
from torch.utils.checkpoint import checkpoint

from gradviz import build_graph
from gradviz.model.node_facts import (
    FREED,
    HOOKED,
    MODIFIED_IN_PLACE,
    RECOMPUTED,
    meta_text,
)


def ops(graph, op):
    return [attrs for _, attrs in graph.nodes(data=True) if attrs["op"] == op]


def only(graph, op):
    (attrs,) = ops(graph, op)
    return attrs


# ------------------------------------------------------------------ saved values


@pytest.mark.parametrize(("kwargs", "args"), [
    ({}, {"ignore_index": -100, "reduction": "mean"}),
    ({"ignore_index": 2, "reduction": "sum"}, {"ignore_index": 2, "reduction": "sum"}),
])
def test_cross_entropy_says_ignore_index_and_reduction_as_written(kwargs, args):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    loss = torch.nn.CrossEntropyLoss(**kwargs)(model(torch.rand(5, 4)), torch.tensor([0, 1, 2, 1, 0]))
    assert only(build_graph(loss, model=model), "NllLossBackward0")["args"] == args


def test_other_losses_name_their_reduction():
    x = torch.rand(4, 3, requires_grad=True)
    target = torch.rand(4, 3)
    losses = [torch.nn.functional.mse_loss(x, target, reduction="none").sum(),
              torch.nn.functional.binary_cross_entropy_with_logits(x, target),
              torch.nn.functional.huber_loss(x, target, reduction="sum")]
    graph = build_graph(losses)
    assert only(graph, "MseLossBackward0")["args"]["reduction"] == "none"
    assert only(graph, "BinaryCrossEntropyWithLogitsBackward0")["args"]["reduction"] == "mean"
    assert only(graph, "HuberLossBackward0")["args"] == {"delta": 1.0, "reduction": "sum"}


def test_negative_ints_stay_negative():
    x = torch.rand(2, 3, 4, requires_grad=True)
    embedding = torch.nn.Embedding(10, 4, padding_idx=-1)
    graph = build_graph([x.mean(dim=(-1, -2)).sum(), embedding(torch.tensor([1, 2])).sum()])
    assert only(graph, "MeanBackward1")["args"]["dim"] == (-1, -2)
    assert only(graph, "EmbeddingBackward0")["args"]["padding_idx"] == 9  # torch wraps it


def test_layout_values_are_not_args(resnet18_trace):
    _, trace = resnet18_trace
    for key, attrs in trace.graph.nodes(data=True):
        assert not any("sym_" in name for name in attrs["args"]), (key, attrs["args"])
    fc = next(a for _, a in trace.graph.nodes(data=True)
              if a["op"] == "AddmmBackward0" and a["module"] == "fc")
    assert fc["args"] == {"alpha": 1, "beta": 1}
    assert set(fc["saved"]) == {"mat1", "mat2"} and "input_shapes" not in fc


def test_shapes_of_inputs_not_saved_are_input_shapes():
    x = torch.rand(2, 3, requires_grad=True)
    weight = torch.rand(3, 4, requires_grad=True)
    graph = build_graph([x.sum(), x.mean(dim=1).sum(), torch.rand(5, 3) @ weight])
    sums = [a for a in ops(graph, "SumBackward0") if a["input_shapes"] != {"self": (2,)}]
    assert [a["input_shapes"] for a in sums] == [{"self": (2, 3)}]
    mean = only(graph, "MeanBackward1")
    assert mean["input_shapes"] == {"self": (2, 3)} and "self_sym_numel" not in mean["args"]
    mm = only(graph, "MmBackward0")  # the weight's grad needs self, not mat2
    assert set(mm["saved"]) == {"self"} and mm["input_shapes"] == {"mat2": (3, 4)}


# ------------------------------------------------------- freed / modified in place


def test_a_saved_tensor_changed_in_place_is_modified_not_freed():
    x = torch.rand(3, requires_grad=True)
    y = x.sigmoid()  # saves its result
    y.add_(1)  # ... which this changes
    loss = (y * x).sum()
    graph = build_graph(loss)
    sigmoid = only(graph, "SigmoidBackward0")
    assert sigmoid["saved"] == {
        "result": {"shape": (3,), "dtype": "float32", "state": MODIFIED_IN_PLACE}}
    assert only(graph, "MulBackward0")["saved"]["self"]["state"] is None  # y as it is: fine
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()  # what the label warns of


def test_a_backwarded_graph_is_freed_per_node():
    x = torch.rand(3, requires_grad=True)
    y = x.sigmoid()
    loss = (y * x).sum()
    loss.backward()
    graph = build_graph(loss)
    assert only(graph, "SigmoidBackward0")["saved"] == FREED
    assert only(graph, "MulBackward0")["saved"] == FREED
    assert only(graph, "SumBackward0")["saved"] == {}  # saved nothing: nothing to free


def test_python_function_modified_in_place():
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    x = torch.rand(3, requires_grad=True)
    h = x * 1
    out = Double.apply(h)
    h.mul_(3)
    (meta,) = only(build_graph(out.sum()), "DoubleBackward")["saved"].values()
    assert meta["state"] == MODIFIED_IN_PLACE and meta["shape"] == (3,)


# ------------------------------------------------------------ saved-tensor hooks


class Blocks(torch.nn.Module):
    """Four Linear+GELU blocks, each under non-reentrant checkpointing; counts forwards."""

    def __init__(self, width=64):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.GELU()) for _ in range(4))
        self.calls = 0

    def run(self, block, x):
        self.calls += 1
        return block(x)

    def forward(self, x, use_checkpoint=True):
        for block in self.blocks:
            x = checkpoint(self.run, block, x, use_reentrant=False) if use_checkpoint else block(x)
        return x


def live_tensor_bytes():
    gc.collect()
    return sum(o.untyped_storage().nbytes() for o in gc.get_objects()
               if issubclass(type(o), torch.Tensor) and o.layout == torch.strided)


def test_checkpointed_walk_runs_no_forward_and_holds_nothing():
    torch.manual_seed(0)
    model = Blocks()
    x = torch.rand(256, 64, requires_grad=True)
    loss = model(x).sum()
    assert model.calls == 4
    before = live_tensor_bytes()
    for _ in range(3):
        graph = build_graph(loss, model=model)
    assert model.calls == 4  # no checkpointed forward ran again
    assert live_tensor_bytes() - before < 64 * 1024  # no recomputed activations kept

    gelu = ops(graph, "GeluBackward0")[0]
    assert gelu["saved"] == {"self": {"shape": (256, 64), "dtype": "float32",
                                      "state": RECOMPUTED}}
    assert ops(graph, "AddmmBackward0")[0]["saved"]["mat1"]["state"] == RECOMPUTED

    # Backward still works and gives what the model without checkpointing gives.
    loss.backward()
    assert model.calls == 8  # backward recomputes each block once
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x, use_checkpoint=False).sum().backward()
    assert all(torch.allclose(g, p.grad) for g, p in zip(grads, model.parameters()))


def test_checkpointed_python_function_is_not_unpacked():
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 2 * x * grad

    calls = []

    def block(x):
        calls.append(1)
        return Square.apply(x.sin())

    out = checkpoint(block, torch.rand(3, requires_grad=True), use_reentrant=False)
    saved = only(build_graph(out.sum()), "SquareBackward")["saved"]
    assert len(calls) == 1
    assert saved == {"saved_tensors[0]": {"shape": (3,), "dtype": "float32", "state": RECOMPUTED}}


def test_other_saved_tensor_hooks_are_never_called():
    unpacked = []

    def pack(tensor):
        return tensor.clone()

    def unpack(tensor):
        unpacked.append(tensor)
        return tensor

    x = torch.rand(3, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        loss = (x.sin() * 2).sum()
    saved = only(build_graph(loss), "SinBackward0")["saved"]["self"]
    assert unpacked == []
    assert saved["state"] == HOOKED and saved["shape"] is None
    assert saved["hook"].endswith("test_other_saved_tensor_hooks_are_never_called.<locals>.unpack")
    loss.backward()
    assert len(unpacked) == 1  # backward's own unpack, once


def test_equal_descriptions_are_one_shared_object():
    y = torch.ones(4, requires_grad=True)
    for _ in range(100):
        y = y.sin()
    graph = build_graph(y)
    saved = {id(attrs["saved"]) for _, attrs in graph.nodes(data=True) if attrs["kind"] == "op"}
    shapes = {id(attrs["shape"]) for _, attrs in graph.nodes(data=True)}
    assert len(saved) == 1 and len(shapes) == 1


def test_meta_text_says_the_state():
    assert meta_text({"shape": (2, 3), "dtype": "float32"}) == "(2, 3) float32"
    assert meta_text({"shape": (3,), "dtype": "float32", "state": MODIFIED_IN_PLACE}) == (
        "(3,) float32 (modified in place)")
    assert meta_text({"shape": None, "dtype": None, "state": HOOKED, "hook": "m.f"}) == (
        "(held by a saved-tensors hook)")
    assert meta_text([{"shape": (1,), "dtype": "int64"}, None]) == "(1,) int64"
