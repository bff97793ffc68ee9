"""The lane layout: every node once, every edge pointing down, lines that connect."""

import time

import networkx as nx
import pytest

import gradviz
from gradviz.model.layout import DOWN, LEFT, NODE, RIGHT, UP, cell_char, layout


def check(graph, max_width):
    rows = layout(graph)
    order = [row.node for row in rows]
    assert sorted(order, key=str) == sorted(graph.nodes, key=str)  # each node exactly once
    position = {node: i for i, node in enumerate(order)}
    assert all(position[u] < position[v] for u, v in graph.edges)  # edges point down
    for above, below in zip(rows, rows[1:]):
        for lane in range(max(len(above.cells), len(below.cells))):
            down = lane < len(above.cells) and above.cells[lane] & DOWN
            up = lane < len(below.cells) and below.cells[lane] & UP
            node_cell = (lane == above.lane and above.cells[lane] & NODE) or (
                lane == below.lane and below.cells[lane] & NODE)
            assert bool(down) == bool(up) or node_cell, (above.node, below.node, lane)
    for row in rows:  # horizontal runs connect too
        for lane in range(len(row.cells) - 1):
            if row.cells[lane] & RIGHT:
                assert row.cells[lane + 1] & (LEFT | NODE)
    width = max(len(row.cells) for row in rows)
    assert width <= max_width
    return rows


@pytest.mark.parametrize(("name", "max_width"), [("autograd-basics", 2), ("resnet18", 4),
                                                 ("lstm", 10), ("mlp-dataloader", 3)])
def test_demos_lay_out_narrow(name, max_width):
    check(gradviz.load_scenario(name).trace().graph, max_width)


def test_a_10k_residual_chain_is_fast_and_narrow():
    graph = nx.DiGraph()
    for i in range(5_000):  # x = x + f(x): a diamond per block
        graph.add_edge(f"add{i}", f"f{i}", slot=0)
        graph.add_edge(f"add{i}", f"add{i + 1}", slot=1)
        graph.add_edge(f"f{i}", f"add{i + 1}", slot=0)
    start = time.perf_counter()
    check(graph, 2)
    assert time.perf_counter() - start < 2.0


def test_a_chain_with_side_branches_lays_out_like_any_graph():
    # Chain links take a short way through the layout; with branches off the chain
    # (a parameter every few links) the lines must still connect, and the links stay
    # one lane wide.
    graph = nx.DiGraph()
    for i in range(300):
        graph.add_edge(f"op{i}", f"op{i + 1}", slot=0)
        if i % 7 == 0:
            graph.add_edge(f"op{i}", f"param{i}", slot=1)
    rows = check(graph, 2)
    links = [row for row in rows if row.node.startswith("op") and len(row.cells) == 1]
    assert len(links) > 200 and all(row.cells == (NODE,) for row in links)
    assert [row.node for row in rows if row.node.startswith("op")] == [
        f"op{i}" for i in range(301)]


def test_cells_draw_as_box_characters():
    graph = nx.DiGraph([("r", "a"), ("r", "b"), ("a", "c"), ("b", "c")])
    rows = layout(graph)
    assert [row.node for row in rows] in (["r", "a", "b", "c"], ["r", "b", "a", "c"])
    assert cell_char(rows[0].cells[1]) == "╮"  # r forks a second lane
    assert cell_char(UP | DOWN) == "│" and cell_char(UP | DOWN | LEFT | RIGHT) == "┼"


def test_a_cycle_is_refused():
    with pytest.raises(ValueError, match="cycle"):
        layout(nx.DiGraph([("a", "b"), ("b", "a"), ("r", "a")]))
