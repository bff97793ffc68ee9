"""Export a graph to Graphviz DOT (through pydot), node-link JSON, SVG or PNG.

The picture's legend: grey boxes are backward ops (label: op, module, gradient
shape), the green ones are the roots; blue boxes are named parameters, pale blue
unnamed leaves; with ``saved=True`` orange boxes are the tensors an op saved for
backward, joined to it by dotted lines. With ``modules=True`` each module is a
``cluster_`` subgraph, nested as the modules are. Edges follow the gradient from
the root to the leaves.

Files are written atomically: a temporary file beside the target, then a rename,
so a failed export leaves an existing file as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import networkx as nx
import pydot

from gradviz.core.errors import ExportError
from gradviz.core.graph import Roots, build_graph
from gradviz.core.saved import FREED

FORMATS = ("dot", "json", "svg", "png")

_FILL = {"op": "lightgrey", "param": "lightblue", "leaf": "azure", "saved": "orange"}
_ROOT_FILL = "darkolivegreen1"


def to_dot(
    graph_or_roots: nx.DiGraph | Roots,
    path: str | os.PathLike | None = None,
    *,
    modules: bool = True,
    saved: bool = False,
) -> str:
    """DOT text of the graph (walking ``roots`` first if given); written to ``path`` too."""
    text = dot_graph(_as_graph(graph_or_roots), modules=modules, saved=saved).to_string()
    if path is not None:
        write_atomic(path, text.encode())
    return text


def to_json(graph_or_roots: nx.DiGraph | Roots, path: str | os.PathLike | None = None) -> str:
    """networkx node-link JSON of the graph; written to ``path`` too."""
    data = nx.node_link_data(_as_graph(graph_or_roots), edges="edges")
    text = json.dumps(data, indent=1, ensure_ascii=False, default=repr)
    if path is not None:
        write_atomic(path, text.encode())
    return text


def render(
    graph_or_roots: nx.DiGraph | Roots,
    path: str | os.PathLike,
    fmt: str,
    *,
    modules: bool = True,
    saved: bool = False,
) -> None:
    """Draw the graph to an ``svg`` or ``png`` file with Graphviz's ``dot`` program."""
    if fmt not in ("svg", "png"):
        raise ExportError(f"cannot render format {fmt!r}: choose svg or png")
    program = shutil.which("dot")
    if program is None:
        raise ExportError(
            "Graphviz's dot program is not installed: install it (apt-get install graphviz, "
            "brew install graphviz) or export with --format dot"
        )
    text = to_dot(graph_or_roots, modules=modules, saved=saved)
    result = subprocess.run(
        [program, f"-T{fmt}"], input=text.encode(), capture_output=True, check=False
    )
    if result.returncode != 0:
        first_line = result.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise ExportError(f"dot could not draw the graph: {' '.join(first_line) or 'no message'}")
    write_atomic(path, result.stdout)


def _as_graph(graph_or_roots: nx.DiGraph | Roots) -> nx.DiGraph:
    if isinstance(graph_or_roots, nx.DiGraph):
        return graph_or_roots
    return build_graph(graph_or_roots)


def dot_graph(graph: nx.DiGraph, *, modules: bool = True, saved: bool = False) -> pydot.Dot:
    """The pydot graph for ``graph``; IDs and labels are quoted here (see :func:`dot_id`)."""
    dot = pydot.Dot("gradviz", graph_type="digraph")
    dot.set_graph_defaults(rankdir="TB")
    dot.set_node_defaults(shape="box", style="filled", fontname="monospace", fontsize="10")
    clusters: dict[str, pydot.Subgraph] = {}

    def container(module: str | None) -> pydot.Dot | pydot.Subgraph:
        if not modules or module is None:
            return dot
        if module not in clusters:
            parent = container(module.rpartition(".")[0]) if module else dot
            label = module or graph.graph.get("model", "model")
            cluster = pydot.Cluster(f"{len(clusters)}", label=dot_label([label]))
            cluster.set("style", "rounded")
            parent.add_subgraph(cluster)
            clusters[module] = cluster
        return clusters[module]

    for key, attrs in graph.nodes(data=True):
        container(attrs.get("module")).add_node(
            pydot.Node(dot_id(key), label=dot_label(node_label_lines(attrs)),
                       fillcolor=_ROOT_FILL if attrs.get("root") else _FILL[attrs["kind"]])
        )
        if saved and isinstance(attrs.get("saved"), dict):
            for name, meta in attrs["saved"].items():
                saved_key = f"{key}/saved/{name}"
                dot.add_node(pydot.Node(dot_id(saved_key), label=dot_label(saved_label_lines(name, meta)),
                                        fillcolor=_FILL["saved"]))
                dot.add_edge(pydot.Edge(dot_id(saved_key), dot_id(key), style="dotted", arrowhead="none"))
    for parent, child in graph.edges():
        dot.add_edge(pydot.Edge(dot_id(parent), dot_id(child)))
    return dot


def node_label_lines(attrs: dict[str, Any]) -> list[str]:
    shape = attrs.get("shape")
    shape_text = "" if shape is None else str(tuple(shape))
    if attrs["kind"] == "op":
        lines = [attrs["op"]]
        if attrs.get("module"):
            lines.append(attrs["module"])
        if attrs.get("saved") == FREED:
            lines.append("(saved tensors freed)")
    else:
        lines = [attrs.get("name") or "leaf"]
    if shape_text:
        lines.append(shape_text)
    return lines


def saved_label_lines(name: str, meta: Any) -> list[str]:
    metas = meta if isinstance(meta, list) else [meta]
    return [name] + [f"{tuple(m['shape'])} {m['dtype']}" for m in metas if m is not None]


def dot_id(text: str) -> str:
    """``text`` as a quoted DOT ID.

    Written by hand because pydot 4 leaves IDs holding ``"`` unquoted and reads
    ``param:fc.weight`` as node ``param`` with port ``fc.weight``.
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_label(lines: list[str]) -> str:
    """Lines as one quoted DOT label: each line escaped, joined by DOT's ``\\n``."""
    return '"' + "\\n".join(dot_id(line)[1:-1] for line in lines) + '"'


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise ExportError(f"cannot write {target}: the folder {folder} does not exist")
    if target.is_dir():
        raise ExportError(f"cannot write {target}: it is a folder; give a file name")
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as error:
        raise ExportError(f"cannot write {target}: {error.strerror} (in {folder})") from error
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temporary, _file_mode(target))
        os.replace(temporary, target)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise ExportError(f"cannot write {target}: {error.strerror}") from error


def _file_mode(target: Path) -> int:
    """Keep an existing file's mode; a new file gets the usual rw-r--r--."""
    try:
        return target.stat().st_mode & 0o777
    except OSError:
        return 0o644
