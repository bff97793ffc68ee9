"""Opening the app from the user's own code (an entry point, like cli.py): ``gradviz.show``
on a graph, and a ``gradviz.watch`` break with ``on_break="app"``.

Where the app goes depends on where the code runs (:mod:`gradviz.runtime.where`): in a
Jupyter cell's output (returns at once, see :mod:`gradviz.notebook`), in the terminal
(returns when closed), or nowhere: then one line on stderr says so and nothing is
drawn, so a script run with its output in a pipe or a file never hangs there.

The training layer never imports the app: :func:`watch` hands it :func:`open_break`.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Sequence

import torch

from gradviz.errors import GradvizError
from gradviz.graph.record import recorded_modules
from gradviz.model.runs.events import TrainingPause
from gradviz.runtime.where import where
from gradviz.session.session import Session
from gradviz.training import watch as training_watch

#: What show() says where it cannot show the app (no terminal, no notebook).
NO_SCREEN = ("gradviz.show: no app here: stdin and stderr are not a terminal and this is "
             "not a Jupyter kernel; gradviz.draw(loss) or `gradviz export` draws the graph, "
             "gradviz.BackwardStepper(loss) steps it without a screen")


def show(
    roots: torch.Tensor | Sequence[torch.Tensor],
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    gradient: torch.Tensor | Sequence[torch.Tensor] | None = None,
    params: dict[str, torch.Tensor] | None = None,
):
    """Open the app on ``roots``' graph.

    Step its backward (the real one: ``.grad`` is filled as in ``loss.backward()``)
    and then the optimizer. Module names appear when the forward ran inside
    ``gradviz.record(model)``. A root that is not a scalar needs ``gradient=`` (as
    ``Q.backward(gradient=...)`` does); without it the graph is shown, not stepped.

    In a Jupyter notebook the app runs in the cell's output and this returns at once,
    with a handle (``.close()``); in a terminal it returns None when the app is
    closed; with neither, it says so in one line on stderr and returns None.
    """
    place = where()
    if place is None:
        print(NO_SCREEN, file=sys.stderr)
        return None
    session = Session.for_roots(roots, model=model, params=params, optimizer=optimizer,
                                gradient=gradient,
                                modules=recorded_modules(model) if model is not None else None)
    from gradviz.tui.app import make_app, run_app

    if place == "notebook":
        from gradviz.notebook import show_app

        return show_app(make_app(session=session))
    run_app(session=session)
    return None


@functools.wraps(training_watch.watch)
def watch(model, optimizer=None, **options) -> training_watch.Watch:
    if options.get("on_break") is None:  # the app where there is a terminal to draw it on
        options["on_break"] = {"terminal": "app", "notebook": "keep"}.get(where(), "report")
    # open_break is looked up when a break opens the app, so a test can replace it
    try:
        return training_watch.watch(model, optimizer, open_app=lambda pause: open_break(pause),
                                    **options)
    except GradvizError as error:  # a user's mistake: their line and this one, not our insides
        raise error.with_traceback(None) from None


_signature = inspect.signature(training_watch.watch)
watch.__signature__ = _signature.replace(
    parameters=[p for p in _signature.parameters.values() if p.name != "open_app"])


def open_break(pause: TrainingPause):
    """Open the app on a watch break's session: in this terminal (returns None when it is
    closed), or in a notebook's cell output (returns its handle at once: the kernel
    stays free)."""
    if where() == "notebook":
        from gradviz.notebook import show_app
        from gradviz.tui.app import make_app

        return show_app(make_app(pause=pause))
    from gradviz.tui.app import run_app

    run_app(pause=pause)
    return None
