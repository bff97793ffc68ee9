"""A :func:`gradviz.watch` break as the loop meets it: raised, reported, given to a
callable, opened in the app (training waits), or kept for ``w.show()`` (a notebook).

The break itself is plain data (:class:`~gradviz.model.runs.events.BreakInfo`): what the
record stores, the report and the app's break panel read. :class:`WatchBreak` is that
data as an exception (``on_break="raise"``); :class:`TrainingStopped` is raised in the
loop after the app's "stop training".
"""

from __future__ import annotations

import sys

from gradviz.errors import GradvizError
from gradviz.model.runs.events import (
    BreakInfo,
    EventKind,
    Origin,
    OriginPhase,
    TrainingPause,
)
from gradviz.model.runs.history import EventRecord
from gradviz.training.diagnosis.kept_graph import SavedTensorKeeper
from gradviz.training.options import WatchError
from gradviz.training.diagnosis.replay import replay
from gradviz.training.norms.sharded import NOT_STEPPED

#: Iterations the app opened by a break reads of the run so far (evenly spaced): a
#: 100k-iteration run read whole took 20 s.
PAUSE_POINTS = 4000


class WatchBreak(GradvizError):
    """A breakpoint of :func:`watch` was hit (raised with ``on_break="raise"``).

    ``reason``: "at", "nonfinite", "spike" or "signal" (an
    :class:`~gradviz.model.runs.events.EventKind`). For "nonfinite", where the NaN/Inf
    started: ``node`` (its graph key), ``op``, ``module``, and the ``file`` and ``line``
    of the user's code; ``phase`` says whether backward made it or the loss was already
    NaN/Inf (forward). ``info`` is all of it as plain data; ``str()`` is one line.
    """

    def __init__(self, iteration: int, reason: str, detail: str, *, origin: Origin | None = None,
                 rank: int = 0, loss: float | None = None, grad_norm: float | None = None):
        self.info = BreakInfo(iteration, EventKind(reason), detail, origin, rank, loss,
                              grad_norm)
        super().__init__(self.info.message)

    iteration = property(lambda self: self.info.iteration)
    reason = property(lambda self: self.info.reason)
    detail = property(lambda self: self.info.detail)
    origin = property(lambda self: self.info.origin)
    rank = property(lambda self: self.info.rank)
    loss = property(lambda self: self.info.loss)
    grad_norm = property(lambda self: self.info.grad_norm)
    node = property(lambda self: self.info.node)
    op = property(lambda self: self.info.op)
    module = property(lambda self: self.info.module)
    file = property(lambda self: self.info.file)
    line = property(lambda self: self.info.line)
    phase = property(lambda self: self.info.phase)

    @property
    def message(self) -> str:
        return self.info.message

    def event(self, note: str = "") -> EventRecord:
        """The break as the record stores it; ``note`` is added to its words."""
        detail = self.detail + (f" ({note})" if note else "")
        return EventRecord(self.iteration, self.reason, "", detail, self.origin)


class TrainingStopped(GradvizError):
    """Training was stopped from the app (its "stop training" action) at ``iteration``."""

    def __init__(self, iteration: int):
        self.iteration = iteration
        super().__init__(f"training stopped from the app at iteration {iteration}")


class BreakTaking:
    """How a watch takes a break and where a NaN started. A mixin of
    :class:`~gradviz.training.watch.Watch`: it reads the watch's ``on_break``, ``muted``,
    ``rank``, ``_app``, ``_current``, ``_spans``, ``_calls``, ``inner``, ``_writer``,
    ``_sharded`` and ``breaks``."""

    def _origin(self, loss_bad: bool) -> Origin | None:
        """Where the NaN/Inf started: from the replayed forward and the kept graph (None
        when neither is there)."""
        from gradviz.training.diagnosis.nan_origin import (
            backward_origin,
            forward_origin,
            replayed_origin,
        )

        kept = self._current.kept
        if (kept is None or not kept.roots) and (self._calls is None or not loss_bad):
            return None
        self._inside += 1
        try:
            # the iteration's forward again: the op that made it, and every op's line
            replayed = (replay(self.inner, self._calls, self._spans, find=loss_bad)
                        if self._calls is not None else None)
            if kept is None or not kept.roots:  # no graph kept (a compiled region's)
                return replayed_origin(None, replayed) if replayed is not None and (
                    replayed.made or replayed.took) else None
            modules = self._spans.of_graph(kept.roots) if self._spans is not None else {}
            if loss_bad:
                return forward_origin(kept.roots, kept.gradient, model=self.inner,
                                      modules=modules, replayed=replayed)
            return backward_origin(kept.roots, kept.gradient, model=self.inner, modules=modules,
                                   lines=replayed)
        except (GradvizError, RuntimeError) as error:
            return Origin(OriginPhase.BACKWARD, None, None, None, None, None,
                          f"not found: {str(error).splitlines()[0]}")
        finally:
            self._inside -= 1

    # -------------------------------------------------------------- breaks
    @property
    def _takes_breaks(self) -> bool:
        return self.rank == 0

    def _hit(self, brk: WatchBreak, *, wanted: bool) -> None:
        """Record ``brk``'s event; if a break is ``wanted``, take it (on rank 0) or note it."""
        noted = wanted and not self._takes_breaks
        muted = wanted and brk.reason in self.muted
        note = ("noted: breaks are taken on rank 0" if noted
                else f"no break: {brk.reason.value} breaks were turned off" if muted else "")
        self._writer.add_events([brk.event(note)])
        if not wanted or noted or muted:
            return
        self.breaks.append(brk)
        action = self.on_break
        if action == "raise":
            raise brk
        if action == "report":
            print(f"gradviz: {brk.message}; training goes on", file=sys.stderr, flush=True)
        elif action == "app":
            self._open_app(brk)
        elif action == "keep":
            self._keep(brk)
        else:
            action(brk)

    def _open_app(self, brk: WatchBreak) -> None:
        """The app on the break's graph, here and now: training waits until it closes."""
        pause = self._pause(brk, self._current.kept)
        if pause is None:
            return
        self._inside += 1
        try:
            self._app(pause)
        finally:
            self._inside -= 1
            pause.closed()
        self._after_pause(pause)

    def _keep(self, brk: WatchBreak) -> None:
        """``on_break="keep"`` (a notebook, whose kernel must not wait on an app): the break
        is recorded and said; its graph is kept, frozen, for :meth:`show` to open later."""
        kept = self._current.kept
        if kept is None or not kept.roots or self._sharded:
            why = NOT_STEPPED if self._sharded else "no graph kept: nan_origin=False"
            print(f"gradviz: {brk.message} ({why}); training goes on", file=sys.stderr,
                  flush=True)
            return
        if self._shelved is not None:
            self._shelved[1].release()
        if kept.boxes is not None:
            SavedTensorKeeper.freeze(kept.boxes, self._params)  # training goes on updating
        self._current.kept = None  # it outlives its iteration now
        modules = self._spans.of_graph(kept.roots) if self._spans is not None else {}
        self._shelved = (brk, kept, modules)
        print(f"gradviz: {brk.message}; training goes on; w.show() opens that iteration's "
              "graph", file=sys.stderr, flush=True)

    def show(self) -> None:
        """Open the app on the graph of the last break kept (``on_break="keep"``, the default
        in a notebook): its backward stepped again, the model's ``.grad`` set aside until
        the app closes. A second break replaces the graph kept."""
        if self._shelved is None:
            raise WatchError("no break has been kept to show: w.show() opens the graph of a "
                             "break taken with on_break='keep' (the default in a notebook)")
        brk, kept, modules = self._shelved
        pause = self._pause(brk, kept, modules)
        if pause is not None:
            self._app(pause)

    def _pause(self, brk: WatchBreak, kept, modules=None) -> TrainingPause | None:
        """What the app gets: the break, the run so far, and a session on the kept graph
        (the leaves' ``.grad`` set aside until the app closes)."""
        if self._app is None:
            print(f"gradviz: {brk.message} (no app to open: use gradviz.watch); training "
                  "goes on", file=sys.stderr, flush=True)
            return None
        if kept is None or not kept.roots or self._sharded:
            why = NOT_STEPPED if self._sharded else "no graph kept to open: nan_origin=False"
            print(f"gradviz: {brk.message} ({why}); training goes on", file=sys.stderr,
                  flush=True)
            return None
        from gradviz.graph.walk import discover, root_nodes
        from gradviz.session.session import Session
        from gradviz.training.diagnosis.nan_origin import set_aside_grads

        if modules is None:
            modules = self._spans.of_graph(kept.roots) if self._spans is not None else {}
        leaves = [fn.variable for fn in discover(root_nodes(kept.roots)).nodes
                  if fn.name().endswith("AccumulateGrad")]
        aside = set_aside_grads(leaves).__enter__()
        try:
            session = Session.for_roots(kept.roots, model=self.inner, gradient=kept.gradient,
                                        modules=modules, name=f"iteration {brk.iteration}")
        except BaseException:
            aside.__exit__(None, None, None)
            raise

        origin = brk.origin
        if origin is not None and origin.node is not None and origin.node in session.graph:
            session.progress.mark_broken(origin.node)  # ✖ where it started, from the start

        def close() -> None:
            session.close()
            aside.__exit__(None, None, None)

        # thinned as the run view reads it: a 100k-iteration run read whole took 20 s
        return TrainingPause(brk.info, self.history(points=PAUSE_POINTS), session,
                             on_close=close)

    def _after_pause(self, pause: TrainingPause) -> None:
        if pause.mute_requested:
            self.muted.add(pause.brk.reason)
        if pause.stop_requested:
            self.stopped = True
            raise TrainingStopped(pause.brk.iteration)

