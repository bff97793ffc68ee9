"""The stepper's hot path: run() from the start, the hooks' switch from running on to
pausing mid-backward, the history's byte accounting, and the GC state it leaves.

run() on a stepper that has not started begins backward running (no pause at the first
node to let go of): its events must be those of a pass that was started, then run, and
of one stepped node by node, on a real model; and whatever a run is told while the
engine runs (a breakpoint, a smaller history, an abort) must take effect at the next
node.
"""

import gc

import pytest
import torch
from test_stepper_truth import ARCHITECTURES, plain_run  # tests/engine, on sys.path
from torch import nn

from gradviz import BackwardStepper, Pause, StepperError
from gradviz.engine import threads as backward_threads
from gradviz.graph.walk import walk_graph


@pytest.fixture(autouse=True)
def short_linger(monkeypatch):
    monkeypatch.setattr(backward_threads, "LINGER", 0.05)


def run_fresh(stepper):
    stepper.run()


def start_then_run(stepper):
    stepper.start()
    stepper.run()


def steps_only(stepper):
    while stepper.step() is not None:
        pass


def drive(make, how):
    torch.manual_seed(0)
    model, forward = make("cpu")
    with BackwardStepper(forward(), model=model) as stepper:
        how(stepper)
        assert stepper.finished
        events = stepper.events
    return events, dict(model.named_parameters())


def described(event):
    """What an event tells, but for its duration."""
    return (event.index, event.node, event.op, event.module, event.thread, event.repeat,
            event.inside, event.grad_outputs, event.grad_inputs, event.param_grad,
            event.nonfinite)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_a_run_from_the_start_gives_the_events_of_a_started_and_a_stepped_pass(name):
    make = ARCHITECTURES[name]
    order, plain = plain_run(make)
    fresh, grads = drive(make, run_fresh)
    assert [event.node for event in fresh] == order
    for param_name, param in plain.items():
        assert torch.equal(param.grad, grads[param_name].grad), param_name
    for other in (start_then_run, steps_only):
        events, _ = drive(make, other)
        assert [described(e) for e in events] == [described(e) for e in fresh], other.__name__
    assert all(event.thread == backward_threads.NAME for event in fresh)
    assert all(event.duration >= 0 for event in fresh)


def chain_with_a_callback(callback, depth=12):
    """A chain of sines with a custom Function in the middle whose backward calls
    ``callback()`` (on the engine's thread, while backward runs); its key, and the key
    of the node the engine starts right after it."""
    class Call(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            callback()
            return grad

    x = torch.ones(4, requires_grad=True)
    y = x
    for index in range(depth):
        y = Call.apply(y) if index == depth // 2 else y.sin()
    loss = y.sum()
    graph, _ = walk_graph(loss)
    order = [key for key in graph.nodes]  # a chain: discovery order is the engine's
    middle = next(key for key in order if graph.nodes[key]["op"] == "CallBackward")
    return loss, graph, middle, order[order.index(middle) + 1]


def test_a_breakpoint_added_while_a_run_runs_on_pauses_at_the_next_node():
    box = {}
    loss, graph, middle, after = chain_with_a_callback(
        lambda: box["stepper"].breakpoints.add(after))
    with BackwardStepper(loss, graph=graph) as stepper:
        box["stepper"] = stepper
        ran = stepper.run()
        assert ran[-1].node == middle
        assert (stepper.pending, stepper.paused_by) == (after, Pause.BREAKPOINT)
        assert after not in stepper.executed
        stepper.breakpoints.clear()
        rest = stepper.run()
        assert rest[0].node == after and stepper.finished
        assert [e.index for e in stepper.events] == list(range(len(graph)))


def test_an_abort_while_a_run_runs_on_ends_backward_before_the_next_node():
    box = {}
    loss, graph, middle, after = chain_with_a_callback(
        lambda: box["stepper"]._backward.request_abort())  # what abort() asks, not waiting
    with BackwardStepper(loss, graph=graph) as stepper:
        box["stepper"] = stepper
        ran = stepper.run()
        assert ran[-1].node == middle and stepper.aborted
        assert after not in stepper.executed
        with pytest.raises(StepperError, match="aborted"):
            stepper.run()


def test_a_smaller_history_set_while_a_run_runs_on_holds_from_the_next_node():
    box = {}
    loss, graph, _, _ = chain_with_a_callback(
        lambda: setattr(box["stepper"], "history_bytes", 0), depth=40)
    reference_loss, _, _, _ = chain_with_a_callback(lambda: None, depth=40)
    with BackwardStepper(reference_loss) as reference:
        reference.run()
        expected = [(e.node, e.grad_outputs, e.grad_inputs) for e in reference.events]
    with BackwardStepper(loss, graph=graph) as stepper:
        box["stepper"] = stepper
        events = stepper.run()
        assert stepper.finished
        assert all(event.tensors is None for event in events)  # kept ones evicted too
        assert [(e.node, e.grad_outputs, e.grad_inputs) for e in events] == expected


def test_the_history_keeps_all_that_fits_though_each_tensor_is_held_twice():
    """What a node sends is what its child receives: the history counts it once. A
    budget above the distinct bytes but below twice them keeps every event whole."""
    x = torch.randn(256, requires_grad=True)
    y = x
    for _ in range(30):
        y = y.sin()
    loss = y.sum()
    distinct = 4 * 256 * 31 + 4  # every sine's gradient, the leaf's .grad, the root's
    with BackwardStepper(loss, history_bytes=int(distinct * 1.5)) as stepper:
        events = stepper.run()
        assert all(event.tensors is not None for event in events)
        held = {id(t): t.nbytes for e in events
                for t in (*e.tensors.grad_outputs, *e.tensors.grad_inputs, e.tensors.param_grad)
                if t is not None}
        assert sum(held.values()) == distinct


def test_run_until_from_the_start_stops_after_its_target():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    loss = model(torch.randn(3, 4)).square().sum()
    with BackwardStepper(loss, model=model) as stepper:
        ran = stepper.run_until("param:2.weight")
        assert ran[-1].node == "param:2.weight" and stepper.paused_by is Pause.TARGET
        assert stepper.pending is not None
        ran = stepper.run_until(lambda event: event.op == "TanhBackward0")
        assert ran[-1].op == "TanhBackward0" and stepper.paused_by is Pause.TARGET
        stepper.run()
        assert stepper.finished


def test_a_breakpoint_on_the_first_node_lets_a_fresh_run_start_as_before():
    """run() on a pass that was not started ran its first node even when it was a
    breakpoint (start() paused there, run() let it go): it still does."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    loss = model(torch.randn(3, 4)).square().sum()
    with BackwardStepper(loss, model=model) as stepper:
        root = stepper.graph.graph["roots"][0]
        stepper.breakpoints.update({root, "TanhBackward0#0"})
        ran = stepper.run()
        assert ran[0].node == root
        assert (stepper.pending, stepper.paused_by) == ("TanhBackward0#0", Pause.BREAKPOINT)


def test_no_object_stays_frozen_after_a_run():
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(40)])
    loss = model(torch.randn(2, 8)).sum()
    with BackwardStepper(loss, model=model) as stepper:
        stepper.run()
    assert gc.get_freeze_count() == 0
