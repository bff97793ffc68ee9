"""Events as data: one formatter renders an origin, a break and an event the same everywhere."""

import sqlite3

from gradviz.model.runs.events import (
    BreakInfo,
    EventKind,
    Origin,
    OriginPhase,
    origin_text,
)
from gradviz.model.runs.history import EventRecord, RunRecord, event_text

ORIGIN = Origin(OriginPhase.BACKWARD, "SqrtBackward0#0", "SqrtBackward0", "abs",
                "/home/me/train.py", 27, "SqrtBackward0 made a NaN/Inf gradient out of finite ones")


def test_an_origin_reads_the_same_wherever_it_is_shown():
    assert origin_text(ORIGIN) == "SqrtBackward0#0 in 'abs' · /home/me/train.py:27"
    assert origin_text(ORIGIN, short=True) == "SqrtBackward0#0 in 'abs' · train.py:27"
    own = Origin(OriginPhase.FORWARD, "MulBackward0#3", "AddmmBackward0", "", None, None, "")
    assert origin_text(own) == "MulBackward0#3 (AddmmBackward0) in the model's own forward"


def test_a_break_and_its_record_say_the_same_thing_in_one_line():
    brk = BreakInfo(7, EventKind.NONFINITE, "a gradient is NaN/Inf", ORIGIN, loss=0.5)
    assert brk.message == ("iteration 7: a gradient is NaN/Inf; it started at "
                           "SqrtBackward0#0 in 'abs' · /home/me/train.py:27")
    assert (brk.node, brk.module, brk.line, brk.phase) == ("SqrtBackward0#0", "abs", 27,
                                                            OriginPhase.BACKWARD)
    event = EventRecord(7, EventKind.NONFINITE, "", brk.detail, ORIGIN)
    assert event_text(event) == ("iteration 7 · nonfinite: a gradient is NaN/Inf; it started at "
                                 "SqrtBackward0#0 in 'abs' · /home/me/train.py:27")
    lost = Origin(OriginPhase.BACKWARD, None, None, None, None, None, "another rank's")
    assert "origin not found: another rank's" in BreakInfo(3, EventKind.NONFINITE, "x",
                                                           lost).message


def test_an_audit_is_its_kind_its_subject_and_its_own_words():
    event = EventRecord(3, "moved-frozen", "fc.weight", "|Δ| 0.132")
    assert event.kind is EventKind.MOVED_FROZEN and event.is_audit and not event.is_break
    assert str(event) == ("iteration 3 · moved-frozen · fc.weight: changed in optimizer.step() "
                          "with requires_grad=False: |Δ| 0.132")
    assert EventRecord(1, "from-the-future", "", "new").kind == "from-the-future"


def test_a_schema_1_record_is_still_read(tmp_path):
    """Records written before the events had their origin's phase and note."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE runs (run INTEGER PRIMARY KEY, rank INTEGER NOT NULL, world_size INTEGER
            NOT NULL, started REAL NOT NULL, ended REAL, status TEXT NOT NULL, host TEXT NOT NULL,
            pid INTEGER NOT NULL, argv TEXT NOT NULL, model TEXT NOT NULL, optimizer TEXT,
            versions TEXT NOT NULL, settings TEXT NOT NULL);
        CREATE TABLE params (run, param, name, layer, shape, numel, dtype, param_group, sampled);
        CREATE TABLE iterations (run, iteration, rank, loss, grad_norm, seconds, time,
            backwards, lr, nonfinite, skipped);
        CREATE TABLE param_stats (run, iteration, param, grad_norm, param_norm, update_norm,
            ratio, flags);
        CREATE TABLE events (run, iteration, kind, subject, detail, node, op, module, file, line);
        INSERT INTO runs VALUES (1, 0, 1, 0, 1, 'finished', 'h', 1, '[]', 'Net', 'SGD', '{}', '{}');
        INSERT INTO iterations VALUES (1, 1, 0, 0.5, 1.0, 0.1, 0, 1, 0.1, 0, 0);
        INSERT INTO events VALUES (1, 1, 'nonfinite', '', 'iteration 1: a gradient is NaN/Inf',
            'SqrtBackward0#0', 'SqrtBackward0', 'abs', 'train.py', 27);
        PRAGMA application_id = 1734638198;
        PRAGMA user_version = 1;
    """)
    db.close()
    with RunRecord(path) as record:
        history = record.history()
    first = history.first_nonfinite
    assert first.kind is EventKind.NONFINITE and first.node == "SqrtBackward0#0"
    assert first.origin.file == "train.py" and first.origin.phase is None


def test_the_readme_shows_the_schema_the_code_writes():
    from pathlib import Path

    from gradviz.model.runs.schema import SCHEMA

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert SCHEMA.strip() in readme
