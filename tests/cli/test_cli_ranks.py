"""gradviz report on a distributed run: where its ranks parted, from one record or one per
host; that they agree; a bad file among several is one line and exit 1."""

import subprocess
import sys

import pytest
from synthetic_records import make_record, split_by_rank


def gradviz(*args):
    return subprocess.run([sys.executable, "-m", "gradviz.cli", *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin",
                               "PYTHONPATH": ":".join(sys.path)})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranks_cli")
    make_record(folder / "faulty.db", ranks=3, iterations=40, fault=(1, 23, 4, 1.001))
    make_record(folder / "agree.db", ranks=2, iterations=40)
    make_record(folder / "single.db", iterations=40)
    (folder / "hosts").mkdir()
    split_by_rank(folder / "faulty.db", folder / "hosts")
    return folder


def test_the_report_names_the_iteration_parameter_and_rank(folder):
    result = gradviz("report", folder / "faulty.db")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if "layers.2.weight" in line)
    assert row.split("│")[1:5] == [" 23        ", " layers.2.weight ", " grad_norm ",
                                    " 1          "]
    assert "ranks part (3 ranks' reduced gradients compared)" in result.stdout


def test_records_of_several_hosts_are_read_as_one_job(folder):
    hosts = sorted((folder / "hosts").iterdir())
    result = gradviz("report", *hosts)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" + ".join(map(str, hosts)) + ": run 1, rank 0 of 3")
    row = next(line for line in result.stdout.splitlines() if "layers.2.weight" in line)
    assert "│ 23 " in row and "│ 1 " in row


def test_ranks_that_agree_are_one_line_and_one_process_none(folder):
    agree = gradviz("report", folder / "agree.db")
    assert "the 2 ranks agree: every gradient, parameter and update norm of 40 iterations" in agree.stdout
    single = gradviz("report", folder / "single.db")
    assert single.returncode == 0 and "\nranks" not in single.stdout


def test_a_bad_file_among_several_is_one_line_and_exit_1(folder, tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_text("not a database " * 300)
    result = gradviz("report", folder / "agree.db", bad)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"gradviz: error: {bad} is not a gradviz record")
    missing = gradviz("report", folder / "agree.db", tmp_path / "gone.db")
    assert missing.returncode == 1 and "gone.db: no such record file" in missing.stderr
    both = gradviz("report", "--run", "1", folder / "agree.db", folder / "faulty.db")
    assert both.returncode == 2 and "--run picks a run of one record" in both.stderr
