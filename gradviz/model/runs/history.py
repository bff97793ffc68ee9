"""A training record of :func:`gradviz.watch` read back, read-only, as plain dataclasses.

>>> with RunRecord("run.db") as record:              # doctest: +SKIP
...     history = record.history()                   # the latest run, rank 0 first
>>> history.losses[:3], history.layers[:2]           # doctest: +SKIP
([2.31, 2.28, 2.25], ['conv1', 'bn1'])
>>> history.layer_grad_norms[0][:3]                  # doctest: +SKIP
[0.81, 0.77, 0.74]

The file is in WAL mode with ``synchronous=NORMAL``: a committed iteration is in the
WAL before ``optimizer.step()`` returns, so a process killed with ``kill -9`` leaves
every iteration before the one it was in (power loss may lose the last few). Several
processes (the ranks of one job on one host) can write one file; each watch is a
row of ``runs``. Readers open the file read-only. SQLite has no NaN: a NaN is stored
as NULL and read back as NaN. The schema is :data:`SCHEMA` (also in the README).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from gradviz.model.runs.events import EventKind, Origin, OriginPhase, origin_text
from gradviz.model.runs.schema import (
    APPLICATION_ID,
    NO_GRAD,
    NONFINITE_GRAD,
    READABLE_VERSIONS,
    SCHEMA_VERSION,
    RecordError,
)


#: Event kinds that are audits (each reported once per run and subject).
@dataclass(frozen=True)
class RunInfo:
    run: int
    rank: int
    world_size: int
    started: float
    ended: float | None
    status: str
    host: str
    pid: int
    argv: list[str]
    model: str
    optimizer: str | None
    versions: dict
    settings: dict


@dataclass(frozen=True)
class ParamInfo:
    index: int
    name: str
    layer: str
    shape: tuple[int, ...]
    numel: int
    dtype: str
    param_group: int | None
    sampled: bool


@dataclass(frozen=True)
class IterationRecord:
    iteration: int
    loss: float
    grad_norm: float
    seconds: float
    time: float
    backwards: int
    lr: float | None
    nonfinite: bool
    skipped: bool
    grad_norm_clipped: float | None = None  # after clipping, when the loop clipped


@dataclass(frozen=True)
class EventRecord:
    """One event of a run: its kind, iteration and subject (a parameter or layer, '' for
    the iteration), what was seen in its own words, and for a NaN/Inf where it started.
    ``str(event)`` is the whole of it in one line (:func:`event_text`)."""

    iteration: int
    kind: EventKind | str  # a kind this gradviz does not know stays text
    subject: str
    detail: str
    origin: Origin | None = None

    @property
    def is_audit(self) -> bool:
        return isinstance(self.kind, EventKind) and self.kind.is_audit

    @property
    def is_break(self) -> bool:
        return isinstance(self.kind, EventKind) and self.kind.is_break

    @property
    def where(self) -> str:
        """Where its NaN/Inf started (:func:`~gradviz.model.runs.events.origin_text`), or ''."""
        return "" if self.origin is None else origin_text(self.origin)

    # the origin's fields, flat, None without one
    node = property(lambda self: None if self.origin is None else self.origin.node)
    op = property(lambda self: None if self.origin is None else self.origin.op)
    module = property(lambda self: None if self.origin is None else self.origin.module)
    file = property(lambda self: None if self.origin is None else self.origin.file)
    line = property(lambda self: None if self.origin is None else self.origin.line)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EventKind):
            object.__setattr__(self, "kind", EventKind.read(self.kind))

    def __str__(self) -> str:
        return event_text(self)


def event_text(event: EventRecord) -> str:
    """An event in one line: ``iteration 5 · nonfinite: a gradient is NaN/Inf; it started
    at ...``, or for an audit ``iteration 3 · no-grad · fc.bias: in the optimizer but got
    no gradient``."""
    head, words, where = event_parts(event)
    return (f"{head}: {words}" if words else head) + (f"; {where}" if where else "")


def event_parts(event: EventRecord, *, short: bool = False) -> tuple[str, str, str]:
    """An event's line in its three parts, for a screen to style each: the head
    (``iteration 5 · nonfinite``, with the subject), its words, and where its NaN/Inf
    started (``it started at ...``, ``origin not found: ...`` or '')."""
    kind = event.kind.value if isinstance(event.kind, EventKind) else event.kind
    head = f"iteration {event.iteration} · {kind}"
    if event.subject:
        head += f" · {event.subject}"
    words = event.detail
    if event.is_audit:
        words = event.kind.title + (f": {event.detail}" if event.detail else "")
    origin, where = event.origin, ""
    if origin is not None and origin.found:
        where = f"it started at {origin_text(origin, short=short)}"
    elif origin is not None and origin.detail:
        where = f"origin not found: {origin.detail}"
    return head, words, where


@dataclass(frozen=True)
class RunHistory:
    """One run as plain data: what a report, a plot or the app reads.

    ``layer_grad_norms[j][i]`` and ``layer_update_ratios[j][i]`` are layer
    ``layers[j]`` at ``iterations[i]`` (NaN where it had no gradient or no step);
    a layer's norms combine its own parameters' (``sqrt(sum of squares)``).
    ``layer_nonfinite[j][i]`` tells the two NaNs of a gradient norm apart: True
    where a parameter of the layer had a NaN/Inf gradient, False where it had none.
    """

    info: RunInfo
    params: list[ParamInfo]
    iterations: list[IterationRecord]
    layers: list[str]
    layer_grad_norms: list[list[float]]
    layer_update_ratios: list[list[float]]
    events: list[EventRecord]
    total_iterations: int = 0  # in the record, before ``last`` / ``points`` thinned them
    layer_nonfinite: list[list[bool]] = field(default_factory=list)

    @property
    def iteration_numbers(self) -> list[int]:
        return [row.iteration for row in self.iterations]

    @property
    def losses(self) -> list[float]:
        return [row.loss for row in self.iterations]

    @property
    def grad_norms(self) -> list[float]:
        return [row.grad_norm for row in self.iterations]

    @property
    def audits(self) -> list[EventRecord]:
        return [event for event in self.events if event.is_audit]

    @property
    def breaks(self) -> list[EventRecord]:
        return [event for event in self.events if event.is_break]

    @property
    def first_nonfinite(self) -> EventRecord | None:
        """The first iteration whose loss or gradients were NaN/Inf, with its origin."""
        return next((e for e in self.events if e.kind is EventKind.NONFINITE), None)


class RunRecord:
    """A record file opened read-only; ``runs`` and ``history(run)`` as plain data."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise RecordError(f"{self.path}: no such record file")
        if self.path.stat().st_size == 0:
            raise RecordError(f"{self.path} is empty: not a gradviz record (gradviz.watch "
                              "writes its runs there as it trains)")
        # Read-only, and leaving nothing beside the file: SQLite makes -wal and -shm files
        # for a reader of a WAL-mode database, and a reader cannot remove them (a report on
        # a truncated record left both). With no -wal there is no writer whose pages we
        # would miss, so the file is read as immutable; with one, as SQLite reads it.
        live = self.path.with_name(self.path.name + "-wal").exists()
        uri = f"{self.path.resolve().as_uri()}?mode=ro" + ("" if live else "&immutable=1")
        try:
            self._connection = sqlite3.connect(uri, uri=True)
            app = self._connection.execute("PRAGMA application_id").fetchone()[0]
            version = self._connection.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise RecordError(f"{self.path} is not a gradviz record ({error})") from None
        if app != APPLICATION_ID:
            self._connection.close()
            raise RecordError(f"{self.path} is not a gradviz record (an SQLite file of "
                              "another program): give a file written by gradviz.watch")
        if version not in READABLE_VERSIONS:
            self._connection.close()
            raise RecordError(f"{self.path} has record schema {version}; this gradviz reads "
                              f"up to {SCHEMA_VERSION}: read it with the gradviz that wrote it")

    def runs(self) -> list[RunInfo]:
        with self._reading():
            rows = self._connection.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY run")
            return [_run_info(row) for row in rows]

    def latest_run(self) -> RunInfo:
        """The last run started, preferring rank 0's run of a distributed job."""
        runs = self.runs()
        if not runs:
            raise RecordError(f"{self.path} holds no run yet")
        newest = max(run.started for run in runs)
        same_job = [r for r in runs if newest - r.started < 60 and r.world_size > 1]
        return min(same_job, key=lambda r: r.rank) if same_job else runs[-1]

    def history(self, run: int | None = None, *, last: int | None = None,
                points: int | None = None, span: tuple[int, int] | None = None) -> RunHistory:
        """Run ``run`` (default :meth:`latest_run`); ``last``: only its last N iterations;
        ``points``: about that many iterations, evenly spaced (for a plot); ``span``:
        only the iterations from ``span[0]`` to ``span[1]``, both included."""
        if run is None:
            run = self.latest_run().run
        elif run not in {r.run for r in self.runs()}:
            raise RecordError(f"{self.path} has no run {run}")
        with self._reading():
            return read_history(self._connection, run, last=last, points=points, span=span)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _reading(self):
        return _Reading(self.path)


class _Reading:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None and issubclass(kind, sqlite3.DatabaseError):
            raise RecordError(f"{self.path} is corrupt or not a gradviz record ({error})") \
                from None


_RUN_COLUMNS = ("run, rank, world_size, started, ended, status, host, pid, argv, model, "
                "optimizer, versions, settings")


def _run_info(row) -> RunInfo:
    (run, rank, world_size, started, ended, status, host, pid, argv, model, optimizer,
     versions, settings) = row
    if status == "running" and ended is None and _gone(host, pid, started):
        status = "died"
    return RunInfo(run, rank, world_size, started, ended, status, host, pid, json.loads(argv),
                   model, optimizer, json.loads(versions), json.loads(settings))


def _gone(host: str, pid: int, started: float) -> bool:
    """The process that wrote a run marked running is no more (killed with kill -9, the
    machine restarted): told on the host that ran it; on another host it stays running."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    # The pid is in use: by the same process, or by a later one that got its number.
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK") > started + 1.0
    except (OSError, ValueError, IndexError, StopIteration):
        return False


def read_history(db: sqlite3.Connection, run: int, *, last: int | None = None,
                 points: int | None = None, span: tuple[int, int] | None = None) -> RunHistory:
    """The run ``run`` of an open record as a :class:`RunHistory`."""
    info = _run_info(db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run = ?",
                                (run,)).fetchone())
    params = [ParamInfo(index, name, layer, tuple(json.loads(shape)), numel, dtype, group,
                        bool(sampled))
              for index, name, layer, shape, numel, dtype, group, sampled in db.execute(
                  "SELECT param, name, layer, shape, numel, dtype, param_group, sampled "
                  "FROM params WHERE run = ? ORDER BY param", (run,))]
    numbers = [r[0] for r in db.execute(
        "SELECT iteration FROM iterations WHERE run = ? ORDER BY iteration", (run,))]
    total = len(numbers)
    if span is not None:
        numbers = [n for n in numbers if span[0] <= n <= span[1]]
    if last is not None:
        numbers = numbers[-last:] if last > 0 else []
    if points is not None and len(numbers) > points > 1:
        step = (len(numbers) - 1) / (points - 1)
        numbers = sorted({numbers[round(i * step)] for i in range(points)})
    chosen = json.dumps(numbers)  # the iterations read, through json_each
    clipped = "grad_norm_clipped" if _has_column(db, "iterations", "grad_norm_clipped") \
        else "NULL"
    iterations = [
        IterationRecord(it, _nan(loss), _nan(grad), seconds, time, backwards, lr,
                        bool(nonfinite), bool(skipped), clip)
        for it, loss, grad, seconds, time, backwards, lr, nonfinite, skipped, clip in db.execute(
            "SELECT iteration, loss, grad_norm, seconds, time, backwards, lr, nonfinite, "
            f"skipped, {clipped} FROM iterations WHERE run = ? AND iteration IN "
            "(SELECT value FROM json_each(?)) ORDER BY iteration", (run, chosen))]
    layers = sorted({p.layer for p in params}, key=[p.layer for p in params].index)
    layer_of = {p.index: layers.index(p.layer) for p in params}
    position = {row.iteration: i for i, row in enumerate(iterations)}
    grad_sq = [[0.0] * len(iterations) for _ in layers]
    update_sq = [[0.0] * len(iterations) for _ in layers]
    param_sq = [[0.0] * len(iterations) for _ in layers]
    has_grad = [[False] * len(iterations) for _ in layers]
    nonfinite = [[False] * len(iterations) for _ in layers]
    stepped = [[False] * len(iterations) for _ in layers]
    for it, param, grad, pnorm, update, flags in db.execute(
            "SELECT iteration, param, grad_norm, param_norm, update_norm, flags "
            "FROM param_stats WHERE run = ? AND iteration IN (SELECT value FROM json_each(?))",
            (run, chosen)):
        i = position.get(it)
        j = layer_of.get(param)
        if i is None or j is None:
            continue
        if flags & NONFINITE_GRAD:
            grad_sq[j][i] = math.nan
            has_grad[j][i] = nonfinite[j][i] = True
        elif grad is not None:
            grad_sq[j][i] += grad * grad
            has_grad[j][i] = True
        if update is not None and pnorm is not None and not flags & NO_GRAD:
            update_sq[j][i] += update * update
            param_sq[j][i] += pnorm * pnorm
            stepped[j][i] = True
    grad_norms = [[math.sqrt(v) if has else math.nan for v, has in zip(row, flags)]
                  for row, flags in zip(grad_sq, has_grad)]
    ratios = [[_ratio(u, p) if ok else math.nan for u, p, ok in zip(urow, prow, flags)]
              for urow, prow, flags in zip(update_sq, param_sq, stepped)]
    events = [_event(*row) for row in db.execute(
        f"SELECT iteration, kind, subject, detail, {_origin_columns(db)} FROM events "
        "WHERE run = ? ORDER BY iteration, rowid", (run,))]
    return RunHistory(info, params, iterations, layers, grad_norms, ratios, events, total,
                      nonfinite)


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    """Schema 1 records lack some columns (read as NULL)."""
    return any(row[1] == column for row in db.execute(f"PRAGMA table_info({table})"))


def _origin_columns(db: sqlite3.Connection) -> str:
    """A schema 1 record has no ``phase`` or ``note``: its origin's words are in ``detail``."""
    phase = "phase" if _has_column(db, "events", "phase") else "NULL"
    note = "note" if _has_column(db, "events", "note") else "NULL"
    return f"{phase}, node, op, module, file, line, {note}"


def _event(iteration, kind, subject, detail, phase, node, op, module, file, line, note
           ) -> EventRecord:
    origin = None
    if node is not None or phase is not None or note:
        origin = Origin(OriginPhase(phase) if phase in ("backward", "forward") else phase,
                        node, op, module, file, line, note or "")
    return EventRecord(iteration, EventKind.read(kind), subject, detail, origin)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _ratio(update_sq: float, param_sq: float) -> float:
    if param_sq == 0:
        return 0.0 if update_sq == 0 else math.inf
    return math.sqrt(update_sq / param_sq)

