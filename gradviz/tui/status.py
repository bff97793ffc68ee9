"""The status line under everything: where the session stands and what to do next.

A pure function of the session's :class:`~gradviz.model.state.StateView` and the graph
on screen, so it is tested without a terminal.
"""

from __future__ import annotations

import networkx as nx

from gradviz.model.state import Activity, Phase, StateView


def status_line(view: StateView, graph: nx.DiGraph | None, width: int = 1000) -> str:
    """The one line under everything: where the session stands and what to do next.

    Parts that do not fit ``width`` go, least needed first: the iteration, the
    scenario's name, the step count; the error and what is running always stay.
    """
    if view.scenario is None:
        if view.activity is Activity.LOADING:
            return f"loading {view.loading}: {view.note or 'starting'}…  (esc stops)"
        if view.failure is not None:
            return f"error: {view.failure.message}"
        return "no scenario: p to choose one"
    way_on = "f new forward" if view.can_forward else ""
    iteration = [(5, f"iteration {view.iteration}")] if view.has_optimizer else []
    if view.phase is Phase.FORWARD:
        parts = [(4, view.scenario), *iteration,
                 (3, f"forward: {_count(view.ops, 'operation')}, {_count(view.nodes, 'node')}"),
                 (2, "s next operation, c the rest, esc abandons")]
    elif view.phase is Phase.NONE:
        parts = [(4, view.scenario), *iteration,
                 (2, "no graph: f a forward pass, s one operation at a time")]
    else:
        parts = [(4, view.scenario), *iteration, (3, f"step {view.done}/{view.nodes}")]
    if view.phase is Phase.PAUSED and view.failure is None:
        pending = view.pending
        roots = graph.graph.get("roots") if graph is not None else None
        if pending is None and view.done == 0 and roots:  # backward has not started
            pending = roots[0]
        if pending is not None and graph is not None and pending in graph:
            attrs = graph.nodes[pending]
            parts.append((2, f"next: {attrs['op']}"
                          + (f" ({attrs['module']})" if attrs.get("module") else "")))
    elif view.phase is Phase.FINISHED:
        if view.applied:
            parts.append((2, "optimizer stepped" + (f": {way_on}" if way_on else "")))
        elif view.has_optimizer:
            parts.append((2, "backward done: o optimizer" + (f", {way_on}" if way_on else "")))
        else:
            parts.append((2, "backward done" + (f": {way_on}" if way_on else "")))
    elif view.phase is Phase.ABORTED:
        parts.append((2, "backward stopped" + (f": {way_on}" if way_on else "")))
    if view.activity is Activity.LOADING:
        parts.append((0, f"loading {view.loading}: {view.note or 'starting'}… (esc stops)"))
    elif view.busy:
        queued = f", {view.queued_steps} more queued" if view.queued_steps else ""
        then = ", then continue" if view.continue_after else ""
        parts.append((0, f"⏳ {view.activity.value}{queued}{then} (esc stops)"))
    elif view.note:
        parts.append((1, view.note))
    if view.failure is not None:
        parts.append((0, f"error: {view.failure.message}"))
    while len(parts) > 1 and len("  ·  ".join(text for _, text in parts)) > width:
        least = max(range(len(parts)), key=lambda i: (parts[i][0], i))
        if parts[least][0] == 0:
            break
        del parts[least]
    return "  ·  ".join(text for _, text in parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
