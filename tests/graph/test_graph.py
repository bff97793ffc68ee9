"""build_graph: the exact graphs of small cases, resnet18's counts, and bad roots."""

import networkx as nx
import pytest
import torch

import gradviz
from gradviz import GraphError, build_graph


def test_tutorial_graph_exactly(tutorial_leaves):
    a, b = tutorial_leaves
    q = 3 * a**3 - b**2
    graph = build_graph(q, params={"a": a, "b": b})

    ops = {key: attrs["op"] for key, attrs in graph.nodes(data=True)}
    assert ops == {
        "SubBackward0#0": "SubBackward0",
        "MulBackward0#0": "MulBackward0",
        "PowBackward0#0": "PowBackward0",
        "PowBackward0#1": "PowBackward0",
        "param:a": "AccumulateGrad",
        "param:b": "AccumulateGrad",
    }
    edges = {(u, v): d["slot"] for u, v, d in graph.edges(data=True)}
    assert edges == {
        ("SubBackward0#0", "MulBackward0#0"): 0,
        ("SubBackward0#0", "PowBackward0#0"): 1,
        ("MulBackward0#0", "PowBackward0#1"): 0,  # slot 1 is the constant 3: no edge
        ("PowBackward0#0", "param:b"): 0,
        ("PowBackward0#1", "param:a"): 0,
    }
    assert graph.graph["roots"] == ["SubBackward0#0"]
    assert [k for k, d in graph.nodes(data=True) if d["root"]] == ["SubBackward0#0"]
    assert graph.in_degree("SubBackward0#0") == 0

    cube, square = graph.nodes["PowBackward0#1"], graph.nodes["PowBackward0#0"]
    assert cube["args"] == {"exponent": 3} and square["args"] == {"exponent": 2}
    assert cube["saved"] == {"self": {"shape": (2,), "dtype": "float32", "state": None}}
    assert cube["shape"] == (2,) and cube["kind"] == "op" and cube["module"] is None
    assert cube["seq"] < graph.nodes["MulBackward0#0"]["seq"] < graph.nodes["SubBackward0#0"]["seq"]

    a_node = graph.nodes["param:a"]
    assert (a_node["kind"], a_node["name"], a_node["shape"], a_node["seq"]) == ("param", "a", (2,), -1)


def test_unnamed_leaves_and_saved_freed_after_backward(tutorial_leaves):
    a, b = tutorial_leaves
    q = (a * b).sum()
    before = build_graph(q)
    assert {d["kind"] for _, d in before.nodes(data=True) if d["op"] == "AccumulateGrad"} == {"leaf"}
    assert before.nodes["MulBackward0#0"]["saved"] == {
        "other": {"shape": (2,), "dtype": "float32", "state": None},
        "self": {"shape": (2,), "dtype": "float32", "state": None},
    }
    q.backward()
    after = build_graph(q)
    assert after.nodes["MulBackward0#0"]["saved"] == "freed"
    assert set(after.nodes) == set(before.nodes)


def test_same_node_in_two_slots_is_one_edge_with_both_slots():
    x = torch.ones(3, requires_grad=True)
    graph = build_graph((x * x).sum(), params={"x": x})
    edge = graph.edges["MulBackward0#0", "param:x"]
    assert edge["slot"] == 0 and edge["slots"] == (0, 1)


def test_several_roots_share_one_graph():
    x = torch.ones(3, requires_grad=True)
    h = x.exp()
    graph = build_graph([h.sum(), h.mean()], params={"x": x})
    assert graph.graph["roots"] == ["SumBackward0#0", "MeanBackward0#0"]
    assert sum(1 for _, d in graph.nodes(data=True) if d["op"] == "ExpBackward0") == 1
    assert graph.number_of_nodes() == 4 and graph.number_of_edges() == 3


def test_node_as_root_and_duplicate_roots():
    x = torch.ones(2, requires_grad=True)
    y = (x * 2).sum()
    assert set(build_graph(y.grad_fn)) == set(build_graph([y, y.grad_fn]))


def test_tied_weight_gets_all_its_names():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)
            self.head = torch.nn.Linear(4, 10, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, tokens):
            return self.head(self.embed(tokens))

    model = Tied()
    graph = build_graph(model(torch.tensor([1, 2])).sum(), model=model)
    weight = graph.nodes["param:embed.weight"]
    assert weight["names"] == ("embed.weight", "head.weight")
    assert weight["name"] == "embed.weight, head.weight"
    assert weight["module"] == "embed"
    assert graph.graph["model"] == "Tied"
    assert sum(1 for _, d in graph.nodes(data=True) if d["kind"] == "param") == 1


def test_custom_function_node_shows_its_saved_tensors():
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 2 * x * grad

    x = torch.ones(5, requires_grad=True)
    graph = build_graph(Square.apply(x).sum())
    node = graph.nodes["SquareBackward#0"]
    assert node["saved"] == {"saved_tensors[0]": {"shape": (5,), "dtype": "float32", "state": None}}
    assert list(graph.successors("SquareBackward#0")) == ["leaf#0"]


def test_resnet18_counts(resnet18_trace):
    _, trace = resnet18_trace
    graph = trace.graph
    kinds = [d["kind"] for _, d in graph.nodes(data=True)]
    assert (kinds.count("op"), kinds.count("param"), graph.number_of_edges()) == (72, 62, 141)
    assert graph.number_of_nodes() == 134
    assert nx.is_directed_acyclic_graph(graph)
    assert graph.nodes["param:fc.weight"]["shape"] == (1000, 512)
    assert graph.nodes["param:conv1.weight"]["module"] == "conv1"


def test_a_long_chain_is_walked_without_recursion():
    x = torch.ones(1, requires_grad=True)
    y = x
    for _ in range(20_000):  # well past Python's recursion limit
        y = y + 1
    graph = build_graph(y)
    assert graph.number_of_nodes() == 20_001
    assert nx.dag_longest_path_length(graph) == 20_000


@pytest.mark.parametrize(
    ("roots", "message"),
    [
        (torch.ones(2, requires_grad=True), "leaf tensor (requires_grad=True, shape (2,))"),
        (torch.ones(2), "does not require grad"),
        ([], "no roots given"),
        ("loss", "got str"),
        (3.0, "got float"),
        ([torch.ones(1, requires_grad=True).sum(), None], "root 1 is a NoneType"),
    ],
)
def test_bad_roots_are_one_line_graph_errors(roots, message):
    with pytest.raises(GraphError, match=None) as caught:
        build_graph(roots)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_graph_error_is_public():
    assert gradviz.GraphError is GraphError


def test_graph_is_an_ordinary_digraph(resnet18_trace):
    """build_graph fills networkx's dicts directly: the result must equal, key order and
    all, a graph built through networkx's own API, and behave like one."""
    _, trace = resnet18_trace
    graph = trace.graph
    public = nx.DiGraph(**graph.graph)
    public.add_nodes_from(graph.nodes(data=True))
    public.add_edges_from(graph.edges(data=True))
    assert nx.utils.graphs_equal(graph, public)
    assert list(graph.nodes) == list(public.nodes) and list(graph.edges) == list(public.edges)
    assert all(list(graph.pred[k]) == list(public.pred[k]) for k in graph)
    assert list(nx.topological_sort(graph)) == list(nx.topological_sort(public))

    copy = graph.copy()
    copy.add_edge("param:fc.weight", "extra", slot=0)
    copy.remove_node("param:fc.bias")
    assert copy.has_edge("param:fc.weight", "extra") and "param:fc.bias" not in copy
    assert "extra" not in graph and "param:fc.bias" in graph
    assert copy.reverse().has_edge("extra", "param:fc.weight")


def test_walk_lists_nodes_in_key_order():
    x = torch.ones(3, requires_grad=True)
    graph, walk = gradviz.graph.walk.walk_graph([(x.exp() * x).sum(), x.sin().sum()])
    assert [fn.name().rpartition("::")[2] for fn in walk.nodes] == [
        graph.nodes[k]["op"] for k in graph]
    assert walk.roots == 2 and len(gradviz.graph.walk.discover(walk.nodes[:2]).nodes) == len(graph)


def test_a_node_reads_the_same_as_root_and_as_child():
    """build_graph describes most op nodes inline and roots through _Describer: the two agree."""
    lin = torch.nn.Linear(3, 2)
    x = torch.rand(4, 3, requires_grad=True)
    out = lin(x.sigmoid() * 2)
    as_child = build_graph(out.sum(), model=lin)
    as_root = build_graph(out, model=lin)
    assert as_root.graph["roots"] == ["AddmmBackward0#0"]
    for key, attrs in as_root.nodes(data=True):
        assert as_child.nodes[key] == {**attrs, "root": False}, key
