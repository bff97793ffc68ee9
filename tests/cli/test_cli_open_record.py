"""gradviz open RUN.db: a record opens the run view; a bad file is one line and exit 1."""

import sqlite3
import subprocess
import sys

import pytest

from gradviz.model.runs.schema import looks_like_record

RECORD = """
import sys, torch
from torch import nn
import gradviz
torch.manual_seed(0)
model = nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(8, 3), torch.randn(8, 1)
with gradviz.watch(model, optimizer, record=sys.argv[1], on_break="report"):
    for _ in range(3):
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""


def gradviz(*args):
    return subprocess.run([sys.executable, "-m", "gradviz.cli", *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


def one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("gradviz: error: ")
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "run.db"
    made = subprocess.run([sys.executable, "-c", RECORD, str(path)], capture_output=True,
                          text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    return path


def another_programs_database(path):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    return path


@pytest.mark.parametrize(("name", "make", "message"), [
    ("text.db", lambda p: p.write_text("not a database at all\n" * 200),
     "is not a gradviz record (file is not a database)"),
    ("other.db", another_programs_database, "is not a gradviz record (an SQLite file of another"),
    ("other.sqlite3", another_programs_database, "is not a gradviz record"),
    ("missing.db", lambda p: None, "missing.db: no such record file"),
    ("empty.db", lambda p: p.write_bytes(b""), "empty.db is empty: not a gradviz record"),
])
def test_a_file_that_is_not_a_gradviz_record_is_one_line_with_exit_1(tmp_path, name, make,
                                                                    message):
    path = tmp_path / name
    make(path)
    one_line_error(gradviz("open", path), message)


def test_a_corrupt_record_is_one_line_with_exit_1(tmp_path, record):
    whole = record.read_bytes()
    cut = tmp_path / "cut.db"
    cut.write_bytes(whole[:4096] + b"\x00\xff" * 4096)  # its first page, then garbage
    one_line_error(gradviz("open", cut), "cut.db")


def test_reading_a_record_leaves_nothing_beside_it_even_when_it_is_cut_short(tmp_path, record):
    cut = tmp_path / "truncated.db"
    cut.write_bytes(record.read_bytes()[:6000])  # killed mid-copy, say
    one_line_error(gradviz("report", cut), "truncated.db")
    good = tmp_path / "good.db"
    good.write_bytes(record.read_bytes())
    assert gradviz("report", good).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.db", "truncated.db"]


def test_a_good_record_without_a_terminal_says_so_and_names_report(record):
    one_line_error(gradviz("open", record), "needs a terminal", f"gradviz report {record}")


def test_a_scenario_file_still_opens_as_a_scenario(tmp_path):
    one_line_error(gradviz("open", tmp_path / "nothing.py"), "scenario file", "does not exist")


def test_what_counts_as_a_record(tmp_path, record):
    renamed = tmp_path / "run.record"
    renamed.write_bytes(record.read_bytes())  # any SQLite file, whatever its name
    script = tmp_path / "train.py"
    script.write_text("def build(): ...\n")
    assert looks_like_record(record) and looks_like_record(renamed)
    assert looks_like_record(tmp_path / "missing.db")
    assert not looks_like_record(script) and not looks_like_record(tmp_path / "missing.py")
