"""Ranks that part: the iteration, parameter and rank named, from one record or one per
host; agreement said as such; two ranks cannot tell which one is wrong."""

import sqlite3
import time

import pytest
from synthetic_records import make_record, split_by_rank

from gradviz.model.runs.ranks import compare_ranks, comparison_text, find_job
from gradviz.model.runs.schema import RecordError

N = 200


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ranks")
    specs = {"agree": {"ranks": 3},
             "faulty": {"ranks": 3, "fault": (2, 77, 7, 1.001)},
             "faulty0": {"ranks": 4, "fault": (0, 5, 3, 0.5)},
             "two": {"ranks": 2, "fault": (1, 9, 1, 1.001)},
             "single": {"ranks": 1}}
    return {name: make_record(folder / f"{name}.db", iterations=N, layers=6, per_layer=2, **kw)
            for name, kw in specs.items()}


@pytest.mark.parametrize("thorough", [False, True])
def test_ranks_that_agree_are_said_to_agree(records, thorough):
    comparison = compare_ranks(find_job([records["agree"]]), thorough=thorough)
    assert comparison.agree and comparison.parting is None
    assert comparison.ranks == (0, 1, 2) and comparison.iterations == N
    assert comparison_text(comparison).startswith(
        "the 3 ranks agree: every gradient, parameter and update norm of 200 iterations within "
        "|a - b| <= 1e-06 * max(|a|, |b|)")


@pytest.mark.parametrize("thorough", [False, True])
def test_the_faulty_rank_its_iteration_and_parameter_are_named(records, thorough):
    comparison = compare_ranks(find_job([records["faulty"]]), thorough=thorough)
    p = comparison.parting
    assert (p.iteration, p.param, p.rank, p.column) == (77, "layers.3.bias", 2, "grad_norm")
    assert p.values[0] == p.values[1] and p.values[2] == pytest.approx(1.001 * p.values[0])
    assert p.relative == pytest.approx(1e-3, rel=1e-3) and p.params_apart == 1
    assert comparison_text(comparison).startswith(
        "iteration 77: rank 2 parts from the others on layers.3.bias (grad_norm rank 0: ")


def test_rank_0_can_be_the_odd_one(records):
    p = compare_ranks(find_job([records["faulty0"]])).parting
    assert (p.iteration, p.param, p.rank) == (5, "layers.1.bias", 0)


def test_with_two_ranks_which_one_is_wrong_cannot_be_told(records):
    comparison = compare_ranks(find_job([records["two"]]))
    p = comparison.parting
    assert (p.iteration, p.param, p.rank) == (9, "layers.0.bias", None)
    text = comparison_text(comparison)
    assert "ranks 0 and 1 part on layers.0.bias" in text
    assert text.endswith("with two ranks, which one is wrong cannot be told")


def test_a_parting_below_the_totals_last_bit_needs_thorough(tmp_path):
    """One rank's parameter apart while every total stays bitwise equal (as a parameter
    below about 3e-7 of the total would): the fast path trusts the totals, ``thorough``
    reads every row and finds it."""
    path = make_record(tmp_path / "hidden.db", ranks=3, iterations=50)
    db = sqlite3.connect(path)
    db.execute("UPDATE param_stats SET grad_norm = grad_norm * 1.001 WHERE run = 2 AND "
               "iteration = 30 AND param = 0")
    db.commit()
    db.close()
    assert compare_ranks(find_job([path])).agree
    p = compare_ranks(find_job([path]), thorough=True).parting
    assert (p.iteration, p.param, p.rank) == (30, "layers.0.weight", 1)


def test_one_file_per_host_is_one_job(records, tmp_path):
    paths = split_by_rank(records["faulty"], tmp_path)
    job = find_job(paths)
    assert [r.rank for r in job.runs] == [0, 1, 2] and not job.missing and not job.unused
    p = compare_ranks(job).parting
    assert (p.iteration, p.param, p.rank) == (77, "layers.3.bias", 2)


def test_hosts_with_several_ranks_each(tmp_path):
    """Two hosts of two ranks each (ranks 0-1 in one file, 2-3 in the other), rank 3 off."""
    started = time.time()
    a = make_record(tmp_path / "a.db", ranks=2, world_size=4, started=started,
                    iterations=40)
    b = make_record(tmp_path / "b.db", ranks=2, rank_offset=2, world_size=4, started=started,
                    iterations=40, fault=(3, 12, 2, 2.0))
    p = compare_ranks(find_job([b, a])).parting
    assert (p.iteration, p.param, p.rank) == (12, "layers.1.weight", 3)


def test_a_missing_rank_and_an_unused_file_are_said(tmp_path, records):
    started = time.time()
    a = make_record(tmp_path / "a.db", ranks=2, world_size=3, started=started, iterations=20)
    old = make_record(tmp_path / "old.db", ranks=2, started=started - 3600, iterations=20)
    job = find_job([a, old])
    assert job.missing == (2,) and [p.name for p in job.unused] == ["old.db"]
    text = comparison_text(compare_ranks(job))
    assert text.startswith("the 2 ranks agree") and text.endswith("rank 2 not in the records")


def test_the_launchs_id_makes_the_job_whatever_the_clocks(tmp_path):
    """Two hosts whose clocks are 5 minutes apart are one job by torchrun's run id; two
    jobs launched seconds apart are two."""
    started = time.time()
    a = make_record(tmp_path / "a.db", ranks=1, world_size=2, started=started, job="j1",
                    iterations=20)
    b = make_record(tmp_path / "b.db", ranks=1, rank_offset=1, world_size=2,
                    started=started + 300, job="j1", iterations=20, fault=(1, 7, 0, 2.0))
    job = find_job([a, b])
    assert [r.rank for r in job.runs] == [0, 1] and not job.missing
    assert compare_ranks(job).parting.iteration == 7
    both = make_record(tmp_path / "both.db", ranks=2, started=started, job="j2",
                       iterations=20)
    make_record(both, ranks=1, world_size=2, started=started + 5, job="j3", iterations=20)
    job = find_job([both])
    assert [(r.rank, r.run) for r in job.runs] == [(0, 3)] and job.missing == (1,)


def test_the_newest_job_of_a_record_is_compared(tmp_path):
    path = tmp_path / "both.db"
    make_record(path, ranks=2, started=time.time() - 3600, fault=(1, 3, 0, 2.0), iterations=20)
    make_record(path, ranks=2, iterations=20)  # a later job, appended to the same file
    job = find_job([path])
    assert [r.run for r in job.runs] == [3, 4]
    assert compare_ranks(job).agree
    earlier = find_job([path], run=1)
    assert compare_ranks(earlier).parting.iteration == 3


def test_one_process_is_not_compared(records):
    comparison = compare_ranks(find_job([records["single"]]))
    assert not comparison.agree and comparison.parting is None
    assert comparison_text(comparison) == "ranks not compared: one process: no ranks to compare"


def test_ranks_of_different_parameters_are_not_compared(tmp_path):
    started = time.time()
    a = make_record(tmp_path / "a.db", ranks=1, world_size=2, started=started)
    b = make_record(tmp_path / "b.db", ranks=1, rank_offset=1, world_size=2, started=started,
                    names=["head.weight", "head.bias"])
    text = comparison_text(compare_ranks(find_job([a, b])))
    assert text.startswith("ranks not compared: rank 1 records other parameters than rank 0")


def test_uneven_lengths_compare_what_every_rank_has(tmp_path):
    started = time.time()
    a = make_record(tmp_path / "a.db", ranks=1, world_size=2, started=started, iterations=30)
    b = make_record(tmp_path / "b.db", ranks=1, rank_offset=1, world_size=2, started=started,
                    iterations=30)
    db = sqlite3.connect(b)  # rank 1 died after iteration 20
    db.execute("DELETE FROM iterations WHERE iteration > 20")
    db.execute("DELETE FROM param_stats WHERE iteration > 20")
    db.commit()
    db.close()
    comparison = compare_ranks(find_job([a, b]))
    assert comparison.agree and comparison.iterations == 20
    assert "(the ranks recorded 20 to 30 iterations)" in comparison_text(comparison)


def test_a_nan_on_one_rank_only_parts_it(tmp_path):
    path = make_record(tmp_path / "nan.db", ranks=3, iterations=20)
    db = sqlite3.connect(path)
    db.execute("UPDATE param_stats SET grad_norm = NULL, flags = 20 WHERE run = 2 AND "
               "iteration = 6 AND param = 4")
    db.execute("UPDATE iterations SET grad_norm = NULL WHERE run = 2 AND iteration = 6")
    db.commit()
    db.close()
    p = compare_ranks(find_job([path])).parting
    assert (p.iteration, p.param, p.rank, p.values[1]) == (6, "layers.2.weight", 1, None)
    assert p.relative == float("inf")


def test_a_file_that_is_not_a_record_is_a_record_error(tmp_path, records):
    bad = tmp_path / "notes.db"
    bad.write_text("not a database " * 300)
    with pytest.raises(RecordError, match="notes.db is not a gradviz record"):
        find_job([records["agree"], bad])
    with pytest.raises(RecordError, match="no such record file"):
        find_job([tmp_path / "missing.db"])


def test_weights_that_part_while_ddp_keeps_the_gradients_equal_are_found(tmp_path):
    """A rank that stepped differently (its own learning rate, say): DDP averages the
    gradients of all ranks, so every total agrees again, but its weights stay apart
    from that step on; the fast path finds where they began."""
    path = make_record(tmp_path / "weights.db", ranks=3, iterations=300)
    db = sqlite3.connect(path)
    db.execute("UPDATE param_stats SET update_norm = update_norm * 2 WHERE run = 3 AND "
               "iteration = 137")
    db.execute("UPDATE param_stats SET param_norm = param_norm * (1 + 1e-5) WHERE run = 3 AND "
               "iteration > 137")
    db.commit()
    db.close()
    p = compare_ranks(find_job([path])).parting
    assert (p.iteration, p.param, p.column, p.rank) == (137, "layers.0.weight", "update_norm", 2)
    assert p.params_apart == 8
