"""Opening the app from the user's own code (an entry point, like cli.py): ``gradviz.show``
on a graph, and a ``gradviz.watch`` break with ``on_break="app"``.

The training layer never imports the app: :func:`watch` hands it :func:`open_break`.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Sequence

import torch

from gradviz.graph.record import recorded_modules
from gradviz.model.runs.events import TrainingPause
from gradviz.session.session import Session
from gradviz.training import watch as training_watch


def show(
    roots: torch.Tensor | Sequence[torch.Tensor],
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    gradient: torch.Tensor | Sequence[torch.Tensor] | None = None,
    params: dict[str, torch.Tensor] | None = None,
) -> None:
    """Open the app on ``roots``' graph; returns when it is closed.

    Step its backward (the real one: ``.grad`` is filled as in ``loss.backward()``)
    and then the optimizer. Module names appear when the forward ran inside
    ``gradviz.record(model)``.
    """
    session = Session.for_roots(roots, model=model, params=params, optimizer=optimizer,
                                gradient=gradient,
                                modules=recorded_modules(model) if model is not None else None)
    from gradviz.tui.app import run_app

    run_app(session=session)


@functools.wraps(training_watch.watch)
def watch(model, optimizer=None, **options) -> training_watch.Watch:
    if options.get("on_break") is None:  # the app where there is a terminal to draw it on
        options["on_break"] = {"terminal": "app", "notebook": "keep"}.get(where(), "report")
    # open_break is looked up when a break opens the app, so a test can replace it
    return training_watch.watch(model, optimizer, open_app=lambda pause: open_break(pause),
                                **options)


def where() -> str | None:
    """"notebook" in a Jupyter kernel, "terminal" where the app can draw (Textual draws on
    stderr: stdin and stderr must be terminals), else None (a pipe, nohup, a scheduler)."""
    ipython = sys.modules.get("IPython")
    if ipython is not None:
        shell = ipython.get_ipython()
        if shell is not None and getattr(shell, "kernel", None) is not None:
            return "notebook"
    streams = (sys.__stdin__, sys.__stderr__)
    if all(s is not None and s.isatty() for s in streams) and os.environ.get("TERM") != "dumb":
        return "terminal"
    return None


_signature = inspect.signature(training_watch.watch)
watch.__signature__ = _signature.replace(
    parameters=[p for p in _signature.parameters.values() if p.name != "open_app"])


def open_break(pause: TrainingPause) -> None:
    """Open the app on a watch break's session: in this terminal (returns when it is
    closed), or in a notebook's cell output (returns at once: the kernel stays free)."""
    if where() == "notebook":
        from gradviz.notebook import show_app
        from gradviz.tui.app import make_app

        show_app(make_app(pause=pause))
        return
    from gradviz.tui.app import run_app

    run_app(pause=pause)
