"""Export: DOT through pydot that reads back and renders, JSON, atomic files, clear errors."""

import json
import os
import shutil
import subprocess

import networkx as nx
import pydot
import pytest
import torch

import gradviz
from gradviz import ExportError
from gradviz.graph import export

ODD_NAMES = ['say "hi"', "back\\slash", "ünïcödé.wéight", "layer.0.weight", "trailing\\"]


def odd_graph():
    params = {name: torch.ones(2, requires_grad=True) for name in ODD_NAMES}
    total = sum((p * p).sum() for p in params.values())
    return gradviz.build_graph(total, params=params)


def unquote(text):
    assert text.startswith('"') and text.endswith('"')
    out, chars = [], iter(text[1:-1])
    for char in chars:
        out.append(next(chars) if char == "\\" else char)
    return "".join(out)


def parsed(dot_text):
    (graph,) = pydot.graph_from_dot_data(dot_text)
    return graph


def all_nodes(dot):
    nodes = list(dot.get_nodes())
    for sub in dot.get_subgraphs():
        nodes += all_nodes(sub)
    return nodes


def test_dot_round_trip_keeps_odd_names():
    graph = odd_graph()
    back = parsed(gradviz.to_dot(graph))
    names = {unquote(n.get_name()) for n in all_nodes(back) if n.get_name() not in ("node", "graph")}
    assert names == set(graph.nodes)
    labels = [unquote(n.get("label")) for n in all_nodes(back) if n.get("label")]
    for name in ODD_NAMES:
        assert any(label.startswith(name + "n(2,)") for label in labels), name
    edges = {(unquote(e.get_source()), unquote(e.get_destination())) for e in back.get_edges()}
    assert edges == set(graph.edges)


def test_clusters_one_per_module_nested(resnet18_trace):
    _, trace = resnet18_trace
    back = parsed(gradviz.to_dot(trace.graph))

    def clusters(dot, depth=0):
        found = []
        for sub in dot.get_subgraphs():
            assert sub.get_name().startswith("cluster_")
            found.append((unquote(sub.get("label")), depth))
            found += clusters(sub, depth + 1)
        return found

    found = clusters(back)
    labels = [label for label, _ in found]
    modules = {d["module"] for _, d in trace.graph.nodes(data=True) if d["module"] is not None}
    assert len(labels) == len(set(labels))
    assert set(labels) - {"ResNet"} <= {m for m in modules if m} | {
        ".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 1)
    }
    assert ("ResNet", 0) in found and ("layer1", 1) in found and ("layer1.0", 2) in found
    assert ("layer1.0.conv1", 3) in found
    assert not parsed(gradviz.to_dot(trace.graph, modules=False)).get_subgraphs()


def test_saved_tensors_are_their_own_nodes(tutorial_leaves):
    a, b = tutorial_leaves
    graph = gradviz.build_graph(3 * a**3 - b**2, params={"a": a, "b": b})
    back = parsed(gradviz.to_dot(graph, saved=True))
    names = [unquote(n.get_name()) for n in all_nodes(back) if n.get_name() not in ("node", "graph")]
    saved = [n for n in names if "/saved/" in n]
    assert sorted(saved) == ["MulBackward0#0/saved/other", "PowBackward0#0/saved/self",
                             "PowBackward0#1/saved/self"]
    assert len(names) == len(set(names)) == graph.number_of_nodes() + 3


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_renders_the_dot(tmp_path):
    path = tmp_path / "odd.svg"
    export.render(odd_graph(), path, "svg", saved=True)
    svg = path.read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "ünïcödé.wéight" in svg
    check = subprocess.run(["dot", "-Tsvg"], input=gradviz.to_dot(odd_graph()).encode(),
                           capture_output=True)
    assert check.returncode == 0 and not check.stderr


def test_json_round_trip(tmp_path, tutorial_leaves):
    a, b = tutorial_leaves
    graph = gradviz.build_graph(3 * a**3 - b**2, params={"a": a, "b": b})
    path = tmp_path / "g.json"
    gradviz.to_json(graph, path)
    back = nx.node_link_graph(json.loads(path.read_text()), edges="edges")
    assert set(back.edges) == set(graph.edges)
    assert back.nodes["PowBackward0#1"]["args"] == {"exponent": 3}
    assert back.nodes["param:a"]["shape"] == [2]


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "graph.dot"
    path.write_text("old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ExportError, match="No space left on device"):
        gradviz.to_dot(odd_graph(), path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["graph.dot"]


@pytest.mark.parametrize("make_path", [lambda d: d / "missing" / "g.dot", lambda d: d])
def test_unwritable_paths_are_one_line_errors(tmp_path, make_path):
    with pytest.raises(ExportError) as caught:
        gradviz.to_dot(odd_graph(), make_path(tmp_path))
    assert "\n" not in str(caught.value) and "cannot write" in str(caught.value)


def test_render_without_dot_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ExportError, match="apt-get install graphviz"):
        export.render(odd_graph(), tmp_path / "g.svg", "svg")
    assert not (tmp_path / "g.svg").exists()


def test_saved_tensor_states_are_drawn_and_parse(tmp_path):
    from torch.utils.checkpoint import checkpoint

    x = torch.rand(3, requires_grad=True)
    y = x.sigmoid()
    y.add_(1)  # the sigmoid's saved result: modified in place
    z = checkpoint(torch.sin, x, use_reentrant=False)  # sin's saved input: recomputed
    graph = gradviz.build_graph((y * z).sum(), params={"x": x})
    text = gradviz.to_dot(graph, saved=True)
    saved = {unquote(n.get_name()): n for n in all_nodes(parsed(text)) if "/saved/" in n.get_name()}
    modified = saved["SigmoidBackward0#0/saved/result"]
    assert modified.get("fillcolor") == "tomato"
    assert unquote(modified.get("label")) == "resultn(3,) float32 (modified in place)"
    recomputed = saved["SinBackward0#0/saved/self"]
    assert recomputed.get("fillcolor") == "yellow"
    assert "(recomputed in backward)" in unquote(recomputed.get("label"))
    if shutil.which("dot"):
        export.render(graph, tmp_path / "states.svg", "svg", saved=True)
        assert "modified in place" in (tmp_path / "states.svg").read_text()


def test_dot_text_matches_pydots_reading(resnet18_trace):
    """Every node in exactly one place, every edge once, clusters as the modules nest."""
    _, trace = resnet18_trace
    back = parsed(gradviz.to_dot(trace.graph, saved=True))
    names = [unquote(n.get_name()) for n in all_nodes(back) if n.get_name() not in ("node", "graph")]
    saved_count = sum(len(d["saved"]) for _, d in trace.graph.nodes(data=True)
                      if isinstance(d["saved"], dict))
    assert len(names) == len(set(names)) == trace.graph.number_of_nodes() + saved_count
    edges = [(unquote(e.get_source()), unquote(e.get_destination())) for e in back.get_edges()]
    assert {e for e in edges if "/saved/" not in e[0]} == set(trace.graph.edges)
    assert len(edges) == trace.graph.number_of_edges() + saved_count
