"""The stepper tells the truth on real architectures: the engine's own order, its exact grads.

CI-sized versions of the zoo in benchmarks/zoo_rows.py (which adds HuggingFace
models; transformers is not a CI dependency). Each model runs twice from the same
seed: once under the stepper, driven every way the app drives it (single steps,
short timed runs, a run to the end), once with a plain ``backward()`` recording the
engine's pre-hook order. Order and every ``.grad`` must be identical.
"""

import pytest
import torch
from torch import nn

from gradviz import BackwardStepper, Pause, summarize
from gradviz.graph.walk import walk_graph


def tiny_vit(device):
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                              hidden_dim=32, mlp_dim=64, num_classes=10).to(device)
    images = torch.rand(2, 3, 32, 32, device=device)
    labels = torch.tensor([1, 7], device=device)
    return model, lambda: nn.functional.cross_entropy(model(images), labels)


def encoder_stack(device):
    layer = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0,
                                       batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False).to(device)
    tokens = torch.randn(2, 7, 32, device=device)
    mask = nn.Transformer.generate_square_subsequent_mask(7, device=device)
    return model, lambda: model(tokens, mask=mask, is_causal=True).square().mean()


def small_convnet(device):
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5).to(device)  # resnet10
    images = torch.rand(2, 3, 32, 32, device=device)
    return model, lambda: model(images).logsumexp(1).sum()


def lstm(device):
    model = nn.LSTM(8, 16, num_layers=2, batch_first=True).to(device)
    sequence = torch.randn(3, 5, 8, device=device)
    return model, lambda: model(sequence)[0].tanh().sum()


ARCHITECTURES = {"vit": tiny_vit, "transformer-encoder": encoder_stack,
                 "resnet": small_convnet, "lstm": lstm}


def plain_run(make, device="cpu"):
    torch.manual_seed(0)
    model, forward = make(device)
    loss = forward()
    graph, walk = walk_graph(loss, model=model)
    order = []
    handles = [fn.register_prehook(lambda grads, key=key: order.append(key))
               for key, fn in zip(graph.nodes, walk.nodes)]
    loss.backward()
    for handle in handles:
        handle.remove()
    return order, dict(model.named_parameters())


def stepped_run(make, drive, device="cpu"):
    torch.manual_seed(0)
    model, forward = make(device)
    with BackwardStepper(forward(), model=model) as stepper:
        drive(stepper)
        assert stepper.finished
    return stepper, dict(model.named_parameters())


def step_then_run(stepper):
    for _ in range(7):
        stepper.step()
    stepper.run()


def short_runs(stepper):
    while not stepper.done:
        stepper.run(seconds=0.0)  # one node per call, paused by time
        assert stepper.done or stepper.paused_by is Pause.TIME


def steps_only(stepper):
    while stepper.step() is not None:
        pass


@pytest.mark.parametrize("drive", [step_then_run, short_runs, steps_only])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_same_order_and_bitwise_grads_as_plain_backward(name, drive):
    make = ARCHITECTURES[name]
    order, plain = plain_run(make)
    stepper, stepped = stepped_run(make, drive)
    assert stepper.executed == order
    assert [event.index for event in stepper.events] == list(range(len(order)))
    assert plain.keys() == stepped.keys()
    for param_name, param in plain.items():
        assert torch.equal(param.grad, stepped[param_name].grad), param_name
    for event in stepper.events:  # every summary is there, kept or released
        assert event.grad_outputs is not None and event.grad_inputs is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", ["vit", "transformer-encoder", "resnet"])
def test_on_cuda_same_order_and_grads(name):
    order, plain = plain_run(ARCHITECTURES[name], "cuda")
    stepper, stepped = stepped_run(ARCHITECTURES[name], short_runs, "cuda")
    assert stepper.executed == order
    assert any(event.thread != "gradviz-backward" for event in stepper.events)  # device threads
    for param_name, param in plain.items():
        assert torch.equal(param.grad, stepped[param_name].grad), param_name


@pytest.mark.parametrize("name", ["vit", "transformer-encoder"])
def test_every_summary_is_that_of_its_own_tensor(name):
    """Summaries are shared between tensors (a view op sends the elements it received):
    each must still equal summarize() of the tensor itself, numbers and first elements."""
    torch.manual_seed(0)
    model, forward = ARCHITECTURES[name]("cpu")
    with BackwardStepper(forward(), model=model, history_bytes=1 << 40) as stepper:
        stepper.run()
    for event in stepper.events:
        kept = event.tensors
        expected = [summarize(t) if t is not None else None for t in kept.grad_inputs]
        assert list(event.grad_inputs) == expected, event.node
        expected = [summarize(t) if t is not None else None for t in kept.grad_outputs]
        assert list(event.grad_outputs) == expected, event.node
