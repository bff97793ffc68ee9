"""ForwardStepper: the forward pass one torch operation at a time, autograd building its graph."""

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

import gradviz
from gradviz import BackwardStepper, Exclusion, ForwardStepper, StepperError
from gradviz.model.catalog import demos_folder


def no_forward_threads():
    return not [t for t in threading.enumerate() if t.name == "gradviz-forward"]


def hooks_left(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def line_of(path, text):
    lines = Path(path).read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


def test_the_tutorial_records_its_nodes_in_the_order_the_ops_ran():
    scenario = gradviz.load_scenario("autograd-basics")
    stepper = ForwardStepper(scenario.forward, params=scenario.params)
    events = []
    while (event := stepper.step()) is not None:
        assert stepper.paused or stepper.done
        events.append(event)
    assert [e.op for e in events] == ["pow", "mul", "pow", "sub"]  # 3*a**3 - b**2
    assert [e.node_type for e in events] == ["PowBackward0", "MulBackward0", "PowBackward0",
                                             "SubBackward0"]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    demo = demos_folder() / "autograd_basics.py"
    for event in events:
        assert event.module is None  # no model: no module forward is running
        assert Path(event.source.file).resolve() == demo.resolve()
        assert event.source.line == line_of(demo, "return 3 * a**3 - b**2")
    graph = stepper.graph
    assert graph.graph["roots"] == [events[-1].key]
    for event in events:
        assert graph.nodes[event.key]["seq"] == event.seq
        assert graph.nodes[event.key]["op"] == event.node_type
    a_cubed = events[0]
    assert graph.has_edge(events[1].key, a_cubed.key)  # mul's gradient flows to a**3
    assert graph.has_edge(a_cubed.key, "param:a")
    assert events[3].output.sample == (-12.0, 65.0)  # Q = 3a^3 - b^2 = [24-36, 81-16]


def test_each_event_names_its_module_and_line_and_summarizes_its_output():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    x = torch.randn(16, 4)

    def forward():
        return model(x).sum()

    events = ForwardStepper(forward, model=model).run()
    assert [(e.op, e.module) for e in events] == [
        ("linear", "0"), ("relu", "1"), ("linear", "2"), ("sum", None)]
    relu = events[1]
    assert relu.node_type == "ReluBackward0" and relu.shape == (16, 8)
    assert relu.output.min == 0.0 and 0.0 < relu.zeros < 1.0
    assert events[0].output.min < 0.0 and events[0].zeros == 0.0
    assert events[3].source.line == line_of(__file__, "return model(x).sum()")
    assert events[0].source.file.endswith("test_forward_stepper.py")
    assert hooks_left(model) == 0


def test_an_in_place_op_does_not_change_the_summary_of_what_it_overwrote():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(1, 3, 8, 8)

    def forward():
        y = conv(x)
        y.relu_()  # the conv's output, changed in place
        return y.sum()

    stepper = ForwardStepper(forward, model=conv)
    events = stepper.run()
    assert [e.op for e in events] == ["conv2d", "relu_", "sum"]
    assert events[0].output.min < 0 < events[0].output.max  # read after relu_ ran
    assert events[1].output.min == 0.0 and events[1].zeros > 0.2
    assert not events[0].overwritten


def test_stepping_pauses_the_forward_between_ops_and_ends_with_none():
    a = torch.ones(3, requires_grad=True)
    ran = []

    def forward():
        b = a * 2
        ran.append("after mul")
        c = b.sin()
        ran.append("after sin")
        return c.sum()

    stepper = ForwardStepper(forward, params={"a": a})
    assert stepper.step().op == "mul"
    time.sleep(0.05)
    assert ran == [] and stepper.paused  # held right after mul
    partial = stepper.partial_graph()
    assert [d["op"] for _, d in partial.nodes(data=True)] == ["MulBackward0", "AccumulateGrad"]
    assert stepper.step().op == "sin"
    assert ran == ["after mul"]
    assert stepper.step().op == "sum"
    assert stepper.step() is None
    assert stepper.finished and ran == ["after mul", "after sin"]
    with pytest.raises(StepperError, match="finished"):
        stepper.step()
    assert stepper.result.grad_fn.name() == "SumBackward0"
    assert no_forward_threads()


def test_run_until_stops_after_the_first_matching_op():
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1))
    x = torch.randn(3, 2)
    stepper = ForwardStepper(lambda: model(x).sum(), model=model)
    events = stepper.run_until(lambda event: event.module == "1")
    assert [e.op for e in events] == ["linear", "tanh"] and stepper.paused
    assert [e.op for e in stepper.run()] == ["linear", "sum"]
    assert stepper.finished


def resnet18_and_forward(seed=0):
    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    data, labels = torch.rand(1, 3, 64, 64), torch.rand(1, 1000)
    return model, lambda: (model(data) - labels).sum()


def transformer_and_forward(seed=0):
    torch.manual_seed(seed)
    model = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True)
    x = torch.rand(2, 5, 16)
    return model, lambda: model(x).pow(2).mean()


def same_graph(ours, theirs):
    assert list(ours.nodes) == list(theirs.nodes)
    for key in ours:
        mine = {k: v for k, v in ours.nodes[key].items() if k != "seq"}
        other = {k: v for k, v in theirs.nodes[key].items() if k != "seq"}
        assert mine == other, key
    assert list(ours.edges(data=True)) == list(theirs.edges(data=True))
    assert ours.graph == theirs.graph
    return True


@pytest.mark.parametrize("make", [resnet18_and_forward, transformer_and_forward],
                         ids=["resnet18", "transformer"])
def test_the_graph_built_equals_build_graph_and_backward_continues_on_it(make):
    model, forward = make()
    torch.manual_seed(1)  # the same dropout masks as the reference below
    stepper = ForwardStepper(forward, model=model)
    for _ in range(5):
        stepper.step()
    stepper.run()
    graph = stepper.graph
    assert same_graph(graph, gradviz.build_graph(stepper.result, model=model,
                                                 modules=stepper.modules))
    # The modules match gradviz.record's on the same forward (seeded: same dropout).
    reference_model, reference_forward = make()
    torch.manual_seed(1)
    with gradviz.record(reference_model) as recording:
        reference_loss = reference_forward()
    assert same_graph(graph, recording.graph(reference_loss))
    # Every node of the graph was recorded by exactly one event, under its key.
    keyed = [key for event in stepper.events for key in event.keys]
    ops = [key for key in graph if graph.nodes[key]["kind"] == "op"]
    assert sorted(keyed) == sorted(ops)
    for event in stepper.events:
        if event.recorded:
            assert graph.nodes[event.key]["seq"] == event.seq
            assert graph.nodes[event.key]["module"] == event.module
    # Backward steps on the very graph the forward built, and gives plain backward's grads.
    with BackwardStepper(stepper.roots, graph=graph, model=model) as backward:
        backward.step()
        backward.run()
        assert backward.finished
    torch.autograd.backward(reference_loss)
    for (name, p), (_, q) in zip(model.named_parameters(), reference_model.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_multi_head_attention_steps_op_by_op_inside_its_one_torch_function():
    model, forward = transformer_and_forward()
    events = ForwardStepper(forward, model=model).run()
    attention = [e for e in events if e.module == "self_attn"]
    assert len(attention) > 10  # not one event for F.multi_head_attention_forward
    assert {"linear", "scaled_dot_product_attention"} <= {e.op for e in attention}
    assert all(e.source is not None and "transformer.py" not in e.source.file
               or e.source.file.endswith("transformer.py") for e in attention)


def test_finetune_shows_the_frozen_backbone_excluded_and_only_fc_in_the_graph():
    scenario = gradviz.load_scenario("finetune")
    stepper = ForwardStepper(scenario.forward, model=scenario.model)
    events = stepper.run()
    graph = stepper.graph
    assert sorted(graph) == ["AddmmBackward0#0", "SubBackward0#0", "SumBackward0#0",
                             "TBackward0#0", "param:fc.bias", "param:fc.weight"]
    recorded = [e for e in events if e.recorded]
    assert [(e.op, e.module) for e in recorded] == [("linear", "fc"), ("sub", None),
                                                    ("sum", None)]
    frozen = [e for e in events if not e.recorded]
    assert len(frozen) > 60
    assert all(e.exclusion is Exclusion.NO_INPUT_REQUIRES_GRAD for e in frozen)
    assert all(e.key is None and e.seq is None for e in frozen)
    first = frozen[0]
    assert (first.op, first.module) == ("conv2d", "conv1")
    assert first.reason == "no input requires grad (conv1.weight has requires_grad=False)"
    assert {e.module.split(".")[0] for e in frozen if e.module} >= {
        "conv1", "bn1", "layer1", "layer4", "avgpool"}


def test_each_op_that_records_nothing_says_why():
    w = torch.randn(3, requires_grad=True)
    x = torch.randn(3)

    def forward():
        x * 2                                   # no input requires grad
        with torch.no_grad():
            w * 2                               # grad mode is off
        with torch.inference_mode():
            w + 1                               # inference_mode
        cut = w.detach()                        # detach
        cut * 3                                 # a detached input
        (w * 1).argmax()                        # integer result
        torch.ones(2, requires_grad=True)       # a new leaf
        y = w * 4
        y.contiguous()                          # the same tensor back
        return y.sum()

    events = ForwardStepper(forward, params={"w": w}).run()
    reasons = [(e.op, e.exclusion) for e in events]
    assert reasons == [
        ("mul", Exclusion.NO_INPUT_REQUIRES_GRAD),
        ("mul", Exclusion.GRAD_MODE_OFF),
        ("add", Exclusion.INFERENCE_MODE),
        ("detach", Exclusion.DETACH),
        ("mul", Exclusion.DETACHED_INPUT),
        ("mul", None),
        ("argmax", Exclusion.NOT_DIFFERENTIABLE),
        ("ones", Exclusion.NEW_LEAF),
        ("mul", None),
        ("contiguous", Exclusion.EXISTING_TENSOR),
        ("sum", None),
    ]
    assert events[1].reason == "grad mode is off (torch.no_grad)"
    assert events[4].reason.startswith("a detached input (cut by detach at test_forward_stepper.py:")
    assert events[6].detail == "int64 result"


def test_a_custom_function_gets_an_event_at_the_line_that_applied_it():
    scenario = gradviz.load_scenario("custom-function")
    stepper = ForwardStepper(scenario.forward, params=scenario.params)
    events = stepper.run()
    applied = [e for e in events if e.op == "LegendrePolynomial3.apply"]
    assert len(applied) == 1
    event = applied[0]
    assert event.node_type == "LegendrePolynomial3Backward"
    demo = demos_folder() / "custom_function.py"
    assert event.source.line == line_of(demo, "LegendrePolynomial3.apply(c + d * x)")
    inside = events[:event.index]
    assert any(e.exclusion is Exclusion.GRAD_MODE_OFF for e in inside)  # its forward's ops
    stepper.graph
    assert event.key == "LegendrePolynomial3Backward#0"


def test_the_worker_runs_with_the_callers_grad_mode():
    w = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        stepper = ForwardStepper(lambda: (w * 2).sum())
    events = stepper.run()
    assert all(e.exclusion is Exclusion.GRAD_MODE_OFF for e in events)


def test_abort_ends_a_paused_forward_and_leaves_no_hook_mode_or_thread():
    model, forward = resnet18_and_forward()
    stepper = ForwardStepper(forward, model=model)
    stepper.step()
    stepper.step()
    stepper.abort()
    assert stepper.aborted and stepper.done
    assert hooks_left(model) == 0 and no_forward_threads()
    with pytest.raises(StepperError, match="aborted"):
        stepper.step()
    assert len(stepper.events) == 2
    # Nothing was left on any thread: a plain forward and a new stepper work.
    assert forward().grad_fn is not None
    assert ForwardStepper(forward, model=model).run()[-1].op == "sum"


def test_abort_stops_a_running_forward_at_its_next_op():
    started = threading.Event()

    def endless():
        x = torch.ones(4, requires_grad=True)
        started.set()
        while True:
            x = x.sin()

    stepper = ForwardStepper(endless)
    runner = threading.Thread(target=lambda: stepper.run(), daemon=True)
    runner.start()
    assert started.wait(30)
    time.sleep(0.05)
    begun = time.monotonic()
    stepper.abort()
    assert time.monotonic() - begun < 2.0
    runner.join(5)
    assert not runner.is_alive() and stepper.aborted and no_forward_threads()


def test_an_error_in_the_forward_is_raised_once_with_where_it_happened():
    w = torch.ones(2, requires_grad=True)

    def broken():
        y = w * 2
        return y @ torch.ones(3)  # shapes do not fit

    stepper = ForwardStepper(broken)
    assert stepper.step().op == "mul"
    with pytest.raises(RuntimeError) as raised:
        stepper.run()
    assert any("gradviz: raised in forward at matmul (test_forward_stepper.py:" in note
               for note in raised.value.__notes__)
    with pytest.raises(StepperError, match="failed"):
        stepper.step()
    assert no_forward_threads()


def test_record_forward_records_on_this_thread_without_pausing():
    model = nn.Sequential(nn.Linear(3, 2))
    x = torch.randn(4, 3)
    with gradviz.record_forward(model) as recording:
        loss = model(x).sum()
    assert [e.op for e in recording.events] == ["linear", "sum"]
    graph = recording.graph(loss)
    assert recording.events[0].key in graph and recording.events[0].module == "0"
    assert hooks_left(model) == 0
    assert model(x).sum().grad_fn is not None  # the mode is gone from this thread


def test_the_forward_modules_do_not_import_textual():
    code = ("import gradviz.engine.forward, gradviz.engine.why_no_grad\n"
            "import sys\nprint('textual' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "False"


def test_a_compiled_region_is_one_event_and_its_node_is_in_the_graph():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    compiled = torch.compile(model, backend="aot_eager")  # an autograd.Function, no C compiler
    x = torch.randn(3, 4)
    stepper = ForwardStepper(lambda: compiled(x).sum(), model=model)
    events = stepper.run()
    region = [e for e in events if e.op == "CompiledFunction.apply"]
    assert len(region) == 1 and region[0].node_type == "CompiledFunctionBackward"
    assert region[0].source.line == line_of(__file__, "lambda: compiled(x).sum()")
    inside = events[:region[0].index]  # its forward's aten ops run without autograd
    assert all(not e.recorded for e in inside)
    assert sorted(stepper.graph) == ["CompiledFunctionBackward#0", "SumBackward0#0",
                                     "param:0.bias", "param:0.weight", "param:2.bias",
                                     "param:2.weight"]
    assert region[0].key == "CompiledFunctionBackward#0"


def test_abort_without_waiting_returns_at_once_and_the_worker_ends_soon():
    a = torch.ones(2, requires_grad=True)
    stepper = ForwardStepper(lambda: (a * 2).sin().sum())
    stepper.step()
    stepper.abort(wait=False)
    wait_until = time.monotonic() + 10
    while not stepper.done and time.monotonic() < wait_until:
        time.sleep(0.01)
    assert stepper.aborted
    stepper.abort()  # idempotent


def test_printing_a_tensor_inside_the_forward_is_not_a_string_of_ops(capsys):
    a = torch.ones(2, requires_grad=True)

    def forward():
        b = a * 2
        print(b, f"{b}")
        return b.sum()

    assert [e.op for e in ForwardStepper(forward).run()] == ["mul", "sum"]
    assert "tensor([2., 2.]" in capsys.readouterr().out
