"""gradviz.watch: a flight recorder and breakpoints for your own training loop.

>>> with gradviz.watch(model, optimizer, record="run.db",              # doctest: +SKIP
...                    break_on=("nonfinite", "spike")) as w:
...     for x, y in loader:                  # the loop, unchanged
...         loss = criterion(model(x), y)
...         optimizer.zero_grad()
...         loss.backward()
...         optimizer.step()
>>> print(w.report())                                                 # doctest: +SKIP

How it sees the loop. Iteration k is the k-th ``optimizer.step()`` (the optimizer's
own step pre- and post-hooks); without an optimizer, each backward is an iteration.
While the watch is active, ``torch.autograd.backward`` (which ``Tensor.backward``
calls) and ``Tensor.backward`` go through it: it notes each backward's loss (several
per step with gradient accumulation; a ``GradScaler``'s scale divided out) and, when
asked, keeps its graph. Everything is put back on exit, whatever happened in the
loop; the loop's own exceptions pass through unchanged.

Per iteration it measures (:mod:`gradviz.training.norms.iteration_stats`, one host sync) the
loss, the wall time, the total gradient norm and, per parameter, the gradient norm,
the parameter and update norms, |Δ|/|p| and flags; runs the audits
(:mod:`gradviz.training.audits`); checks the breakpoints; and commits it all to the
record (:mod:`gradviz.model.runs.history`) in one transaction.

Breakpoints: ``at=N``; ``"nonfinite"`` (the loss or a gradient NaN/Inf, checked before
``optimizer.step()`` so that the weights are still clean when it breaks);
``"spike"`` (loss or total gradient norm above ``spike`` times the median of the last
20 iterations); ``kill -USR1 PID`` (at the next backward). ``on_break``: ``"raise"``
(:class:`WatchBreak`), ``"report"`` (a line on stderr), a callable (given the
:class:`WatchBreak`), or ``"app"`` (the app on that iteration's graph). In a
``torch.distributed`` job every rank records; only rank 0 breaks. A sharded model's
(FSDP2, DTensor) norms are the whole parameters', combined across the ranks
(:mod:`gradviz.training.norms.sharded`), and so is what the breaks decide on.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gradviz.errors import GradvizError
from gradviz.graph.modules import ModuleSpans
from gradviz.model.runs.events import EventKind, TrainingPause
from gradviz.model.runs.history import (
    EventRecord,
    IterationRecord,
    ParamInfo,
    RunHistory,
    RunRecord,
)
from gradviz.model.runs.report import WatchReport
from gradviz.training.audits import Auditor
from gradviz.training.bands import default_band
from gradviz.training.breaks import BreakTaking, TrainingStopped, WatchBreak
from gradviz.training.following import Following
from gradviz.training.norms.iteration_stats import DEFAULT_SAMPLE, Measurement
from gradviz.training.diagnosis.kept_graph import SavedTensorKeeper, has_compiled_region
from gradviz.training.loop_hooks import (
    install_backward,
    install_clipping,
    install_grad_scaler,
    install_registration,
    install_signal,
)
from gradviz.training.options import (
    WatchError,
    check_at,
    check_band,
    check_break_on,
    check_model,
    check_on_break,
    check_optimizer,
    check_spike,
    check_update_sample,
)
from gradviz.training.record_writer import RecordWriter, check_record_path
from gradviz.training.diagnosis.replay import ForwardCalls
from gradviz.training.norms.sharded import is_sharded, iteration_stats_for
from gradviz.training.spikes import SpikeWatch
from gradviz.training.user_names import unwrapped, user_class_name

#: Iterations kept in memory when ``record=None``.
MEMORY_ITERATIONS = 1000


@dataclass
class _Kept:
    """A watched backward's graph, kept until its gradients are checked."""

    roots: list[torch.Tensor]
    gradient: list[torch.Tensor | None] | None
    boxes: list | None  # saved tensors to free at release; None: not ours to free

    def release(self) -> None:
        if self.boxes is not None:
            SavedTensorKeeper.release(self.boxes)
            self.boxes = None
        self.roots = []
        self.gradient = None


@dataclass(frozen=True)
class LastIteration:
    """The latest iteration, for the loop's own logger (``w.last``): its loss, the total
    gradient norm backward made and the one the step saw (when the loop clipped), the
    learning rate, and per layer (a module's own parameters) its gradient norm and
    |update| / |param|."""

    iteration: int
    loss: float | None
    grad_norm: float | None
    grad_norm_clipped: float | None
    lr: float | None
    seconds: float
    layer_grad_norms: dict[str, float]
    layer_update_ratios: dict[str, float]


@dataclass
class _Iteration:
    """What the iteration in progress has seen so far."""

    backwards: int = 0
    kept: _Kept | None = None
    checked: bool = False  # loss and gradients checked before the step
    scaled: bool = False  # a GradScaler scaled a loss: Inf gradients are its business
    events: list[EventRecord] = field(default_factory=list)
    measured: Measurement | None = None  # the loss and gradients as read before the step
    closure: bool = False  # the step computes the gradients itself (a closure)
    grads_read: bool = False  # the gradients' norms are launched for this iteration


def watch(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, *,
          record: str | os.PathLike | None = None, break_on: Iterable[str] = (),
          at: int | None = None, on_break: str | Callable[[WatchBreak], object] | None = None,
          spike: float = 10.0, band: tuple[float, float] | None = None,
          nan_origin: bool | None = None, update_sample: int | None = DEFAULT_SAMPLE,
          open_app: Callable[[TrainingPause], None] | None = None) -> Watch:
    """Watch a training loop: ``with gradviz.watch(model, optimizer) as w:`` around it.

    ``record``: the SQLite file to write (None: the last 1,000 iterations in memory).
    ``break_on``: any of "nonfinite", "spike" and "signal" ("signal" takes SIGUSR1
    over even where the program handles it; otherwise it is taken only if unhandled).
    ``at``: break at iteration N. ``on_break``: "app" (the default on a terminal),
    "raise", "report" (the default otherwise) or a callable given the
    :class:`WatchBreak`. ``spike``: how many times the recent median counts as a
    spike (see gradviz.training.spikes). ``band``: the |update|/|param| range per
    layer; outside it, an audit (default: by optimizer family, gradviz.training.bands).
    ``nan_origin``: keep each backward's graph until its gradients are checked, to
    name where a NaN/Inf started on the same iteration (default: on when breaking on
    "nonfinite" or "spike"; activations then live to the end of backward).
    ``update_sample``: parameters larger than this are measured through a fixed
    sample of their elements (None: all of them; see gradviz.training.norms.iteration_stats).
    ``open_app``: how ``on_break="app"`` opens the app on a :class:`TrainingPause`;
    ``gradviz.watch`` (the entry layer, :mod:`gradviz.show`) passes it, since nothing
    here imports the app.
    """
    return Watch(model, optimizer, record=record, break_on=break_on, at=at, on_break=on_break,
                 spike=spike, band=band, nan_origin=nan_origin, update_sample=update_sample,
                 open_app=open_app)


class Watch(Following, BreakTaking):
    """The context manager :func:`watch` returns; see the module docstring."""

    def __init__(self, model, optimizer=None, *, record=None, break_on=(), at=None,
                 on_break=None, spike=10.0, band=None, nan_origin=None,
                 update_sample=DEFAULT_SAMPLE, open_app=None):
        self.model = check_model(model)
        self.inner = unwrapped(self.model)  # what names come from
        self.optimizer = check_optimizer(optimizer)
        self.path = None if record is None else Path(record)
        if self.path is not None:
            check_record_path(self.path)
        self.break_on = check_break_on(break_on)
        self.at = check_at(at)
        self.on_break = check_on_break(on_break)
        self._app = open_app
        self.spike = check_spike(spike)
        self.band = default_band(self.optimizer) if band is None else check_band(band)
        self.update_sample = check_update_sample(update_sample)
        self.rank, self.world_size = _distributed()
        if nan_origin is None:  # only where a break will use it
            nan_origin = bool({"nonfinite", "spike"} & set(self.break_on)) and self.rank == 0
        self.nan_origin = bool(nan_origin)
        #: The gradients are read and checked before each step (the same on every rank:
        #: a sharded model's ranks combine them there).
        self._checks_before_step = self.nan_origin or bool({"nonfinite", "spike"}
                                                          & set(self.break_on))

        self.iteration = 0  # iterations completed
        self._last: tuple | None = None  # the latest one's row and numbers (w.last)
        self.breaks: list[WatchBreak] = []  # breaks taken (rank 0)
        self.stopped = False
        self._active = False
        self._writer: RecordWriter | None = None
        self._restore: list[Callable[[], None]] = []
        self._current = _Iteration()
        self._inside = 0  # > 0: a backward of ours (or the app's) runs: let it through
        self._signalled = False
        self._nonfinite_before = False
        self._weights_bad = False
        self._spikes = SpikeWatch(self.spike)
        #: Break kinds not broken on any more (the app's "no more of these" key); their
        #: events are still recorded.
        self.muted: set[EventKind] = set()
        self._last_end = 0.0
        self._keeper: SavedTensorKeeper | None = None
        self._spans: ModuleSpans | None = None
        self._calls: ForwardCalls | None = None
        self._shelved: tuple | None = None  # (break, its kept graph, modules) for show()
        self._scaled: tuple[weakref.ref, object] | None = None
        self.steps_seen = 0
        self._params: list[torch.Tensor] = []
        self._index: dict[int, int] = {}  # id(param) -> its index in the record
        self._infos: list[ParamInfo] = []
        self._stats = iteration_stats_for(
            self.model.parameters(), sample=update_sample,
            checks_before_step=self._checks_before_step)
        self._sharded = is_sharded(self.model)
        self._auditor = Auditor(self.band)
        self._signature: tuple = ()
        self._model_signature: tuple = ()
        # torch told of a parameter or module assigned somewhere: look at the model again
        self._registered = False
        self._membership_checked = False
        #: The caller says when the gradients are whole (:meth:`before_update`), not the
        #: optimizer's step pre-hook: Lightning's accumulation runs the last micro-batch's
        #: backward inside step(), after that hook.
        self.updates_told = False
        self._left: set[int] = set()  # optimizers the watch followed away from
        self._companions: set[int] = set()  # optimizers stepping the model that are not followed

    # ------------------------------------------------------------ public API
    def __enter__(self) -> Watch:
        if self._active or self._writer is not None:
            raise WatchError("a watch runs once: call gradviz.watch(...) again for a new run")
        self._writer = RecordWriter(self.path, keep=MEMORY_ITERATIONS if self.path is None
                                    else None)
        try:
            self._writer.begin(self._run_info())
            self._track_params()
            self._install()
        except BaseException as error:
            self._uninstall()
            self._writer.discard()  # no run that never ran is left in the record
            self._writer.close()
            if isinstance(error, GradvizError):  # a user's mistake: not our insides
                raise error.with_traceback(None) from None
            raise
        self._active = True
        self._last_end = time.perf_counter()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self._active = False
        try:
            self._uninstall()
            if kind is not None and issubclass(kind, WatchBreak):
                self._record_broken_iteration()
        finally:
            if kind is None:
                status = "finished"
            elif issubclass(kind, (TrainingStopped, KeyboardInterrupt)):
                status = "stopped"
            elif issubclass(kind, WatchBreak):
                status = "break"
            else:
                status = "failed"
            self._finish(status)

    def backward(self, loss: torch.Tensor, gradient=None, retain_graph: bool | None = None,
                 create_graph: bool = False, inputs=None) -> None:
        """``loss.backward(...)`` as the watch sees it, for code that calls backward otherwise."""
        if not self._active:
            raise WatchError("w.backward() works inside the watch's with block")
        self.watched_backward(loss, gradient, retain_graph, create_graph, inputs)

    def history(self, *, last: int | None = None, points: int | None = None,
                span: tuple[int, int] | None = None) -> RunHistory:
        """The run so far as plain data (:class:`~gradviz.model.runs.history.RunHistory`)."""
        if self._writer is None:
            raise WatchError("this watch has not started: use it as `with gradviz.watch(...)`")
        if self._writer.closed:
            with RunRecord(self.path) as record:
                return record.history(self._writer.run, last=last, points=points, span=span)
        return self._writer.history(last=last, points=points, span=span)

    def report(self) -> WatchReport:
        """The run as a report; ``print(w.report())`` shows it as tables."""
        source = str(self.path) if self.path is not None else "memory"
        return WatchReport.of(self.history, source=source)

    # -------------------------------------------------------------- set-up
    def _run_info(self) -> dict:
        from gradviz.version import __version__

        return {
            "rank": self.rank, "world_size": self.world_size, "started": time.time(),
            "host": socket.gethostname(), "pid": os.getpid(), "argv": list(sys.argv),
            "model": user_class_name(self.inner),
            "optimizer": None if self.optimizer is None else type(self.optimizer).__name__,
            "versions": {"torch": torch.__version__, "gradviz": __version__,
                         "python": sys.version.split()[0]},
            "settings": {"break_on": list(self.break_on), "at": self.at,
                         "on_break": self.on_break if isinstance(self.on_break, str)
                         else "callable", "spike": self.spike, "band": list(self.band),
                         "nan_origin": self.nan_origin, "update_sample": self.update_sample,
                         # the launch's id (torchrun's --rdzv-id, or one it made): the
                         # ranks of one job, however far apart their clocks
                         "job": os.environ.get("TORCHELASTIC_RUN_ID") if self.world_size > 1
                         else None},
        }

    def _install(self) -> None:
        """Everything the watch hooks into; each undo goes on ``_restore``."""
        self._restore.extend(install_backward(self))
        self._restore.extend(install_registration(self))
        if self.optimizer is not None:  # every optimizer's steps: a new one may take over
            from torch.optim.optimizer import (
                register_optimizer_step_post_hook,
                register_optimizer_step_pre_hook,
            )

            for handle in (register_optimizer_step_pre_hook(self._any_step_before),
                           register_optimizer_step_post_hook(self._any_step_after)):
                self._restore.append(handle.remove)
        self._restore.extend(install_grad_scaler(self))
        self._restore.extend(install_clipping(self))
        self._restore.extend(install_signal(self, take_over="signal" in self.break_on))
        if self.nan_origin:
            self._keeper = SavedTensorKeeper()
            self._keeper.install()
            self._restore.append(self._keeper.remove)
            self._calls = ForwardCalls(self.model)  # outside DDP and compile: what was called
            self._restore.append(self._calls.remove)
        if self.nan_origin or (self.rank == 0 and self.on_break in ("app", "keep")
                               and (self.break_on or self.at is not None)):
            self._spans = ModuleSpans(self.inner)
            self._spans.install()
            self._restore.append(self._spans.remove)

    def _uninstall(self) -> None:
        try:
            self._release_kept()
        finally:
            while self._restore:
                undo = self._restore.pop()
                try:
                    undo()
                except Exception:  # undo the rest, whatever one of them does
                    pass

    def _finish(self, status: str) -> None:
        writer = self._writer
        if writer is None or writer.closed:
            return
        try:
            writer.finish(status, time.time())
        finally:
            if self.path is not None:  # a memory record lives as long as the watch
                writer.close()

    # ------------------------------------------------------------- backward
    def watched_backward(self, tensors, gradient, retain_graph, create_graph, inputs):
        original = self.original_backward
        if self._inside or not self._active:  # nested (reentrant checkpoint), or ours
            return original(tensors, gradient, retain_graph, create_graph, inputs=inputs)
        roots = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors)
        tensors_only = bool(roots) and all(isinstance(r, torch.Tensor) for r in roots)
        gradients = _gradients(gradient, len(roots))
        current = self._current
        iteration = self.iteration + 1
        if current.kept is not None and not current.scaled:
            self._check_before_step(iteration, early=True)  # an earlier micro-batch's graph
        reason = None
        if self._signalled:
            self._signalled, reason = False, "signal"
        elif self.at == iteration and current.backwards == 0:
            reason = "at"
        user_keeps = bool(retain_graph) or (retain_graph is None and bool(create_graph))
        keep = tensors_only and (self._keeper is not None or (
            reason is not None and self._takes_breaks and self.on_break in ("app", "keep")))
        if keep and has_compiled_region(roots):
            # inductor's compiled backward donates its buffers: it refuses retain_graph
            # (the forward's replay still finds a NaN made there; its backward is one node)
            keep = False
        boxes = None
        self._inside += 1
        try:
            if keep and not user_keeps and self._keeper is not None:
                boxes = self._keeper.start_noting()
            original(tensors, gradient, True if keep else retain_graph, create_graph,
                     inputs=inputs)
        finally:
            self._inside -= 1
            if self._keeper is not None:
                self._keeper.stop_noting()
        if tensors_only:
            self._add_loss(roots, gradients)
        self._stats.backward_ran()
        current.backwards += 1
        if keep:
            current.kept = _Kept(roots, gradients, boxes)
        if reason is not None:
            detail = ("SIGUSR1 received" if reason == "signal"
                      else f"iteration {iteration} reached (at={self.at})")
            self._hit(WatchBreak(iteration, reason, detail, rank=self.rank), wanted=True)
        if self.optimizer is None:
            self._end_iteration(stepped=False)

    def _add_loss(self, roots: list[torch.Tensor], gradients) -> None:
        scaled = self._scaled
        with torch.no_grad():
            for root, grad in zip(roots, gradients or [None] * len(roots)):
                value = root.detach() if grad is None else (root.detach() * grad).sum()
                if not (value.is_floating_point() and value.numel() == 1):
                    continue
                value = value.reshape(())
                if scaled is not None and scaled[0]() is root:
                    value = value.double() / scaled[1]._scale.to(value.device).double()
                    self._current.scaled = True
                self._stats.add_loss(value)

    # --------------------------------------------------------- optimizer step
    def _any_step_before(self, optimizer, args, kwargs) -> None:
        """Any optimizer's step (torch's global hook): the watched one's is an iteration; a
        new one over the model's parameters takes over (stage 2 of a fine-tune)."""
        if optimizer is not self.optimizer and self._active and not self._inside:
            self._maybe_follow(optimizer)
        if optimizer is self.optimizer:
            self._before_step(optimizer, args, kwargs)

    def _any_step_after(self, optimizer, args, kwargs) -> None:
        if optimizer is self.optimizer:
            self._after_step(optimizer, args, kwargs)

    def _before_step(self, optimizer, args, kwargs) -> None:
        if not self._active or self._inside:
            return
        if self._registered and self._model_params() != self._model_signature:  # replaced
            self._current.events += self._track_params()
        if self._groups_signature() != self._signature:  # add_param_group(), say
            self._current.events += self._track_params()
            self._current.events.append(EventRecord(
                self.iteration + 1, EventKind.PARAMS_CHANGED, "",
                f"the optimizer's param groups changed: {len(self._params)} parameters watched"))
        if not self._membership_checked:
            self._current.events.extend(self._auditor.membership(
                self.iteration + 1, [p.requires_grad for p in self._params]))
            self._membership_checked = True
        self._stats.snapshot_params()
        if self.updates_told or not self._current.backwards:
            # The gradients are made inside step() (a closure: LBFGS, Lightning) or the
            # caller tells when they are whole (before_update): read them then.
            self._current.closure = True
            return
        self._gradients_whole()

    def before_update(self) -> None:
        """The gradients of this iteration are whole and the optimizer is about to update
        the weights: read and check them now. For integrations whose optimizer.step() runs
        the forward and backward itself (Lightning calls it from on_before_optimizer_step);
        a loop that calls backward then step() needs nothing of this."""
        if self._active and not self._inside and not self._current.checked:
            self._gradients_whole()

    def _gradients_whole(self) -> None:
        self._stats.launch_grads()
        self._current.grads_read = True
        if self._checks_before_step:
            self._check_before_step(self.iteration + 1, early=False)

    def _after_step(self, optimizer, args, kwargs) -> None:
        if not self._active or self._inside:
            return
        self.steps_seen += 1
        if not self._current.grads_read:  # a closure made them inside step(): read them now
            self._gradients_whole()
        self._stats.after_step()
        self._end_iteration(stepped=True)

    # ------------------------------------------------------- the loop's hooks
    def scaled(self, tensor: torch.Tensor, scaler) -> None:
        """A GradScaler scaled ``tensor`` (the loss): it is recorded unscaled."""
        self._scaled = (weakref.ref(tensor), scaler)

    def registered(self) -> None:
        """A parameter or module was assigned to some module (a layer replaced, say)."""
        self._registered = True

    def signalled(self) -> None:
        """SIGUSR1 arrived: break at the next backward."""
        self._signalled = True

    def clipping(self) -> None:
        """The loop is about to clip its gradients (clip_grad_norm_ or _value_)."""
        if self._active and not self._inside:
            self._stats.grads_will_change()

    def clipped_by_norm(self, params, coefficient) -> None:
        if self._active and not self._inside:
            self._stats.clipped_by(params, coefficient)

    def clipped_otherwise(self) -> None:
        if self._active and not self._inside:
            self._stats.clipped_otherwise()

    def step_skipped(self) -> None:
        """GradScaler found Inf/NaN gradients and skipped the step: an iteration all the same."""
        if not self._active or not self._current.backwards:
            return
        self._stats.before_step()
        measured = self._stats.read_grads()
        if measured.loss is not None and not math.isfinite(measured.loss):
            # the (unscaled) loss itself is NaN/Inf: no loss scale makes that right
            self._current.measured = measured
            self._check(self.iteration + 1, measured, final=True)
        else:
            self._current.events.append(EventRecord(
                self.iteration + 1, EventKind.SCALER_SKIP, "",
                "GradScaler skipped optimizer.step(): Inf/NaN gradients at this loss scale"))
        self._current.checked = True  # gradients that overflow the scale are its business
        self._end_iteration(stepped=False, skipped=True)

    def _record_broken_iteration(self) -> None:
        """``on_break="raise"`` left the loop before the step: record what the iteration
        measured (its loss and gradients), so the record holds the iteration it broke at."""
        current = self._current
        if current.measured is None or self._writer is None or self._writer.closed:
            return
        measured = current.measured
        total = _total_norm(measured.grad_norms)
        rows, audits = self._auditor.iteration(self.iteration + 1, measured,
                                               [p.requires_grad for p in self._params])
        self._write_iteration(measured, total, rows, [*current.events, *audits],
                              skipped=False)

    def _write_iteration(self, measured: Measurement, total: float | None, rows, events,
                         *, skipped: bool) -> None:
        iteration = self.iteration + 1
        now = time.perf_counter()
        clipped = (None if measured.clipped_norms is None
                   else _total_norm(measured.clipped_norms))
        row = IterationRecord(
            iteration=iteration, loss=_nan(measured.loss), grad_norm=_nan(total),
            seconds=now - self._last_end, time=time.time(),
            backwards=self._current.backwards, lr=_lr(self.optimizer),
            nonfinite=not _finite(measured.loss, total), skipped=skipped,
            grad_norm_clipped=clipped)
        self._writer.write_iteration(row, self.rank, rows, events)
        self.iteration = iteration
        self._last_end = now
        self._last = (row, measured, self._infos)

    @property
    def last(self) -> LastIteration | None:
        """The latest iteration, for the loop's own logger (read when asked for)."""
        if self._last is None:
            return None
        return self._summary(*self._last)

    def _summary(self, row: IterationRecord, measured: Measurement, infos) -> LastIteration:
        grads: dict[str, float] = {}
        updates: dict[str, float] = {}
        params: dict[str, float] = {}
        for index, info in enumerate(infos):
            layer = info.layer or "(model)"
            grad = measured.grad_norms[index] if index < len(measured.grad_norms) else None
            if grad is not None:
                grads[layer] = grads.get(layer, 0.0) + grad * grad
            if measured.update_norms is not None and measured.param_norms is not None:
                update, param = measured.update_norms[index], measured.param_norms[index]
                if update is not None and param is not None and math.isfinite(param):
                    updates[layer] = updates.get(layer, 0.0) + update * update
                    params[layer] = params.get(layer, 0.0) + param * param
        return LastIteration(
            row.iteration, None if math.isnan(row.loss) else row.loss,
            None if math.isnan(row.grad_norm) else row.grad_norm, row.grad_norm_clipped,
            row.lr, row.seconds, {k: math.sqrt(v) for k, v in grads.items()},
            {k: math.sqrt(updates[k] / params[k]) for k in updates if params[k] > 0})

    def _end_iteration(self, *, stepped: bool, skipped: bool = False) -> None:
        iteration = self.iteration + 1
        current = self._current
        if not stepped and not skipped:  # no optimizer: the backward is the iteration
            self._stats.before_step()
        measured = self._stats.read()
        try:
            if not current.checked:
                self._check(iteration, measured, final=True)
        finally:
            total = _total_norm(measured.grad_norms)
            rows, audits = self._auditor.iteration(iteration, measured,
                                                   [p.requires_grad for p in self._params])
            if stepped:
                audits.extend(self._weights_check(iteration, measured))
            self._write_iteration(measured, total, rows, [*current.events, *audits],
                                  skipped=skipped)
            self._release_kept()
            if self._spans is not None:
                self._spans.clear()
            if self._calls is not None:
                self._calls.clear()
            self._current = _Iteration()

    # -------------------------------------------------------------- checks
    def _check_before_step(self, iteration: int, *, early: bool) -> None:
        """Read the loss and gradients (one sync) and check them while the graph is kept
        and the weights untouched. ``early``: before the next backward of the same
        iteration (gradient accumulation), on what the earlier ones accumulated."""
        if early:  # only where a graph is kept: on this rank alone; the parameters are
            self._stats.launch_grads()  # copied at the step, not between micro-batches
        measured = self._stats.read_local_grads() if early else self._stats.read_grads()
        self._current.measured = measured
        try:
            self._check(iteration, measured, final=not early)
        finally:
            if not early:
                self._current.checked = True
            self._release_kept()

    def _check(self, iteration: int, measured: Measurement, *, final: bool) -> None:
        """NaN/Inf (when it arises) and spikes: record the event, and break if asked."""
        total = _total_norm(measured.grad_norms)
        loss = measured.shared_loss  # what every rank decides on (a sharded model's ranks)
        nonfinite = not _finite(loss, total) and not self._overflow_only(measured)
        arising = nonfinite and not self._nonfinite_before
        self._nonfinite_before = nonfinite
        if arising:
            loss_bad = loss is not None and not math.isfinite(loss)
            detail = ("the loss is NaN/Inf" if loss_bad else "a gradient is NaN/Inf"
                      ) + measured.nonfinite_where
            brk = WatchBreak(iteration, "nonfinite", detail, origin=self._origin(loss_bad),
                             rank=self.rank, loss=measured.loss, grad_norm=total)
            self._hit(brk, wanted="nonfinite" in self.break_on)
        if nonfinite or not final:
            return
        spike = self._spikes.see(loss, total)
        if spike is not None:
            brk = WatchBreak(iteration, "spike", spike.detail, rank=self.rank,
                             loss=measured.loss, grad_norm=total)
            self._hit(brk, wanted="spike" in self.break_on)

    def _weights_check(self, iteration: int, measured: Measurement) -> list[EventRecord]:
        """An event when a step first turns weights NaN/Inf (seen through the samples)."""
        bad = [info.name for info, update in zip(self._infos, measured.update_norms or ())
               if update is not None and not math.isfinite(update)]
        arising = bool(bad) and not self._weights_bad
        self._weights_bad = bool(bad)
        if not arising:
            return []
        names = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        return [EventRecord(iteration, EventKind.NONFINITE_STEP, "",
                            f"optimizer.step() made NaN/Inf weights: {names}")]

    def _overflow_only(self, measured: Measurement) -> bool:
        """Inf norms of finite gradients (elements near the dtype's limit) are not NaN/Inf."""
        loss = measured.shared_loss
        if loss is not None and not math.isfinite(loss):
            return False
        if measured.overflow_only is not None:  # told by every rank (a sharded model)
            return measured.overflow_only
        bad = [(param, norm) for param, norm in zip(self._params, measured.grad_norms)
               if norm is not None and not math.isfinite(norm)]
        return bool(bad) and all(
            math.isinf(norm) and param.grad is not None and bool(torch.isfinite(param.grad).all())
            for param, norm in bad)

    def _release_kept(self) -> None:
        kept = self._current.kept
        if kept is not None:
            kept.release()
            self._current.kept = None


# ------------------------------------------------------------------ helpers
def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gradients(gradient, count: int) -> list[torch.Tensor | None] | None:
    if gradient is None:
        return None
    gradients = [gradient] if isinstance(gradient, torch.Tensor) else list(gradient)
    return gradients if len(gradients) == count else None


def _total_norm(norms: Sequence[float | None]) -> float | None:
    present = [n for n in norms if n is not None]
    if not present:
        return None
    return math.sqrt(math.fsum(n * n for n in present))


def _finite(loss: float | None, total: float | None) -> bool:
    return all(v is None or math.isfinite(v) for v in (loss, total))


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _lr(optimizer) -> float | None:
    if optimizer is None or not optimizer.param_groups:
        return None
    lr = optimizer.param_groups[0].get("lr")
    if isinstance(lr, torch.Tensor):
        return float(lr) if lr.device.type == "cpu" and lr.numel() == 1 else None
    return float(lr) if isinstance(lr, (int, float)) else None
