"""gradviz.watch around an unchanged training loop: the record, the breaks, the NaN's origin."""

import math
import os
import signal
import sqlite3
import sys
import weakref

import pytest
import torch
from torch import nn

import gradviz
from gradviz.model.runs.history import RunRecord


class NaiveAbs(nn.Module):
    def forward(self, x):
        return torch.sqrt(x**2)  # d/dx at 0 is Inf; Inf * 0 downstream is NaN


class DeadUnitNet(nn.Module):
    """Finite until unit 0 of ``hidden`` is zeroed: then SqrtBackward0 in ``abs`` makes Inf."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.abs = NaiveAbs()
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        return self.out(self.abs(self.hidden(x)))


def data(seed=0, n=16):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=generator), torch.randn(n, 1, generator=generator)


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def train(model, optimizer, steps, x, y, *, set_to_none=True, before=None):
    """The user's loop, as they wrote it; returns the losses it saw."""
    seen = []
    for i in range(1, steps + 1):
        if before is not None:
            before(i)
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad(set_to_none=set_to_none)
        loss.backward()
        optimizer.step()
        seen.append(loss.item())
    return seen


def read(path):
    with RunRecord(path) as record:
        return record.history()


# ----------------------------------------------------------------- the record
@pytest.mark.parametrize("set_to_none", [True, False])
def test_the_unchanged_loop_records_exactly_the_losses_it_saw(tmp_path, set_to_none):
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = data()
    with gradviz.watch(model, optimizer, record=tmp_path / "run.db") as w:
        seen = train(model, optimizer, 12, x, y, set_to_none=set_to_none)
    history = read(tmp_path / "run.db")
    assert history.losses == seen
    assert history.iteration_numbers == list(range(1, 13)) and w.iteration == 12
    assert history.info.status == "finished" and history.info.optimizer == "Adam"
    rows = sqlite3.connect(tmp_path / "run.db").execute(
        "SELECT iteration, loss FROM iterations ORDER BY iteration").fetchall()
    assert rows == list(zip(range(1, 13), seen))
    first = history.layer_grad_norms[history.layers.index("0")][0]
    assert math.isfinite(first) and first > 0


def test_gradient_accumulation_and_the_explicit_backward(tmp_path):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data()
    sums = []
    with gradviz.watch(model, optimizer, record=tmp_path / "run.db",
                       break_on=("nonfinite",), on_break="raise") as w:
        for _ in range(3):
            optimizer.zero_grad()
            total = 0.0
            for half in (slice(0, 8), slice(8, 16)):
                loss = nn.functional.mse_loss(model(x[half]), y[half]) / 2
                w.backward(loss) if half.start else loss.backward()
                total += loss.item()
            optimizer.step()
            sums.append(total)
    history = read(tmp_path / "run.db")
    assert [row.backwards for row in history.iterations] == [2, 2, 2]
    assert history.losses == pytest.approx(sums, rel=1e-12)


def test_a_grad_scaler_loss_is_recorded_unscaled():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, y = data()
    seen = []
    with gradviz.watch(model, optimizer) as w:
        for _ in range(3):
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            seen.append(loss.item())
    assert w.history().losses == pytest.approx(seen, rel=1e-6)
    assert torch.amp.GradScaler.scale.__qualname__ == "GradScaler.scale"


def test_without_a_file_the_last_iterations_stay_in_memory(monkeypatch):
    import gradviz.training.watch as watch_module

    monkeypatch.setattr(watch_module, "MEMORY_ITERATIONS", 5)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradviz.watch(model, optimizer) as w:
        seen = train(model, optimizer, 9, *data())
    history = w.history()
    assert history.iteration_numbers == [5, 6, 7, 8, 9] and history.losses == seen[4:]
    assert "run 1" in str(w.report())


def test_without_an_optimizer_each_backward_is_an_iteration():
    model = mlp()
    x, y = data()
    with gradviz.watch(model) as w:
        for _ in range(3):
            model.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
    assert w.history().iteration_numbers == [1, 2, 3]


def test_a_watched_backward_frees_its_activations_at_the_check_not_an_iteration_later():
    w1 = nn.Parameter(torch.randn(64, 64))
    model = nn.Module()
    model.w1 = w1
    optimizer = torch.optim.SGD([w1], lr=0.01)
    hidden = []

    def forward(x):
        h = x @ w1  # sin saves h; the loop never holds it
        hidden.append(weakref.ref(h))
        return h.sin().sum()

    with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="raise") as w:
        assert w.nan_origin
        loss = forward(torch.randn(8, 64))
        optimizer.zero_grad()
        loss.backward()
        assert hidden[-1]() is not None  # kept until its gradients are checked
        optimizer.step()
        assert hidden[-1]() is None  # freed, though `loss` still holds the graph
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            loss.backward()


def test_a_parameter_group_added_later_is_measured_from_then_on():
    model = mlp()
    optimizer = torch.optim.SGD(model[0].parameters(), lr=0.1)
    x, y = data()
    with gradviz.watch(model, optimizer) as w:
        train(model, optimizer, 2, x, y)
        optimizer.add_param_group({"params": model[2].parameters()})
        train(model, optimizer, 2, x, y)
    history = w.history()
    assert [p.param_group for p in history.params] == [0, 0, 1, 1]
    assert any(e.kind == "params-changed" and e.iteration == 3 for e in history.events)
    last = history.layer_update_ratios[history.layers.index("2")]
    assert math.isnan(last[0]) and last[-1] > 0


# ------------------------------------------------------------------ NaN origin
def zero_unit_at(model, iteration):
    def before(i):
        if i == iteration:
            with torch.no_grad():
                model.hidden.weight[0].zero_()
                model.hidden.bias[0].zero_()

    return before


def test_a_nan_is_caught_on_the_iteration_it_arose_with_its_origin(tmp_path):
    torch.manual_seed(0)
    model = DeadUnitNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = data()
    with pytest.raises(gradviz.WatchBreak) as caught:
        with gradviz.watch(model, optimizer, record=tmp_path / "run.db",
                           break_on=("nonfinite",), on_break="raise"):
            train(model, optimizer, 20, x, y, before=zero_unit_at(model, 7))
    brk = caught.value
    assert isinstance(brk, gradviz.GradvizError)
    assert (brk.iteration, brk.reason, brk.phase) == (7, "nonfinite", "backward")
    assert (brk.node, brk.op, brk.module) == ("SqrtBackward0#0", "SqrtBackward0", "abs")
    assert brk.file.endswith("test_watch.py")
    # the user's own line that called the op (not its module's def forward line)
    import linecache
    assert "sqrt" in linecache.getline(brk.file, brk.line)
    assert brk.line == NaiveAbs.forward.__code__.co_firstlineno + 1
    assert "\n" not in str(brk) and "SqrtBackward0#0" in str(brk)
    # it broke before optimizer.step(): the weights are clean, the gradients the loop's own
    assert all(bool(p.isfinite().all()) for p in model.parameters())
    assert bool(model.hidden.weight.grad.isnan().any())
    history = read(tmp_path / "run.db")
    # the iteration it broke at is recorded too (what it measured before the step)
    assert history.iteration_numbers == list(range(1, 8)) and history.info.status == "break"
    assert history.iterations[-1].nonfinite and not any(r.nonfinite for r in
                                                        history.iterations[:-1])
    first = history.first_nonfinite
    assert (first.iteration, first.node, first.module) == (7, "SqrtBackward0#0", "abs")


def test_a_nan_loss_is_traced_to_the_first_op_of_forward_that_took_it():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data()
    bad = x.clone()
    bad[3, 1] = math.nan
    with pytest.raises(gradviz.WatchBreak) as caught:
        with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="raise"):
            for i in range(1, 6):
                loss = nn.functional.mse_loss(model(bad if i == 4 else x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    brk = caught.value
    assert (brk.iteration, brk.phase, brk.op, brk.module) == (4, "forward", "AddmmBackward0", "0")
    assert "the loss is NaN/Inf" in str(brk)


def test_report_mode_prints_one_line_and_training_goes_on(capsys):
    torch.manual_seed(0)
    model = DeadUnitNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="report") as w:
        train(model, optimizer, 9, *data(), before=zero_unit_at(model, 3))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gradviz: iteration 3: a gradient is NaN/Inf")
    assert w.iteration == 9 and w.breaks[0].node == "SqrtBackward0#0"


def test_a_callable_gets_the_break():
    torch.manual_seed(0)
    model = DeadUnitNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    got = []
    with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break=got.append):
        train(model, optimizer, 5, *data(), before=zero_unit_at(model, 2))
    assert [(b.iteration, b.reason, b.module) for b in got] == [(2, "nonfinite", "abs")]


# --------------------------------------------------------------- other breaks
def test_break_at_an_iteration_and_on_a_spike():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = data()
    with pytest.raises(gradviz.WatchBreak) as caught:
        with gradviz.watch(model, optimizer, at=4, on_break="raise"):
            train(model, optimizer, 10, x, y)
    assert (caught.value.iteration, caught.value.reason) == (4, "at")

    def blow_up(i):
        if i == 12:
            y.mul_(1000)

    with pytest.raises(gradviz.WatchBreak) as caught:
        with gradviz.watch(model, optimizer, break_on=("spike",), on_break="raise"):
            train(model, optimizer, 20, x, y, before=blow_up)
    assert (caught.value.iteration, caught.value.reason) == (12, "spike")
    assert "median of the last 11 iterations" in str(caught.value)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_sigusr1_breaks_at_the_next_backward_and_the_handler_is_put_back():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = signal.getsignal(signal.SIGUSR1)

    def send(i):
        if i == 3:
            os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(gradviz.WatchBreak) as caught:
        with gradviz.watch(model, optimizer, on_break="raise"):
            train(model, optimizer, 10, *data(), before=send)
    assert (caught.value.iteration, caught.value.reason) == (3, "signal")
    assert signal.getsignal(signal.SIGUSR1) == before


def test_the_app_opens_paused_on_the_iteration_graph_and_can_stop_training(monkeypatch):
    import gradviz.show

    torch.manual_seed(0)
    model = DeadUnitNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    opened = []

    def app(pause):
        session = pause.session
        assert session.stepper.executed == [] and not session.stepper.done
        assert all(p.grad is None for p in model.parameters())  # set aside while it steps
        session.run_backward()
        opened.append((pause.brk.iteration, session.stepper.first_nonfinite.node,
                       session.graph.nodes["SqrtBackward0#0"]["module"],
                       pause.history.iteration_numbers))
        pause.request_stop()

    monkeypatch.setattr(gradviz.show, "open_break", app)
    with pytest.raises(gradviz.TrainingStopped) as caught:
        with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="app") as w:
            train(model, optimizer, 9, *data(), before=zero_unit_at(model, 4))
    assert opened == [(4, "SqrtBackward0#0", "abs", [1, 2, 3])]
    assert caught.value.iteration == 4 and w.stopped
    assert model.hidden.weight.grad is not None  # the loop's own gradients, put back


# ---------------------------------------------------------------------- audits
class Blind(torch.optim.Optimizer):
    """Changes every parameter in place by ``change``, gradient or not (as a careless
    custom optimizer might)."""

    def __init__(self, params, change):
        super().__init__(params, {})
        self.change = change

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                self.change(param)


def DecayAll(params):  # noqa: N802 - an optimizer, named as one
    """Shrinks every parameter by 1% at each step."""
    return Blind(params, lambda param: param.mul_(0.99))


def Flip(params):  # noqa: N802
    """Negates every parameter at each step: |Δ|/|p| = 2, a layer rewritten, not trained."""
    return Blind(params, lambda param: param.neg_())


def audits_of(model, optimizer, steps=12, **kwargs):
    with gradviz.watch(model, optimizer, **kwargs) as w:
        train(model, optimizer, steps, *data())
    return {(e.kind, e.subject): e.iteration for e in w.history().audits}


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(4, 1)
        self.unused = nn.Linear(4, 1)

    def forward(self, x):
        return self.used(x)


class WithZeroed(nn.Module):
    def __init__(self):
        super().__init__()
        self.used = nn.Linear(4, 1)
        self.zeroed = nn.Linear(4, 1)

    def forward(self, x):
        return self.used(x) + 0 * self.zeroed(x)


def test_audit_a_parameter_in_no_optimizer_group():
    model = mlp()
    audits = audits_of(model, torch.optim.SGD(model[0].parameters(), lr=0.1), steps=2)
    assert audits[("not-in-optimizer", "2.weight")] == 1
    assert audits[("not-in-optimizer", "2.bias")] == 1


def test_audit_a_parameter_that_got_no_gradient():
    model = WithUnused()
    audits = audits_of(model, torch.optim.SGD(model.parameters(), lr=0.1), steps=10)
    assert audits[("no-grad", "unused.weight")] == 10  # ten in a row: not LayerDrop's luck
    assert ("no-grad", "used.weight") not in audits


def test_audit_zero_gradients_moved_by_weight_decay_and_stuck_for_ten_iterations():
    model = WithZeroed()
    audits = audits_of(model, torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1))
    assert audits[("moved-zero-grad", "zeroed.weight")] == 10
    assert audits[("zero-grad-run", "zeroed.weight")] == 10
    assert ("moved-zero-grad", "used.weight") not in audits


def test_audit_a_frozen_layer_moved_by_momentum_and_one_moved_without_a_gradient():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def freeze(i):
        if i == 3:
            model[0].requires_grad_(False)

    with gradviz.watch(model, optimizer) as w:
        train(model, optimizer, 5, *data(), set_to_none=False, before=freeze)
    audits = {(e.kind, e.subject): e.iteration for e in w.history().audits}
    assert audits[("moved-frozen", "0.weight")] == 3

    model = WithUnused()
    audits = audits_of(model, DecayAll(model.parameters()), steps=10)
    assert audits[("moved-without-grad", "unused.weight")] == 10


def test_audit_update_ratios_out_of_band_per_layer_ten_steps_in_a_row():
    band = (1e-4, 1e-2)  # the mechanism, on a narrow band given by the user
    model = mlp()
    audits = audits_of(model, torch.optim.SGD(model.parameters(), lr=1e-7), steps=12, band=band)
    assert audits[("ratio-low", "0")] == 10 and audits[("ratio-low", "2")] == 10
    model = mlp()
    audits = audits_of(model, torch.optim.SGD(model.parameters(), lr=1e-7), steps=9, band=band)
    assert not audits
    model = mlp()
    audits = audits_of(model, torch.optim.Adam(model.parameters(), lr=0.3), steps=12, band=band)
    assert audits[("ratio-high", "0")] == 10


def test_the_default_band_follows_the_optimizer_family():
    """Healthy Adam and SGD-with-momentum runs raise nothing; a layer rewritten at every
    step (SGD at lr 50 on this MLP) or one that stopped learning (lr 1e-9) does."""
    from gradviz.training.bands import ADAPTIVE_BAND, OTHER_BAND

    for make in (lambda p: torch.optim.Adam(p, lr=3e-3), lambda p: torch.optim.AdamW(p, lr=1e-4),
                 lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)):
        model = mlp()
        assert not audits_of(model, make(model.parameters()), steps=15)
    model = mlp()
    with gradviz.watch(model, torch.optim.Adam(model.parameters(), lr=1e-3)) as w:
        pass
    assert w.band == ADAPTIVE_BAND and tuple(w.history().info.settings["band"]) == ADAPTIVE_BAND
    model = mlp()
    audits = audits_of(model, torch.optim.SGD(model.parameters(), lr=1e-9), steps=12)
    assert audits[("ratio-low", "0")] == 10
    model = mlp()
    with gradviz.watch(model, Flip(model.parameters())) as w:
        train(model, w.optimizer, 12, *data())
    assert w.band == OTHER_BAND
    assert {(e.kind, e.subject) for e in w.history().audits} >= {("ratio-high", "0"),
                                                                  ("ratio-high", "2")}



def test_each_audit_is_reported_once():
    model = WithUnused()
    with gradviz.watch(model, torch.optim.SGD(model.parameters(), lr=0.1)) as w:
        train(model, w.optimizer, 25, *data())  # past ten in a row, and on
    kinds = [(e.kind, e.subject) for e in w.history().audits]
    assert len(kinds) == len(set(kinds))
    text = str(w.report())
    assert "in the optimizer but got no gradient" in text and "unused.weight" in text


# ----------------------------------------------------- putting torch back as it was
def test_torch_is_put_back_and_the_loops_exception_passes_through():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    originals = (torch.autograd.backward, torch.Tensor.backward, torch.amp.GradScaler.scale,
                 torch.amp.GradScaler.step)
    mistake = ValueError("the user's own")
    with pytest.raises(ValueError) as caught:
        with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="raise") as w:
            assert torch.Tensor.backward is not originals[1]
            assert torch._C._autograd._top_saved_tensors_default_hooks(False) is not None
            train(model, optimizer, 2, *data())
            raise mistake
    assert caught.value is mistake
    assert (torch.autograd.backward, torch.Tensor.backward, torch.amp.GradScaler.scale,
            torch.amp.GradScaler.step) == originals
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks
    assert torch._C._autograd._top_saved_tensors_default_hooks(False) is None
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert w.history().info.status == "failed" and w.iteration == 2


def test_a_reentrant_checkpoint_runs_its_inner_backward_untouched():
    from torch.utils.checkpoint import checkpoint

    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data()
    with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="raise") as w:
        for _ in range(2):
            out = checkpoint(model, x.requires_grad_(), use_reentrant=True)
            loss = nn.functional.mse_loss(out, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert [row.backwards for row in w.history().iterations] == [1, 1]


# ------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((None,), {}, "needs the model being trained"),
    ((nn.Linear(2, 2), "adam"), {}, "must be a torch.optim.Optimizer"),
    ((nn.Linear(2, 2),), {"break_on": ("nan",)}, "unknown 'nan'"),
    ((nn.Linear(2, 2),), {"at": 0}, "counted from 1"),
    ((nn.Linear(2, 2),), {"on_break": "pdb"}, "on_break="),
    ((nn.Linear(2, 2),), {"record": "/no/such/folder/run.db"}, "does not exist"),
])
def test_bad_input_is_one_line(args, kwargs, message):
    with pytest.raises(gradviz.GradvizError) as caught:
        gradviz.watch(*args, **kwargs)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_optimizer_with_no_parameters():
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.param_groups[0]["params"] = []
    with pytest.raises(gradviz.GradvizError, match="has no parameters"):
        gradviz.watch(model, optimizer)


def test_a_record_in_an_unwritable_place(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(gradviz.GradvizError, match="is a file, not a folder"):
        gradviz.watch(nn.Linear(2, 2), record=blocker / "run.db")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(gradviz.GradvizError, match="not writable"):
            gradviz.watch(nn.Linear(2, 2), record=locked / "run.db")
    not_a_record = tmp_path / "other.db"
    sqlite3.connect(not_a_record).execute("CREATE TABLE t (x)")
    with pytest.raises(gradviz.GradvizError, match="not a gradviz record"):
        with gradviz.watch(nn.Linear(2, 2), record=not_a_record):
            pass


def test_the_core_stays_free_of_textual():
    import subprocess

    probe = "import gradviz, sys; gradviz.watch; print('textual' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=120, check=True)
    assert result.stdout.strip() == "False"


def test_memory_per_iteration_is_constant(tmp_path):
    import gc
    import tracemalloc

    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = data()
    with gradviz.watch(model, optimizer, record=tmp_path / "run.db", break_on=("nonfinite",),
                       on_break="raise"):
        train(model, optimizer, 20, x, y)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        train(model, optimizer, 200, x, y)
        gc.collect()
        growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "lineno"))
        tracemalloc.stop()
    assert growth < 64 * 1024, growth  # 200 iterations: nothing kept per iteration


def test_a_break_at_an_iteration_opens_the_app_on_its_graph_and_training_resumes(monkeypatch):
    import gradviz.show

    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    opened = []

    def app(pause):
        graph = pause.session.graph
        opened.append((pause.brk.reason, pause.brk.iteration, graph.nodes[graph.graph["roots"][0]]
                       ["op"], pause.session.stepper.executed))

    monkeypatch.setattr(gradviz.show, "open_break", app)
    with gradviz.watch(model, optimizer, at=2, on_break="app") as w:
        seen = train(model, optimizer, 4, *data())
    assert opened == [("at", 2, "MseLossBackward0", [])]
    assert w.history().losses == seen


def test_a_break_kept_in_a_notebook_opens_later_with_that_iterations_gradients(monkeypatch):
    """on_break="keep": training goes on; w.show() steps the break's own graph afterwards,
    with the weights of that iteration (frozen), and puts the loop's .grad back."""
    import gradviz.show

    torch.manual_seed(0)
    model = DeadUnitNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    opened = []

    def app(pause):
        session = pause.session
        assert all(p.grad is None for p in model.parameters())  # set aside while it is open
        session.run_backward()
        opened.append((pause.brk.iteration, session.stepper.first_nonfinite.node,
                       model.out.weight.grad.clone()))
        pause.closed()

    monkeypatch.setattr(gradviz.show, "open_break", app)
    x, y = data()
    zero, seen = zero_unit_at(model, 4), {}

    def before(i):
        zero(i)
        if i == 5:  # the loop's own gradient of iteration 4, before iteration 5 replaces it
            seen["grad"] = model.out.weight.grad.clone()

    with gradviz.watch(model, optimizer, break_on=("nonfinite",), on_break="keep") as w:
        train(model, optimizer, 6, x, y, before=before)
    assert w.iteration == 6 and not opened  # training went on, nothing opened yet
    loop_grad = model.out.weight.grad
    w.show()
    (iteration, node, grad), = opened
    assert (iteration, node) == (4, "SqrtBackward0#0")
    assert model.out.weight.grad is loop_grad  # put back
    # the break's own backward, with that iteration's weights (not those of iteration 6)
    torch.testing.assert_close(grad, seen["grad"], equal_nan=True)


def test_w_last_gives_the_loops_logger_the_latest_iteration():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradviz.watch(model, optimizer) as w:
        assert w.last is None
        losses = train(model, optimizer, 3, *data())
        last = w.last
    assert last.iteration == 3 and last.loss == pytest.approx(losses[-1])
    expected = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in model[0].parameters()))
    assert last.layer_grad_norms["0"] == pytest.approx(expected, rel=1e-6)
    assert last.grad_norm == pytest.approx(math.sqrt(sum(
        float(p.grad.norm()) ** 2 for p in model.parameters())), rel=1e-6)
    assert last.grad_norm_clipped is None and last.lr == 0.1
    assert set(last.layer_update_ratios) == {"0", "2"}


def test_two_clips_record_the_norm_the_step_saw():
    """A loop that clips twice (or clips, then logs with max_norm=inf): the clipped norm of
    record is the one after both, the norm of record the one before either."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradviz.watch(model, optimizer) as w:
        loss = model(torch.randn(4, 8)).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        before = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        seen = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item()
        optimizer.step()
    assert w.last.grad_norm == pytest.approx(before, rel=1e-6)
    assert w.last.grad_norm_clipped == pytest.approx(seen, rel=1e-5)
    assert seen == pytest.approx(0.5, rel=1e-5)


class Dropped(nn.Module):
    """A block skipped now and then (LayerDrop, stochastic depth): no gradient in those
    iterations, none missing for long."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.block = nn.Linear(4, 4)
        self.iteration = 0

    def forward(self, x):
        self.iteration += 1
        h = self.first(x)
        return h if self.iteration % 3 == 0 else h + self.block(h)


def test_a_layer_dropped_now_and_then_is_not_audited():
    model = Dropped()
    audits = audits_of(model, torch.optim.AdamW(model.parameters(), lr=1e-3), steps=30)
    assert audits == {}
