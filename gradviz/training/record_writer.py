"""Writing a training record: one transaction per iteration, in WAL mode.

A committed iteration is in the WAL before ``optimizer.step()`` returns, so a process
killed with ``kill -9`` leaves every iteration before the one it was in. Several
processes (the ranks of one job on one host) can write one file; each watch is a row
of ``runs``. The format is :mod:`gradviz.model.runs.schema`.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from gradviz.model.runs.history import (
    EventRecord,
    IterationRecord,
    ParamInfo,
    RunHistory,
    read_history,
)
from gradviz.model.runs.schema import (
    APPLICATION_ID,
    SCHEMA,
    SCHEMA_VERSION,
    RecordError,
)


class RecordWriter:
    """Appends one run to a record (a file, or memory keeping the last ``keep`` iterations).

    Thread-safe: the training thread writes, and ``history()`` may be read from another.
    """

    def __init__(self, path: str | os.PathLike | None, *, keep: int | None = None):
        self.path = None if path is None else Path(path)
        self.keep = keep
        self._lock = threading.Lock()
        self._connection = _connect_for_writing(self.path)
        self._closed = False
        self.run: int | None = None

    def begin(self, info: dict) -> int:
        """Create the schema if needed and a ``runs`` row; the run's id."""
        with self._lock, self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            app = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if tables and app != APPLICATION_ID:
                raise RecordError(f"{self.path} exists and is not a gradviz record: choose "
                                  "another record path")
            if tables and version != SCHEMA_VERSION:
                raise RecordError(f"{self.path} is a record of another gradviz (schema "
                                  f"{version}, this one writes {SCHEMA_VERSION}): choose "
                                  "another record path")
            for statement in SCHEMA.split(";"):  # no ';' in its comments
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            cursor = db.execute(
                "INSERT INTO runs (rank, world_size, started, status, host, pid, argv, model, "
                "optimizer, versions, settings) VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (info["rank"], info["world_size"], info["started"], info["host"], info["pid"],
                 json.dumps(info["argv"]), info["model"], info["optimizer"],
                 json.dumps(info["versions"]), json.dumps(info["settings"])))
            self.run = cursor.lastrowid
        return self.run

    def add_params(self, params: Iterable[ParamInfo]) -> None:
        with self._lock, self._transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO params VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(self.run, p.index, p.name, p.layer, json.dumps(list(p.shape)), p.numel,
                  p.dtype, p.param_group, int(p.sampled)) for p in params])

    def write_iteration(self, row: IterationRecord, rank: int,
                        param_rows: Sequence[tuple], events: Sequence[EventRecord]) -> None:
        """One iteration, its parameters' rows ``(param, grad_norm, param_norm, update_norm,
        ratio, flags)`` and its events, in one transaction."""
        run = self.run
        with self._lock, self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO iterations VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (run, row.iteration, rank, _real(row.loss), _real(row.grad_norm),
                        _real(row.grad_norm_clipped), row.seconds, row.time, row.backwards,
                        _real(row.lr), int(row.nonfinite), int(row.skipped)))
            db.executemany("INSERT OR REPLACE INTO param_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(run, row.iteration, *values) for values in param_rows])
            self._insert_events(db, events)
            if self.keep is not None and row.iteration > self.keep:
                oldest = row.iteration - self.keep
                db.execute("DELETE FROM iterations WHERE run = ? AND iteration <= ?", (run, oldest))
                db.execute("DELETE FROM param_stats WHERE run = ? AND iteration <= ?",
                           (run, oldest))

    def add_events(self, events: Sequence[EventRecord]) -> None:
        with self._lock, self._transaction() as db:
            self._insert_events(db, events)

    def discard(self) -> None:
        """Take this run out of the record again (the watch could not start)."""
        if self.run is None:
            return
        with self._lock, self._transaction() as db:
            for table in ("events", "param_stats", "iterations", "params", "runs"):
                db.execute(f"DELETE FROM {table} WHERE run = ?", (self.run,))

    def finish(self, status: str, ended: float) -> None:
        with self._lock, self._transaction() as db:
            db.execute("UPDATE runs SET status = ?, ended = ? WHERE run = ?",
                       (status, ended, self.run))

    def history(self, *, last: int | None = None, points: int | None = None,
                span: tuple[int, int] | None = None) -> RunHistory:
        with self._lock:
            return read_history(self._connection, self.run, last=last, points=points,
                                span=span)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close; the last writer of a file leaves it a plain one-file database (rollback
        journal), so that readers opening it read-only (pandas, DuckDB, ``gradviz report``)
        leave no ``-wal`` / ``-shm`` beside it. While another process has it open, SQLite
        refuses the switch and the file stays in WAL mode: nothing is lost either way."""
        with self._lock:
            if self.path is not None:
                try:
                    self._connection.execute("PRAGMA journal_mode = DELETE")
                except sqlite3.Error:
                    pass
            self._connection.close()
            self._closed = True

    def _insert_events(self, db, events: Sequence[EventRecord]) -> None:
        db.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(self.run, e.iteration, str(getattr(e.kind, "value", e.kind)), e.subject,
              e.detail, *_origin_row(e.origin)) for e in events])

    def _transaction(self):
        return _Transaction(self._connection, self.path)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error); SQLite errors as RecordError."""

    def __init__(self, connection: sqlite3.Connection, path: Path | None):
        self.connection = connection
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            raise RecordError(f"cannot write the record {self.path}: {error}") from None
        return self.connection

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            try:
                self.connection.execute("COMMIT")
                return
            except sqlite3.Error as failure:
                kind, error = type(failure), failure
        try:
            self.connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        if issubclass(kind, sqlite3.Error):
            raise RecordError(f"cannot write the record {self.path}: {error}") from None


def check_record_path(path: Path) -> None:
    """A one-line RecordError unless a record can be written at ``path``."""
    folder = path.parent
    if path.is_dir():
        raise RecordError(f"cannot write the record {path}: it is a folder; give a file path")
    if folder.exists() and not folder.is_dir():
        raise RecordError(f"cannot write the record {path}: {folder} is a file, not a folder")
    if not folder.is_dir():
        raise RecordError(f"cannot write the record {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and
                                                    not os.access(path, os.R_OK | os.W_OK)):
        raise RecordError(f"cannot write the record {path}: {folder} is not writable")


def _connect_for_writing(path: Path | None) -> sqlite3.Connection:
    if path is None:
        return sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    check_record_path(path)
    try:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                     timeout=30.0)
        _switch_to_wal(connection)
        connection.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as error:
        raise RecordError(f"cannot write the record {path}: {error}") from None
    return connection


def _switch_to_wal(connection: sqlite3.Connection, patience: float = 30.0) -> None:
    """``PRAGMA journal_mode = WAL``, waiting for the other ranks of a job that open the
    same file at the same moment: SQLite answers this pragma "database is locked" at
    once instead of calling its busy handler."""
    deadline = time.monotonic() + patience
    delay = 0.01
    while True:
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _origin_row(origin) -> tuple:
    if origin is None:
        return (None,) * 7
    phase = getattr(origin.phase, "value", origin.phase)
    return (phase, origin.node, origin.op, origin.module, origin.file, origin.line,
            origin.detail or None)


def _real(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


