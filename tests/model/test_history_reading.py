"""RunRecord.history reads what a plain row-by-row reading of the record says, with the
choosing of iterations and the sums per layer done inside SQLite."""

import math
import sqlite3
import tracemalloc

import pytest
from synthetic_records import make_record

from gradviz.model.runs.history import RunRecord


def by_rows(path, *, last=None, points=None):
    """The reference: every iteration number read, thinned in Python, each parameter row
    summed into its layer in Python (how the reader worked before SQLite did it)."""
    db = sqlite3.connect(path)
    numbers = [r[0] for r in db.execute("SELECT iteration FROM iterations ORDER BY iteration")]
    if last is not None:
        numbers = numbers[-last:] if last > 0 else []
    if points is not None and len(numbers) > points > 1:
        step = (len(numbers) - 1) / (points - 1)
        numbers = sorted({numbers[round(i * step)] for i in range(points)})
    params = db.execute("SELECT param, layer FROM params ORDER BY param").fetchall()
    layers = list(dict.fromkeys(layer for _, layer in params))
    layer_of = {p: layers.index(layer) for p, layer in params}
    at = {n: i for i, n in enumerate(numbers)}
    grad = [[0.0] * len(numbers) for _ in layers]
    has = [[False] * len(numbers) for _ in layers]
    bad = [[False] * len(numbers) for _ in layers]
    upd = [[0.0] * len(numbers) for _ in layers]
    par = [[0.0] * len(numbers) for _ in layers]
    stepped = [[False] * len(numbers) for _ in layers]
    for it, p, g, pn, u, flags in db.execute(
            "SELECT iteration, param, grad_norm, param_norm, update_norm, flags FROM param_stats"):
        if it not in at:
            continue
        i, j = at[it], layer_of[p]
        if flags & 4:
            bad[j][i] = has[j][i] = True
        elif g is not None:
            grad[j][i] += g * g
            has[j][i] = True
        if u is not None and pn is not None and not flags & 1:
            upd[j][i] += u * u
            par[j][i] += pn * pn
            stepped[j][i] = True
    db.close()
    grads = [[math.nan if b or not h else math.sqrt(v) for v, h, b in zip(*rows)]
             for rows in zip(grad, has, bad)]
    ratios = [[math.sqrt(u / p) if s else math.nan for u, p, s in zip(*rows)]
              for rows in zip(upd, par, stepped)]
    return numbers, layers, grads, ratios, bad


def same(a, b):
    return all(x == pytest.approx(y, rel=1e-12) if not math.isnan(y) else math.isnan(x)
               for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b)) and len(a) == len(b)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("histories")
    return {"plain": make_record(folder / "plain.db", iterations=97, layers=3, per_layer=3),
            "gaps": make_record(folder / "gaps.db", iterations=97, layers=3, per_layer=3,
                                gaps=(1, 2, 40, 41, 42, 97), nonfinite_at=(50, 4))}


@pytest.mark.parametrize("kind", ["plain", "gaps"])
@pytest.mark.parametrize(("last", "points"), [(None, None), (None, 10), (30, None), (30, 7),
                                              (0, None), (500, 5), (None, 1), (None, 2)])
def test_the_reader_reads_what_the_rows_say(records, kind, last, points):
    with RunRecord(records[kind]) as record:
        history = record.history(last=last, points=points)
    numbers, layers, grads, ratios, bad = by_rows(records[kind], last=last, points=points)
    assert history.iteration_numbers == numbers
    assert history.layers == layers == ["layers.0", "layers.1", "layers.2"]
    assert same(history.layer_grad_norms, grads)
    assert same(history.layer_update_ratios, ratios)
    assert history.layer_nonfinite == bad
    assert history.total_iterations == (91 if kind == "gaps" else 97)


def test_a_nan_gradient_makes_its_layer_nan_and_says_so(records):
    with RunRecord(records["gaps"]) as record:
        history = record.history()
    i = history.iteration_numbers.index(50)
    assert math.isnan(history.layer_grad_norms[1][i]) and history.layer_nonfinite[1][i]
    assert not history.layer_nonfinite[0][i] and math.isfinite(history.layer_grad_norms[0][i])


def test_a_thinned_read_holds_memory_of_its_points_not_of_the_record(tmp_path):
    """The iterations are chosen in SQLite, the layers summed there: reading 100 points of
    a record 20 times as long takes about the same memory."""
    short = make_record(tmp_path / "short.db", iterations=300, layers=4)
    long = make_record(tmp_path / "long.db", iterations=6000, layers=4)

    def peak(path):
        tracemalloc.start()
        with RunRecord(path) as record:
            history = record.history(points=100)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(history.iterations) == 100
        return peak

    peak(short)  # warm: first-use allocations (sqlite3's statement cache, json)
    assert peak(long) < 1.3 * peak(short)


@pytest.mark.parametrize("kind", ["plain", "gaps"])
def test_a_run_streamed_a_chunk_at_a_time_is_the_run_read_whole(records, kind):
    with RunRecord(records[kind]) as record:
        whole = record.history()
        info, layers, points = record.stream(chunk=10)
        points = list(points)
    assert info.run == whole.info.run and layers == whole.layers
    assert [p.row for p in points] == whole.iterations
    assert same([p.grad_norms for p in points], list(map(list, zip(*whole.layer_grad_norms))))
    assert same([p.update_ratios for p in points],
                list(map(list, zip(*whole.layer_update_ratios))))
    assert [p.nonfinite for p in points] == list(map(list, zip(*whole.layer_nonfinite)))
