"""The status line under everything: where the session stands and what to do next.

A pure function of the session's :class:`~gradviz.model.state.StateView` and the graph
on screen, so it is tested without a terminal.
"""

from __future__ import annotations

import networkx as nx

from gradviz.model.state import Activity, Phase, StateView
from gradviz.tui.fit import cut_end


def status_line(view: StateView, graph: nx.DiGraph | None, width: int = 1000) -> str:
    """The one line under everything: where the session stands and what to do next.

    It always starts with the scenario and the step ("resnet18 · step 3/134"): what
    does not fit ``width`` goes from the other end. The iteration goes first, then the
    tail is cut, with an ellipsis (an error cut so is in full in the node inspector).
    """
    if view.scenario is None:
        if view.activity is Activity.LOADING:
            return cut_end(f"loading {view.loading}: {view.note or 'starting'}…  (esc stops)",
                           width)
        if view.failure is not None:
            return cut_end(f"error: {view.failure.message}", width)
        return cut_end("no scenario: p to choose one", width)
    way_on = "f new forward" if view.can_forward else ""
    iteration = f"iteration {view.iteration}" if view.has_optimizer else None
    if view.phase is Phase.FORWARD:
        parts = [view.scenario, iteration,
                 f"forward: {_count(view.ops, 'operation')}, {_count(view.nodes, 'node')}",
                 "s next operation, c the rest, esc abandons"]
    elif view.phase is Phase.NONE:
        parts = [view.scenario, iteration,
                 "no graph: f a forward pass, s one operation at a time"]
    else:
        parts = [view.scenario, iteration, f"step {view.done}/{view.nodes}"]
    if view.activity is Activity.LOADING:
        parts.append(f"loading {view.loading}: {view.note or 'starting'}… (esc stops)")
    elif view.busy:
        queued = f", {view.queued_steps} more queued" if view.queued_steps else ""
        then = ", then continue" if view.continue_after else ""
        parts.append(f"⏳ {view.activity.value}{queued}{then} (esc stops)")
    elif view.note:
        parts.append(view.note)
    if view.failure is not None:
        parts.append(f"error: {view.failure.message}")
    # the news (what runs, what happened, an error) before the standing hint: what a
    # narrow screen cuts is the hint
    if view.phase is Phase.PAUSED and view.no_backward and view.failure is None:
        parts.append(f"no backward: {view.no_backward}")
    elif view.phase is Phase.PAUSED and view.failure is None:
        pending = view.pending
        roots = graph.graph.get("roots") if graph is not None else None
        if pending is None and view.done == 0 and roots:  # backward has not started
            pending = roots[0]
        if pending is not None and graph is not None and pending in graph:
            attrs = graph.nodes[pending]
            parts.append(f"next: {attrs['op']}"
                         + (f" ({attrs['module']})" if attrs.get("module") else ""))
    elif view.phase is Phase.FINISHED:
        if view.applied:
            parts.append("optimizer stepped" + (f": {way_on}" if way_on else ""))
        elif view.has_optimizer:
            parts.append("backward done: o optimizer" + (f", {way_on}" if way_on else ""))
        else:
            parts.append("backward done" + (f": {way_on}" if way_on else ""))
    elif view.phase is Phase.ABORTED:
        parts.append("backward stopped" + (f": {way_on}" if way_on else ""))
    line = "  ·  ".join(part for part in parts if part is not None)
    if len(line) > width:  # the iteration goes first, then the end is cut
        line = "  ·  ".join(part for part in parts if part is not None and part != iteration)
    return cut_end(line, width)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
