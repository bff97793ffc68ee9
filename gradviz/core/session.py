"""Session: a scenario trained one iteration at a time, each part visible.

An iteration is: zero the gradients, a forward pass under :func:`gradviz.record`,
the graph, a :class:`BackwardStepper` (stepped node by node, or run), the
scenario's checks once backward has finished, and an :class:`OptimizerWatch`
step. The Textual app and ``gradviz train`` both drive this.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch

from gradviz.core.errors import ScenarioError
from gradviz.core.optimizer_watch import OptimizerWatch, UpdateReport
from gradviz.core.scenario import CheckResult, Scenario
from gradviz.core.stepper import DEFAULT_HISTORY_BYTES, BackwardStepper, StepEvent, StepperError


@dataclass(frozen=True)
class IterationReport:
    iteration: int
    loss: float
    checks: list[CheckResult]
    update: UpdateReport | None
    first_nonfinite: StepEvent | None  # where a NaN/Inf gradient started, if one did


def _no_forward():
    raise ScenarioError("this session was given one graph: it cannot make another forward pass")


class Session:
    """One training iteration at a time; ``losses[i]`` is the loss of forward pass i."""

    def __init__(self, scenario: Scenario, *, history_bytes: int = DEFAULT_HISTORY_BYTES):
        self.scenario = scenario
        self.history_bytes = history_bytes
        optimizer = scenario.optimizer
        self.watch = (
            OptimizerWatch(optimizer, model=scenario.model, names=scenario.params)
            if optimizer is not None else None
        )
        self.iteration = 0  # optimizer steps taken
        self.losses: list[float] = []
        self.stepper: BackwardStepper | None = None
        self.checks: list[CheckResult] = []
        self.last_update: UpdateReport | None = None

    @property
    def graph(self) -> nx.DiGraph | None:
        return None if self.stepper is None else self.stepper.graph

    @property
    def can_forward(self) -> bool:
        """False for a session made from one graph (``gradviz.show``): no new forward."""
        return self.scenario.forward is not _no_forward

    @classmethod
    def for_roots(cls, roots, *, model=None, params=None, optimizer=None, gradient=None,
                  modules=None, name: str = "show") -> Session:
        """A session on a graph that already exists: step its backward, then the optimizer."""
        scenario = Scenario(name=name, forward=_no_forward, model=model, params=params or {},
                            optimizer=optimizer, gradient=gradient,
                            description="a graph handed to gradviz.show()")
        session = cls(scenario)
        session._begin([roots] if isinstance(roots, torch.Tensor) else list(roots), modules)
        return session

    @property
    def backward_done(self) -> bool:
        return self.stepper is not None and self.stepper.finished

    def forward(self) -> BackwardStepper:
        """A fresh forward pass (gradients zeroed first) and a stepper paused before backward."""
        if not self.can_forward:
            _no_forward()
        self.close()
        self._zero_grad()
        self._begin(*self.scenario.run_forward())
        return self.stepper

    def _begin(self, roots: list[torch.Tensor], modules: dict[int, str] | None) -> None:
        """Record the loss of a new graph and put a stepper, paused, on it."""
        scenario = self.scenario
        self.losses.append(scenario.loss_value(roots))
        self.checks = []
        self.stepper = BackwardStepper(roots, gradient=scenario.gradient, model=scenario.model,
                                       params=dict(scenario.params), modules=modules,
                                       history_bytes=self.history_bytes)

    def step(self) -> StepEvent | None:
        """One backward node (after a forward pass if none was made); None when finished."""
        stepper = self._stepper()
        if stepper.finished:
            return None
        event = stepper.step()
        self._after_backward()
        return event

    def run_backward(self) -> list[StepEvent]:
        """Backward to the end (or the next breakpoint); nothing if it has finished."""
        stepper = self._stepper()
        if stepper.finished:
            return []
        events = stepper.run()
        self._after_backward()
        return events

    def optimizer_step(self) -> UpdateReport:
        """``optimizer.step()`` once, after backward has finished."""
        if self.watch is None:
            raise ScenarioError(f"scenario {self.scenario.name!r} has no optimizer to step")
        if not self.backward_done:
            raise StepperError("finish backward before the optimizer step (continue with c)")
        closure = self._closure() if isinstance(self.watch.optimizer, torch.optim.LBFGS) else None
        self.last_update = self.watch.step(closure)
        self.iteration += 1
        return self.last_update

    def train_iteration(self) -> IterationReport:
        """Forward, the whole backward, the checks and an optimizer step."""
        self.forward()
        self.run_backward()
        update = self.optimizer_step() if self.watch is not None else None
        return IterationReport(self.iteration, self.losses[-1], self.checks, update,
                               self.stepper.first_nonfinite)

    def close(self) -> None:
        """End a backward in progress (its thread exits)."""
        if self.stepper is not None and not self.stepper.done:
            self.stepper.abort()

    def _stepper(self) -> BackwardStepper:
        if self.stepper is None:
            self.forward()
        return self.stepper

    def _after_backward(self) -> None:
        if self.backward_done and not self.checks:
            self.checks = self.scenario.run_checks()

    def _zero_grad(self) -> None:
        if self.scenario.optimizer is not None:
            self.scenario.optimizer.zero_grad(set_to_none=True)
        for tensor in self.scenario.named_leaves().values():
            tensor.grad = None

    def _closure(self):
        """LBFGS re-evaluates the loss: plain forward and backward, as its docs ask."""

        def closure():
            self._zero_grad()
            roots, _ = self.scenario.run_forward()
            torch.autograd.backward(roots, grad_tensors=self.scenario.gradient)
            return torch.tensor(self.scenario.loss_value(roots))

        return closure
