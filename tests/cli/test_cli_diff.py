"""gradviz diff A.db B.db: the first parting iteration, what parted, the layers ranked, the
tolerance stated; identical runs said so; bad input one line and exit 1."""

import subprocess
import sys

import pytest
from synthetic_records import make_record


def gradviz(*args):
    return subprocess.run([sys.executable, "-m", "gradviz.cli", *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": ":".join(sys.path)})


def one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("gradviz: error: ")
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diff_cli")
    for name, kw in {"a": {}, "a2": {}, "seed": {"seed_change_at": 77},
                     "other": {"names": ["head.weight", "head.bias"]}}.items():
        make_record(folder / f"{name}.db", iterations=150, layers=5, **kw)
    return folder


def test_the_first_parting_iteration_what_parted_and_the_layers(folder):
    result = gradviz("diff", folder / "a.db", folder / "seed.db")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (f"A: {folder / 'a.db'} run 1, B: {folder / 'seed.db'} run 1; tolerance "
                        "|a - b| <= 1e-12 + 1e-06 * max(|a|, |b|) (NaN agrees only with NaN)")
    assert lines[1].startswith("parted at iteration 77: loss ")
    assert "what parted at iteration 77" in result.stdout
    layer_rows = [line for line in lines if line.startswith("│ layers.")
                  and line.count("│") == 5]
    assert len(layer_rows) == 5 and all(row.split("│")[2].strip() == "77" for row in layer_rows)
    largest = [float(row.split("│")[3]) for row in layer_rows]
    assert largest == sorted(largest, reverse=True)
    # the window read for the layers ends with the runs (150 iterations), not beyond them
    words = " ".join(result.stdout.split())  # the caption wraps at the table's width
    assert "over iterations 77..150" in words and "1076" not in words


def test_identical_runs_are_said_to_be_identical(folder):
    result = gradviz("diff", folder / "a.db", folder / "a2.db")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == ("the runs are identical: every number of every "
                                             "iteration bitwise equal")


def test_the_tolerance_is_the_users_and_is_stated(folder):
    result = gradviz("diff", folder / "a.db", folder / "seed.db", "--rtol", "0.5", "--atol", "0")
    assert "tolerance |a - b| <= 0.5 * max(|a|, |b|)" in result.stdout
    assert "parted at iteration 77" not in result.stdout


@pytest.mark.parametrize(("make", "message"), [
    (lambda folder, tmp: tmp / "missing.db", "missing.db: no such record file"),
    (lambda folder, tmp: (tmp / "text.db").write_text("no database " * 400) and tmp / "text.db",
     "text.db is not a gradviz record"),
    (lambda folder, tmp: folder / "other.db", "record different models"),
])
def test_bad_input_is_one_line_and_exit_1(folder, tmp_path, make, message):
    one_line_error(gradviz("diff", folder / "a.db", make(folder, tmp_path)), message)


def test_open_against_refuses_different_models_before_the_screen(folder):
    one_line_error(gradviz("open", folder / "a.db", "--against", folder / "other.db"),
                   "record different models")
    result = gradviz("open", folder / "a.db", "--against", folder / "seed.db")
    one_line_error(result, "needs a terminal")  # read and diffed: only the terminal is missing
