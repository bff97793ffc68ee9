"""ForwardStepper: a forward pass paused between tensor operations, autograd building its graph.

``fn(*args, **kwargs)`` runs on a worker thread under a :class:`ForwardRecording`
(a ``TorchFunctionMode`` pushed on that thread: modes are per thread, so only the
worker's operations are seen). After each operation returns, with its node
recorded (or not, and why), the worker waits until :meth:`ForwardStepper.step`
lets it go on. Nothing is replayed: the operations, the values and the graph are
the forward's own, and the graph it leaves is ``build_graph`` of what ``fn``
returned, key for key, so a :class:`gradviz.BackwardStepper` continues on it.

>>> with ForwardStepper(model, data, model=model) as stepper:   # doctest: +SKIP
...     event = stepper.step()       # conv2d ran, ConvolutionBackward0 recorded; paused
...     event.module, event.source, event.output.mean
...     stepper.run()                # the rest of the forward
...     stepper.graph                # build_graph(stepper.result, ...); events get keys

Node identity during the run: ``event.seq`` (the node's autograd sequence number,
the ``seq`` attribute of graph nodes, also in :meth:`partial_graph`); after it:
``event.key``, filled when :attr:`graph` is first read.

The worker copies the caller's grad mode, inference mode and current CUDA device
(all per thread); autocast and other thread-local state start at their defaults.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

import networkx as nx
import torch

from gradviz.engine.forward_events import ForwardAborted, ForwardEvent
from gradviz.engine.forward_ops import ForwardRecording, roots_of
from gradviz.engine.lifecycle import PassEnd, StepperError, StepperState
from gradviz.runtime.deep_graphs import WORKER_STACK_BYTES
from gradviz.runtime.quiet_gc import frozen_heap

_POLL = 0.05  # seconds between checks that the worker is still alive


class ForwardStepper:
    """Step through ``fn(*args, **kwargs)`` one tensor operation at a time.

    ``model`` names modules and parameters, ``params`` other leaves (as in
    :func:`gradviz.build_graph`); both are the stepper's own keywords, every other
    keyword goes to ``fn`` (wrap ``fn`` in ``functools.partial`` to pass ``fn`` a
    ``model=``).
    """

    def __init__(self, fn: Callable[..., Any], *args: Any,
                 model: torch.nn.Module | None = None,
                 params: Mapping[str, torch.Tensor] | None = None, **kwargs: Any):
        if not callable(fn):
            raise TypeError(f"ForwardStepper needs a callable, got {type(fn).__name__}")
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self.recording = ForwardRecording(model, params)
        self.recording.name_inputs(args, kwargs)
        self.recording.on_event = self._on_event
        self._grad_enabled = torch.is_grad_enabled()
        self._inference = torch.is_inference_mode_enabled()
        self._cuda_device = torch.cuda.current_device() if torch.cuda.is_initialized() else None
        self._cond = threading.Condition()
        self._state = StepperState.NEW
        self._paused = False
        self._go = False  # the caller lets the paused worker go on
        self._free_run = False
        self._pauses = 0  # how often the worker has paused
        self._delivered = 0  # events handed out by step() and run()
        self._stop_when: Callable[[ForwardEvent], bool] | None = None
        self._end = PassEnd("the forward", "a new one", "this forward was aborted")
        self._result: Any = None
        self._error: BaseException | None = None
        self._graph: nx.DiGraph | None = None
        self._worker: threading.Thread | None = None

    # ----------------------------------------------------------------- state
    @property
    def model(self) -> torch.nn.Module | None:
        return self.recording.model

    @property
    def events(self) -> list[ForwardEvent]:
        with self._cond:
            return list(self.recording.events)

    @property
    def modules(self) -> dict[int, str]:
        """Node sequence number -> module path, as :func:`gradviz.record` gives."""
        return self.recording.modules

    @property
    def done(self) -> bool:
        """The forward is over: finished, failed or aborted."""
        return self._state.over

    @property
    def finished(self) -> bool:
        return self._state is StepperState.FINISHED

    @property
    def aborted(self) -> bool:
        return self._state is StepperState.ABORTED

    @property
    def error(self) -> BaseException | None:
        """The exception ``fn`` raised, if it failed."""
        return self._error

    @property
    def paused(self) -> bool:
        """The worker waits after an operation (the last event) for step() or run()."""
        with self._cond:
            return self._paused

    @property
    def result(self) -> Any:
        """What ``fn`` returned."""
        if self._state is not StepperState.FINISHED:
            raise StepperError(f"the forward has not finished ({self._state.value}): "
                               "run() it first")
        return self._result

    @property
    def graph(self) -> nx.DiGraph:
        """``build_graph(result, model=..., params=..., modules=self.modules)``, built once;
        every event's ``key`` / ``keys`` are filled from it."""
        if self._graph is None:
            self._graph = self.recording.graph(roots_of(self.result))
        return self._graph

    @property
    def roots(self) -> list[torch.Tensor]:
        """The tensors of :attr:`result` that have a graph: what backward starts from."""
        return roots_of(self.result)

    def partial_graph(self) -> nx.DiGraph:
        """The graph recorded so far (see :meth:`ForwardRecording.partial_graph`)."""
        with self._cond:
            if self._state is StepperState.RUNNING and not self._paused:
                raise StepperError("the forward is running: read the partial graph while paused")
            return self.recording.partial_graph()

    def why_no_grad(self, name: str | torch.Tensor):
        """Why the parameter or input ``name`` gets no gradient from this forward's result."""
        from gradviz.engine.why_no_grad import why_no_grad

        return why_no_grad(self, name)

    # --------------------------------------------------------------- driving
    def step(self) -> ForwardEvent | None:
        """Run one tensor operation and return its event; None once the forward has ended."""
        return self._advance(None, single=True)

    def run(self) -> list[ForwardEvent]:
        """Run the rest of the forward; the events it ran."""
        return self._advance(None, single=False)

    def run_until(self, stop_when: Callable[[ForwardEvent], bool]) -> list[ForwardEvent]:
        """Run until an event for which ``stop_when(event)`` is true (it is the last returned)."""
        return self._advance(stop_when, single=False)

    def abort(self, *, wait: bool = True) -> None:
        """End the forward at its next torch operation (ForwardAborted raised inside ``fn``).

        ``wait=False`` returns at once (from a UI thread, say, while one long operation
        finishes); :attr:`done` turns true when the worker has ended. Idempotent.
        """
        with self._cond:
            if self._state is StepperState.NEW:
                self._state = StepperState.ABORTED
                return
            if self._state is not StepperState.RUNNING:
                return
            self.recording._abort = True
            self._go = True
            self._cond.notify_all()
        if wait:
            self._join()

    def __enter__(self) -> ForwardStepper:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()

    # ------------------------------------------------------------- internals
    def _advance(self, stop_when, *, single: bool):
        # Under the lock from before the worker starts: it needs the lock to pause,
        # so no pause can slip by between reading the count and waiting for it.
        with self._cond:
            events = self.recording.events
            need_more = not single or self._delivered == len(events)
            if need_more and self._state in (StepperState.NEW, StepperState.RUNNING):
                self._free_run = not single
                self._stop_when = stop_when
                pauses = self._pauses
                self._start()
                if self._paused:
                    self._go = True
                    self._cond.notify_all()
                try:
                    # A free run allocates a few objects per op: keep GC passes off the
                    # heap that was there before (gc.freeze), as BackwardStepper.run does.
                    with frozen_heap() if not single else contextlib.nullcontext():
                        self._wait(lambda: self._pauses > pauses
                                   or self._state is not StepperState.RUNNING)
                finally:
                    self._free_run = False
                    self._stop_when = None
            elif self._state is StepperState.ABORTED:
                raise StepperError("this forward was aborted: start a new one to step again")
            if self._state is StepperState.FAILED and self._delivered == len(events):
                self._raise_failure()
            if single:
                if self._delivered < len(events):
                    self._delivered += 1
                    return events[self._delivered - 1]
                self._at_end()
                return None
            ran = events[self._delivered:]
            self._delivered = len(events)
            if self._state is StepperState.FAILED:
                self._raise_failure()
            if self.done and not ran:
                self._at_end()
            elif self._state is StepperState.FINISHED:
                self._end.told = True
            return ran

    def _start(self) -> None:
        with self._cond:
            if self._state is StepperState.ABORTED:
                raise StepperError("this forward was aborted: start a new one to step again")
            if self._state is not StepperState.NEW:
                return
            self._state = StepperState.RUNNING
        previous = threading.stack_size()
        threading.stack_size(WORKER_STACK_BYTES)  # the worker may free a deep graph
        try:
            self._worker = threading.Thread(target=self._forward, name="gradviz-forward",
                                            daemon=True)
            self._worker.start()
        finally:
            threading.stack_size(previous)

    def _forward(self) -> None:
        outcome, error, result = StepperState.FINISHED, None, None
        # Thread-local: the caller's. (inference_mode(False) would turn grad mode on.)
        inference = torch.inference_mode() if self._inference else contextlib.nullcontext()
        try:
            if self._cuda_device is not None:
                torch.cuda.set_device(self._cuda_device)
            with inference, torch.set_grad_enabled(self._grad_enabled), \
                    self.recording.active():
                result = self._fn(*self._args, **self._kwargs)
            self.recording.finish(result)
            if self.recording._abort:  # fn caught ForwardAborted and returned
                outcome = StepperState.ABORTED
        except ForwardAborted:
            outcome = StepperState.ABORTED
        except BaseException as raised:  # handed to the caller of step()/run()
            outcome, error = StepperState.FAILED, raised
            _annotate(raised, self.recording.failed_op)
        finally:
            with self._cond:
                self._result = result if outcome is StepperState.FINISHED else None
                self._error = error
                self._state = outcome
                self._paused = False
                self._cond.notify_all()

    def _on_event(self, event: ForwardEvent) -> None:
        """On the worker, after each operation: pause unless running free."""
        with self._cond:
            if self._free_run:
                if self._stop_when is None or not self._stop_when(event):
                    return
                self._free_run = False
            self._paused = True
            self._pauses += 1
            self._go = False
            self._cond.notify_all()
            while not self._go:
                self._cond.wait()
            self._paused = False
            if self.recording._abort:
                raise ForwardAborted("the forward was aborted")

    def _wait(self, condition: Callable[[], Any]) -> None:
        while not condition():
            self._cond.wait(_POLL)
            if self._worker is not None and not self._worker.is_alive() and not condition():
                if self._state is StepperState.RUNNING:  # cannot happen: the worker always sets its end
                    raise StepperError("the forward worker ended without a word")
                return

    def _at_end(self) -> None:
        self._end.reached(self._state, self._error)

    def _raise_failure(self):
        """The user's exception the first time, then a StepperError that recalls it."""
        self._end.failed(self._error)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end (after :meth:`abort` with ``wait=False``); whether it has."""
        self._join(timeout)
        return self._worker is None or not self._worker.is_alive()

    def _join(self, timeout: float | None = None) -> None:
        worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)


def _annotate(error: BaseException, failed_op) -> None:
    """Say on the user's own exception which operation raised it."""
    if failed_op is None or not hasattr(error, "add_note"):
        return
    op, source, module = failed_op
    where = f" in module {module!r}" if module else ""
    error.add_note(f"gradviz: raised in forward at {op} ({source}){where}")
