"""diff_runs: where two runs part (the iteration and what parted), the layers ranked by how
far they parted, identical runs said to be identical, different models refused."""

import sqlite3

import pytest
from synthetic_records import make_record

from gradviz.model.runs.diff import diff_runs, verdict_text
from gradviz.model.runs.schema import RecordError
from gradviz.model.runs.tolerance import Tolerance

N = 300


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diffs")
    specs = {"A": {}, "A2": {}, "seed": {"seed_change_at": 120}, "lr": {"lr": 2e-3},
             "short": {"gaps": tuple(range(201, N + 1))},
             "other": {"names": ["encoder.weight", "encoder.bias", "head.weight"]}}
    return {name: make_record(folder / f"{name}.db", iterations=N, layers=4, **kw)
            for name, kw in specs.items()}


@pytest.mark.parametrize("thorough", [False, True])
def test_runs_of_the_same_code_seed_and_data_are_identical(records, thorough):
    d = diff_runs(records["A"], records["A2"], thorough=thorough)
    assert d.identical and d.parted_at is None and d.compared == N
    assert verdict_text(d) == ("the runs are identical: every number of every iteration "
                               "bitwise equal")


def test_a_seed_changed_at_an_iteration_parts_the_runs_there(records):
    d = diff_runs(records["A"], records["seed"])
    assert (d.first_difference, d.parted_at) == (120, 120)
    assert [x.what for x in d.differences[:3]] == ["loss", "grad_norm",
                                                    "grad_norm of layers.0.weight"]
    assert verdict_text(d).startswith("parted at iteration 120: loss 0.691702129 vs ")
    assert {layer.first for layer in d.layers} == {120}
    assert [layer.layer for layer in d.layers] == sorted(
        (layer.layer for layer in d.layers), key=lambda name: -next(
            x.largest for x in d.layers if x.layer == name))
    assert d.layers[0].largest > 0.1


def test_a_changed_learning_rate_parts_at_1_and_the_gradients_one_step_later(records):
    d = diff_runs(records["A"], records["lr"])
    assert d.parted_at == 1
    assert (d.differences[0].what, d.differences[0].a, d.differences[0].b) == ("lr", 1e-3, 2e-3)
    assert all(x.what.startswith(("lr", "update_norm of")) for x in d.differences)
    assert {layer.first for layer in d.layers} == {2}
    assert all(layer.at_parting == 0 for layer in d.layers)


def test_a_difference_inside_the_tolerance_is_not_a_parting(records, tmp_path):
    path = tmp_path / "nudged.db"
    path.write_bytes(open(records["A"], "rb").read())
    db = sqlite3.connect(path)
    db.execute("UPDATE param_stats SET grad_norm = grad_norm * (1 + 1e-9) WHERE iteration = 50 "
               "AND param = 3")
    db.execute("UPDATE iterations SET grad_norm = grad_norm * (1 + 1e-12) WHERE iteration = 50")
    db.commit()
    db.close()
    d = diff_runs(records["A"], path)
    assert (d.first_difference, d.parted_at) == (50, None)
    assert verdict_text(d) == ("the same within tolerance (|a - b| <= 1e-12 + 1e-06 * "
                               "max(|a|, |b|)); first bitwise difference at iteration 50")
    strict = diff_runs(records["A"], path, tolerance=Tolerance(rtol=1e-12, atol=0))
    assert strict.parted_at == 50 and strict.differences[0].what == "grad_norm"


def test_runs_of_different_lengths_compare_what_both_have(records):
    d = diff_runs(records["A"], records["short"])
    assert (d.a_iterations, d.b_iterations, d.compared) == (N, 200, 200)
    assert not d.identical and d.parted_at is None
    assert verdict_text(d) == ("identical over the iterations both have (A has 300 iterations, "
                               "B 200: compared the 200 both have)")


def test_two_records_of_different_models_are_refused_in_one_line(records):
    with pytest.raises(RecordError) as error:
        diff_runs(records["A"], records["other"])
    message = str(error.value)
    assert "\n" not in message and "record different models" in message
    assert message.startswith(f"{records['A']} and {records['other']} record different models "
                              f"(8 parameter(s) only in {records['A']} (layers.0.bias, "
                              "layers.0.weight, ...), 3 parameter(s) only in ")
    assert message.endswith("(encoder.bias, encoder.weight, ...)): diff compares runs of one "
                            "model")


def test_a_missing_run_or_file_is_a_record_error(records, tmp_path):
    with pytest.raises(RecordError, match="has no run 7"):
        diff_runs(records["A"], records["A2"], run_b=7)
    with pytest.raises(RecordError, match="no such record file"):
        diff_runs(records["A"], tmp_path / "missing.db")
