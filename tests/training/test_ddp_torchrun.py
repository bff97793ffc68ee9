"""demos/ddp_torchrun.py launched as people launch it: ``torchrun --nproc-per-node 2``, gloo
on the CPU, gradviz.watch on every rank. The record holds both ranks' runs, and
``gradviz report`` says that they agree, or names where a rank-local change parted them.

Marked ``torchrun`` (``pytest -m "not torchrun"`` leaves them out): each launches two
training processes, about 15 s on two cores. Skipped, with the reason, where torchrun
or gloo is missing.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demos" / "ddp_torchrun.py"
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which(
    "torchrun")

pytestmark = [
    pytest.mark.torchrun,
    pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed beside this Python"),
    pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                       reason="this torch has no gloo backend for torch.distributed"),
]


def torchrun(record: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path]),
           "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive"}
    return subprocess.run([TORCHRUN, "--nproc-per-node", "2", "--standalone", str(DEMO),
                           "--record", str(record), "--cpu", *extra],
                          capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)


def report(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gradviz.cli", "report", *map(str, args)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "COLUMNS": "200"})


def test_two_ranks_under_torchrun_record_both_and_the_report_says_they_agree(tmp_path):
    record = tmp_path / "ddp.db"
    run = torchrun(record, "--steps", "12")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"recorded 2 ranks in {record}" in run.stdout
    db = sqlite3.connect(record)
    assert db.execute("SELECT rank, world_size, status FROM runs ORDER BY rank").fetchall() == [
        (0, 2, "finished"), (1, 2, "finished")]
    assert db.execute("SELECT rank, count(*) FROM iterations GROUP BY rank ORDER BY rank"
                      ).fetchall() == [(0, 12), (1, 12)]
    names = db.execute("SELECT name FROM params WHERE run = 1 ORDER BY param").fetchall()
    assert names[:2] == [("0.weight",), ("0.bias",)]  # DDP's "module." is not in the names
    db.close()
    result = report(record)
    assert result.returncode == 0, result.stderr
    assert "rank 0 of 2" in result.stdout.splitlines()[0]
    assert ("the 2 ranks agree: every gradient, parameter and update norm of 12 iterations"
            in result.stdout)


def test_a_rank_local_change_after_the_all_reduce_is_named(tmp_path):
    record = tmp_path / "faulty.db"
    run = torchrun(record, "--steps", "8", "--fault-at", "5")
    assert run.returncode == 0, run.stderr[-3000:]
    result = report(record)
    row = next(line for line in result.stdout.splitlines() if "2.weight" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:4] == ["5", "2.weight", "grad_norm", "0 or 1: two ranks cannot tell which"]
