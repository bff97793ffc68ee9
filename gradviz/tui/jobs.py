"""The app's work on the engine's thread: the one module of the app that calls the session.

Each job runs on the app's :class:`~gradviz.runtime.serial_worker.SerialWorker`
(torch work, in the order asked), drives the session, and hands the app plain data
through ``post`` (the app's ``post_message``): a delta, a layout, a view. The
session's state tells the app everything else (loading, running, failed), through
the listener the app subscribed to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.message import Message

from gradviz.model.layout import lay_out
from gradviz.model.progress import ProgressDelta
from gradviz.model.state import Action, Activity, Failure, SessionState
from gradviz.tui import messages

Post = Callable[[Message], Any]

#: Graphs over this many nodes start with their modules folded into one row each.
FOLD_OVER = 2000


def load(post: Post, state: SessionState, ref: str, weights: str | None,
         fold_depth: int | None, opened: frozenset[str]) -> None:
    """Import torch, build the scenario ``ref``, make its first graph and lay it out. On
    failure (or esc) the state says so, and nothing is posted."""
    state.start_loading(ref)
    state.loading_stage("importing torch")
    try:
        from gradviz.session.session import Session
    except BaseException as error:  # torch itself did not import
        state.load_failed(Failure(Activity.LOADING, f"import failed: {error}"))
        return
    try:
        session = Session.load(ref, weights=weights, state=state)
    except Exception:  # the state has the failure (or the stop); the screen shows it
        return
    session.on_new_graph = lambda made: lay_out_graph(post, made, fold_depth, opened)
    post(messages.Loaded(session))
    lay_out_graph(post, session, fold_depth, opened)


def lay_out_graph(post: Post, session: Any, depth: int | None, opened: frozenset[str]) -> None:
    """Lay the session's graph out (plain Python: any thread) with what ran on it so far."""
    graph = session.graph
    if graph is None:
        return
    if depth is None and graph.number_of_nodes() > FOLD_OVER and not opened:
        depth = 1  # thousands of rows: start with the modules folded
    post(messages.LaidOut(session, lay_out(graph, depth, opened), session.progress))


def perform(post: Post, session: Any, action: Action, **options) -> None:
    """Run ``action`` on the session (the state was told it started)."""

    def report(made: object) -> None:
        if isinstance(made, ProgressDelta):
            post(messages.ProgressMade(session, session.progress, made))
        else:  # one forward operation, or the rest of a forward at once
            post(messages.ForwardStepped(session, made if isinstance(made, list) else [made]))

    def deliver(result: object) -> None:
        if action is Action.OPTIMIZER:
            post(messages.UpdateMade(session, result))

    session.perform(action, report, deliver=deliver, **options)


def read_nodes(post: Post, session: Any, keys: list[str]) -> None:
    """Read the summaries of nodes that ran in a big slice (in sight, or inspected)."""
    progress = session.progress
    read = session.read_nodes(keys)
    if read:
        post(messages.NodesRead(session, progress, read))


def describe_param(post: Post, session: Any, name: str) -> None:
    view = session.describe_param(name)
    if view is not None:
        post(messages.ParamDescribed(view))


def abandon_forward(session: Any) -> None:
    session.abandon_forward()


def close(session: Any) -> None:
    session.close()


def warm_up(post: Post, session: Any) -> None:
    """While the user reads the first screen: what the first step would wait for."""
    session.warm_up()
