"""The status line as a widget: fitted to its own width each time it is drawn."""

from __future__ import annotations

import networkx as nx
from textual.widget import Widget

from gradviz.model.state import StateView
from gradviz.tui.status import status_line


class StatusBar(Widget):
    """One line: where the session stands and what to do next (see :func:`status_line`).

    It keeps what to say and fits it to its width when drawn: after a resize the
    line is cut for the new width at once (it stayed cut for the old one, 40 columns
    after a return to 80, until the next key).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._view = StateView()
        self._graph: nx.DiGraph | None = None

    def show(self, view: StateView, graph: nx.DiGraph | None) -> None:
        self._view, self._graph = view, graph
        self.refresh()

    def render(self) -> str:
        return status_line(self._view, self._graph, self.content_size.width or 1000)
