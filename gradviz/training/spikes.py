"""Spikes of the loss or the total gradient norm: caught from the second iteration, one
break per episode.

A value spikes when it is more than ``factor`` times the median of the last
:data:`WINDOW` iterations that were not part of a spike (so a divergence does not raise
its own bar), from the second iteration on: a loss going 120, 2,120, 3.6e6 breaks at
2,120. A value that climbs more gently breaks once it has grown in each of the last
:data:`CLIMB` iterations and by more than ``factor`` over them in all (1, 2.5, 6, 15
breaks at 15), which a recent median, climbing with it, would see late or never. A
lowest-so-far bar was not taken: a converged classifier's batch losses (0.05, then
0.6 on a hard batch) cross 10x of their best while nothing is wrong. For the same
reason a value must also top every one of the recent iterations: once a model has fit
its data, gradient norms of 0.002 jump to 0.03 and back, far below where they were.
And a value must reach ``1/factor`` of the highest the run has had outside a spike: a
model that has fit its data to float rounding has gradient norms of 1e-7 that jump
tenfold from one batch to the next, a millionth of where the run started.

An episode starts at the first spiking iteration and lasts while the value stays above
the bar it broke (frozen at that iteration) or is NaN/Inf; one break per episode, and
the iterations inside it never enter the reference. A value must be finite and
positive to count (a loss can be negative: its spikes are not told).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

#: Iterations whose median is a value's reference.
WINDOW = 20
#: A climb: growth in each of this many iterations, by ``factor`` in all.
CLIMB = 3


@dataclass(frozen=True)
class Spike:
    """A spike that starts an episode: what spiked, its value, the bar it broke and why."""

    quantity: str  # "loss" or "gradient norm"
    value: float
    reference: float
    against: str  # "the median of the last 5 iterations", "the iteration before", ...

    @property
    def detail(self) -> str:
        if math.isfinite(self.value):
            size = f"{self.value:.4g} is {self.value / self.reference:.3g}x"
        else:
            size = "overflows (finite elements too large to square) against"
        return f"{self.quantity} {size} {self.against} ({self.reference:.4g})"


class _Track:
    """One quantity's recent values, its best, and the episode it may be in."""

    def __init__(self, name: str):
        self.name = name
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.bar: float | None = None  # set during an episode: the bar the spike broke
        self.peak = 0.0  # the highest value outside an episode

    def see(self, value: float | None, factor: float) -> Spike | None:
        if value is None or math.isnan(value):
            return None
        if self.bar is not None:  # inside an episode
            if math.isinf(value) or value > self.bar:
                return None
            self.bar = None
        spike = self._spike(value, factor)
        if spike is not None:
            self.bar = spike.reference * factor
            return spike
        if math.isfinite(value) and value > 0:
            self.recent.append(value)
            self.peak = max(self.peak, value)
        return None

    def _spike(self, value: float, factor: float) -> Spike | None:
        if not self.recent or value <= max(self.recent):
            return None  # nothing above what the last iterations already reached
        if value * factor < self.peak:
            return None  # far below where the run has been: noise of a fitted model
        median = statistics.median(self.recent)
        if median > 0 and value > factor * median:
            against = ("the iteration before" if len(self.recent) == 1
                       else f"the median of the last {len(self.recent)} iterations")
            return Spike(self.name, value, median, against)
        before = list(self.recent)[-CLIMB:]
        if len(before) == CLIMB and all(a < b for a, b in zip(before, [*before[1:], value])) \
                and value > factor * before[0]:
            return Spike(self.name, value, before[0],
                         f"its value {CLIMB} iterations before, after growing at each")
        return None


class SpikeWatch:
    """Feed each iteration's loss and total gradient norm; get the spike that starts an
    episode, or None (also inside an episode)."""

    def __init__(self, factor: float):
        self.factor = factor
        self._tracks = (_Track("gradient norm"), _Track("loss"))

    def see(self, loss: float | None, grad_norm: float | None) -> Spike | None:
        found = [track.see(value, self.factor)
                 for track, value in zip(self._tracks, (grad_norm, loss))]
        return next((spike for spike in found if spike is not None), None)
