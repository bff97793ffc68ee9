"""Audits of a training run: parameters silently left out of training, or moved wrongly.

Each audit is reported once per parameter (or layer), the first iteration it is seen:

- ``not-in-optimizer``: requires grad, but is in no optimizer param group;
- ``no-grad``: in the optimizer, requires grad, but got no gradient for ``IN_A_ROW``
  iterations in a row (an unused layer, a detached branch; in a row, so that LayerDrop
  skipping a layer now and then does not count); with ``zero_grad(set_to_none=False)``
  such a gradient stays an all-zero tensor and shows as ``zero-grad-run`` instead;
- ``moved-frozen``: changed by ``optimizer.step()`` although it has
  ``requires_grad=False``; ``moved-without-grad`` / ``moved-zero-grad``: changed without
  a gradient or with an all-zero one, ``IN_A_ROW`` steps in a row (weight decay or
  momentum moving a layer meant to stay put, not stochastic depth dropping a block in
  one iteration);
- ``ratio-high`` / ``ratio-low``: a layer's |update| / |param| outside ``band`` for
  ``IN_A_ROW`` steps in a row (a layer: the parameters one module owns, their norms
  combined; in a row, so that Adam's first steps or one odd batch do not count);
- ``zero-grad-run``: a gradient exactly zero for ``IN_A_ROW`` iterations in a row.

Not an audit, but seen here first, as every row is: ``not-combined``, a sharded model
whose ranks' sums could not be added up (:mod:`gradviz.training.norms.sharded`): its rows are
flagged as one rank's shards from then on, and the event says why, once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gradviz.model.runs.events import EventKind
from gradviz.model.runs.history import EventRecord
from gradviz.model.runs.schema import (
    FROZEN,
    MOVED,
    NO_GRAD,
    NONFINITE_GRAD,
    NOT_IN_OPTIMIZER,
    ONE_SHARD,
    ZERO_GRAD,
)
from gradviz.training.norms.iteration_stats import Measurement

IN_A_ROW = 10


class Auditor:
    """Flags per parameter per iteration, and each audit's first sighting as an event."""

    def __init__(self, band: tuple[float, float]):
        self.band = band
        self.names: list[str] = []
        self.layers: list[str] = []
        self.in_optimizer: list[bool] = []
        self.orphans: set[int] = set()
        self._zero_runs: list[int] = []
        self._missing_runs: list[int] = []  # iterations in a row without a gradient
        self._moved_runs: list[int] = []  # steps in a row moving it without one (or zero)
        self._band_runs: dict[tuple[str, str], int] = {}  # (kind, layer) -> steps in a row
        self._seen: set[tuple[str, str]] = set()
        self._layer_members: dict[str, list[int]] = {}

    def set_params(self, names: Sequence[str], layers: Sequence[str],
                   in_optimizer: Sequence[bool], orphans: Sequence[int] = ()) -> None:
        """The parameters audited, by index; indices already known keep their history.
        ``orphans``: parameters the model no longer has (replaced): no gradient is expected."""
        self.names = list(names)
        self.layers = list(layers)
        self.in_optimizer = list(in_optimizer)
        self.orphans = set(orphans)
        for runs in (self._zero_runs, self._missing_runs, self._moved_runs):
            runs += [0] * (len(self.names) - len(runs))
        self._layer_members = {}
        for index, layer in enumerate(self.layers):
            self._layer_members.setdefault(layer, []).append(index)

    def membership(self, iteration: int, requires_grad: Sequence[bool]) -> list[EventRecord]:
        """Parameters that require grad but are in no optimizer group."""
        return [self._once(iteration, "not-in-optimizer", name, "")
                for name, grad, member in zip(self.names, requires_grad, self.in_optimizer)
                if grad and not member and ("not-in-optimizer", name) not in self._seen]

    def iteration(self, iteration: int, measured: Measurement, requires_grad: Sequence[bool]
                  ) -> tuple[list[tuple], list[EventRecord]]:
        """``param_stats`` rows ``(param, grad, param_norm, update, ratio, flags)``, and the
        audits seen for the first time."""
        events: list[EventRecord] = []
        rows = []
        updates = measured.update_norms
        params = measured.param_norms
        if measured.not_combined:
            events.extend(self._maybe(iteration, "not-combined", "", measured.not_combined))
        for index, name in enumerate(self.names):
            grad = measured.grad_norms[index]
            member = self.in_optimizer[index]
            update = updates[index] if updates is not None and member else None
            param = params[index] if params is not None else None
            flags = 0 if member else NOT_IN_OPTIMIZER
            if measured.not_combined:
                flags |= ONE_SHARD
            if not requires_grad[index]:
                flags |= FROZEN
            if grad is None:
                flags |= NO_GRAD
            elif grad == 0.0:
                flags |= ZERO_GRAD
            elif not math.isfinite(grad):
                flags |= NONFINITE_GRAD
            if update:
                flags |= MOVED
            self._zero_runs[index] = self._zero_runs[index] + 1 if flags & ZERO_GRAD else 0
            self._missing_runs[index] = self._missing_runs[index] + 1 if flags & NO_GRAD else 0
            self._moved_runs[index] = (self._moved_runs[index] + 1
                                       if flags & MOVED and flags & (NO_GRAD | ZERO_GRAD) else 0)
            events.extend(self._param_audits(iteration, name, flags, grad, update, index))
            ratio = None if update is None or param is None else _ratio(update, param)
            rows.append((index, grad, param, update, ratio, flags))
        if updates is not None and params is not None:
            events.extend(self._band_audits(iteration, rows))
        return rows, events

    def _param_audits(self, iteration, name, flags, grad, update, index):
        if flags & MOVED:
            if flags & FROZEN:
                yield from self._maybe(iteration, "moved-frozen", name,
                                       f"|Δ| {update:.3g} with requires_grad=False")
            elif self._moved_runs[index] == IN_A_ROW:
                kind = "moved-without-grad" if flags & NO_GRAD else "moved-zero-grad"
                yield from self._maybe(iteration, kind, name, f"|Δ| {update:.3g}, "
                                       f"{IN_A_ROW} steps in a row")
        if self._missing_runs[index] == IN_A_ROW and not flags & (FROZEN | NOT_IN_OPTIMIZER) \
                and index not in self.orphans:
            yield from self._maybe(iteration, "no-grad", name,
                                   f"since iteration {iteration - IN_A_ROW + 1}")
        if self._zero_runs[index] == IN_A_ROW:
            yield from self._maybe(iteration, "zero-grad-run", name,
                                   f"since iteration {iteration - IN_A_ROW + 1}")

    def _band_audits(self, iteration, rows):
        low, high = self.band
        for layer, members in self._layer_members.items():
            update_sq = param_sq = 0.0
            for index in members:
                _, grad, param, update, _, flags = rows[index]
                if update is None or param is None or flags & (NO_GRAD | FROZEN):
                    continue
                update_sq += update * update
                param_sq += param * param
            if param_sq == 0.0 or not math.isfinite(update_sq + param_sq):
                continue
            ratio = math.sqrt(update_sq / param_sq)
            label = layer or "(model)"
            for kind, outside, text in (("ratio-high", ratio > high, f"> {high:g}"),
                                        ("ratio-low", ratio < low, f"< {low:g}")):
                steps = self._band_runs.get((kind, label), 0) + 1 if outside else 0
                self._band_runs[(kind, label)] = steps
                if steps == IN_A_ROW:
                    yield from self._maybe(iteration, kind, label,
                                           f"|Δ|/|p| {ratio:.3g} {text}, {IN_A_ROW} steps in a row")

    def _maybe(self, iteration, kind, subject, detail):
        if (kind, subject) not in self._seen:
            yield self._once(iteration, kind, subject, detail)

    def _once(self, iteration, kind, subject, detail) -> EventRecord:
        self._seen.add((kind, subject))
        return EventRecord(iteration, EventKind(kind), subject, detail)


def _ratio(update: float, param: float) -> float:
    if param == 0.0:
        return 0.0 if update == 0.0 else math.inf
    return update / param
