"""Ranks that part: the first iteration, parameter and rank of a data-parallel job whose
reduced gradients differ from the other ranks'.

After DDP's all-reduce every rank holds the same gradient bytes and steps the same
parameters with the same optimizer, so the norms each rank records agree bitwise (on
a CPU/gloo DDP run every one of 1,800 row pairs differed by exactly 0.0). The first
row where they do not is where a rank parted: a hook or a bug that changed one rank's
gradient after the reduction, a rank that skipped a step or clipped differently, a
parameter the reduction left out.

>>> job = find_job(["host0.db", "host1.db"])     # doctest: +SKIP  (each host its ranks)
>>> print(comparison_text(compare_ranks(job)))   # doctest: +SKIP
iteration 5: rank 1 parts from the others on blocks.1.fc1.weight (grad_norm ...)

A job is read from one record that every rank wrote (one host) or from several (one
per host): the runs of the newest run's world size with its launch's id (torchrun's
``TORCHELASTIC_RUN_ID``, kept in the run's settings), or, where a run has none, that
started within :data:`JOB_WINDOW` of it; the latest per rank. Two numbers agree within a
:class:`~gradviz.model.runs.tolerance.Tolerance` (by default ``rtol`` 1e-6: room for
mixed hardware, still far below a real parting).

How it stays fast: the per-iteration total gradient norms are compared first, bitwise
(one row per iteration and rank), and the parameter and update norms of the last
iteration (weights that parted stay apart); the per-parameter rows are searched, joined
on their primary keys, only from just before the first iteration that differs, and
stop at the first parting row. A rank apart only on a parameter too small to move its
total's last bit (below about 3e-7 of it), and only for a while, needs
``thorough=True``, which searches every row. Other files are ATTACHed one at a time
(SQLite allows ten).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gradviz.model.runs.history import RunRecord
from gradviz.model.runs.schema import RecordError
from gradviz.model.runs.tolerance import Tolerance

#: Runs of one job start within this many seconds of each other (the watch starts after
#: the process group and DDP's first broadcast, which hold every rank together).
JOB_WINDOW = 60.0
#: The default tolerance of the comparison.
TOLERANCE = Tolerance(rtol=1e-6, atol=0.0)
#: The per-parameter norms compared, in the order a parting is reported.
COLUMNS = ("grad_norm", "param_norm", "update_norm")


@dataclass(frozen=True)
class RankRun:
    """One rank's run of a job, and the file it is in."""

    path: Path
    run: int
    rank: int
    world_size: int
    started: float
    host: str
    job: str | None = None  # the launch's id, where the launcher gave one

    def same_job(self, other: RankRun) -> bool:
        if self.world_size != other.world_size:
            return False
        if self.job is not None and other.job is not None:
            return self.job == other.job
        return abs(self.started - other.started) < JOB_WINDOW


@dataclass(frozen=True)
class Job:
    """The runs of one distributed job found in some record files: one per rank, in rank
    order. ``missing``: ranks of its world size in none of the files; ``unused``: files
    with no run of this job."""

    runs: tuple[RankRun, ...]
    world_size: int
    missing: tuple[int, ...] = ()
    unused: tuple[Path, ...] = ()

    @property
    def lead(self) -> RankRun:
        """The lowest rank's run: the one a report shows."""
        return self.runs[0]


@dataclass(frozen=True)
class RankParting:
    """Where the ranks parted: the first iteration and parameter (by name) whose norm
    ``column`` differs between ranks, each rank's value (None: NaN or no gradient), and
    ``rank``, the one apart from a majority (None with two ranks, or with no majority)."""

    iteration: int
    param: str
    column: str
    rank: int | None
    values: dict[int, float | None]
    relative: float  # (largest - smallest) / largest magnitude; inf where one is NaN
    params_apart: int  # parameters whose norms differ at that iteration


@dataclass(frozen=True)
class RankComparison:
    """The ranks of a job compared: ``parting`` is None when they agree (or were not
    compared: ``not_compared`` says why)."""

    ranks: tuple[int, ...]
    world_size: int
    iterations: int  # compared: the iterations every rank recorded
    parting: RankParting | None
    tolerance: Tolerance = TOLERANCE
    missing: tuple[int, ...] = ()
    not_compared: str = ""
    iterations_by_rank: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def agree(self) -> bool:
        return self.parting is None and not self.not_compared and len(self.ranks) > 1


def find_job(paths: Sequence[str | os.PathLike], run: int | None = None) -> Job:
    """The job in the record files ``paths``: the one of the newest run in them (or of
    run ``run`` of the first file). A file that is not a record is a RecordError."""
    found: list[RankRun] = []
    for path in paths:
        with RunRecord(path) as record:
            found += [RankRun(record.path, info.run, info.rank, info.world_size, info.started,
                              info.host, info.settings.get("job")) for info in record.runs()]
    if not found:
        raise RecordError(f"{_names(paths)} hold{'s' if len(paths) == 1 else ''} no run yet")
    if run is not None:
        anchor = _run_in(found, Path(paths[0]), run)
    else:
        anchor = max(found, key=lambda r: (r.started, -r.rank))
    members: dict[int, RankRun] = {}
    for candidate in sorted(found, key=lambda r: r.started):  # the latest per rank wins
        if candidate.same_job(anchor):
            members[candidate.rank] = candidate
    if anchor.world_size == 1:
        members = {anchor.rank: anchor}
    runs = tuple(members[rank] for rank in sorted(members))
    used = {r.path for r in runs}
    missing = tuple(rank for rank in range(anchor.world_size) if rank not in members)
    unused = tuple(dict.fromkeys(r.path for r in found if r.path not in used))
    return Job(runs, anchor.world_size, missing, unused)


def _run_in(found: list[RankRun], first: Path, run: int) -> RankRun:
    resolved = first.resolve()
    for candidate in found:
        if candidate.path.resolve() == resolved and candidate.run == run:
            return candidate
    raise RecordError(f"{first} has no run {run}")


def _names(paths) -> str:
    return ", ".join(str(p) for p in paths)


def compare_ranks(job: Job, *, tolerance: Tolerance = TOLERANCE,
                  thorough: bool = False) -> RankComparison:
    """The first parting of ``job``'s ranks, or that they agree (see the module)."""
    start = time.perf_counter()
    ranks = tuple(r.rank for r in job.runs)
    if len(job.runs) < 2:
        why = ("one process: no ranks to compare" if job.world_size == 1 else
               f"only rank {ranks[0]} of {job.world_size} is in these records")
        return RankComparison(ranks, job.world_size, 0, None, tolerance, job.missing, why)
    lead = job.lead
    with RunRecord(lead.path) as main:
        with main.reading():
            names = _param_names(main, "main", lead.run)
            counts = {lead.rank: _count(main, "main", lead.run)}
        pairs: list[tuple[RankRun, tuple[int, int] | None]] = []
        common = counts[lead.rank]
        for other in job.runs[1:]:
            with _Joined(main, other.path) as schema, main.reading():
                if _param_names(main, schema, other.run) != names:
                    why = (f"rank {other.rank} records other parameters than rank {lead.rank}: "
                           "not a data-parallel job (the norms cannot agree)")
                    return RankComparison(ranks, job.world_size, 0, None, tolerance,
                                          job.missing, why)
                counts[other.rank] = _count(main, schema, other.run)
                common = min(common, _common(main, schema, lead.run, other.run))
                first = _first_parting(main, schema, lead.run, other.run, tolerance, thorough)
                pairs.append((other, first))
        partings = [first for _, first in pairs if first is not None]
        if not partings:
            return RankComparison(ranks, job.world_size, common, None, tolerance, job.missing,
                                  iterations_by_rank=counts,
                                  seconds=time.perf_counter() - start)
        iteration, param = min(partings)
        values = {c: {lead.rank: v} for c, v in zip(COLUMNS, _values(main, "main", lead.run,
                                                                     iteration, param))}
        apart: set[int] = set()
        for other, _ in pairs:
            with _Joined(main, other.path) as schema, main.reading():
                for c, v in zip(COLUMNS, _values(main, schema, other.run, iteration, param)):
                    values[c][other.rank] = v
                apart |= _params_apart(main, schema, lead.run, other.run, iteration,
                                       tolerance)
    column = next(c for c in COLUMNS if not _all_close(values[c].values(), tolerance))
    by_rank = values[column]
    parting = RankParting(iteration, names.get(param, f"parameter {param}"), column,
                          _odd_one_out(by_rank, tolerance), by_rank, _relative(by_rank),
                          len(apart))
    return RankComparison(ranks, job.world_size, common, parting, tolerance, job.missing,
                          iterations_by_rank=counts, seconds=time.perf_counter() - start)


def comparison_text(comparison: RankComparison) -> str:
    """The comparison in words, one line: that the ranks agree, or where and how they part
    (with two ranks: that which one is wrong cannot be told)."""
    c = comparison
    missing = (f"; rank{'s' if len(c.missing) > 1 else ''} "
               f"{', '.join(map(str, c.missing))} not in the records" if c.missing else "")
    if c.not_compared:
        return f"ranks not compared: {c.not_compared}{missing}"
    lengths = set(c.iterations_by_rank.values())
    uneven = (f" (the ranks recorded {min(lengths)} to {max(lengths)} iterations)"
              if len(lengths) > 1 else "")
    if c.parting is None:
        return (f"the {len(c.ranks)} ranks agree: every gradient, parameter and update norm of "
                f"{c.iterations} iterations within {c.tolerance}"
                f"{uneven}{missing}")
    p = c.parting
    values = ", ".join(f"rank {rank}: {_value(v)}" for rank, v in sorted(p.values.items()))
    if p.rank is not None:
        who = f"rank {p.rank} parts from the others"
    elif len(p.values) == 2:
        who = f"ranks {' and '.join(map(str, sorted(p.values)))} part"
    else:
        who = "the ranks part, with no majority"
    caveat = ("; with two ranks, which one is wrong cannot be told" if len(p.values) == 2
              else "")
    apart = f"{p.params_apart} parameter{'s' if p.params_apart != 1 else ''}"
    return (f"iteration {p.iteration}: {who} on {p.param} ({p.column} {values}; relative "
            f"difference {p.relative:.3g}; {apart} apart at that iteration){caveat}"
            f"{uneven}{missing}")


class _Joined:
    """``other``'s file readable beside ``main``'s: 'main' when it is the same file,
    else ATTACHed as 'other' for the block."""

    def __init__(self, main: RunRecord, other: Path):
        self.main, self.other = main, other
        self.attached = False

    def __enter__(self) -> str:
        if self.other.resolve() == self.main.path.resolve():
            return "main"
        with RunRecord(self.other) as checked:
            self.main.attach(checked, "other")
        self.attached = True
        return "other"

    def __exit__(self, *exc_info) -> None:
        if self.attached:
            self.main.detach("other")


def _param_names(record: RunRecord, schema: str, run: int) -> dict[int, str]:
    return dict(record.connection.execute(
        f"SELECT param, name FROM {schema}.params WHERE run = ?", (run,)))


def _count(record: RunRecord, schema: str, run: int) -> int:
    return record.connection.execute(f"SELECT count(*) FROM {schema}.iterations WHERE run = ?",
                                     (run,)).fetchone()[0]


def _common(record: RunRecord, schema: str, run_a: int, run_b: int) -> int:
    return record.connection.execute(
        f"SELECT count(*) FROM main.iterations a JOIN {schema}.iterations b "
        "ON b.run = :b AND b.iteration = a.iteration WHERE a.run = :a",
        {"a": run_a, "b": run_b}).fetchone()[0]


def _apart(tolerance: Tolerance) -> str:
    """SQL: a row pair of ``a`` and ``b`` whose norms are apart beyond ``tolerance``."""
    return " OR ".join(tolerance.apart_sql(f"a.{c}", f"b.{c}") for c in COLUMNS)


def _first_parting(record: RunRecord, schema: str, run_a: int, run_b: int,
                   tolerance: Tolerance, thorough: bool) -> tuple[int, int] | None:
    """(iteration, param) of the first row pair of the two runs beyond the tolerance."""
    since = 1
    if not thorough:
        hint = _first_bitwise(record, schema, run_a, run_b)
        if hint is None:
            return None
        since = max(1, hint - 1)  # a step that parted shows in the next one's gradients
    # a's rows in primary-key order, b's probed by its key: stops at the first parting
    return record.connection.execute(
        f"SELECT a.iteration, a.param FROM main.param_stats a JOIN {schema}.param_stats b "
        "ON b.run = :b AND b.iteration = a.iteration AND b.param = a.param "
        f"WHERE a.run = :a AND a.iteration >= :since AND ({_apart(tolerance)}) "
        "ORDER BY a.iteration, a.param LIMIT 1",
        {"a": run_a, "b": run_b, "since": since}).fetchone()


def _first_bitwise(record: RunRecord, schema: str, run_a: int, run_b: int) -> int | None:
    """An early iteration from which to search the rows, or None when nothing differs.

    Gradients: the first iteration whose total norms differ in any bit. Parameters: DDP
    averages the gradients of ranks whose weights have parted, so their totals agree
    again while the weights stay apart; a parting in the weights (or the steps) is
    still there at the last iteration, and a bisection over the iterations finds where
    it began, a dozen probes of one iteration's rows each."""
    db = record.connection
    ids = {"a": run_a, "b": run_b}
    hints = [db.execute(
        f"SELECT min(a.iteration) FROM main.iterations a JOIN {schema}.iterations b "
        "ON b.run = :b AND b.iteration = a.iteration "
        "WHERE a.run = :a AND a.grad_norm IS NOT b.grad_norm", ids).fetchone()[0]]
    numbers = [row[0] for row in db.execute(
        f"SELECT a.iteration FROM main.iterations a JOIN {schema}.iterations b "
        "ON b.run = :b AND b.iteration = a.iteration WHERE a.run = :a ORDER BY a.iteration",
        ids)]

    def steps_differ(position: int) -> bool:
        return db.execute(
            f"SELECT 1 FROM main.param_stats a JOIN {schema}.param_stats b "
            "ON b.run = :b AND b.iteration = a.iteration AND b.param = a.param "
            "WHERE a.run = :a AND a.iteration = :it AND (a.param_norm IS NOT b.param_norm "
            "OR a.update_norm IS NOT b.update_norm) LIMIT 1",
            {**ids, "it": numbers[position]}).fetchone() is not None

    if numbers and steps_differ(len(numbers) - 1):
        low, high = 0, len(numbers) - 1  # the first position that differs is in low..high
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if steps_differ(middle) else (middle + 1, high)
        hints.append(numbers[low])
    present = [hint for hint in hints if hint is not None]
    return min(present) if present else None


def _values(record: RunRecord, schema: str, run: int, iteration: int,
            param: int) -> tuple[float | None, ...]:
    row = record.connection.execute(
        f"SELECT {', '.join(COLUMNS)} FROM {schema}.param_stats "
        "WHERE run = ? AND iteration = ? AND param = ?", (run, iteration, param)).fetchone()
    return row or (None,) * len(COLUMNS)


def _params_apart(record: RunRecord, schema: str, run_a: int, run_b: int, iteration: int,
                  tolerance: Tolerance) -> set[int]:
    return {row[0] for row in record.connection.execute(
        f"SELECT a.param FROM main.param_stats a JOIN {schema}.param_stats b "
        "ON b.run = :b AND b.iteration = a.iteration AND b.param = a.param "
        f"WHERE a.run = :a AND a.iteration = :it AND ({_apart(tolerance)})",
        {"a": run_a, "b": run_b, "it": iteration})}


def _all_close(values, tolerance: Tolerance) -> bool:
    values = list(values)
    return all(tolerance.close(values[0], v) for v in values[1:])


def _odd_one_out(by_rank: dict[int, float | None], tolerance: Tolerance) -> int | None:
    """The one rank whose value no other rank shares, when the others agree on theirs."""
    if len(by_rank) < 3:
        return None
    alone = [r for r in by_rank
             if not any(tolerance.close(by_rank[r], by_rank[o]) for o in by_rank if o != r)]
    if len(alone) != 1:
        return None
    rest = [v for r, v in by_rank.items() if r != alone[0]]
    return alone[0] if _all_close(rest, tolerance) else None


def _relative(by_rank: dict[int, float | None]) -> float:
    values = list(by_rank.values())
    if any(v is None for v in values):
        return float("inf")
    largest = max(abs(v) for v in values)
    return (max(values) - min(values)) / largest if largest > 0 else 0.0


def _value(value: float | None) -> str:
    return "NaN" if value is None else f"{value:.9g}"
