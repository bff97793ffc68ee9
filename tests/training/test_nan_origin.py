"""Where a NaN/Inf started: the op that made it, its module and the user's own line, found by
running the iteration's forward again; what the replay changes is put back."""

import linecache
import math

import pytest
import torch
from torch import nn

import gradviz


def line_of(text: str) -> int:
    """The line of this file that holds ``text`` (the truth a break must name)."""
    with open(__file__) as source:
        return next(i for i, line in enumerate(source, 1) if text in line and "line_of" not in line)


class LogThenRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)

    def forward(self, x):
        h = self.fc(x)
        h = torch.log(h.abs() - self.shift)  # FAULT: log of a negative number
        return torch.relu(h)


class Net(nn.Module):
    def __init__(self, block):
        super().__init__()
        self.block = block
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.drop(self.bn(self.block(x))))


class Normalise(nn.Module):
    """A hand-written normalisation without an epsilon: 0/0 when a row is constant."""

    def forward(self, x):
        centred = x - x.mean(dim=1, keepdim=True)
        return centred / centred.pow(2).mean(dim=1, keepdim=True).sqrt()  # FAULT: 0/0


class LogPow(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 8)

    eps = 1.0

    def forward(self, x):
        h = self.fc(x)
        return h + torch.log(torch.relu(h).pow(2) + self.eps)  # FAULT: log(0)


def train(model, steps, fault_at, fault, *, x=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(16, 4) if x is None else x
    y = torch.randn(16, 1)
    for i in range(1, steps + 1):
        fault(model, i == fault_at)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer


def caught(model, fault, *, fault_at=3, x=None):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(gradviz.WatchBreak) as brk:
        with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="raise"):
            xs = torch.randn(16, 4) if x is None else x
            y = torch.randn(16, 1)
            for i in range(1, 6):
                fault(model, i == fault_at)
                loss = nn.functional.mse_loss(model(xs), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return brk.value


def shift(model, on):
    model.block.shift = 1e6 if on else -1.0


def test_a_nan_made_in_the_forward_is_named_at_the_op_that_made_it_and_its_line():
    torch.manual_seed(0)
    brk = caught(Net(LogThenRelu()), shift)
    assert (brk.iteration, brk.phase, brk.op, brk.module) == (3, "forward", "LogBackward0", "block")
    assert brk.node.startswith("LogBackward0#")
    assert brk.file.endswith("test_nan_origin.py") and brk.line == line_of("FAULT: log of a neg")
    assert "log made a NaN/Inf out of finite inputs" in str(brk)


def test_a_zero_over_zero_in_a_hand_written_normalisation():
    torch.manual_seed(0)

    def constant_rows(model, on):
        if on:  # every feature of a row the same: centred to 0, then 0 / 0
            model.block[0].weight.data.zero_()
            model.block[0].bias.data.fill_(0.5)

    block = nn.Sequential(nn.Linear(4, 8), Normalise())
    brk = caught(Net(block), constant_rows)
    assert (brk.iteration, brk.op, brk.module) == (3, "DivBackward0", "block.1")
    assert brk.line == line_of("FAULT: 0/0")


def test_log_of_a_power_that_is_zero():
    torch.manual_seed(0)

    def kill(model, on):
        model.block.eps = 0.0 if on else 1.0
        if on:
            model.block.fc.bias.data.fill_(-100.0)

    brk = caught(Net(LogPow()), kill)
    assert (brk.iteration, brk.op, brk.module) == (3, "LogBackward0", "block")
    assert brk.line == line_of("FAULT: log(0)")


def test_a_nan_in_the_data_is_said_to_come_from_the_models_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.randn(16, 4)

    def spoil(model, on):
        x[3, 1] = math.nan if on else 0.5

    brk = caught(model, spoil, x=x)
    assert (brk.iteration, brk.op, brk.module) == (3, "AddmmBackward0", "0")
    assert "the model's input args[0] held it" in str(brk)


def test_an_fp16_overflow_under_autocast_is_named_at_the_op_that_overflowed():
    torch.manual_seed(0)

    class Big(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)
            self.scale = 1.0

        def forward(self, x):
            return self.fc(x * self.scale).float().sum(dim=1, keepdim=True)  # FAULT: fp16

    model = Big()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    with pytest.raises(gradviz.WatchBreak) as caught_break:
        with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="raise"):
            for i in range(1, 5):
                model.scale = 1e5 if i == 2 else 1.0
                with torch.autocast("cpu", dtype=torch.float16):
                    out = model(torch.ones(8, 4))
                loss = (out - 1).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    brk = caught_break.value
    assert (brk.iteration, brk.module) == (2, "fc")
    assert brk.op in ("AddmmBackward0", "MmBackward0") and "made a NaN/Inf out of finite" in str(brk)


def test_a_nan_made_in_backward_is_named_at_its_forward_line():
    torch.manual_seed(0)

    class SqrtNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)

        def forward(self, x):
            return torch.sqrt(self.fc(x) ** 2 * self.gain)  # FAULT: sqrt at 0 in backward

    def zero(model, on):
        model.block.gain = 0.0 if on else 1.0

    brk = caught(Net(SqrtNet()), zero)
    assert (brk.iteration, brk.phase, brk.op, brk.module) == (3, "backward", "SqrtBackward0",
                                                               "block")
    assert brk.line == line_of("FAULT: sqrt at 0")
    assert "sqrt" in linecache.getline(brk.file, brk.line)


def test_the_replay_puts_back_the_batchnorm_statistics_and_the_random_numbers():
    torch.manual_seed(0)
    model = Net(LogThenRelu())
    seen = {}

    def after_break(brk):
        seen["mean"] = model.bn.running_mean.clone()
        seen["draw"] = torch.rand(3)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break=after_break):
        for i in range(1, 4):
            shift(model, i == 3)
            loss = nn.functional.mse_loss(model(x), y)
            mean_after_forward = model.bn.running_mean.clone()
            state = torch.get_rng_state()
            optimizer.zero_grad()
            loss.backward()
            if i == 3:
                expected = torch.rand(3, generator=torch.Generator().set_state(state))
            optimizer.step()
    # the replay's forward left no trace in the statistics, nor did its dropout draws
    torch.testing.assert_close(seen["mean"], mean_after_forward, equal_nan=True, rtol=0, atol=0)
    assert model.bn.num_batches_tracked.item() == 3
    assert torch.equal(seen["draw"], expected)


def test_a_model_compiled_by_inductor_is_watched_and_its_nan_found_by_the_replay():
    """Inductor's backward donates its buffers and refuses retain_graph: no graph is kept
    for it, and the eager replay of the model still names the op and its line."""
    torch.manual_seed(0)
    model = LogThenRelu()
    model.shift = -1.0
    compiled = torch.compile(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 4), torch.randn(16, 8)
    with pytest.raises(gradviz.WatchBreak) as caught_break:
        with gradviz.watch(compiled, optimizer, break_on=("nonfinite",), on_break="raise"):
            for i in range(1, 4):
                model.shift = 1e6 if i == 3 else -1.0
                loss = nn.functional.mse_loss(compiled(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    brk = caught_break.value
    assert (brk.iteration, brk.op, brk.module) == (3, "LogBackward0", "")
    assert brk.line == line_of("FAULT: log of a neg")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda_under_autocast_the_replay_finds_the_op_and_puts_the_generators_back():
    torch.manual_seed(0)
    model = Net(LogThenRelu()).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(16, 4, device="cuda"), torch.randn(16, 1, device="cuda")
    seen = {}

    def after(brk):
        seen["brk"] = brk
        seen["draw"] = torch.rand(3, device="cuda")

    with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break=after):
        for i in range(1, 4):
            shift(model, i == 3)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x)
            loss = nn.functional.mse_loss(out.float(), y)
            state = torch.cuda.get_rng_state()
            optimizer.zero_grad()
            loss.backward()
            if i == 3:
                generator = torch.Generator(device="cuda")
                generator.set_state(state)
                expected = torch.rand(3, device="cuda", generator=generator)
            optimizer.step()
    brk = seen["brk"]
    assert (brk.iteration, brk.op, brk.module) == (3, "LogBackward0", "block")
    assert brk.line == line_of("FAULT: log of a neg")
    assert torch.equal(seen["draw"], expected)


def test_a_graph_the_watch_keeps_shows_its_saved_tensors_not_a_users_hook():
    """The watch keeps a graph through its own saved-tensors hook; the app's inspector
    must not tell the user their tensors are held by a hook they never installed."""
    from gradviz.training.diagnosis.kept_graph import SavedTensorKeeper

    keeper = SavedTensorKeeper()
    keeper.install()
    try:
        x = torch.rand(3, 4, requires_grad=True)
        y = torch.sqrt(x**2).sum()
    finally:
        keeper.remove()
    graph = gradviz.build_graph(y)
    sqrt = next(k for k in graph if graph.nodes[k]["op"] == "SqrtBackward0")
    saved = graph.nodes[sqrt]["saved"]
    assert [(name, m["shape"], m["dtype"], m["state"]) for name, m in saved.items()] == [
        ("result", (3, 4), "float32", None)]
    boxes = keeper.start_noting()
    y.backward(retain_graph=True)
    keeper.stop_noting()
    SavedTensorKeeper.release(boxes)  # what the watch does once the gradients are checked
    graph = gradviz.build_graph(y)
    assert graph.nodes[sqrt]["saved"]["result"]["state"] == "freed"


class MaskedAttention(nn.Module):
    """nanoGPT's causal attention: -inf on purpose, which softmax turns into zeros."""

    def __init__(self, size=8, width=16):
        super().__init__()
        self.qkv = nn.Linear(width, 3 * width)
        self.register_buffer("bias", torch.tril(torch.ones(size, size)).view(1, size, size))
        self.broken = False

    def forward(self, x):
        q, k, v = self.qkv(x).split(x.shape[-1], 2)
        att = (q @ k.transpose(-2, -1)).masked_fill(self.bias == 0, float("-inf"))
        att = torch.softmax(att, -1) @ v
        position = torch.arange(x.shape[1], dtype=torch.float32)
        bucket = torch.log(position).clamp(min=0).long()  # T5's log(0), cast away: on purpose
        att = att + bucket[None, :, None]
        if self.broken:
            att = torch.log(att - 1e6)  # FAULT: the one that matters
        return att


def test_an_inf_the_model_makes_on_purpose_is_not_blamed_for_the_nan():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), MaskedAttention(), nn.Linear(16, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(gradviz.WatchBreak) as caught:
        with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="raise"):
            for iteration in range(1, 4):
                model[1].broken = iteration == 3
                loss = model(torch.rand(2, 8, 16)).pow(2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    brk = caught.value
    assert (brk.iteration, brk.op, brk.module) == (3, "LogBackward0", "1")
    assert brk.file.endswith("test_nan_origin.py") and brk.line == line_of("FAULT: the one that matters")
