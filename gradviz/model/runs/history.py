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
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
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
    #: False: read without the layers' norms (``history(layers=False)``; the three layer
    #: lists are empty until :meth:`RunRecord.read_layers` fills them in).
    layers_read: bool = True

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
        _with_sqrt(self._connection)

    def runs(self) -> list[RunInfo]:
        with self.reading():
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
                points: int | None = None, span: tuple[int, int] | None = None,
                layers: bool = True) -> RunHistory:
        """Run ``run`` (default :meth:`latest_run`); ``last``: only its last N iterations;
        ``points``: about that many iterations, evenly spaced (for a plot); ``span``: only
        the iterations from ``span[0]`` to ``span[1]``, both included; ``layers``
        False: without the layers' norms, the one part of a read whose cost is the
        parameters x the iterations (:meth:`read_layers` adds them)."""
        if run is None:
            run = self.latest_run().run
        elif run not in {r.run for r in self.runs()}:
            raise RecordError(f"{self.path} has no run {run}")
        with self.reading():
            return read_history(self._connection, run, last=last, points=points, span=span,
                                layers=layers)

    def read_layers(self, history: RunHistory) -> RunHistory:
        """``history`` (of this record) with its layers' norms at its iterations."""
        chosen = ChosenIterations(history.total_iterations,
                                  numbers=tuple(history.iteration_numbers))
        with self.reading():
            grads, ratios, nonfinite = layer_norms(self._connection, history.info.run, chosen,
                                                   history.layers, history.iteration_numbers)
        return replace(history, layer_grad_norms=grads, layer_update_ratios=ratios,
                       layer_nonfinite=nonfinite, layers_read=True)

    def stream(self, run: int | None = None, *, chunk: int = 1000
               ) -> tuple[RunInfo, list[str], Iterator[IterationLayers]]:
        """Run ``run`` (default :meth:`latest_run`) whole, for an export: its info, its
        layers, and its iterations one by one with their layers' norms
        (:func:`stream_layers`), read while the record is open."""
        if run is None:
            run = self.latest_run().run
        info = next((r for r in self.runs() if r.run == run), None)
        if info is None:
            raise RecordError(f"{self.path} has no run {run}")
        with self.reading():
            layers = layer_names(read_params(self._connection, run))

        def iterations() -> Iterator[IterationLayers]:
            with self.reading():
                yield from stream_layers(self._connection, run, layers, chunk=chunk)

        return info, layers, iterations()

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def connection(self) -> sqlite3.Connection:
        """The read-only SQLite connection, for SQL over the record (the rank comparison,
        the diff of two runs); run it inside :meth:`reading`."""
        return self._connection

    def attach(self, other: RunRecord, schema: str) -> None:
        """Make ``other`` (a record opened and checked) readable as ``schema.table`` on
        this one's connection, read-only, to join the two in SQL; :meth:`detach` again
        (SQLite attaches ten files at most)."""
        with self.reading():
            self._connection.execute(f"ATTACH DATABASE ? AS {schema}",
                                     (f"{other.path.resolve().as_uri()}?mode=ro",))

    def detach(self, schema: str) -> None:
        with self.reading():
            self._connection.execute(f"DETACH DATABASE {schema}")

    def reading(self):
        """A context in which an SQLite error reading the file is a one-line RecordError."""
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
                 points: int | None = None, span: tuple[int, int] | None = None,
                 layers: bool = True) -> RunHistory:
    """The run ``run`` of an open record as a :class:`RunHistory`.

    Its memory is the rows it returns, not the record's length: the iterations to read
    are chosen inside SQLite (:func:`choose_iterations`), and each layer's norms are
    summed there (:func:`layer_norms`), so a thinned read of a 100,000-iteration record
    handles ``points x layers`` rows in Python, not every parameter's."""
    info = _run_info(db.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run = ?",
                                (run,)).fetchone())
    params = read_params(db, run)
    chosen = choose_iterations(db, run, last=last, points=points, span=span)
    iterations = read_iterations(db, run, chosen)
    names = layer_names(params)
    grad_norms, ratios, nonfinite = (layer_norms(db, run, chosen, names,
                                                 [row.iteration for row in iterations])
                                     if layers else ([], [], []))
    events = [_event(*row) for row in db.execute(
        f"SELECT iteration, kind, subject, detail, {_origin_columns(db)} FROM events "
        "WHERE run = ? ORDER BY iteration, rowid", (run,))]
    return RunHistory(info, params, iterations, names, grad_norms, ratios, events,
                      chosen.total, nonfinite, layers)


def read_iterations(db: sqlite3.Connection, run: int,
                    chosen: ChosenIterations) -> list[IterationRecord]:
    """The rows of ``iterations`` chosen, in order (NULL, a NaN, read back as NaN)."""
    clipped = "grad_norm_clipped" if _has_column(db, "iterations", "grad_norm_clipped") \
        else "NULL"
    return [
        IterationRecord(it, _nan(loss), _nan(grad), seconds, time, backwards, lr,
                        bool(nonfinite), bool(skipped), clip)
        for it, loss, grad, seconds, time, backwards, lr, nonfinite, skipped, clip in db.execute(
            "SELECT iteration, loss, grad_norm, seconds, time, backwards, lr, nonfinite, "
            f"skipped, {clipped} FROM iterations WHERE run = ? AND {chosen.where('iteration')} "
            "ORDER BY iteration", (run, *chosen.args))]


@dataclass(frozen=True)
class IterationLayers:
    """One iteration and each layer's gradient norm and |Δ|/|p| at it (in the order of
    the run's layers; NaN where the layer had no gradient, or no step), and whether a
    parameter of the layer had a NaN/Inf gradient: a run read whole, one by one."""

    row: IterationRecord
    grad_norms: list[float]
    update_ratios: list[float]
    nonfinite: list[bool]


def stream_layers(db: sqlite3.Connection, run: int, layers: list[str], *,
                  chunk: int = 1000) -> Iterator[IterationLayers]:
    """Every iteration of run ``run`` with its layers' norms, in order, read ``chunk``
    iterations at a time: an export of a whole run holds one chunk in memory, not the
    run (each chunk summed per layer inside SQLite, as :func:`read_history`)."""
    low, high = db.execute("SELECT min(iteration), max(iteration) FROM iterations "
                           "WHERE run = ?", (run,)).fetchone()
    if low is None:
        return
    for start in range(low, high + 1, chunk):
        window = ChosenIterations(0, since=start, until=start + chunk - 1)
        rows = read_iterations(db, run, window)
        grads, ratios, bad = layer_norms(db, run, window, layers,
                                         [row.iteration for row in rows])
        for i, row in enumerate(rows):
            yield IterationLayers(row, [g[i] for g in grads], [r[i] for r in ratios],
                                  [b[i] for b in bad])


def read_params(db: sqlite3.Connection, run: int) -> list[ParamInfo]:
    """The parameters of run ``run``, in their index order."""
    return [ParamInfo(index, name, layer, tuple(json.loads(shape)), numel, dtype, group,
                      bool(sampled))
            for index, name, layer, shape, numel, dtype, group, sampled in db.execute(
                "SELECT param, name, layer, shape, numel, dtype, param_group, sampled "
                "FROM params WHERE run = ? ORDER BY param", (run,))]


def layer_names(params: list[ParamInfo]) -> list[str]:
    """The layers (the modules that own parameters), in the order of their first one."""
    return list(dict.fromkeys(p.layer for p in params))


@dataclass(frozen=True)
class ChosenIterations:
    """Which iterations of a run a read takes, as an SQL condition: every one from
    ``since`` on (up to ``until``), or the list ``numbers`` (thinned), or none.
    ``total``: the run's."""

    total: int
    since: int | None = None
    numbers: tuple[int, ...] | None = None
    until: int | None = None

    def where(self, column: str) -> str:
        if self.since is not None:
            return f"{column} >= ?" + ("" if self.until is None else f" AND {column} <= ?")
        if self.numbers:
            return f"{column} IN (SELECT value FROM json_each(?))"
        return "0"

    @property
    def args(self) -> tuple:
        if self.since is not None:
            return (self.since,) if self.until is None else (self.since, self.until)
        return (json.dumps(self.numbers),) if self.numbers else ()


def choose_iterations(db: sqlite3.Connection, run: int, *, last: int | None = None,
                      points: int | None = None,
                      span: tuple[int, int] | None = None) -> ChosenIterations:
    """The iterations to read: the last ``last`` of the run, then about ``points`` of them
    evenly spaced. Chosen by position, without reading every iteration number: the
    watch numbers them 1, 2, 3, ... (a memory record drops the oldest: still without a
    gap), so the chosen numbers are arithmetic; with a gap, SQLite numbers the rows and
    only the chosen come out. ``span``: only the iterations from ``span[0]`` to
    ``span[1]`` (a report's few around a bad one; chosen from the numbers there)."""
    low, high, total = db.execute("SELECT min(iteration), max(iteration), count(*) FROM "
                                  "iterations WHERE run = ?", (run,)).fetchone()
    if span is not None:
        numbers = [row[0] for row in db.execute(
            "SELECT iteration FROM iterations WHERE run = ? AND iteration BETWEEN ? AND ? "
            "ORDER BY iteration", (run, *span))]
        if last is not None:
            numbers = numbers[-last:] if last > 0 else []
        if points is not None and len(numbers) > points > 1:
            step = (len(numbers) - 1) / (points - 1)
            numbers = sorted({numbers[round(i * step)] for i in range(points)})
        return ChosenIterations(total, numbers=tuple(numbers))
    if not total or (last is not None and last <= 0):
        return ChosenIterations(total)
    first = 0 if last is None else max(0, total - last)
    count = total - first
    contiguous = high - low + 1 == total
    if points is not None and count > points > 1:
        step = (count - 1) / (points - 1)
        positions = sorted({first + round(i * step) for i in range(points)})
        if contiguous:
            return ChosenIterations(total, numbers=tuple(low + k for k in positions))
        numbers = tuple(row[0] for row in db.execute(
            "SELECT iteration FROM (SELECT iteration, row_number() OVER (ORDER BY iteration) "
            "- 1 AS k FROM iterations WHERE run = ?) WHERE k IN (SELECT value FROM json_each(?)) "
            "ORDER BY iteration", (run, json.dumps(positions))))
        return ChosenIterations(total, numbers=numbers)
    if contiguous:
        return ChosenIterations(total, since=low + first)
    since = db.execute("SELECT iteration FROM iterations WHERE run = ? ORDER BY iteration "
                       "LIMIT 1 OFFSET ?", (run, first)).fetchone()[0]
    return ChosenIterations(total, since=since)


#: A parameter row whose update counts toward its layer's |Δ|/|p|: stepped, with a gradient.
_STEPPED = f"s.update_norm IS NOT NULL AND s.param_norm IS NOT NULL AND NOT s.flags & {NO_GRAD}"
#: Per iteration and layer, summed inside SQLite: the squares of its parameters' gradient
#: norms (a NaN/Inf gradient makes the layer's NaN), and of their update and parameter
#: norms where they were stepped.
LAYER_SUMS = f"""
SELECT s.iteration, p.layer,
       max(s.flags & {NONFINITE_GRAD} != 0) AS nonfinite,
       max(s.flags & {NONFINITE_GRAD} != 0 OR s.grad_norm IS NOT NULL) AS has_grad,
       sum(CASE WHEN s.flags & {NONFINITE_GRAD} OR s.grad_norm IS NULL THEN 0.0
                ELSE s.grad_norm * s.grad_norm END) AS grad_sq,
       max({_STEPPED}) AS stepped,
       sum(CASE WHEN {_STEPPED} THEN s.update_norm * s.update_norm ELSE 0.0 END) AS update_sq,
       sum(CASE WHEN {_STEPPED} THEN s.param_norm * s.param_norm ELSE 0.0 END) AS param_sq
FROM param_stats s JOIN params p ON p.run = s.run AND p.param = s.param
WHERE s.run = ? AND {{where}}
GROUP BY s.iteration, p.layer
"""


def layer_norms(db: sqlite3.Connection, run: int, chosen: ChosenIterations, layers: list[str],
                numbers: list[int]) -> tuple[list[list[float]], list[list[float]],
                                             list[list[bool]]]:
    """Each layer's gradient norm, |Δ|/|p| and NaN/Inf flag at the iterations ``numbers``
    (``layers`` x ``numbers``; NaN where it had no gradient, or no step): a layer's norm
    is ``sqrt`` of the sum of its parameters' squares."""
    position = {number: i for i, number in enumerate(numbers)}
    row_of = {layer: j for j, layer in enumerate(layers)}
    grads = [[math.nan] * len(numbers) for _ in layers]
    ratios = [[math.nan] * len(numbers) for _ in layers]
    nonfinite = [[False] * len(numbers) for _ in layers]
    for it, layer, bad, has_grad, grad_sq, stepped, update_sq, param_sq in db.execute(
            LAYER_SUMS.format(where=chosen.where("s.iteration")), (run, *chosen.args)):
        i, j = position.get(it), row_of.get(layer)
        if i is None or j is None:
            continue
        if bad:
            nonfinite[j][i] = True
        elif has_grad:
            grads[j][i] = math.sqrt(grad_sq)
        if stepped:
            ratios[j][i] = _ratio(update_sq, param_sq)
    return grads, ratios, nonfinite


def _with_sqrt(db: sqlite3.Connection) -> None:
    """SQL's ``sqrt`` (the diff sums layers in SQL), from Python where this SQLite was
    built without its math functions (before 3.35, or without the compile option)."""
    try:
        db.execute("SELECT sqrt(4.0)")
    except sqlite3.OperationalError:
        db.create_function("sqrt", 1, lambda v: None if v is None or v < 0 else math.sqrt(v),
                           deterministic=True)


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

