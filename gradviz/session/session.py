"""Session: a scenario trained one iteration at a time, each part visible.

An iteration is: a forward pass under :func:`gradviz.record` (interruptible
between torch operations), the graph, a :class:`BackwardStepper` (stepped node
by node, or run in short chunks so a screen can keep up), the scenario's checks
once backward has finished, and an :class:`OptimizerWatch` step. Where it stands
lives in ``session.state`` (:class:`~gradviz.model.state.SessionState`):
the operations here make its transitions; the app only reads it.

Errors come out as :class:`~gradviz.GradvizError` with one line that names the
scenario and the node; the user's own exception is the ``__cause__``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import networkx as nx
import torch

from gradviz.engine.backward import BackwardStepper
from gradviz.engine.events import StepEvent
from gradviz.engine.interrupt import Interrupted, interruptible
from gradviz.engine.lifecycle import StepperError
from gradviz.errors import GradvizError, GraphError, ScenarioError, one_line
from gradviz.graph.walk import root_nodes
from gradviz.model.node_facts import FREED
from gradviz.model.progress import BackwardProgress, ProgressDelta
from gradviz.model.state import Action, Activity, Failure, SessionState
from gradviz.model.views import CheckResult, ForwardStep, ParamRow, ParamView
from gradviz.session.optimizer_step import OptimizerWatch, UpdateReport
from gradviz.session.progress import forward_step, read_runs, report
from gradviz.session.scenario import Scenario, load_scenario

#: Called with each :class:`ProgressDelta` of backward, each :class:`ForwardStep` of a
#: stepped forward, or the list of them of a forward's rest.
Report = Callable[[object], None]

#: A forward's "run the rest" reports at most this many of its operations (the latest).
FORWARD_LOG_LIMIT = 5000

#: Raised while this thread waits on the engine, not by backward: passed on as they are.
_NOT_BACKWARD_ERRORS = (KeyboardInterrupt, Interrupted)


class BackwardError(GradvizError):
    """Backward raised: the user's exception (its ``__cause__``) and the node it came from."""

    def __init__(self, message: str, node: str | None = None):
        super().__init__(message)
        self.node = node


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

    def __init__(self, scenario: Scenario, *, state: SessionState | None = None,
                 history_bytes: int | None = None):
        self.scenario = scenario
        self.state = state if state is not None else SessionState()
        self.history_bytes = history_bytes
        optimizer = scenario.optimizer
        self.watch = (
            OptimizerWatch(optimizer, model=scenario.model, names=scenario.params)
            if optimizer is not None else None
        )
        self.leaves = scenario.named_leaves()
        self.iteration = 0  # optimizer steps taken
        self.losses: list[float] = []
        self.stepper: BackwardStepper | None = None
        #: What the current graph's backward has done, as the screen shows it.
        self.progress = BackwardProgress()
        self._events: dict[str, StepEvent] = {}  # node -> its latest run, for read_nodes
        self._param_rows = [ParamRow(name, tuple(tensor.shape), not tensor.requires_grad)
                            for name, tensor in self.leaves.items()]
        #: The forward being stepped op by op (``s``), until it has made its graph.
        self.forward_stepper = None
        #: What the last stepped forward saw, for why_no_grad (None after a plain one).
        self.recording = None
        self.checks: list[CheckResult] = []
        self.last_update: UpdateReport | None = None
        #: Why backward cannot run on the current graph ("" when it can): a root that
        #: is not a scalar, without a gradient. The graph is still shown.
        self.no_backward = ""
        #: Called with this session each time a forward made a new graph (before its
        #: backward runs), on the thread that made it: a screen lays the graph out here.
        self.on_new_graph: Callable[[Session], None] | None = None
        if self.state.view().activity is not Activity.LOADING:  # not inside load()
            self.state.start_loading(scenario.name)
            self._loaded()

    # ------------------------------------------------------------ making one
    @classmethod
    def load(cls, ref: str, *, weights: str | None = None,
             state: SessionState | None = None) -> Session:
        """Build a scenario (a demo name or a file) and make its first graph.

        On failure the state says why (``load_failed``) and the error is raised.
        """
        state = state if state is not None else SessionState()
        if state.view().activity is not Activity.LOADING:
            state.start_loading(ref)
        try:
            state.loading_stage("running the scenario's build()")
            with interruptible(state.stop_event):
                scenario = load_scenario(ref, weights=weights)
            session = cls(scenario, state=state)
            state.loading_stage("the first forward pass")
            session.forward()
        except Interrupted:
            state.finished("stopped loading")
            raise
        except BaseException as error:
            state.load_failed(_failure(Activity.LOADING, error))
            raise
        session._loaded()
        return session

    @classmethod
    def for_roots(cls, roots, *, model=None, params=None, optimizer=None, gradient=None,
                  modules=None, name: str = "show") -> Session:
        """A session on a graph that already exists: step its backward, then the optimizer."""
        root_nodes(roots)  # a one-line GraphError for anything that is not a graph
        roots = [roots] if isinstance(roots, torch.Tensor) else list(roots)
        scenario = Scenario(name=name, forward=_no_forward, model=model, params=params or {},
                            optimizer=optimizer, gradient=gradient,
                            description="a graph handed to gradviz.show()")
        session = cls(scenario)
        stepper = session._new_stepper(roots, modules)
        if _already_backwarded(stepper.graph):
            raise GraphError(
                "this graph was already backwarded (its saved tensors are freed): call "
                "gradviz.show(loss) before loss.backward(), or backward with retain_graph=True")
        session._adopt(stepper, roots)
        session.state.start_loading(name)
        session._loaded()
        return session

    # ------------------------------------------------------------ reading
    @property
    def graph(self) -> nx.DiGraph | None:
        return None if self.stepper is None else self.stepper.graph

    @property
    def can_forward(self) -> bool:
        """False for a session made from one graph (``gradviz.show``): no new forward."""
        return self.scenario.forward is not _no_forward

    @property
    def backward_done(self) -> bool:
        return self.stepper is not None and self.stepper.finished

    def param_rows(self) -> list[ParamRow]:
        """The parameters and named leaves, in the model's order, as the table lists them
        (read from the tensors when the session was made)."""
        return list(self._param_rows)

    def optimizer_title(self) -> str:
        """"SGD lr=0.01 momentum=0.9", or "" without an optimizer."""
        if self.watch is None:
            return ""
        group = self.watch.optimizer.param_groups[0]
        shown = [f"{key}={group[key]}" for key in ("lr", "momentum", "betas", "weight_decay",
                                                     "nesterov")
                 if group.get(key) not in (None, 0, False)]
        return " ".join([type(self.watch.optimizer).__name__, *shown])

    @property
    def expected_checks(self) -> list[str]:
        return list(self.scenario.checks)

    def describe_param(self, name: str) -> ParamView | None:
        """What the parameter or input ``name`` is, its ``.grad``, and without one, why
        (reads tensors: the engine's thread)."""
        from gradviz.engine.summary import summarize

        tensor = self.leaves.get(name)
        if tensor is None:
            return None
        view = ParamView(name, tuple(tensor.shape), tensor.requires_grad,
                         None if tensor.grad is None else summarize(tensor.grad))
        if tensor.grad is not None:
            return view
        try:
            return replace(view, why_no_grad=self.why_no_grad(name).message)
        except Exception as error:  # an answer we could not give: say so
            return replace(view, unknown=one_line(error))

    def read_nodes(self, keys) -> frozenset[str]:
        """Read the summaries of nodes that ran in a big slice (in sight, or inspected)
        into :attr:`progress`; the keys read."""
        events = [self._events[key] for key in keys if key in self._events]
        return read_runs(events, self.progress)

    # ------------------------------------------------------------ operations
    def forward(self) -> BackwardStepper:
        """A fresh forward pass and a stepper paused before its backward.

        The old graph is given up only once the new one exists: a forward that
        raises (or is stopped) leaves the session as it was.
        """
        if not self.can_forward:
            _no_forward()
        with interruptible(self.state.stop_event):
            roots, modules = self.scenario.run_forward()
        stepper = self._new_stepper(roots, modules)
        self.close()
        self._zero_grad()
        self.recording = None
        self._adopt(stepper, roots)
        return stepper

    # ------------------------------------------------------------ the forward, op by op
    def forward_step(self) -> ForwardStep | None:
        """Run one operation of a new forward (started at the first call); None once the
        forward has ended and made its graph (backward then waits before its first node).

        The old graph is given up when the stepped forward starts: the screen shows
        the one being built. A forward that raises is abandoned (phase NONE).
        """
        from gradviz.engine.forward import ForwardStepper

        if self.forward_stepper is None:
            if not self.can_forward:
                _no_forward()
            self.close()
            self.stepper = None  # the screen shows the graph being built, not the old one
            self._zero_grad()
            scenario = self.scenario
            self.forward_stepper = ForwardStepper(scenario.forward, model=scenario.model,
                                                  params=dict(scenario.params))
            self.state.forward_started()
        stepper = self.forward_stepper
        event = self._advance_forward(stepper.step)
        if event is None:
            self._finish_forward()
            return None
        partial = stepper.partial_graph()
        step = forward_step(event, partial)
        self.state.forward_progressed(ops=event.index + 1, nodes=partial.number_of_nodes())
        return step

    def finish_forward(self, report: Report | None = None) -> None:
        """Run the rest of the stepped forward and make its graph; ``report`` gets each
        operation it ran (the last ``FORWARD_LOG_LIMIT``), not summarized."""
        events = self._advance_forward(self.forward_stepper.run)
        if report is not None and events:  # one report for the lot: a screen adds them at once
            report([forward_step(event, None, summarize=False)
                    for event in events[-FORWARD_LOG_LIMIT:]])
        self._finish_forward()

    def abandon_forward(self) -> None:
        """Stop the stepped forward where it is (esc): no graph until the next forward."""
        if self.forward_stepper is not None:
            self._abandon_forward()

    def why_no_grad(self, name: str):
        """Why the parameter or input ``name`` has no gradient, from what the forward did.

        A forward stepped op by op (``s``) was recorded and gets the whole answer (a
        detach, no_grad, an op without a derivative, with its line); after a plain
        forward, what the tensor and the graph tell.
        """
        from gradviz.engine.why_no_grad import (
            NoGradExplanation,
            NoGradReason,
            why_no_grad,
        )

        if self.recording is not None:
            return why_no_grad(self.recording, name)
        tensor = self.leaves.get(name)
        if tensor is None:
            raise ScenarioError(f"no parameter or input named {name!r} in "
                                f"scenario {self.scenario.name!r}")
        if not tensor.requires_grad:
            reason, message = NoGradReason.REQUIRES_GRAD_FALSE, f"{name}: requires_grad=False"
        elif self.graph is not None and any(
                name in attrs.get("names", ()) for _, attrs in self.graph.nodes(data=True)):
            reason, message = NoGradReason.HAS_PATH, f"{name}: {NoGradReason.HAS_PATH.value}"
        else:
            reason = NoGradReason.UNKNOWN
            message = (f"{name}: not in this graph; step a forward with s to see which "
                       "operation left it out (never used, no_grad, a detach, ...)")
        return NoGradExplanation(name, reason, message, None)

    def _advance_forward(self, advance: Callable[[], object]) -> object:
        """``advance()`` the stepped forward; an exception from the user's forward abandons
        it and comes out as one line that names the scenario."""
        try:
            return advance()
        except _NOT_BACKWARD_ERRORS:
            raise
        except BaseException as error:
            self._abandon_forward()
            raise ScenarioError(f"scenario {self.scenario.name!r}: forward() raised "
                                f"{one_line(error)}") from error

    def _finish_forward(self) -> None:
        stepper = self.forward_stepper
        roots = stepper.roots
        backward = BackwardStepper(roots, gradient=self._gradient(roots), graph=stepper.graph,
                                   model=self.scenario.model, params=dict(self.scenario.params),
                                   history_bytes=self.history_bytes)
        self.forward_stepper = None
        self.recording = stepper
        self._adopt(backward, roots)

    def _abandon_forward(self) -> None:
        self.forward_stepper.abort(wait=False)
        self.forward_stepper = None
        self.state.forward_abandoned()

    def step(self) -> ProgressDelta:
        """Run one backward node (after a forward pass if none was made)."""
        stepper = self._stepper()
        if stepper.done:
            return report(stepper, [], self.leaves, self.progress)
        try:
            event = stepper.step()
        except _NOT_BACKWARD_ERRORS:
            raise
        except BaseException as error:
            raise self._backward_failed(error) from error
        return self._report([] if event is None else [event])

    def run_backward(self, report: Report | None = None, *, chunk_seconds: float = 1 / 30,
                     animate_seconds: float = 0.0) -> ProgressDelta | None:
        """Backward to the end, or until the state says stop (then paused at the next node).

        It runs in chunks of ``chunk_seconds`` and hands each chunk's
        :class:`ProgressDelta` to ``report``. ``animate_seconds`` > 0 spreads a small
        graph's nodes over that long, in even chunks, so that the flow can be
        watched; the engine itself never waits per node.
        """
        stepper = self._stepper()
        per_chunk = None
        if animate_seconds > 0:
            left = max(len(stepper) - len(stepper.executed), 1)
            per_chunk = max(1, -(-left // max(1, int(animate_seconds / chunk_seconds))))
        progress = None
        while not stepper.done and not self.state.stop_requested:
            started = time.perf_counter()
            try:
                if per_chunk is None:  # the engine at full speed, handing back every chunk
                    events = stepper.run(seconds=chunk_seconds)
                else:
                    events = stepper.run_until(_counted(per_chunk))
            except _NOT_BACKWARD_ERRORS:
                raise
            except BaseException as error:
                raise self._backward_failed(error) from error
            # reading gradients for the screen takes at most a third of the engine's time
            progress = self._report(events, summary_seconds=chunk_seconds / 3)
            if report is not None:
                report(progress)
            if per_chunk is not None and not stepper.done:
                time.sleep(max(0.0, chunk_seconds - (time.perf_counter() - started)))
        return progress

    def optimizer_step(self) -> UpdateReport:
        """``optimizer.step()`` once, after backward has finished, once per backward."""
        if self.watch is None:
            raise ScenarioError(f"scenario {self.scenario.name!r} has no optimizer to step")
        if not self.backward_done:
            raise StepperError("finish backward before the optimizer step (continue with c)")
        if self.state.view().applied:
            raise StepperError("the optimizer has already stepped these gradients: "
                               "make a new forward pass first")
        closure = self._closure() if isinstance(self.watch.optimizer, torch.optim.LBFGS) else None
        try:
            self.last_update = self.watch.step(closure)
        except Exception as error:
            raise ScenarioError(f"scenario {self.scenario.name!r}: optimizer.step() raised "
                                f"{one_line(error)}") from error
        self.iteration += 1
        self.state.optimizer_stepped(self.iteration)
        return self.last_update

    def train_iteration(self, report: Report | None = None,
                        **options) -> IterationReport | None:
        """Forward, the whole backward, the checks and an optimizer step.

        None if the state asked to stop before the end (backward is then paused).
        ``options`` go to :meth:`run_backward`.
        """
        self.forward()
        self.run_backward(report, **options)
        if not self.backward_done:
            return None
        update = self.optimizer_step() if self.watch is not None else None
        return IterationReport(self.iteration, self.losses[-1], self.checks, update,
                               self.stepper.first_nonfinite)

    def export(self, folder: Path) -> Path:
        """Write the graph as DOT into ``folder``, named after the scenario and iteration."""
        from gradviz.graph.export import to_dot

        path = Path(folder) / f"{self.scenario.name}-{self.iteration}.dot"
        to_dot(self.graph, path)
        return path

    def perform(self, action: Action, report: Report | None = None, *,
                deliver: Callable[[object], None] | None = None, **options) -> object:
        """Run ``action`` (already started by ``state.request``) to its end, on this thread.

        Ends the state's activity in every case: finished, stopped, or failed with
        the error on record (and then returned, not raised: the caller shows it).
        ``deliver(result)`` is called before the state says the work is over, so
        whoever shows the result has it by then.
        """
        try:
            if action is Action.STEP:
                result = self._steps(report, **options)
            elif action is Action.CONTINUE and self.forward_stepper is not None:
                self.finish_forward(report)  # c while a forward is stepped: the rest of it
                result = None
            elif action is Action.CONTINUE:
                result = self.run_backward(report, **options)
            elif action is Action.FORWARD:
                result = self.forward()
            elif action is Action.FORWARD_STEP:
                result = self._forward_steps(report)
            elif action is Action.OPTIMIZER:
                result = self.optimizer_step()
            elif action is Action.TRAIN:
                result = self.train_iteration(report, **options)
            elif action is Action.EXPORT:
                result = self.export(options.get("folder", "."))
            else:
                raise ValueError(f"perform() cannot run {action}")
        except Interrupted:
            self.state.finished("stopped")
            return None
        except Exception as error:
            self.state.failed(_failure(self.state.view().activity, error))
            return error
        except BaseException as error:  # KeyboardInterrupt, SystemExit: recorded, then on
            self.state.failed(_failure(self.state.view().activity, error))
            raise
        if deliver is not None:
            deliver(result)
        self.state.finished(_note(action, result, self.scenario))
        return result

    @staticmethod
    def warm_up() -> None:
        """Run one tiny backward, so that the first step the user asks for is quick: a
        process's first backward with a gradient given imports what torch checks it
        with (symbolic shapes, sympy: about half a second here), and that was the first
        ``n``'s wait. Through ``autograd.grad``: it touches no ``.grad``, and a
        ``gradviz.watch`` (which follows ``backward``) does not count it."""
        leaf = torch.zeros(1, requires_grad=True)
        out = leaf * 1.0
        torch.autograd.grad(out, leaf, grad_outputs=torch.ones_like(out))

    def detach(self) -> None:
        """Give this session a state of its own: another session now owns the shared one."""
        self.state = SessionState()
        self.on_new_graph = None

    def close(self, *, wait: float = 5.0) -> None:
        """End a forward stepped or a backward in progress (their threads exit).

        Waits up to ``wait`` seconds for a stepped forward's thread, which ends at its
        next torch operation: a process must not exit while it is inside torch.
        """
        if self.forward_stepper is not None:
            self.forward_stepper.abort(wait=False)
            self.forward_stepper.join(wait)
            self.forward_stepper = None
        if self.stepper is not None and not self.stepper.done:
            self.stepper.abort()
            self.progress.stop()
            self.state.backward_aborted()

    # ------------------------------------------------------------ internals
    def _steps(self, report: Report | None, **options) -> ProgressDelta:
        """One step, then the steps queued meanwhile, then a continue pressed meanwhile."""
        progress = self.step()
        if report is not None:
            report(progress)
        while self.state.take_queued_step():
            progress = self.step()
            if report is not None:
                report(progress)
        if self.state.take_continue():
            progress = self.run_backward(report, **options) or progress
        return progress

    def _forward_steps(self, report) -> ForwardStep | None:
        """One forward step, then those queued meanwhile, then a continue pressed meanwhile."""
        step = self.forward_step()
        if step is not None and report is not None:
            report(step)
        while step is not None and self.state.take_queued_step():
            step = self.forward_step()
            if step is not None and report is not None:
                report(step)
        if step is not None and self.state.take_continue():
            self.finish_forward(report)
        return step

    def _stepper(self) -> BackwardStepper:
        if self.stepper is None:
            self.forward()
        return self.stepper

    def _gradient(self, roots: list[torch.Tensor]):
        """The scenario's gradient for ``roots``. A root that is not a scalar and has none
        gets ones, so that its graph can be walked and shown (as ``gradviz export`` draws
        it), and backward is refused with the reason (:attr:`no_backward`): the ones are
        never run."""
        scenario = self.scenario
        self.no_backward = ""
        if scenario.gradient is not None:
            return scenario.gradient
        vectors = [root for root in roots if root.numel() != 1]
        if not vectors:
            return None
        shape = tuple(vectors[0].shape)
        which = "the root" if len(roots) == 1 else "a root"
        self.no_backward = (f"{which} is not a scalar (shape {shape}): backward needs a "
                            "gradient of its shape, as Q.backward(gradient=...) does: give "
                            "Scenario(gradient=...) or gradviz.show(Q, gradient=...)")
        return [torch.ones_like(root) if root.numel() != 1 else None for root in roots]

    def _new_stepper(self, roots: list[torch.Tensor], modules) -> BackwardStepper:
        scenario = self.scenario
        return BackwardStepper(roots, gradient=self._gradient(roots), model=scenario.model,
                               params=dict(scenario.params), modules=modules,
                               history_bytes=self.history_bytes)

    def _adopt(self, stepper: BackwardStepper, roots: list[torch.Tensor]) -> None:
        loss = self.scenario.loss_value(roots)
        self.stepper = stepper
        self.progress = BackwardProgress(stepper.graph)
        self._events = {}
        report(stepper, [], self.leaves, self.progress)  # where it waits, before any node
        self.losses.append(loss)
        self.checks = []
        self.state.forward_made(len(stepper), no_backward=self.no_backward)
        if self.on_new_graph is not None:
            self.on_new_graph(self)

    def _loaded(self) -> None:
        self.state.loaded(self.scenario.name, nodes=len(self.stepper) if self.stepper else 0,
                          can_forward=self.can_forward, has_optimizer=self.watch is not None,
                          no_backward=self.no_backward)

    def _report(self, events: list[StepEvent], summary_seconds: float | None = None
                ) -> ProgressDelta:
        stepper = self.stepper
        for event in events:
            self._events[event.node] = event
        progress = report(stepper, events, self.leaves, self.progress, seconds=summary_seconds)
        if stepper.error is not None:  # raised between nodes, after the last event returned
            raise self._backward_failed(stepper.error) from stepper.error
        if stepper.finished and not self.checks:
            self.checks = self.scenario.run_checks()
        self.state.progressed(done=stepper.ended, pending=progress.pending,
                              finished=progress.finished)
        return progress

    def _backward_failed(self, error: BaseException) -> BaseException:
        """Record a failed backward in the state; the error to raise (the user's, explained)."""
        if isinstance(error, StepperError):
            return error
        node = getattr(error, "gradviz_node", None)
        if node is None and self.stepper is not None:
            node = getattr(self.stepper, "error_node", None)
        where = ""
        if node is not None:
            attrs = self.stepper.graph.nodes[node]
            module = attrs.get("module")
            where = f" at {node}" + (f" (module {module})" if module else "")
        failure = BackwardError(f"backward failed{where}: {one_line(error)}", node)
        self.progress.fail_at(node)
        done = len(self.stepper.executed) if self.stepper is not None else 0
        self.state.backward_failed(_failure(Activity.STEPPING, failure), done=done)
        return failure

    def _zero_grad(self) -> None:
        if self.scenario.optimizer is not None:
            self.scenario.optimizer.zero_grad(set_to_none=True)
        for tensor in self.leaves.values():
            tensor.grad = None

    def _closure(self):
        """LBFGS re-evaluates the loss: plain forward and backward, as its docs ask."""

        def closure():
            self._zero_grad()
            roots, _ = self.scenario.run_forward()
            torch.autograd.backward(roots, grad_tensors=self.scenario.gradient)
            return torch.tensor(self.scenario.loss_value(roots))

        return closure


def _counted(count: int) -> Callable[[StepEvent], bool]:
    """Stop after ``count`` nodes (an animation's even chunks)."""
    ran = [0]

    def enough(event: StepEvent) -> bool:
        ran[0] += 1
        return ran[0] >= count

    return enough


def _already_backwarded(graph: nx.DiGraph) -> bool:
    return any(attrs.get("saved") == FREED for _, attrs in graph.nodes(data=True))


def _failure(during: Activity, error: BaseException) -> Failure:
    hint = "f: a new forward pass, ctrl+p: another scenario"
    if during is Activity.LOADING:
        hint = "the picker (p) or ctrl+p: another scenario"
    message = str(error) if isinstance(error, GradvizError) else one_line(error)
    return Failure(during, message.strip().splitlines()[0] if message.strip() else
                   type(error).__name__, getattr(error, "node", None), hint)


def _note(action: Action, result: object, scenario: Scenario) -> str:
    if action is Action.EXPORT:
        return f"exported the graph to {result}"
    if action is Action.OPTIMIZER and isinstance(result, UpdateReport):
        return (f"{result.optimizer}: {len(result.updated)} of {len(result.params)} "
                "parameters updated")
    if action is Action.TRAIN and isinstance(result, IterationReport):
        if result.update is None:
            return "forward and backward ran; no optimizer step: the scenario has no optimizer"
        if scenario.train_note:
            return f"loss {result.loss:.6g} before this step: {scenario.train_note}"
    return ""
