"""Runs as plain data (RunHistory) for the run view's tests: no torch, no record."""

import math

from gradviz.model.runs.history import EventRecord, IterationRecord, ParamInfo, RunHistory, RunInfo


def synthetic_history(layers: int, iterations: int, nan_at: int | None = None) -> RunHistory:
    """A run as plain data: layer j's |grad| is 10**(j % 5 - 3), NaN in the last layer
    at ``nan_at``; |Δ|/|p| 1e-3 (in the default band); the loss 1/i."""
    names = [f"block{j}.linear" for j in range(layers)]
    rows = [IterationRecord(i, 1.0 / i, 1.0, 0.01, 0.0, 1, 0.1, i == nan_at, False)
            for i in range(1, iterations + 1)]
    grads = [[10.0 ** (j % 5 - 3)] * iterations for j in range(layers)]
    nonfinite = [[False] * iterations for _ in range(layers)]
    if nan_at is not None:
        grads[-1][nan_at - 1] = math.nan
        nonfinite[-1][nan_at - 1] = True
    ratios = [[1e-3] * iterations for _ in range(layers)]
    info = RunInfo(1, 0, 1, 0.0, None, "finished", "h", 1, [], "Big", "SGD", {},
                   {"band": [1e-4, 1e-2]})
    params = [ParamInfo(j, f"{n}.weight", n, (1,), 1, "float32", 0, False)
              for j, n in enumerate(names)]
    events = [] if nan_at is None else [
        EventRecord(nan_at, "nonfinite", "", "a gradient is NaN/Inf")]
    return RunHistory(info, params, rows, names, grads, ratios, events, iterations, nonfinite)
