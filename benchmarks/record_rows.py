"""Record rows: the training record itself at scale (issue 18).

- bytes per iteration of a record written by ``gradviz.watch`` on a model of 500
  parameter tensors, beside the bytes of the numbers it holds;
- ``gradviz open`` on a record of 100,000 iterations: from the process's start to the
  first frame, and its peak memory with the heat maps filled in, beside the same for
  10,000 iterations (the view reads at most 4,000 points, so neither may grow with
  the record);
- ``gradviz diff`` and the rank comparison on two records of 10,000 iterations x 100
  parameters (1M rows each), beside fetching both records' rows into Python, the
  least that a diff which reads everything does.

Synthetic records (the record's own schema, values that look like training) are
written once into ``/tmp/gradviz_record_rows`` and kept between runs: the 100,000-
iteration one holds 5M rows and takes a minute or two to write.
"""

from __future__ import annotations

import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from common import Row

FOLDER = Path(tempfile.gettempdir()) / "gradviz_record_rows"


def synthetic(path: Path, *, iterations: int, layers: int, per_layer: int = 2, ranks: int = 1,
              seed_change_at: int | None = None, lr: float = 1e-3,
              fault: tuple[int, int, int] | None = None, rank_offset: int = 0,
              world_size: int | None = None, started: float = 1.7e9) -> Path:
    """A record at ``path`` (kept if it exists): one run per rank, ``iterations`` long,
    ``layers x per_layer`` parameters. ``seed_change_at``: another noise stream from that
    iteration; ``lr``: a learning rate the updates and, from iteration 2, the gradients
    feel; ``fault=(rank, iteration, param)``: that gradient norm x 1.001."""
    from gradviz.model.runs.schema import APPLICATION_ID, SCHEMA, SCHEMA_VERSION

    if path.exists():
        return path
    FOLDER.mkdir(exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    db = sqlite3.connect(partial, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    count = layers * per_layer
    names = [(f"layers.{j // per_layer}.p{j % per_layer}", f"layers.{j // per_layer}")
             for j in range(count)]
    for rank in range(rank_offset, rank_offset + ranks):
        run = db.execute(
            "INSERT INTO runs (rank, world_size, started, status, host, pid, argv, model, "
            "optimizer, versions, settings) VALUES (?, ?, ?, 'finished', 'synthetic', 0, '[]', "
            "'Synthetic', 'AdamW', '{}', '{}')",
            (rank, world_size or ranks, started + 0.1 * rank)).lastrowid
        db.executemany("INSERT INTO params VALUES (?, ?, ?, ?, '[64, 64]', 4096, 'float32', 0, 0)",
                       [(run, j, name, layer) for j, (name, layer) in enumerate(names)])
        base = np.random.default_rng(0).uniform(0.01, 1.0, count)
        weights = np.random.default_rng(1).uniform(1.0, 30.0, count)
        noise, changed = np.random.default_rng(2), np.random.default_rng(3)
        for first in range(1, iterations + 1, 5000):
            its = np.arange(first, min(first + 5000, iterations + 1))
            draws, others = noise.normal(0, 0.1, (len(its), count)), changed.normal(
                0, 0.1, (len(its), count))
            if seed_change_at is not None:
                draws = np.where((its >= seed_change_at)[:, None], others, draws)
            decay = np.exp(-its / (iterations / 3))[:, None]
            grad = base * decay * (1 + draws) * np.where((its >= 2)[:, None],
                                                         1 + (lr - 1e-3) * 10, 1.0)
            if fault is not None and fault[0] == rank:
                grad[its == fault[1], fault[2]] *= 1.001
            pnorm = weights * (1 + its[:, None] * 1e-5)
            update = lr * 64 * (1 + 0.05 * draws)
            loss = 2.3 * decay[:, 0] * (1 + 0.01 * draws[:, 0])
            total = np.sqrt((grad ** 2).sum(1))
            db.executemany("INSERT INTO iterations VALUES (?, ?, ?, ?, ?, NULL, 0.1, ?, 1, ?, 0, 0)",
                           [(run, it, rank, l, t, started + it, lr)
                            for it, l, t in zip(its.tolist(), loss.tolist(), total.tolist())])
            db.executemany(
                "INSERT INTO param_stats VALUES (?, ?, ?, ?, ?, ?, ?, 16)",
                [(run, it, j, g, p, u, u / p) for it, gs, ps, us in zip(
                    its.tolist(), grad.tolist(), pnorm.tolist(), update.tolist())
                 for j, (g, p, u) in enumerate(zip(gs, ps, us))])
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    partial.rename(path)
    return path


# ------------------------------------------------------------------ bytes per iteration
class _Heads(torch.nn.Module):
    """250 linear layers side by side (500 parameter tensors), their outputs summed: every
    tensor gets a gradient of its own size (a deep chain of them would vanish to exact
    zeros, which SQLite stores in no bytes, and flatter the record)."""

    def __init__(self):
        super().__init__()
        self.heads = torch.nn.ModuleList(torch.nn.Linear(16, 16) for _ in range(250))

    def forward(self, x):
        return sum(head(x) for head in self.heads)


def _watched_record(path: Path, iterations: int) -> None:
    """:class:`_Heads` trained under gradviz.watch, recorded at ``path``."""
    import gradviz

    torch.manual_seed(0)
    model = _Heads()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 16), torch.randn(8, 16)
    with gradviz.watch(model, optimizer, record=path, on_break="report"):
        for _ in range(iterations):
            loss = (model(x) - y).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def bench_record_bytes() -> Iterator[Row]:
    """The growth between a 50- and a 250-iteration record, per iteration: what each
    iteration adds, without the fixed part (schema, runs, params)."""
    with tempfile.TemporaryDirectory() as folder:
        sizes = {}
        for iterations in (50, 250):
            path = Path(folder) / f"run{iterations}.db"
            _watched_record(path, iterations)
            sizes[iterations] = path.stat().st_size + sum(
                p.stat().st_size for p in Path(folder).glob(f"run{iterations}.db-*"))
    per_iteration = (sizes[250] - sizes[50]) / 200
    numbers = 500 * (4 * 8 + 1) + 12 * 8  # per parameter 4 REALs and its flags; the iteration row
    yield Row("record: bytes per iteration, 500 parameter tensors", f"{per_iteration:,.0f} B",
              f"{numbers:,} B of numbers", per_iteration / numbers, "report")


# ------------------------------------------------------------------ the run view
_OPEN = """
import asyncio, sys, time
from gradviz.tui.screens.run_view import make_record_app  # no torch: a record is plain data

def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024

shown = []

async def main():
    app = make_record_app(sys.argv[1])
    # the first frame: the refresh after the screen is mounted
    app.call_later(lambda: app.call_after_refresh(lambda: shown.append(time.time())))
    async with app.run_test(size=(120, 40)) as pilot:
        while not shown:
            await asyncio.sleep(0.005)
        await app.workers.wait_for_complete()  # the heat maps filled in: memory counts them
        await pilot.pause()

asyncio.run(main())
print(shown[0], hwm_mib())
"""


def _open_once(path: Path) -> tuple[float, float]:
    """(process start to the first frame, peak memory in MiB) of the run view on ``path``."""
    script = FOLDER / "open_record.py"  # Textual wants a source file
    script.write_text(_OPEN)
    start = time.time()
    out = subprocess.run([sys.executable, str(script), str(path)], capture_output=True,
                         text=True, check=True, timeout=300).stdout.split()
    return float(out[-2]) - start, float(out[-1])


def bench_record_open() -> Iterator[Row]:
    long = synthetic(FOLDER / "view_100k.db", iterations=100_000, layers=25)
    short = synthetic(FOLDER / "view_10k.db", iterations=10_000, layers=25)
    times = {long: [], short: []}
    peaks = {long: [], short: []}
    for _ in range(3):  # interleaved: a busy machine slows both alike
        for path in (long, short):
            took, peak = _open_once(path)
            times[path].append(took)
            peaks[path].append(peak)
    took, base = statistics.median(times[long]), statistics.median(times[short])
    size = long.stat().st_size / 2 ** 20
    yield Row(f"run view 100k its ({size:.0f} MiB): start to 1st frame",
              f"{took:.2f} s", f"{base:.2f} s at 10,000", took / base,
              "< 1 s " + ("ok" if took < 1 else "MISSED"))
    peak, base_peak = statistics.median(peaks[long]), statistics.median(peaks[short])
    yield Row("run view 100k its: peak memory", f"{peak:.0f} MiB",
              f"{base_peak:.0f} MiB at 10,000", peak / base_peak, "<=1.1")


# ------------------------------------------------------------------ diff and ranks
def _fetch_both(a: Path, b: Path) -> None:
    """The baseline: both runs' per-parameter rows into Python."""
    for path in (a, b):
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        db.execute("SELECT * FROM param_stats").fetchall()
        db.close()


def _timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_record_diff() -> Iterator[Row]:
    from gradviz.model.runs.diff import diff_runs

    a = synthetic(FOLDER / "diff_a.db", iterations=10_000, layers=50)
    cases = {"identical": synthetic(FOLDER / "diff_same.db", iterations=10_000, layers=50),
             "seed at 5,000": synthetic(FOLDER / "diff_seed.db", iterations=10_000,
                                                layers=50, seed_change_at=5000),
             "lr changed": synthetic(FOLDER / "diff_lr.db", iterations=10_000, layers=50,
                                     lr=2e-3)}
    for label, b in cases.items():
        ours = _timed(lambda: diff_runs(a, b))
        base = _timed(lambda: _fetch_both(a, b), repeats=1)
        parted = diff_runs(a, b).parted_at
        yield Row(f"diff 2x10k its x 100 params, {label}: "
                  + ("no parting" if parted is None else f"at {parted}"),
                  f"{ours:.2f} s", f"{base:.2f} s fetch both", ours / base,
                  "< 2 s " + ("ok" if ours < 2 else "MISSED"))


def bench_record_ranks() -> Iterator[Row]:
    from gradviz.model.runs.ranks import compare_ranks, find_job

    for label, fault in (("agree", None), ("apart 9,000", (1, 9000, 7))):
        suffix = "ok" if fault is None else "fault"
        files = [synthetic(FOLDER / f"ranks_{suffix}_{rank}.db", iterations=10_000, layers=50,
                           rank_offset=rank, world_size=2, fault=fault) for rank in (0, 1)]
        ours = _timed(lambda: compare_ranks(find_job(files)))
        base = _timed(lambda: _fetch_both(*files), repeats=1)
        parting = compare_ranks(find_job(files)).parting
        found = "agree" if parting is None else f"at {parting.iteration}"
        yield Row(f"ranks 2x10k its x 100 params, {label}: {found}",
                  f"{ours:.2f} s", f"{base:.2f} s fetch both", ours / base,
                  "< 2 s " + ("ok" if ours < 2 else "MISSED"))


ROWS = [bench_record_bytes, bench_record_open, bench_record_diff, bench_record_ranks]
