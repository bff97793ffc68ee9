"""gradviz report's findings, from a run as plain data: the bad iteration with the few before
it, each layer's norm there, a growth no spike told, learning-rate jumps."""

import math
from dataclasses import replace

from gradviz.model.runs.history import (
    EventRecord,
    IterationRecord,
    ParamInfo,
    RunHistory,
    RunInfo,
)
from gradviz.model.runs.report import WatchReport


def history(losses, *, lrs=None, events=(), layers=("fc", "out"), nan_at=None,
            spike=10.0) -> RunHistory:
    n = len(losses)
    lrs = lrs or [0.1] * n
    rows = [IterationRecord(i, losses[i - 1], 2.0 * i, 0.1, 0.0, 1, lrs[i - 1], i == nan_at,
                            False, 1.0 if i % 2 else None) for i in range(1, n + 1)]
    grads = [[float(j + 1) * i for i in range(1, n + 1)] for j in range(len(layers))]
    nonfinite = [[i == nan_at and j == 0 for i in range(1, n + 1)] for j in range(len(layers))]
    if nan_at is not None:
        grads[0][nan_at - 1] = math.nan
    info = RunInfo(1, 0, 1, 0.0, None, "break", "h", 1, [], "Net", "SGD", {},
                   {"band": [1e-7, 0.2], "spike": spike})
    params = [ParamInfo(j, f"{name}.weight", name, (1,), 1, "float32", 0, False)
              for j, name in enumerate(layers)]
    ratios = [[1e-3] * n for _ in layers]
    return RunHistory(info, params, rows, list(layers), grads, ratios, list(events), n,
                      nonfinite)


def section(report, title_start):
    return next((s for s in report.sections() if s.title.startswith(title_start)), None)


def test_the_bad_iteration_comes_with_the_few_before_it_and_each_layers_norm_there():
    run = history([2.0, 1.9, 1.8, 1.7, 1.6, math.nan, 1.5], nan_at=6,
                  events=[EventRecord(6, "nonfinite", "", "a gradient is NaN/Inf")])
    focus = replace(run, iterations=run.iterations[1:6],
                    layer_grad_norms=[row[1:6] for row in run.layer_grad_norms],
                    layer_nonfinite=[row[1:6] for row in run.layer_nonfinite])
    report = WatchReport(run, focus=focus)
    bad = section(report, "iteration 6 (nonfinite)")
    assert [row[0] for row in bad.rows] == ["2", "3", "4", "5", "6"]
    assert bad.rows[-1][1] == "NaN" and bad.rows[-1][-1] == "NaN/Inf"
    assert bad.rows[0][3] == "-" and bad.rows[1][3] == "1"  # clipped on odd iterations
    layers = section(report, "layers at iteration 6")
    assert layers.rows[0] == ("fc", "NaN/Inf", "5")  # NaN/Inf first, beside its last value
    assert layers.rows[1] == ("out", "12", "10")


def test_a_growth_no_spike_told_is_shown_as_a_trend():
    losses = [1.5 ** i for i in range(10)]  # 1.5x per iteration: never 10x at once
    report = WatchReport(history(losses))
    growth = section(report, "growth")
    assert growth.rows[0][:2] == ("loss", f"{1.5 ** 9:.3g}x")
    assert "no spike break fired" in growth.note
    told = history(losses, events=[EventRecord(8, "spike", "", "loss ...")])
    assert section(WatchReport(told), "growth") is None


def test_learning_rate_jumps_are_steps_not_a_warmups_ramp():
    lrs = [0.01 * i for i in range(1, 6)] + [0.05] * 5 + [0.005] * 5  # ramp, flat, step down
    report = WatchReport(history([1.0] * 15, lrs=lrs))
    rows = section(report, "learning rate").rows
    jumps = [value for key, value in rows if key == "jump"]
    assert jumps == ["0.05 at 10 -> 0.005 at 11"]
