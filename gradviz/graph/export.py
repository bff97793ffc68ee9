"""Export a graph to Graphviz DOT, node-link JSON, SVG, PNG or PDF.

The picture's legend: grey boxes are backward ops (label: op, module, gradient
shape), the green ones are the roots; blue boxes are named parameters, pale blue
unnamed leaves; a violet 3-D box is a ``torch.compile``d region and a khaki one a
region checkpointed with ``use_reentrant=True`` (label: how many parameters are
inside; the ops inside are not in the graph). With ``saved=True`` orange boxes
are the tensors an op saved for backward, joined to it by dotted lines: yellow
where checkpointing recomputes them in backward, red where an in-place operation
has changed them since (backward through that op would fail), grey where another
saved-tensors hook holds them. With ``modules=True`` each module is a ``cluster_``
subgraph, nested as the modules are. Edges follow the gradient from the root to
the leaves.

The DOT text is written here directly rather than through pydot: building pydot
objects and having pydot re-check the quoting of every ID and attribute took
four times as long as walking the graph (resnet18: 7 ms of 9). IDs and labels are
quoted by :func:`dot_id` / :func:`dot_label`; the tests read the text back with
pydot's parser and draw it with Graphviz's ``dot``.

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

from gradviz.errors import ExportError
from gradviz.graph.walk import Roots, build_graph
from gradviz.model.node_facts import (
    CHECKPOINT,
    COMPILED,
    FREED,
    HOOKED,
    MODIFIED_IN_PLACE,
    RECOMPUTED,
    meta_text,
    region_summary,
)

FORMATS = ("dot", "json", "svg", "png", "pdf")
#: What Graphviz's ``dot`` draws for us (the others are text written here).
DRAWN = ("svg", "png", "pdf")

_FILL = {"op": "lightgrey", "param": "lightblue", "leaf": "azure", "saved": "orange"}
_ROOT_FILL = "darkolivegreen1"
_REGION_FILL = {COMPILED: "violet", CHECKPOINT: "khaki"}
_SAVED_FILL = {RECOMPUTED: "yellow", MODIFIED_IN_PLACE: "tomato", HOOKED: "lightgrey"}


def to_dot(
    graph_or_roots: nx.DiGraph | Roots,
    path: str | os.PathLike | None = None,
    *,
    modules: bool = True,
    saved: bool = False,
) -> str:
    """DOT text of the graph (walking ``roots`` first if given); written to ``path`` too."""
    text = dot_text(_as_graph(graph_or_roots), modules=modules, saved=saved)
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
    """Draw the graph to an ``svg``, ``png`` or ``pdf`` file with Graphviz's ``dot``."""
    write_atomic(path, draw_with_dot(to_dot(graph_or_roots, modules=modules, saved=saved), fmt))


def draw_with_dot(text: str, fmt: str) -> bytes:
    """DOT text drawn by Graphviz's ``dot`` program as ``fmt`` (one of :data:`DRAWN`)."""
    if fmt not in DRAWN:
        raise ExportError(f"cannot draw format {fmt!r}: choose {', '.join(DRAWN)}")
    program = shutil.which("dot")
    if program is None:
        raise ExportError(
            f"Graphviz's dot program is not installed, and it draws {fmt}: install it "
            "(apt-get install graphviz, brew install graphviz) or write a .dot or .json file"
        )
    result = subprocess.run(
        [program, f"-T{fmt}"], input=text.encode(), capture_output=True, check=False
    )
    if result.returncode != 0:
        first_line = result.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise ExportError(f"dot could not draw the graph: {' '.join(first_line) or 'no message'}")
    return result.stdout


def _as_graph(graph_or_roots: nx.DiGraph | Roots) -> nx.DiGraph:
    if isinstance(graph_or_roots, nx.DiGraph):
        return graph_or_roots
    return build_graph(graph_or_roots)


def dot_text(graph: nx.DiGraph, *, modules: bool = True, saved: bool = False) -> str:
    """The DOT text for ``graph``; IDs and labels are quoted here (see :func:`dot_id`)."""
    top: list[str] = []
    inside: dict[str, list[str]] = {}  # module -> its node lines and its clusters' names
    children: dict[str, list[str]] = {}  # module -> the modules whose clusters nest in it
    tails: list[str] = []  # saved-tensor nodes and every edge, after the clusters

    def lines_for(module: str | None) -> list[str]:
        if not modules or module is None:
            return top
        lines = inside.get(module)
        if lines is None:
            lines = inside[module] = []
            children[module] = []
            if module:
                parent = module.rpartition(".")[0]
                lines_for(parent)
                children[parent].append(module)
        return lines

    for key, attrs in graph.nodes(data=True):
        node_id = dot_id(key)
        region = attrs.get("region")
        if attrs.get("root"):
            look = f"fillcolor={_ROOT_FILL}"
        elif region is not None and region.get("kind") in _REGION_FILL:
            look = f"fillcolor={_REGION_FILL[region['kind']]}, shape=box3d"
        else:
            look = f"fillcolor={_FILL[attrs['kind']]}"
        lines_for(attrs.get("module")).append(
            f"{node_id} [label={dot_label(node_label_lines(attrs))}, {look}];")
        tensors = attrs.get("saved")
        if saved and isinstance(tensors, dict):
            for name, meta in tensors.items():
                saved_id = dot_id(f"{key}/saved/{name}")
                fill = _FILL["saved"]
                for one in meta if isinstance(meta, list) else [meta]:
                    if one is not None and one.get("state") in _SAVED_FILL:
                        fill = _SAVED_FILL[one["state"]]
                tails.append(f"{saved_id} [label={dot_label(saved_label_lines(name, meta))}, "
                             f"fillcolor={fill}];")
                tails.append(f"{saved_id} -> {node_id} [style=dotted, arrowhead=none];")
    for parent, child in graph.edges():
        tails.append(f"{dot_id(parent)} -> {dot_id(child)};")

    out = [
        "digraph gradviz {",
        "graph [rankdir=TB];",
        "node [shape=box, style=filled, fontname=monospace, fontsize=10];",
    ]
    numbers: dict[str, int] = {}

    def cluster(module: str) -> None:
        numbers[module] = len(numbers)
        label = module or graph.graph.get("model", "model")
        out.append(f"subgraph cluster_{numbers[module]} {{")
        out.append(f"label={dot_label([label])};")
        out.append("style=rounded;")
        out.extend(inside[module])
        for child in children[module]:
            cluster(child)
        out.append("}")

    out.extend(top)
    if inside:  # every module's cluster nests in the model's, ""
        cluster("")
    out.extend(tails)
    out.append("}")
    out.append("")
    return "\n".join(out)


def node_label_lines(attrs: dict[str, Any]) -> list[str]:
    shape = attrs.get("shape")
    shape_text = "" if shape is None else str(tuple(shape))
    if attrs["kind"] == "op":
        lines = [attrs["op"]]
        if attrs.get("module"):
            lines.append(attrs["module"])
        if attrs.get("region") is not None:
            lines.append(region_summary(attrs["region"]))
        if attrs.get("saved") == FREED:
            lines.append("(saved tensors freed)")
    else:
        lines = [attrs.get("name") or "leaf"]
    if shape_text:
        lines.append(shape_text)
    return lines


def saved_label_lines(name: str, meta: Any) -> list[str]:
    metas = meta if isinstance(meta, list) else [meta]
    return [name] + [meta_text(one) for one in metas if one is not None]


def dot_id(text: str) -> str:
    """``text`` as a quoted DOT ID.

    Every ID is quoted: unquoted, ``param:fc.weight`` reads as node ``param`` with
    port ``fc.weight``, and names may hold any character.
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
