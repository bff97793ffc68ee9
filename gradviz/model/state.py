"""SessionState: where a session stands, as one small state machine.

Two things are tracked apart because they change apart: the ``activity`` (what
is running now: loading, a forward pass, steps, continue, the optimizer,
training, an export, or nothing) and the ``phase`` of backward on the current
graph (none yet, paused at a node, finished, failed, aborted). Beside them: the
failure that is on screen until the user acts, whether the optimizer has already
stepped these gradients, and the keys that arrived while busy (steps queue,
continue coalesces, a second continue pauses).

Only the named transitions change it, each under one lock, so the engine's
thread and the UI thread can both call them; each change bumps ``version`` and
then, outside the lock, calls the listeners (the app posts itself a message and
redraws from :meth:`SessionState.view`).
``allowed(action)`` is what the app's ``check_action`` asks.

>>> state = SessionState()
>>> state.request(Action.STEP).reason
'no scenario is loaded: choose one (ctrl+p or the picker)'
>>> state.start_loading("autograd-basics"); state.loaded("autograd-basics", nodes=6)
>>> state.request(Action.STEP).verdict
<Verdict.START: 'start'>
>>> state.request(Action.STEP).verdict   # a key that arrives while busy waits its turn
<Verdict.QUEUED: 'queued'>
"""

from __future__ import annotations

import contextlib
import enum
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace


class Action(enum.Enum):
    """What a user can ask a session for."""

    LOAD = "load"
    FORWARD = "forward"
    FORWARD_STEP = "forward step"
    STEP = "step"
    CONTINUE = "continue"
    OPTIMIZER = "optimizer"
    TRAIN = "train"
    EXPORT = "export"
    STOP = "stop"


class Activity(enum.Enum):
    """What is running now; IDLE when the user has the next move."""

    IDLE = "idle"
    LOADING = "loading"
    FORWARD = "forward pass"
    FORWARD_STEPPING = "stepping the forward"
    STEPPING = "stepping"
    CONTINUING = "continuing"
    OPTIMIZER = "optimizer step"
    TRAINING = "training"
    EXPORTING = "exporting"


class Phase(enum.Enum):
    """Where backward stands on the graph shown."""

    NONE = "no graph"
    FORWARD = "forward paused"  # a forward stepped op by op waits before its next op
    PAUSED = "paused"  # the engine waits before ``pending`` (or has not started)
    FINISHED = "finished"
    FAILED = "failed"
    ABORTED = "aborted"


_RUNS = {Action.FORWARD: Activity.FORWARD, Action.FORWARD_STEP: Activity.FORWARD_STEPPING,
         Action.STEP: Activity.STEPPING,
         Action.CONTINUE: Activity.CONTINUING, Action.OPTIMIZER: Activity.OPTIMIZER,
         Action.TRAIN: Activity.TRAINING, Action.EXPORT: Activity.EXPORTING}


@dataclass(frozen=True)
class Failure:
    """An error the user must see: what failed, the one-line message, the node if any."""

    during: Activity
    message: str
    node: str | None = None
    hint: str = ""  # the way on, such as "f: a new forward pass"


class Verdict(str, enum.Enum):
    """The answer to a key (a ``str`` enum: it compares equal to its value)."""

    START = "start"  # start it now
    QUEUED = "queued"  # it runs after what is running (steps queue, continue coalesces)
    PAUSE = "pause"  # what runs pauses (continue pressed again)
    REFUSED = "refused"  # not now; the reason says why


@dataclass(frozen=True)
class Decision:
    """The answer to a key, with the reason when it is refused."""

    verdict: Verdict
    reason: str = ""


START, QUEUED, PAUSE, REFUSED = Verdict.START, Verdict.QUEUED, Verdict.PAUSE, Verdict.REFUSED


@dataclass(frozen=True)
class StateView:
    """A consistent copy of the state, for drawing and for tests."""

    scenario: str | None = None
    loading: str | None = None  # what is being loaded, while LOADING
    activity: Activity = Activity.IDLE
    phase: Phase = Phase.NONE
    pending: str | None = None
    done: int = 0
    nodes: int = 0
    iteration: int = 0  # optimizer steps taken
    forwards: int = 0  # forward passes made (one graph each)
    ops: int = 0  # operations run by the forward being stepped (phase FORWARD)
    can_forward: bool = False
    has_optimizer: bool = False
    applied: bool = False  # the optimizer has stepped the gradients of this backward
    failure: Failure | None = None
    queued_steps: int = 0
    continue_after: bool = False  # a continue pressed while stepping runs after the steps
    stopping: bool = False
    note: str = ""  # the latest one-line outcome ("stopped", "exported to ...")
    no_backward: str = ""  # why backward cannot run on this graph (shown, not steppable)
    version: int = 0

    @property
    def busy(self) -> bool:
        return self.activity is not Activity.IDLE

    @property
    def loaded(self) -> bool:
        return self.scenario is not None

    def allowed(self, action: Action) -> bool:
        """Would pressing ``action`` do something now (start, queue or pause)?"""
        return _decide(self, action).verdict != REFUSED

    def why_not(self, action: Action) -> str:
        return _decide(self, action).reason

    def available(self, action: Action) -> bool:
        """Is ``action`` possible in this phase, busy or not? (What a footer shows: keys
        that flicker grey for every step are noise, and a press while busy gets a reason.)"""
        return _decide(replace(self, activity=Activity.IDLE), action).verdict != REFUSED


def _decide(view: StateView, action: Action) -> Decision:
    """The rules, in one place: what each action needs, and what a busy session does with it."""
    activity = view.activity
    if action is Action.STOP:
        if view.busy or view.queued_steps or view.continue_after:
            return Decision(START)
        return Decision(REFUSED, "nothing is running")
    if action is Action.LOAD:
        return Decision(START)
    if activity is Activity.LOADING:
        return Decision(REFUSED, f"loading {view.loading}: esc stops")
    if not view.loaded:
        return Decision(REFUSED, "no scenario is loaded: choose one (ctrl+p or the picker)")
    if action is Action.FORWARD_STEP:
        if not view.can_forward:
            return Decision(REFUSED, "this session was given one graph: there is no forward "
                                     "to step")
        if activity is Activity.IDLE:
            return Decision(START)
        if activity is Activity.FORWARD_STEPPING:
            return Decision(QUEUED)
        return Decision(REFUSED, f"busy: {activity.value} (esc stops)")
    if view.phase is Phase.FORWARD and action is not Action.CONTINUE:
        if activity is not Activity.IDLE:
            return Decision(REFUSED, f"busy: {activity.value} (esc stops)")
        return Decision(REFUSED, "a forward is being stepped: s runs its next operation, "
                                 "c the rest, esc abandons it")
    if action in (Action.STEP, Action.CONTINUE):
        if view.phase is Phase.FORWARD:  # c: the rest of the forward, then backward waits
            if activity is Activity.IDLE:
                return Decision(START)
            if activity is Activity.FORWARD_STEPPING:
                return Decision(QUEUED)
            return Decision(REFUSED, f"busy: {activity.value} (esc stops)")
        if view.phase is not Phase.PAUSED:
            return Decision(REFUSED, _why_no_backward(view))
        if view.no_backward:
            return Decision(REFUSED, view.no_backward)
        if activity is Activity.IDLE:
            return Decision(START)
        if activity is Activity.STEPPING:
            return Decision(QUEUED)
        if activity is Activity.CONTINUING and action is Action.CONTINUE:
            return Decision(PAUSE)
        return Decision(REFUSED, f"busy: {activity.value} (esc stops)")
    if activity is not Activity.IDLE:
        return Decision(REFUSED, f"busy: {activity.value} (esc stops)")
    if action in (Action.FORWARD, Action.TRAIN) and not view.can_forward:
        return Decision(REFUSED, "this session was given one graph: it cannot make another "
                                 "forward pass")
    if action is Action.TRAIN and view.no_backward:
        return Decision(REFUSED, view.no_backward)
    if action is Action.OPTIMIZER:
        if not view.has_optimizer:
            return Decision(REFUSED, "this scenario has no optimizer")
        if view.applied:
            return Decision(REFUSED, "the optimizer has already stepped these gradients: "
                                     "f for a new forward pass")
        if view.phase is not Phase.FINISHED:
            return Decision(REFUSED, "finish backward first (c continues)")
    if action is Action.EXPORT and view.phase is Phase.NONE:
        return Decision(REFUSED, "no graph to export yet")
    return Decision(START)


def _why_no_backward(view: StateView) -> str:
    way_on = "f for a new forward pass" if view.can_forward else "no new forward in this session"
    if view.phase is Phase.FINISHED:
        return f"backward has finished: {way_on}"
    if view.phase is Phase.FAILED:
        return f"backward failed: {way_on}"
    if view.phase is Phase.ABORTED:
        return f"backward was stopped: {way_on}"
    return "no graph yet"


#: The phases in which a queued step (of backward, or of a forward) may still run.
_STEPPABLE = (Phase.PAUSED, Phase.FORWARD)


class InvalidTransition(RuntimeError):
    """A transition asked for in a state that does not allow it: a bug in the caller."""


class SessionState:
    """The state machine; see the module docstring. Every method is one transition."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._view = StateView()
        self._listeners: list[Callable[[StateView], None]] = []
        #: Set while ``stopping``: what a running forward checks between torch operations.
        self.stop_event = threading.Event()

    # ------------------------------------------------------------- reading
    def view(self) -> StateView:
        return self._view  # frozen: a consistent copy by construction

    def allowed(self, action: Action) -> bool:
        return self._view.allowed(action)

    def subscribe(self, listener: Callable[[StateView], None]) -> None:
        """Call ``listener(view)`` after every change, on the thread that made it."""
        self._listeners.append(listener)

    # ------------------------------------------------------------- keys
    def request(self, action: Action) -> Decision:
        """A key press: start it, queue it, pause, or refuse it (with the reason)."""
        with self._transition():
            view = self._view
            decision = _decide(view, action)
            if decision.verdict == QUEUED:
                if action in (Action.STEP, Action.FORWARD_STEP) and not view.continue_after:
                    self._set(queued_steps=view.queued_steps + 1)
                else:  # continue while stepping, or a step after a queued continue
                    self._set(continue_after=True)
            elif decision.verdict == PAUSE:
                self._set(stopping=True, note="pausing")
            elif decision.verdict == START and action is Action.STOP:
                self._set(stopping=True, queued_steps=0, continue_after=False, note="stopping")
            elif decision.verdict == START and action in _RUNS:
                self._begin(action)  # at once: a second key before the work starts must queue
            return decision

    def take_queued_step(self) -> bool:
        """The engine asks for the next queued step; False when none is left."""
        with self._transition():
            view = self._view
            if view.stopping or view.phase not in _STEPPABLE or not view.queued_steps:
                return False
            self._set(queued_steps=view.queued_steps - 1)
            return True

    def take_continue(self) -> bool:
        """After the queued steps, the engine asks whether a continue was pressed meanwhile."""
        with self._transition():
            view = self._view
            if view.stopping or view.phase not in _STEPPABLE or not view.continue_after:
                return False
            self._set(continue_after=False, activity=Activity.CONTINUING)
            return True

    @property
    def stop_requested(self) -> bool:
        return self._view.stopping

    # ------------------------------------------------------------- loading
    def start_loading(self, ref: str) -> None:
        with self._transition():
            self._set(activity=Activity.LOADING, loading=ref, failure=None, note="",
                      stopping=False)

    def loaded(self, name: str, *, nodes: int = 0, can_forward: bool = True,
               has_optimizer: bool = False, no_backward: str = "") -> None:
        """A scenario is built, with its first graph of ``nodes`` nodes (the engine waits
        before the first) or without one yet (``nodes=0``); ``no_backward`` says why that
        graph cannot be stepped, if it cannot."""
        with self._transition():
            self._expect(Activity.LOADING, "loaded")
            self._view = StateView(scenario=name, phase=Phase.PAUSED if nodes else Phase.NONE,
                                   nodes=nodes, forwards=1 if nodes else 0,
                                   can_forward=can_forward, has_optimizer=has_optimizer,
                                   no_backward=no_backward, version=self._view.version + 1)
            self.stop_event.clear()

    def loading_stage(self, stage: str) -> None:
        """What loading is doing now ("importing torch", "running build()", ...)."""
        with self._transition():
            self._expect(Activity.LOADING, "loading_stage")
            self._set(note=stage)

    def load_failed(self, failure: Failure) -> None:
        with self._transition():
            self._expect(Activity.LOADING, "load_failed")
            self._set(activity=Activity.IDLE, loading=None, failure=failure, stopping=False)

    # ------------------------------------------------------------- running
    def begin(self, action: Action) -> None:
        """Work for ``action`` starts without a key (``request`` begins what it starts)."""
        with self._transition():
            self._begin(action)

    def _begin(self, action: Action) -> None:
        if self._view.busy:
            raise InvalidTransition(f"begin({action.value}) while {self._view.activity.value}")
        failure = self._view.failure
        if failure is not None and self._view.phase is not Phase.FAILED:
            failure = None  # the user acted: a failure of the past leaves the screen
        self._set(activity=_RUNS[action], failure=failure, note="", stopping=False)

    def forward_started(self) -> None:
        """A forward stepped op by op begins: the graph shown is the one it builds."""
        with self._transition():
            self._set(phase=Phase.FORWARD, pending=None, done=0, nodes=0, ops=0,
                      applied=False, failure=None)

    def forward_progressed(self, *, ops: int, nodes: int) -> None:
        with self._transition():
            self._set(ops=ops, nodes=nodes)

    def forward_abandoned(self) -> None:
        """The stepped forward was stopped before its end: no graph now (f makes one)."""
        with self._transition():
            self._set(phase=Phase.NONE, pending=None, done=0, nodes=0, ops=0,
                      queued_steps=0, continue_after=False)

    def forward_made(self, nodes: int, *, no_backward: str = "") -> None:
        """A new graph: backward waits before its first node (or, with ``no_backward``,
        cannot run: the graph is shown); the optimizer has new work."""
        with self._transition():
            view = self._view
            self._set(phase=Phase.PAUSED, pending=None, done=0, nodes=nodes, ops=0,
                      forwards=view.forwards + 1, applied=False, failure=None,
                      no_backward=no_backward)

    def progressed(self, *, done: int, pending: str | None, finished: bool) -> None:
        """Nodes ran: ``done`` in all, the engine waits before ``pending`` or has finished."""
        with self._transition():
            phase = Phase.FINISHED if finished else self._view.phase
            self._set(done=done, pending=None if finished else pending, phase=phase,
                      queued_steps=0 if finished else self._view.queued_steps,
                      continue_after=False if finished else self._view.continue_after)

    def backward_failed(self, failure: Failure, *, done: int) -> None:
        with self._transition():
            self._set(phase=Phase.FAILED, pending=None, done=done, failure=failure,
                      queued_steps=0, continue_after=False)

    def backward_aborted(self) -> None:
        with self._transition():
            self._set(phase=Phase.ABORTED, pending=None, queued_steps=0, continue_after=False)

    def optimizer_stepped(self, iteration: int) -> None:
        with self._transition():
            self._set(applied=True, iteration=iteration)

    def finished(self, note: str = "") -> None:
        """The running work is over (done, paused or stopped); the user has the next move."""
        with self._transition():
            view = self._view
            if view.stopping and not note:
                note = "paused" if view.activity is Activity.CONTINUING else "stopped"
            self._set(activity=Activity.IDLE, stopping=False, note=note, loading=None)

    def failed(self, failure: Failure) -> None:
        """The running work raised; what was shown before stays (a failed forward keeps the
        old graph). Backward failures go through :meth:`backward_failed` first."""
        with self._transition():
            self._set(activity=Activity.IDLE, failure=failure, stopping=False, loading=None,
                      queued_steps=0, continue_after=False)

    def dismiss_failure(self) -> None:
        with self._transition():
            if self._view.phase is not Phase.FAILED:
                self._set(failure=None)

    # ------------------------------------------------------------- internals
    def _expect(self, activity: Activity, transition: str) -> None:
        if self._view.activity is not activity:
            raise InvalidTransition(f"{transition} while {self._view.activity.value}")

    @contextlib.contextmanager
    def _transition(self) -> Iterator[None]:
        """One transition: changes under the lock, listeners told after it is released
        (a listener that waits on another thread must not hold it)."""
        with self._lock:
            before = self._view.version
            yield
            after = self._view
        if after.version != before:
            for listener in self._listeners:
                listener(after)

    def _set(self, **changes) -> None:
        """Apply ``changes``; a transition that changes nothing is no change (no new
        version, no listener called)."""
        if all(getattr(self._view, name) == value for name, value in changes.items()):
            return
        self._view = replace(self._view, **changes, version=self._view.version + 1)
        if "stopping" in changes:
            if changes["stopping"]:
                self.stop_event.set()
            else:
                self.stop_event.clear()
