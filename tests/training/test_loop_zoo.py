"""The loop zoo (tests/loops): training loops written the way their communities write them,
each watched unchanged; the record holds what the loop computed, and each injected
fault is found on the right iteration, op, module and line."""

import importlib
import inspect
import linecache
import sqlite3

import pytest
import torch

import gradviz
from tests.loops.common import fault_line
from tests.loops.harness import alarms, compare, run

CLEAN = [
    ("nanogpt", {}),  # AdamW groups, cosine lr, clipping, 4 micro-steps, bf16 autocast
    ("vision", {}),  # torchvision, frozen backbone, Nesterov SGD, StepLR
    ("lstm_packed", {}),  # packed sequences, a custom autograd.Function, Adam, clipping
    ("hf_trainer", {}),  # transformers' Trainer with gradviz's callback, accumulation 2
    ("lightning", {}),  # Lightning's Trainer with gradviz's callback, accumulation 2
    ("compiled_gpt", {"backend": "aot_eager"}),  # torch.compile
    ("ddp_mlp", {}),  # DDP over gloo, 2 processes
]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("loop", "options"), CLEAN, ids=[name for name, _ in CLEAN])
def test_a_watched_loop_records_what_it_computed_and_raises_no_false_alarm(loop, options):
    out = run(loop, "breaks", steps=8, **options)
    assert out.error is None, out.traceback
    found = compare(out)
    assert found["iterations"] == (8, 8)
    for quantity in ("losses", "grad_norms", "lrs"):  # the loss, the norm before clipping
        assert found[quantity]["equal"] == 8, (quantity, found[quantity])
    assert alarms(out) == []  # no spike, no audit, on a healthy run


def line(module: str, kind: str) -> int:
    return fault_line(importlib.import_module(f"tests.loops.{module}"), kind)[1]


FAULTS = [
    # loop, inject, options, (iteration, phase, op, module), (file of the marker, kind)
    ("nanogpt", "log@5", {}, (5, "forward", "LogBackward0", "transformer.h.0.mlp"),
     ("gpt_model", "log")),
    ("nanogpt", "logpow@5", {}, (5, "forward", "LogBackward0", "transformer.h.0.mlp"),
     ("gpt_model", "logpow")),
    ("nanogpt", "overflow@5", {"dtype": "float32"},
     (5, "forward", "ScaledDotProductFlashAttentionForCpuBackward0", "transformer.h.0.attn"),
     ("gpt_model", "overflow")),
    ("nanogpt", "log@5+", {"dtype": "float16"},  # a NaN loss under GradScaler still breaks
     (5, "forward", "LogBackward0", "transformer.h.0.mlp"), ("gpt_model", "log")),
    ("nanogpt", "sqrt0@5", {}, (5, "backward", "SqrtBackward0", "transformer.h.1.mlp"),
     ("gpt_model", "sqrt0")),
    ("lstm_packed", "log@5", {}, (5, "forward", "LogBackward0", ""), ("lstm_packed", "log")),
    ("lstm_packed", "norm0@5", {}, (5, "forward", "DivBackward0", "norm"),
     ("lstm_packed", "norm0")),
    ("lightning", "log@3", {}, (3, "forward", "LogBackward0", ""), ("lightning_loop", "log")),
]


@pytest.mark.parametrize(("loop", "inject", "options", "truth", "marker"), FAULTS,
                         ids=[f"{f[0]}-{f[1]}-{f[2].get('dtype', '')}" for f in FAULTS])
def test_a_nan_is_found_at_its_op_module_and_line(loop, inject, options, truth, marker):
    out = run(loop, "breaks", steps=8, inject=inject, **options)
    brk = out.error
    assert isinstance(brk, gradviz.WatchBreak), out.traceback
    assert (brk.iteration, brk.phase, brk.op, brk.module) == truth, str(brk)
    assert brk.file.endswith(f"{marker[0]}.py") and brk.line == line(*marker), str(brk)
    iteration = out.iterations()[-1]
    assert iteration[0] == truth[0] and iteration[5] == 1  # the break's own iteration, NaN
    assert out.runs()[0][2] == "break"


def test_a_custom_functions_backward_that_divides_by_zero_is_named():
    out = run("lstm_packed", "breaks", steps=8, inject="fnbwd@5")
    brk = out.error
    assert (brk.iteration, brk.phase, brk.op) == (5, "backward", "SoftClampBackward")
    from tests.loops.lstm_packed import SoftClamp

    backward_line = inspect.getsourcelines(SoftClamp.backward)[1]
    assert f"in SoftClamp.backward, tests/loops/lstm_packed.py:{backward_line})" in \
        brk.origin.detail
    assert "SoftClamp.apply" in linecache.getline(brk.file, brk.line)  # the user's call


@pytest.mark.parametrize("loop", ["lstm_packed", "vision"])
def test_divergence_breaks_once_per_episode(loop):
    out = run(loop, "report", steps=16, inject="lr5@5+")
    spikes = [e for e in out.events() if e[3] == "spike"]
    assert [e[2] for e in spikes] == [6]  # the first iteration at lr 5 ends with its step


def test_a_new_optimizer_mid_run_is_followed_to_the_end():
    out = run("nanogpt", "record", steps=16, inject="newopt@5")
    assert out.error is None and len(out.iterations()) == 16
    changed = [e for e in out.events() if e[3] == "optimizer-changed"]
    assert [e[2] for e in changed] == [5] and out.runs()[0][2] == "finished"


def test_a_layer_replaced_mid_run_is_named_and_the_new_one_flagged():
    out = run("vision", "record", steps=8, inject="replace@5")
    events = {(e[2], e[3], e[4]) for e in out.events()}
    assert {(5, "param-replaced", "fc.weight"), (5, "not-in-optimizer", "fc.weight")} <= events
    assert not any(kind == "no-grad" for _, kind, _ in events)  # not the orphan's fault


def test_ctrl_c_in_the_loop_is_stopped_not_failed():
    out = run("lstm_packed", "record", steps=8, inject="kbd@6")
    assert isinstance(out.error, KeyboardInterrupt)
    assert out.runs()[0][2] == "stopped" and len(out.iterations()) == 5


def test_something_that_is_not_an_optimizer_is_one_line_and_leaves_no_run(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "run.db"
    with pytest.raises(gradviz.WatchError, match="torch.optim.Optimizer") as caught:
        with gradviz.watch(model, object(), record=path):
            pass
    assert "\n" not in str(caught.value)
    assert not path.exists() or sqlite3.connect(path).execute(
        "SELECT count(*) FROM runs").fetchone() == (0,)
