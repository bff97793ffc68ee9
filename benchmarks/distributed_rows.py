"""gradviz.watch in 2-rank jobs: FSDP2 and DDP loops on gloo, watched against plain.

Each row runs ``distributed_loop.py`` under ``torchrun --nproc-per-node 2`` (CPU, one
torch thread per rank): blocks of 4 plain iterations alternate with 4 watched ones, 15
rounds, so that a busy machine slows both alike. The row is the median wall time per
iteration on rank 0 (the ranks move in step: every iteration meets in the job's own
collectives); ``±`` is the plain iterations' spread (interquartile range / median),
a measure of how noisy the machine was; the CPU rows are the main thread's CPU time
(``time.thread_time``), which a shared machine hardly moves but which misses waiting.
On FSDP2 the watch adds one all_reduce of a few kB per iteration (two with a
nonfinite/spike break); on DDP it adds none. ``small`` shows the watch's fixed cost
per iteration (40 parameters, a few ms an iteration), ``medium`` a model whose
iteration does some work (3.2M parameters).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from common import Row

HERE = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _run(kind: str, *extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive",
               PYTHONPATH=f"{HERE.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "times.json"
        subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2",
                        str(HERE / "distributed_loop.py"), str(out), kind, *extra],
                       check=True, capture_output=True, text=True, env=env, timeout=900)
        return json.loads(out.read_text())


def _rows(label: str, kind: str, size: str, *extra: str) -> Iterator[Row]:
    times = _run(kind, size, *extra)["ranks"][0]
    for clock, name in ((0, "wall"), (1, "CPU")):
        plain = [t[clock] for t in times["plain"]]
        watched = [t[clock] for t in times["watched"]]
        base = statistics.median(plain)
        quartiles = statistics.quantiles(plain, n=4)
        ours = statistics.median(watched)
        yield Row(f"{label} ({name})", f"{ours * 1e3:.1f} ms", f"{base * 1e3:.1f} ms ±"
                  f"{(quartiles[2] - quartiles[0]) / base:.0%}", ours / base, "<=1.05")


def bench_distributed_fsdp2() -> Iterator[Row]:
    yield from _rows("watch FSDP2 2 ranks, small", "fsdp", "small")
    yield from _rows("watch FSDP2 2 ranks, small, breaks", "fsdp", "small", "breaks")
    yield from _rows("watch FSDP2 2 ranks, medium", "fsdp", "medium")


def bench_distributed_ddp() -> Iterator[Row]:
    yield from _rows("watch DDP 2 ranks, small", "ddp", "small")
    yield from _rows("watch DDP 2 ranks, small, breaks", "ddp", "small", "breaks")
    yield from _rows("watch DDP 2 ranks, medium", "ddp", "medium")


ROWS = [bench_distributed_fsdp2, bench_distributed_ddp]
