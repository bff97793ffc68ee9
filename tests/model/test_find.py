"""Find (the app's /) ranks what people mean first: exact, then whole words, then parts."""

import networkx as nx

from gradviz.model.find import Match, find_nodes, match


def tutorial_graph():
    graph = nx.DiGraph()
    for key, op, kind, name, module in [
            ("SubBackward0#0", "SubBackward0", "op", None, None),
            ("PowBackward0#0", "PowBackward0", "op", None, None),
            ("param:b", "AccumulateGrad", "param", "b", None),
            ("MulBackward0#0", "MulBackward0", "op", None, None),
            ("ConvolutionBackward0#3", "ConvolutionBackward0", "op", None, "layer1.0.conv1"),
            ("ConvolutionBackward0#4", "ConvolutionBackward0", "op", None, "layer1.0.conv10"),
            ("param:a", "AccumulateGrad", "param", "a", None)]:
        graph.add_node(key, op=op, kind=kind, name=name, module=module)
    return graph


def test_the_parameter_b_comes_before_every_backward_with_a_b_in_it():
    found = find_nodes(tutorial_graph(), "b")
    assert found[0] == "param:b"
    assert set(found[1:]) == {"SubBackward0#0", "PowBackward0#0", "MulBackward0#0",
                              "ConvolutionBackward0#3", "ConvolutionBackward0#4"}


def test_a_whole_dotted_word_comes_before_a_part_of_one():
    graph = tutorial_graph()
    assert find_nodes(graph, "conv1") == ["ConvolutionBackward0#3", "ConvolutionBackward0#4"]
    assert match(graph.nodes["ConvolutionBackward0#3"], "ConvolutionBackward0#3", "conv1") \
        is Match.WORD
    assert match(graph.nodes["ConvolutionBackward0#4"], "ConvolutionBackward0#4", "conv1") \
        is Match.PART


def test_ties_keep_the_order_given_and_nothing_matches_nothing():
    graph = tutorial_graph()
    rows = {key: -i for i, key in enumerate(graph.nodes)}  # drawn upside down
    assert find_nodes(graph, "backward0", rows)[0] == "ConvolutionBackward0#4"
    assert find_nodes(graph, "  ") == [] and find_nodes(graph, "zzz") == []
