"""The training record's file format: an SQLite file with :data:`SCHEMA` (also in the README).

Shared by its writing side (:mod:`gradviz.training.record_writer`) and its reading side
(:mod:`gradviz.model.runs.history`). SQLite has no NaN: a NaN is stored as NULL.
"""

from __future__ import annotations

import os
from pathlib import Path

from gradviz.errors import GradvizError

#: ``PRAGMA application_id`` of a gradviz record ("gdvz").
APPLICATION_ID = 0x67647A76
#: ``PRAGMA user_version``: the schema's version. 2: events carry their origin's phase
#: and note, and their detail is the event's own words (1: one sentence with it all);
#: iterations keep the norm after clipping apart from the one backward made.
SCHEMA_VERSION = 2
#: The versions this gradviz reads.
READABLE_VERSIONS = (1, 2)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run         INTEGER PRIMARY KEY,  -- one per watch (per rank in a distributed job)
    rank        INTEGER NOT NULL,     -- torch.distributed rank, 0 without one
    world_size  INTEGER NOT NULL,
    started     REAL NOT NULL,        -- unix time
    ended       REAL,                 -- NULL while running, or if the process died
    status      TEXT NOT NULL,        -- running, finished, failed, stopped (ctrl+c, the app's
                                      -- x), break (on_break="raise"), read as died when its
                                      -- process is gone
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    argv        TEXT NOT NULL,        -- JSON list
    model       TEXT NOT NULL,        -- class name
    optimizer   TEXT,                 -- class name, NULL without one
    versions    TEXT NOT NULL,        -- JSON: torch, gradviz, python
    settings    TEXT NOT NULL         -- JSON: break_on, at, on_break, spike, band, ...
);
CREATE TABLE IF NOT EXISTS params (
    run         INTEGER NOT NULL,
    param       INTEGER NOT NULL,     -- index, as in param_stats
    name        TEXT NOT NULL,        -- model.named_parameters() name
    layer       TEXT NOT NULL,        -- the module that owns it ('' for the model itself)
    shape       TEXT NOT NULL,        -- JSON list
    numel       INTEGER NOT NULL,
    dtype       TEXT NOT NULL,
    param_group INTEGER,              -- NULL: in no optimizer param group
    sampled     INTEGER NOT NULL,     -- 1: param_norm and update_norm come from a sample
    PRIMARY KEY (run, param)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS iterations (
    run         INTEGER NOT NULL,
    iteration   INTEGER NOT NULL,     -- 1 for the first optimizer.step()
    rank        INTEGER NOT NULL,
    loss        REAL,                 -- sum of the losses backwarded (unscaled), NULL for NaN
    grad_norm   REAL,                 -- total gradient norm backward made (before clipping),
                                      -- NULL for NaN or none
    grad_norm_clipped REAL,           -- the total norm the optimizer stepped with, when the
                                      -- loop clipped (clip_grad_norm_/_value_), else NULL
    seconds     REAL NOT NULL,        -- wall time since the previous iteration ended
    time        REAL NOT NULL,        -- unix time at its end
    backwards   INTEGER NOT NULL,     -- backward calls (gradient accumulation: several)
    lr          REAL,                 -- the first param group's learning rate
    nonfinite   INTEGER NOT NULL,     -- 1: the loss or a gradient was NaN/Inf
    skipped     INTEGER NOT NULL,     -- 1: GradScaler skipped optimizer.step()
    PRIMARY KEY (run, iteration)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS param_stats (
    run         INTEGER NOT NULL,
    iteration   INTEGER NOT NULL,
    param       INTEGER NOT NULL,
    grad_norm   REAL,                 -- NULL: no gradient (or NaN: see flags)
    param_norm  REAL,                 -- before the step
    update_norm REAL,                 -- |after - before| over the step, NULL if not stepped
    ratio       REAL,                 -- update_norm / param_norm
    flags       INTEGER NOT NULL,     -- 1 no grad, 2 zero grad, 4 NaN/Inf grad,
                                      -- 8 requires_grad=False, 16 moved, 32 not in optimizer,
                                      -- 64 this rank's shard only (sharded: not combined)
    PRIMARY KEY (run, iteration, param)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    run         INTEGER NOT NULL,
    iteration   INTEGER NOT NULL,
    kind        TEXT NOT NULL,        -- a break (at, nonfinite, spike, signal), an audit, ...
    subject     TEXT NOT NULL,        -- the parameter or layer, '' for the iteration
    detail      TEXT NOT NULL,        -- what was seen, in words (not its iteration or origin)
    phase       TEXT,                 -- NaN/Inf origin: made in backward or forward
    node        TEXT,                 -- ... its graph key, op, module, the user's file:line
    op          TEXT,
    module      TEXT,
    file        TEXT,
    line        INTEGER,
    note        TEXT                  -- how the origin was found, or why it was not
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run, iteration);
"""

# param_stats.flags
NO_GRAD, ZERO_GRAD, NONFINITE_GRAD, FROZEN, MOVED, NOT_IN_OPTIMIZER = 1, 2, 4, 8, 16, 32
#: A sharded parameter's norms are this rank's shard's: the ranks' sums were not added up.
ONE_SHARD = 64

class RecordError(GradvizError):
    """A record could not be created, written or read."""

    __module__ = "gradviz"  # a traceback names it as the user imports it


_SQLITE_MAGIC = b"SQLite format 3\x00"
#: Names that mean a record even when the file is missing, empty or not SQLite.
RECORD_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def looks_like_record(path: str | os.PathLike) -> bool:
    """Whether ``path`` is meant as a record (for ``gradviz open``, which also opens
    scenario files): a name ending in :data:`RECORD_SUFFIXES`, or any SQLite file.
    Whether it is a readable gradviz record is for :class:`RunRecord` to say, in one
    line: another program's database or a corrupt one should hear that, not be
    imported as Python."""
    path = Path(path)
    if path.suffix.lower() in RECORD_SUFFIXES:
        return True
    try:
        with open(path, "rb") as file:
            return file.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False
