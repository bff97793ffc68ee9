"""Run a zoo loop unwatched or watched, and hold gradviz's record up against the loop's log.

    from tests.loops.harness import LOOPS, run, compare
    out = run("nanogpt", "breaks", steps=20, inject="log@5")
    out.result, out.error, out.history, out.report, compare(out)
"""

from __future__ import annotations

import importlib
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field

#: name -> (module, default keyword arguments, default steps)
LOOPS = {
    "nanogpt": ("tests.loops.nanogpt", {}, 20),
    "hf_trainer": ("tests.loops.hf_trainer", {"how": "gradviz"}, 12),
    "vision": ("tests.loops.vision", {}, 20),
    "compiled_gpt": ("tests.loops.compiled_gpt", {}, 12),
    "ddp_mlp": ("tests.loops.ddp_mlp", {}, 12),
    "lstm_packed": ("tests.loops.lstm_packed", {}, 20),
    "lightning": ("tests.loops.lightning_loop", {}, 12),
    # variants: the same loops wrapped otherwise
    "hf_trainer_outside": ("tests.loops.hf_trainer", {"how": "outside"}, 12),
    "lightning_acc1": ("tests.loops.lightning_loop", {"accumulate": 1}, 12),
    "compiled_gpt_aot_eager": ("tests.loops.compiled_gpt", {"backend": "aot_eager"}, 12),
}

#: watch keyword arguments per mode (record is added)
MODES = {
    "plain": None,
    "record": {},
    "breaks": {"break_on": ("nonfinite", "spike"), "on_break": "raise"},
    "report": {"break_on": ("nonfinite", "spike"), "on_break": "report"},
}

GRADVIZ = [sys.executable, "-m", "gradviz.cli"]


@dataclass
class Outcome:
    loop: str
    mode: str
    result: dict | None
    error: BaseException | None
    record: str | None
    seconds: float
    holder: dict = field(default_factory=dict)
    traceback: str = ""

    # ---------------------------------------------------------- the record
    def runs(self) -> list[tuple]:
        if not self.record or not os.path.exists(self.record):
            return []
        with sqlite3.connect(self.record) as c:
            return c.execute("SELECT run, rank, status, model, optimizer FROM runs").fetchall()

    def iterations(self, rank: int = 0) -> list[tuple]:
        if not self.record or not os.path.exists(self.record):
            return []
        with sqlite3.connect(self.record) as c:
            return c.execute(
                "SELECT i.iteration, i.loss, i.grad_norm, i.lr, i.backwards, i.nonfinite, "
                "i.skipped FROM iterations i JOIN runs r USING (run) WHERE r.rank = ? "
                "ORDER BY i.run, i.iteration", (rank,)).fetchall()

    def events(self) -> list[tuple]:
        if not self.record or not os.path.exists(self.record):
            return []
        with sqlite3.connect(self.record) as c:
            return c.execute("SELECT e.run, r.rank, e.iteration, e.kind, e.subject, e.detail, "
                             "e.op, e.module, e.file, e.line FROM events e JOIN runs r "
                             "USING (run) ORDER BY e.run, e.iteration").fetchall()

    def history(self):
        import gradviz

        with gradviz.RunRecord(self.record) as record:
            return record.history()

    def report(self) -> str:
        if not self.record or not os.path.exists(self.record):
            return "(no record)"
        env = dict(os.environ, COLUMNS="160", NO_COLOR="1", TERM="dumb")
        done = subprocess.run([*GRADVIZ, "report", self.record], capture_output=True, text=True,
                              env=env, timeout=120)
        return (done.stdout + done.stderr).rstrip()


def run(loop: str, mode: str = "plain", *, steps: int | None = None, inject=None,
        record_dir: str | None = None, watch_extra: dict | None = None, **kwargs) -> Outcome:
    """Run ``loop`` once. Exceptions are caught and returned in ``Outcome.error``."""
    module_name, defaults, default_steps = LOOPS[loop]
    module = importlib.import_module(module_name)
    watch = MODES[mode] if mode in MODES else mode
    record = None
    if watch is not None:
        record_dir = record_dir or tempfile.mkdtemp(prefix=f"zoo-{loop}-")
        record = os.path.join(record_dir, f"{loop}-{mode}.db")
        if os.path.exists(record):
            os.remove(record)
        watch = {"record": record, **watch, **(watch_extra or {})}
    holder: dict = {}
    started = time.perf_counter()
    error, tb, result = None, "", None
    try:
        result = module.train(steps or default_steps, inject=inject, watch=watch,
                              holder=holder, **{**defaults, **kwargs})
    except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt included, on purpose
        error, tb = e, traceback.format_exc()
        last = getattr(module, "LAST", None)
        result = last.as_dict() if hasattr(last, "as_dict") else last
    return Outcome(loop, mode, result, error, record, time.perf_counter() - started, holder, tb)


def _close(a, b, rel) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) and isinstance(b, float) and (math.isnan(a) or math.isnan(b)):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def compare(out: Outcome, *, rank: int = 0, loss_rel=1e-6, norm_rel=1e-5) -> dict:
    """Per quantity: how many iterations agree, and the first that does not."""
    rows = out.iterations(rank)
    result = out.result if rank == 0 or out.result is None else out.result["ranks"][rank]
    found = {"iterations": (len(rows), len(result["losses"]) if result else None)}
    for key, column, rel in (("losses", 1, loss_rel), ("grad_norms", 2, norm_rel),
                             ("lrs", 3, 1e-12)):
        mine = result[key] if result else []
        theirs = [None if r[column] is None else r[column] for r in rows]
        pairs = list(zip(mine, theirs))
        bad = [(i + 1, a, b) for i, (a, b) in enumerate(pairs) if not _close(a, b, rel)]
        found[key] = {"equal": len(pairs) - len(bad), "of": len(pairs),
                      "first_diff": bad[0] if bad else None}
    return found


def alarms(out: Outcome) -> list[tuple]:
    """Events on a run that should have none (a healthy one): breaks and audits."""
    return [(it, kind, subject, detail) for _, _, it, kind, subject, detail, *_ in out.events()]


def per_iteration(out: Outcome, skip: int = 2, key: str = "times") -> float | None:
    """Median wall (``key="cpu_times"``: thread CPU) seconds per iteration after ``skip``
    warm-up iterations."""
    times = (out.result or {}).get(key) or []
    times = sorted(times[skip:]) or sorted(times)
    return times[len(times) // 2] if times else None
