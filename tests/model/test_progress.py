"""BackwardProgress and the views: what the screen draws, as plain data, without a terminal."""

import networkx as nx

from gradviz.model.progress import BackwardProgress, NodeRun, NodeState, group_progress
from gradviz.model.summary import TensorSummary
from gradviz.model.updates import ParamUpdate, UpdateReport
from gradviz.model.views import node_view


def tutorial_graph():
    """Q = 3a^3 - b^2 as gradviz walks it (root at the top, edges along the gradient)."""
    graph = nx.DiGraph(roots=["SubBackward0#0"])
    nodes = {"SubBackward0#0": ("op", "SubBackward0", None), "MulBackward0#0": ("op",
             "MulBackward0", None), "PowBackward0#0": ("op", "PowBackward0", {"exponent": 3}),
             "PowBackward0#1": ("op", "PowBackward0", {"exponent": 2}),
             "param:a": ("param", "AccumulateGrad", None),
             "param:b": ("param", "AccumulateGrad", None)}
    for key, (kind, op, args) in nodes.items():
        graph.add_node(key, kind=kind, op=op, name=key.removeprefix("param:") if kind == "param"
                       else None, shape=(2,), args=args or {}, module=None, saved={})
    for slot, (parent, child) in enumerate([("SubBackward0#0", "MulBackward0#0"),
                                            ("SubBackward0#0", "PowBackward0#1"),
                                            ("MulBackward0#0", "PowBackward0#0"),
                                            ("PowBackward0#0", "param:a"),
                                            ("PowBackward0#1", "param:b")]):
        graph.add_edge(parent, child, slot=slot % 2)
    return graph


def summary(*values):
    return TensorSummary((len(values),), "float32", "cpu", len(values),
                         sum(v * v for v in values) ** 0.5, 0.0, 0.0, min(values), max(values),
                         0, 0, values)


def test_a_new_graph_waits_at_its_root_and_nodes_turn_done_as_they_run():
    graph = tutorial_graph()
    progress = BackwardProgress(graph)
    assert progress.state_of("SubBackward0#0") is NodeState.READY
    assert progress.state_of("param:a") is NodeState.WAITING
    delta = progress.record([NodeRun("SubBackward0#0", 0, 1e-5, True, (summary(1.0, 1.0),),
                                     (summary(1.0, 1.0), summary(-1.0, -1.0)), None, 1.414)],
                            pending="MulBackward0#0", incoming=(summary(1.0, 1.0),),
                            ready={"MulBackward0#0", "PowBackward0#1"}, finished=False)
    assert delta.ran == ("SubBackward0#0",) and delta.last == "SubBackward0#0"
    assert delta.nodes == {"SubBackward0#0", "MulBackward0#0", "PowBackward0#1"}
    assert progress.state_of("SubBackward0#0") is NodeState.DONE
    assert progress.state_of("MulBackward0#0") is NodeState.PENDING
    assert progress.state_of("PowBackward0#1") is NodeState.READY
    assert progress.norm_of("SubBackward0#0") == 1.414 and progress.done == 1


def test_the_node_view_says_what_came_in_while_the_engine_waits_and_what_went_out_after():
    graph = tutorial_graph()
    progress = BackwardProgress(graph)
    progress.record([], pending="SubBackward0#0", incoming=(summary(1.0, 1.0),),
                    ready={"SubBackward0#0"}, finished=False)
    waiting = node_view("SubBackward0#0", graph, progress)
    assert waiting.run is None and waiting.incoming[0].sample == (1.0, 1.0)
    assert waiting.children == ((0, "MulBackward0#0"), (1, "PowBackward0#1"))
    assert waiting.derivative.startswith("self: grad")
    progress.record([NodeRun("SubBackward0#0", 0, 1e-5, True, (summary(1.0, 1.0),),
                             (summary(1.0, 1.0), summary(-1.0, -1.0)))],
                    pending="MulBackward0#0", incoming=(), ready=(), finished=False)
    ran = node_view("SubBackward0#0", graph, progress)
    assert ran.incoming is None and ran.run.grad_inputs[1].sample == (-1.0, -1.0)
    assert node_view("PowBackward0#0", graph, progress).args == {"exponent": 3}


def test_nodes_that_ran_unread_are_asked_for_once():
    graph = tutorial_graph()
    progress = BackwardProgress(graph)
    progress.record([NodeRun("SubBackward0#0", 0, 1e-5), NodeRun("MulBackward0#0", 1, 1e-5)],
                    pending=None, incoming=(), ready=(), finished=False)
    assert node_view("SubBackward0#0", graph, progress).reading
    assert progress.unread(["SubBackward0#0", "param:a"]) == ["SubBackward0#0"]
    assert progress.unread(["SubBackward0#0", "MulBackward0#0"]) == ["MulBackward0#0"]
    read = progress.read([NodeRun("SubBackward0#0", 0, 1e-5, True, norm=2.0)])
    assert read == {"SubBackward0#0"} and progress.norm_of("SubBackward0#0") == 2.0


def test_a_failure_marks_its_node_and_a_folded_module_shows_its_worst_member():
    graph = tutorial_graph()
    progress = BackwardProgress(graph)
    progress.record([NodeRun("SubBackward0#0", 0, 1e-5)], pending="MulBackward0#0",
                    incoming=(), ready={"MulBackward0#0"}, finished=False)
    progress.fail_at("MulBackward0#0")
    assert progress.pending is None and progress.broken == "MulBackward0#0"
    assert progress.state_of("MulBackward0#0") is NodeState.BROKEN
    group = group_progress(progress, ["SubBackward0#0", "MulBackward0#0", "param:a"])
    assert (group.members, group.run, group.state) == (3, 1, NodeState.BROKEN)


def test_a_forward_steps_new_nodes_are_marked_new():
    graph = tutorial_graph()
    progress = BackwardProgress(graph, new={"PowBackward0#0"})
    assert progress.state_of("PowBackward0#0") is NodeState.NEW
    assert progress.state_of("SubBackward0#0") is NodeState.WAITING  # a forward's: no ready


def test_an_update_report_is_a_mapping_of_parameter_names():
    rows = [ParamUpdate("w", (3,), 0, 0.1, summary(1.0), 2.0, summary(0.1), 0.05, {}, ""),
            ParamUpdate("b", (1,), 0, 0.1, None, 0.0, None, None, {}, "no grad")]
    report = UpdateReport(1, "SGD", [{"lr": 0.1}], rows, None)
    assert list(report) == ["w", "b"] and len(report) == 2 and "b" in report
    assert report["w"].ratio == 0.05 and [u.name for u in report.values()] == ["w", "b"]
    assert dict(report.items())["b"].skipped == "no grad"
    assert [u.name for u in report.updated] == ["w"]
