"""Two runs compared: the first iteration where they part, and the layers ranked by how
far they parted (``gradviz diff A.db B.db``).

>>> result = diff_runs("a.db", "b.db")            # doctest: +SKIP  (latest run of each)
>>> result.parted_at, [layer.layer for layer in result.layers[:2]]   # doctest: +SKIP
(50, ['fc2', 'fc1'])

Compared iteration by iteration, over the iterations both runs have: the loss, the
total gradient norm and the learning rate, and every parameter's gradient, parameter
and update norm (parameters matched by name). Two numbers agree within a
:class:`~gradviz.model.runs.tolerance.Tolerance` (by default ``|a - b| <= 1e-12 + 1e-6 *
max(|a|, |b|)``; NaN agrees only with NaN). Two runs of the same code, seed and
data on a CPU are bitwise equal; on a GPU with non-deterministic kernels they differ
near 1e-7 from the first iteration and drift apart, so the tolerance says where they
*visibly* part, and the first bitwise difference is reported beside it.

How it stays fast: SQL over both files (B ATTACHed), joined on their primary keys. The
per-iteration rows are compared first; a difference in a parameter's norms shows in
the next iteration's gradients at the latest, so the per-parameter rows are searched
from one iteration before the first iteration-level difference, and stop at the first
parting row. ``thorough=True`` searches them from the first iteration (a parameter
that parted without moving any total's bits). Layers are ranked over ``window``
iterations from the parting on, and the last one both have.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from gradviz.model.runs.history import RunRecord
from gradviz.model.runs.schema import RecordError
from gradviz.model.runs.tolerance import Tolerance

#: The default tolerance of a diff.
TOLERANCE = Tolerance(rtol=1e-6, atol=1e-12)
ITERATION_COLUMNS = ("loss", "grad_norm", "lr")
PARAM_COLUMNS = ("grad_norm", "param_norm", "update_norm")
#: Iterations from the parting on over which the layers are ranked.
WINDOW = 1000


@dataclass(frozen=True)
class Difference:
    """One number that parted at the parting iteration: ``what`` is a column of the
    iteration (``loss``) or a parameter's (``grad_norm of fc.weight``); None is NaN."""

    what: str
    a: float | None
    b: float | None


@dataclass(frozen=True)
class LayerParting:
    """How far a layer's gradient norm parted: the first iteration beyond the tolerance
    (None: not in the window), the largest relative difference over the window and the
    last iteration, and the relative difference at the runs' parting iteration."""

    layer: str
    first: int | None
    largest: float
    at_parting: float


@dataclass(frozen=True)
class RunDiff:
    """Where run B parts from run A. ``parted_at`` None and ``first_difference`` None:
    identical over the iterations both have; ``parted_at`` None alone: within tolerance."""

    a: str  # the files, as given
    b: str
    run_a: int
    run_b: int
    a_iterations: int
    b_iterations: int
    compared: int
    first_difference: int | None  # the first iteration with any bit different
    parted_at: int | None  # the first iteration beyond the tolerance
    differences: tuple[Difference, ...] = ()
    layers: tuple[LayerParting, ...] = ()
    tolerance: Tolerance = TOLERANCE
    seconds: float = 0.0

    @property
    def identical(self) -> bool:
        return self.first_difference is None and self.a_iterations == self.b_iterations


def verdict_text(d: RunDiff) -> str:
    """The comparison in one line: identical, within tolerance, or where they parted."""
    lengths = "" if d.a_iterations == d.b_iterations else (
        f" (A has {d.a_iterations} iterations, B {d.b_iterations}: compared the {d.compared} "
        "both have)")
    if d.first_difference is None:
        if d.compared == 0:
            return f"no iteration to compare{lengths}"
        return ("the runs are identical: every number of every iteration bitwise equal"
                if d.identical else "identical over the iterations both have") + lengths
    if d.parted_at is None:
        return (f"the same within tolerance ({d.tolerance}); first bitwise "
                f"difference at iteration {d.first_difference}{lengths}")
    what = "; ".join(f"{x.what} {_value(x.a)} vs {_value(x.b)}" for x in d.differences[:3])
    more = f" and {len(d.differences) - 3} more" if len(d.differences) > 3 else ""
    first = ("" if d.first_difference == d.parted_at else
             f" (first bitwise difference at {d.first_difference})")
    return f"parted at iteration {d.parted_at}{first}: {what}{more}{lengths}"


def diff_runs(path_a: str | os.PathLike, path_b: str | os.PathLike, *,
              run_a: int | None = None, run_b: int | None = None,
              tolerance: Tolerance = TOLERANCE, thorough: bool = False,
              window: int | None = WINDOW) -> RunDiff:
    """Run ``run_b`` of ``path_b`` against ``run_a`` of ``path_a`` (default: each record's
    latest run). A RecordError, in one line, for a file that is no record, a run that is
    not there, or two runs of different models."""
    start = time.perf_counter()
    with RunRecord(path_a) as a, RunRecord(path_b) as b:
        ra = a.latest_run().run if run_a is None else _run(a, run_a)
        rb = b.latest_run().run if run_b is None else _run(b, run_b)
        a.attach(b, "b")
        with a.reading():
            return _compare(a.connection, str(path_a), str(path_b), ra, rb, tolerance,
                            thorough, window, start)


def _run(record: RunRecord, run: int) -> int:
    if run not in {r.run for r in record.runs()}:
        raise RecordError(f"{record.path} has no run {run}")
    return run


def _compare(db, path_a, path_b, ra, rb, tolerance, thorough, window, start) -> RunDiff:
    arg = {"ra": ra, "rb": rb}

    def differs(x: str, y: str, exact: bool) -> str:
        return f"({x} IS NOT {y})" if exact else tolerance.apart_sql(x, y)

    _check_same_model(db, path_a, path_b, arg)
    count_a = db.execute("SELECT count(*) FROM main.iterations WHERE run = ?", (ra,)).fetchone()[0]
    count_b = db.execute("SELECT count(*) FROM b.iterations WHERE run = ?", (rb,)).fetchone()[0]
    both = "b.iterations y ON y.run = :rb AND y.iteration = x.iteration"
    compared, last = db.execute(f"SELECT count(*), max(x.iteration) FROM main.iterations x "
                                f"JOIN {both} WHERE x.run = :ra", arg).fetchone()
    # A's parameter -> B's (by name); the same index in both is the usual case
    same_index = db.execute(
        "SELECT count(*) = sum(p.param = q.param) FROM main.params p JOIN b.params q "
        "ON q.run = :rb AND q.name = p.name WHERE p.run = :ra", arg).fetchone()[0]
    b_param = ("x.param" if same_index else "(SELECT q.param FROM main.params p JOIN b.params q "
               "ON q.run = :rb AND q.name = p.name WHERE p.run = :ra AND p.param = x.param)")
    rows_b = f"b.param_stats y ON y.run = :rb AND y.iteration = x.iteration AND y.param = {b_param}"

    def first_iteration(exact: bool) -> int | None:
        cond = " OR ".join(differs(f"x.{c}", f"y.{c}", exact) for c in ITERATION_COLUMNS)
        return db.execute(f"SELECT min(x.iteration) FROM main.iterations x JOIN {both} "
                          f"WHERE x.run = :ra AND ({cond})", arg).fetchone()[0]

    def first_row(exact: bool, since: int) -> int | None:
        cond = " OR ".join(differs(f"x.{c}", f"y.{c}", exact) for c in PARAM_COLUMNS)
        row = db.execute(f"SELECT x.iteration FROM main.param_stats x JOIN {rows_b} "
                         f"WHERE x.run = :ra AND x.iteration >= :since AND ({cond}) "
                         "ORDER BY x.iteration, x.param LIMIT 1", {**arg, "since": since}
                         ).fetchone()
        return None if row is None else row[0]

    def result(first=None, parted=None, differences=(), layers=()) -> RunDiff:
        return RunDiff(path_a, path_b, ra, rb, count_a, count_b, compared, first, parted,
                       tuple(differences), tuple(layers), tolerance,
                       time.perf_counter() - start)

    iteration_exact = first_iteration(exact=True)
    if iteration_exact is None and not thorough:
        return result()  # every total bitwise equal: the rows too, but for a tiny parameter
    since = 1 if thorough or iteration_exact is None else max(1, iteration_exact - 1)
    first = _earliest(iteration_exact, first_row(True, since))
    if first is None:
        return result()
    parted = _earliest(first_iteration(exact=False), first_row(False, first))
    if parted is None:
        return result(first)
    differences = _differences(db, arg, rows_b, parted, tolerance)
    layers = _layers(db, arg, rows_b, parted, last, window, tolerance)
    return result(first, parted, differences, layers)


def _check_same_model(db, path_a: str, path_b: str, arg: dict) -> None:
    """Two runs of different models have nothing to compare: say which parameters differ."""
    shapes_a = dict(db.execute("SELECT name, shape FROM main.params WHERE run = :ra", arg))
    shapes_b = dict(db.execute("SELECT name, shape FROM b.params WHERE run = :rb", arg))
    if shapes_a == shapes_b:
        return
    only_a = sorted(set(shapes_a) - set(shapes_b))
    only_b = sorted(set(shapes_b) - set(shapes_a))
    reshaped = sorted(n for n in set(shapes_a) & set(shapes_b) if shapes_a[n] != shapes_b[n])
    if only_a or only_b:
        what = ", ".join(f"{len(names)} parameter(s) only in {path} ({_some(names)})"
                         for names, path in ((only_a, path_a), (only_b, path_b)) if names)
    else:
        what = (f"{reshaped[0]} is {shapes_a[reshaped[0]]} in one and "
                f"{shapes_b[reshaped[0]]} in the other")
    raise RecordError(f"{path_a} and {path_b} record different models ({what}): diff compares "
                      "runs of one model")


def _differences(db, arg, rows_b, parted, tolerance: Tolerance) -> list[Difference]:
    """What parted at iteration ``parted``: the iteration's numbers, then the parameters'."""
    columns = ", ".join(ITERATION_COLUMNS)
    x = db.execute(f"SELECT {columns} FROM main.iterations WHERE run = ? AND iteration = ?",
                   (arg["ra"], parted)).fetchone()
    y = db.execute(f"SELECT {columns} FROM b.iterations WHERE run = ? AND iteration = ?",
                   (arg["rb"], parted)).fetchone()
    found = [Difference(name, u, v) for name, u, v in zip(ITERATION_COLUMNS, x, y)
             if not tolerance.close(u, v)]
    cond = " OR ".join(tolerance.apart_sql(f"x.{c}", f"y.{c}") for c in PARAM_COLUMNS)
    pairs = ", ".join(f"x.{c}, y.{c}" for c in PARAM_COLUMNS)
    for name, *values in db.execute(
            f"SELECT p.name, {pairs} FROM main.param_stats x JOIN {rows_b} "
            "JOIN main.params p ON p.run = x.run AND p.param = x.param "
            f"WHERE x.run = :ra AND x.iteration = :it AND ({cond}) ORDER BY x.param",
            {**arg, "it": parted}):
        for k, column in enumerate(PARAM_COLUMNS):
            u, v = values[2 * k], values[2 * k + 1]
            if not tolerance.close(u, v):
                found.append(Difference(f"{column} of {name}", u, v))
    return found


def _layers(db, arg, rows_b, parted, last, window, tolerance: Tolerance) -> list[LayerParting]:
    """Each layer's gradient norm in A and B (the root of its parameters' squares, as the
    run view's) over ``window`` iterations from the parting and the last: one SQL pass
    over those rows, grouped by iteration and layer."""
    until = last if window is None else parted + window - 1
    relative = "abs(na - nb) / max(abs(na), abs(nb), 1e-300)"
    rows = db.execute(
        "WITH per AS (SELECT x.iteration AS it, p.layer AS layer, "
        "  sqrt(sum(x.grad_norm * x.grad_norm)) AS na, sqrt(sum(y.grad_norm * y.grad_norm)) AS nb"
        f"  FROM main.param_stats x JOIN {rows_b} "
        "  JOIN main.params p ON p.run = x.run AND p.param = x.param "
        "  WHERE x.run = :ra AND (x.iteration BETWEEN :since AND :until OR x.iteration = :last)"
        "  GROUP BY x.iteration, p.layer) "
        f"SELECT layer, min(CASE WHEN {tolerance.apart_sql('na', 'nb')} THEN it END), "
        f"  max(CASE WHEN na IS NULL OR nb IS NULL THEN NULL ELSE {relative} END), "
        f"  max(CASE WHEN it = :since THEN {relative} END) "
        "FROM per GROUP BY layer",
        {**arg, "since": parted, "until": until, "last": last}).fetchall()
    found = [LayerParting(layer, first, largest or 0.0, at or 0.0)
             for layer, first, largest, at in rows]
    return sorted(found, key=lambda p: (p.first is None, -p.largest, p.layer))


def _some(names: list[str], shown: int = 2) -> str:
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _earliest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _value(value: float | None) -> str:
    return "NaN" if value is None else f"{value:.9g}"
