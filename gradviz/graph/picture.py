"""``gradviz.draw``: an autograd graph as a picture in a notebook cell, where a picture is
enough and the live app would be too much.

Graphviz's ``dot`` draws the same DOT that ``gradviz export`` writes (the legend is
:mod:`gradviz.graph.export`'s docstring). What a cell shows was chosen by looking at
resnet18 in JupyterLab: its 134 nodes draw 2,000 x 6,700 px; shrunk to a cell's
width the labels are 6 px high, and with a cluster per module (68 of them, side by
side) it is 13,000 px wide and nothing can be found. So a cell gets the picture at
its own size (10 pt labels) in a scroll box 600 px high, scrolled so that the root,
the loss, is in sight, and modules are not drawn as clusters unless asked for.
``_repr_svg_`` stays for frontends that do not render HTML.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from html import escape

import networkx as nx
import torch

from gradviz.graph.export import draw_with_dot, to_dot, write_atomic
from gradviz.graph.record import recorded_modules
from gradviz.graph.walk import Roots, build_graph

#: The scroll box's height in a notebook cell, in pixels.
BOX_HEIGHT = 600


class GraphPicture:
    """A drawn graph: ``.svg`` (text), ``save(path)``; shows itself in a notebook cell."""

    def __init__(self, svg: str, graph: nx.DiGraph, *, box_height: int = BOX_HEIGHT) -> None:
        self.svg = svg
        self.graph = graph
        self.box_height = box_height

    @property
    def size(self) -> tuple[float, float]:
        """The drawing's width and height in points, as Graphviz sized it."""
        found = re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', self.svg)
        return (float(found.group(1)), float(found.group(2))) if found else (0.0, 0.0)

    def save(self, path: str | os.PathLike) -> None:
        """Write the SVG to ``path`` (atomically)."""
        write_atomic(path, self.svg.encode())

    def _repr_svg_(self) -> str:
        return self.svg

    def _repr_html_(self) -> str:
        body = self.svg[self.svg.index("<svg"):]
        # JupyterLab's CSS (svg {max-width: 100%}) would shrink it to the cell again
        body = body.replace("<svg", '<svg style="max-width:none"', 1)
        box = f"gradviz-graph-{id(self):x}"
        caption = escape(f"{self.graph.number_of_nodes()} nodes, "
                         f"{self.graph.number_of_edges()} edges; the root at the top")
        # Graphviz writes the root first: scroll it to the box's middle (a script in an
        # output runs only where the notebook is trusted; untrusted, the box starts left)
        return (f'<div style="font:12px monospace;color:#777">{caption}</div>'
                f'<div id="{box}" style="max-height:{self.box_height}px;overflow:auto;'
                f'border:1px solid #ccc">{body}</div>'
                f'<script>(function () {{ const b = document.getElementById("{box}");'
                f' const n = b && b.querySelector("g.node"); if (!n) return;'
                f' const r = n.getBoundingClientRect(), o = b.getBoundingClientRect();'
                f' b.scrollLeft += r.left - o.left - (b.clientWidth - r.width) / 2; }})();'
                f'</script>')

    def __repr__(self) -> str:
        width, height = self.size
        return (f"<gradviz graph picture: {self.graph.number_of_nodes()} nodes, "
                f"{width:.0f} x {height:.0f} pt>")


def draw(
    graph_or_roots: nx.DiGraph | Roots,
    *,
    model: torch.nn.Module | None = None,
    params: Mapping[str, torch.Tensor] | None = None,
    modules: bool = False,
    saved: bool = False,
) -> GraphPicture:
    """The autograd graph behind ``roots`` (or a graph from ``build_graph``) as a picture.

    In a notebook cell it shows itself; ``.svg`` is the text and ``.save("g.svg")``
    writes it. ``model`` names the parameters (and, after a forward run inside
    ``gradviz.record(model)``, the modules); ``modules=True`` draws each module as
    a box around its nodes, ``saved=True`` the tensors saved for backward. Needs
    Graphviz's ``dot`` program.

    >>> picture = gradviz.draw(loss, model=model)   # doctest: +SKIP
    """
    if isinstance(graph_or_roots, nx.DiGraph):
        graph = graph_or_roots
    else:
        known = recorded_modules(model) if model is not None else None
        graph = build_graph(graph_or_roots, model=model, params=params, modules=known)
    text = to_dot(graph, modules=modules, saved=saved)
    return GraphPicture(draw_with_dot(text, "svg").decode(), graph)
