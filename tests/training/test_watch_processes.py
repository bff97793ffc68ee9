"""gradviz.watch across processes: kill -9 mid-run, a 2-rank DDP job, the report command."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TRAIN = """
import os, sys, time, torch
from torch import nn
import gradviz

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(16, 4), torch.randn(16, 1)
HANG_AT, STEPS = int(sys.argv[2]), int(sys.argv[3])
with gradviz.watch(model, optimizer, record=sys.argv[1], on_break="report"):
    for i in range(1, STEPS + 1):
        out = model(x)
        if i == HANG_AT:  # mid-iteration: forward done, no step yet
            print("hanging", flush=True)
            time.sleep(600)
        loss = nn.functional.mse_loss(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""


def run_python(code, *args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def child_env(**extra):
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.update(extra)
    return env


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX kill -9")
def test_a_run_killed_with_kill_9_leaves_a_sound_record_of_every_finished_iteration(tmp_path):
    record = tmp_path / "run.db"
    child = subprocess.Popen([sys.executable, "-c", TRAIN, str(record), "7", "1000"],
                             stdout=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
    try:
        assert child.stdout.readline().strip() == "hanging"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
    assert Path(f"{record}-wal").exists()  # the killed writer never checkpointed
    db = sqlite3.connect(record)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert [r[0] for r in db.execute("SELECT iteration FROM iterations")] == [1, 2, 3, 4, 5, 6]
    assert db.execute("SELECT status, ended FROM runs").fetchone() == ("running", None)
    db.close()
    result = gradviz_cli("report", record)
    assert result.returncode == 0 and "6 (1..6)" in result.stdout, result.stderr


def gradviz_cli(*args):
    return subprocess.run([sys.executable, "-m", "gradviz.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=child_env(), cwd=ROOT)


def test_gradviz_report_prints_the_run_and_its_findings(tmp_path):
    record = tmp_path / "run.db"
    code = textwrap.dedent("""
        import sys, torch
        from torch import nn
        import gradviz
        from tests.training.test_watch import DeadUnitNet, data, train, zero_unit_at
        torch.manual_seed(0)
        model = DeadUnitNet()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        with gradviz.watch(model, optimizer, record=sys.argv[1], break_on=("nonfinite",),
                           on_break="report"):
            train(model, optimizer, 8, *data(), before=zero_unit_at(model, 5))
    """)
    made = run_python(code, record, env=child_env())
    assert made.returncode == 0, made.stderr
    result = gradviz_cli("report", record)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "run 1, DeadUnitNet with SGD" in out and "finished" in out
    assert "8 (1..8)" in out and "loss range" in out
    assert "first NaN/Inf" in out and "SqrtBackward0#0" in out and "'abs'" in out
    assert "audits" in out
    probe = f"from gradviz.cli import main; main(['report', {str(record)!r}]); import sys; " \
            "print('torch' in sys.modules)"
    assert run_python(probe, env=child_env()).stdout.split()[-1] == "False"  # no torch to read


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100, None],
                         ids=["empty", "text", "cut-short"])
def test_gradviz_report_on_a_file_that_is_not_a_record(tmp_path, content):
    path = tmp_path / "bad.db"
    if content is None:  # a real gradviz record, cut short
        made = run_python(TRAIN, tmp_path / "good.db", "0", "30", env=child_env())
        assert made.returncode == 0, made.stderr
        whole = (tmp_path / "good.db").read_bytes()
        content = whole[:4096] + b"\x00\xff" * 4096
    path.write_bytes(content)
    result = gradviz_cli("report", path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gradviz: error:")
    assert "Traceback" not in result.stderr


DDP = """
import os, sys, torch, torch.distributed as dist
from torch import nn
import gradviz

rank = int(sys.argv[1])
dist.init_process_group("gloo", init_method=sys.argv[2], rank=rank, world_size=2)
torch.manual_seed(0)
model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.Tanh(),
                                                          nn.Linear(8, 1)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
generator = torch.Generator().manual_seed(rank)
x, y = torch.randn(16, 4, generator=generator), torch.randn(16, 1, generator=generator)
taken = []
with gradviz.watch(model, optimizer, record=sys.argv[3], at=3, break_on=("nonfinite",),
                   on_break=taken.append) as w:
    for i in range(6):
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
print(rank, len(taken), w.iteration, flush=True)
dist.destroy_process_group()
# gloo's teardown at interpreter exit now and then aborts ("terminate called without an
# active exception": 1 run in 8 under the test runner, none in 40 plain runs, with or
# without gradviz.watch): the record and the output are complete by now, so skip it.
os._exit(0)
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ddp_ranks_on_gloo_both_record_and_only_rank_0_breaks(tmp_path):
    record = tmp_path / "run.db"
    address = f"tcp://127.0.0.1:{free_port()}"
    env = child_env(OMP_NUM_THREADS="1")
    ranks = [subprocess.Popen([sys.executable, "-c", DDP, str(rank), address, str(record)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=ROOT) for rank in (0, 1)]
    deadline = time.monotonic() + 240
    try:
        outs = [p.communicate(timeout=max(1, deadline - time.monotonic())) for p in ranks]
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(ranks, outs):
        assert p.returncode == 0, err
    assert sorted(out.split()[:3] for out, _ in outs) == [["0", "1", "6"], ["1", "0", "6"]]
    db = sqlite3.connect(record)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    by_rank = db.execute("SELECT rank, count(*), max(iteration) FROM iterations GROUP BY rank "
                         "ORDER BY rank").fetchall()
    assert by_rank == [(0, 6, 6), (1, 6, 6)]
    assert db.execute("SELECT rank, world_size, status FROM runs ORDER BY rank").fetchall() == [
        (0, 2, "finished"), (1, 2, "finished")]
    noted = db.execute("SELECT runs.rank, events.detail FROM events JOIN runs USING (run) "
                       "WHERE kind = 'at' ORDER BY runs.rank").fetchall()
    assert [rank for rank, _ in noted] == [0, 1]
    assert "noted: breaks are taken on rank 0" in noted[1][1]
    assert "noted" not in noted[0][1]
