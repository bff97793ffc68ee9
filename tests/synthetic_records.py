"""Synthetic training records for the reading side's tests: the record's own schema,
values that look like training, no torch and no training loop.

Every record made with the same options is bitwise the same, so two of them are two
runs of the same code, seed and data; the options change one thing at a time (a seed
from an iteration on, the learning rate, one rank's gradient at one iteration).
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import time

from gradviz.model.runs.schema import APPLICATION_ID, SCHEMA, SCHEMA_VERSION


def make_record(path, *, iterations: int = 60, layers: int = 4, per_layer: int = 2,
                ranks: int = 1, seed: int = 0, seed_change_at: int | None = None,
                lr: float = 1e-3, fault: tuple[int, int, int, float] | None = None,
                started: float | None = None, rank_offset: int = 0, world_size: int | None = None,
                model: str = "Synth", names: list[str] | None = None,
                gaps: tuple[int, ...] = (), nonfinite_at: tuple[int, int] | None = None,
                job: str | None = None, rank_skew: float = 0.1) -> str:
    """A record at ``path`` with one run per rank (ranks ``rank_offset`` on, of a job of
    ``world_size``), each ``iterations`` long with ``layers x per_layer`` parameters named
    ``layers.L.weight``, ``layers.L.bias``, ``layers.L.p2``... (or ``names``).

    - ``seed_change_at=K``: from iteration K on, another noise stream;
    - ``lr``: the recorded learning rate; update norms scale with it, and gradients from
      iteration 2 on feel it;
    - ``fault=(rank, iteration, param, factor)``: that rank's gradient norm of that
      parameter at that iteration is multiplied by ``factor`` (and its total with it);
    - ``gaps``: iterations not written;
    - ``nonfinite_at=(iteration, param)``: that gradient is NaN (NULL, flag 4);
    - ``job``: the launch's id in the runs' settings (torchrun's ``TORCHELASTIC_RUN_ID``);
      ``rank_skew``: seconds between the ranks' start times.
    """
    world_size = ranks if world_size is None else world_size
    started = time.time() if started is None else started
    names = names or [f"layers.{layer}.{('weight', 'bias')[k] if k < 2 else f'p{k}'}"
                      for layer in range(layers) for k in range(per_layer)]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    for rank in range(rank_offset, rank_offset + ranks):
        run = db.execute(
            "INSERT INTO runs (rank, world_size, started, ended, status, host, pid, argv, "
            "model, optimizer, versions, settings) VALUES (?, ?, ?, ?, 'finished', 'synth', "
            "0, '[]', ?, 'AdamW', '{}', ?)",
            (rank, world_size, started + rank_skew * rank, started + iterations, model,
             json.dumps({"band": [1e-4, 1e-2], "job": job}))).lastrowid
        db.executemany("INSERT INTO params VALUES (?, ?, ?, ?, '[8, 8]', 64, 'float32', 0, 0)",
                       [(run, i, name, name.rsplit(".", 1)[0]) for i, name in enumerate(names)])
        base = random.Random(seed)
        bases = [base.uniform(0.01, 1.0) for _ in names]
        pbases = [base.uniform(1.0, 30.0) for _ in names]
        noise, other = random.Random(seed + 2), random.Random(seed + 3)
        iteration_rows, param_rows = [], []
        for it in range(1, iterations + 1):
            draws = [noise.gauss(0, 0.1) for _ in names]
            changed = [other.gauss(0, 0.1) for _ in names]
            if seed_change_at is not None and it >= seed_change_at:
                draws = changed
            if it in gaps:
                continue
            decay = math.exp(-it / (iterations / 3))
            feel = 1.0 + (lr - 1e-3) * 10 if it >= 2 else 1.0
            grads = [b * decay * (1 + d) * feel for b, d in zip(bases, draws)]
            if fault is not None and fault[0] == rank and fault[1] == it:
                grads[fault[2]] *= fault[3]
            flags = [16] * len(names)
            if nonfinite_at is not None and nonfinite_at[0] == it:
                grads[nonfinite_at[1]] = None
                flags[nonfinite_at[1]] = 16 | 4
            total = math.sqrt(sum(g * g for g in grads if g is not None))
            loss = 2.3 * decay * (1 + 0.01 * draws[0])
            iteration_rows.append((run, it, rank, loss, total, None, 0.1, started + it, 1, lr,
                                   int(nonfinite_at is not None and nonfinite_at[0] == it), 0))
            for p, (g, pb, d, f) in enumerate(zip(grads, pbases, draws, flags)):
                pnorm = pb * (1 + it * 1e-5)
                update = lr * 8 * (1 + 0.05 * d)
                param_rows.append((run, it, p, g, pnorm, update, update / pnorm, f))
        db.executemany("INSERT INTO iterations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       iteration_rows)
        db.executemany("INSERT INTO param_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?)", param_rows)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return str(path)


def split_by_rank(path, folder) -> list[str]:
    """The record at ``path`` as one file per rank (each host writes its own), in rank
    order: ``folder/rankN.db``."""
    import shutil

    source = sqlite3.connect(path)
    runs = source.execute("SELECT run, rank FROM runs ORDER BY rank").fetchall()
    source.close()
    paths = []
    for run, rank in runs:
        target = folder / f"rank{rank}.db"
        shutil.copy(path, target)
        db = sqlite3.connect(target)
        for table in ("param_stats", "iterations", "params", "events", "runs"):
            db.execute(f"DELETE FROM {table} WHERE run != ?", (run,))
        db.commit()
        db.execute("VACUUM")
        db.close()
        paths.append(str(target))
    return paths
