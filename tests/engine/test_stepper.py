"""BackwardStepper: PyTorch's own engine, one node at a time, giving exactly its gradients."""

import threading
import time

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import gradviz
from gradviz import BackwardStepper, GraphError, Pause, StepperError
from gradviz.engine import threads as backward_threads
from gradviz.model.catalog import BUILTIN_NAMES
from gradviz.graph.walk import walk_graph


@pytest.fixture(autouse=True)
def short_linger(monkeypatch):
    """A thread whose backward finished waits for the next pass; here only briefly."""
    monkeypatch.setattr(backward_threads, "LINGER", 0.05)


def same(a, b):
    """Bit-for-bit equal, NaN equal to NaN."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    return True


def plain_order(roots, gradient=None, *, model=None, params=None):
    """The engine's own order, recorded with bare pre-hooks."""
    graph, walk = walk_graph(roots, model=model, params=params)
    order, handles = [], []
    for key, fn in zip(graph.nodes, walk.nodes):
        handles.append(fn.register_prehook(lambda grads, key=key: order.append(key)))
    try:
        torch.autograd.backward(roots, grad_tensors=gradient)
    finally:
        for handle in handles:
            handle.remove()
    return order


def kept_bytes(events):
    """Bytes of the distinct tensors the history holds (a tensor shared by events once)."""
    tensors = {}
    for event in events:
        if event.tensors is not None:
            kept = event.tensors
            for tensor in (*kept.grad_outputs, *kept.grad_inputs, kept.param_grad):
                if tensor is not None:
                    tensors[id(tensor)] = tensor.nbytes
    return sum(tensors.values())


def no_gradviz_threads():
    """No gradviz thread left, once a finished backward's thread has stopped lingering."""
    deadline = time.monotonic() + backward_threads.LINGER + 2.0
    while [t for t in threading.enumerate() if t.name.startswith("gradviz")]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def gradviz_threads():
    return [t for t in threading.enumerate() if t.name.startswith("gradviz")]


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_demo_gives_the_grads_and_order_of_plain_backward(name):
    stepped, plain = gradviz.load_scenario(name), gradviz.load_scenario(name)
    roots, modules = stepped.run_forward()
    with BackwardStepper(roots, gradient=stepped.gradient, model=stepped.model,
                         params=dict(stepped.params), modules=modules) as stepper:
        for _ in range(5):
            stepper.step()
        stepper.run()
        assert stepper.finished
    reference_order = plain_order(plain.run_forward()[0], plain.gradient, model=plain.model,
                                  params=dict(plain.params))
    assert stepper.executed == reference_order
    for (n1, t1), (n2, t2) in zip(stepped.named_leaves().items(), plain.named_leaves().items()):
        assert n1 == n2
        assert (t1.grad is None) == (t2.grad is None), n1
        if t1.grad is not None:
            assert same(t1.grad, t2.grad)
    assert no_gradviz_threads()


def test_tutorial_step_by_step():
    a = torch.tensor([2.0, 3.0], requires_grad=True)
    b = torch.tensor([6.0, 4.0], requires_grad=True)
    q = 3 * a**3 - b**2
    stepper = BackwardStepper(q, gradient=torch.tensor([1.0, 1.0]), params={"a": a, "b": b})
    assert stepper.ready == {"SubBackward0#0"} and stepper.pending is None
    stepper.start()
    assert stepper.pending == "SubBackward0#0"
    assert [s.sample for s in stepper.pending_grad_outputs] == [(1.0, 1.0)]

    first = stepper.step()
    assert (first.index, first.node, first.op) == (0, "SubBackward0#0", "SubBackward0")
    assert [s.sample for s in first.grad_inputs] == [(1.0, 1.0), (-1.0, -1.0)]
    assert stepper.ready == {"MulBackward0#0", "PowBackward0#0"}
    assert a.grad is None and b.grad is None  # the engine really is paused

    events = [first]
    while (event := stepper.step()) is not None:
        events.append(event)
    assert [e.node for e in events] == ["SubBackward0#0", "PowBackward0#0", "param:b",
                                        "MulBackward0#0", "PowBackward0#1", "param:a"]
    mul = events[3]
    assert mul.grad_inputs[1] is None  # the constant 3 gets nothing
    assert events[-1].param_grad.sample == (36.0, 81.0)
    assert events[2].param_grad.sample == (-12.0, -8.0)
    assert torch.equal(a.grad, 9 * a**2) and torch.equal(b.grad, -2 * b)
    assert stepper.done and stepper.ready == set()
    with pytest.raises(StepperError, match="finished"):
        stepper.step()


def test_summaries_hold_the_real_statistics():
    x = torch.tensor([[1.0, -2.0], [3.0, 4.0]], requires_grad=True)
    with BackwardStepper((x * x).sum()) as stepper:
        events = stepper.run()
    leaf = events[-1]
    expected = 2 * x.detach()
    summary = leaf.param_grad
    assert summary.shape == (2, 2) and summary.dtype == "float32" and summary.device == "cpu"
    assert summary.norm == pytest.approx(float(expected.norm()))
    assert summary.mean == pytest.approx(float(expected.mean()))
    assert summary.std == pytest.approx(float(expected.std(correction=0)))
    assert (summary.min, summary.max) == (-4.0, 8.0)
    assert summary.sample == (2.0, -4.0, 6.0, 8.0) and summary.finite


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_finishes_with_the_same_grads(reentrant):
    def make():
        torch.manual_seed(0)
        first, second = nn.Linear(4, 4), nn.Linear(4, 1)
        x = torch.randn(3, 4, requires_grad=reentrant)
        hidden = checkpoint(lambda t: torch.tanh(first(t)), x, use_reentrant=reentrant)
        return (first, second), second(hidden).sum()

    stepped_modules, stepped_loss = make()
    plain_modules, plain_loss = make()
    reference = plain_order(plain_loss)
    with BackwardStepper(stepped_loss) as stepper:
        while stepper.step() is not None:
            pass
    assert stepper.executed == reference
    for m1, m2 in zip(stepped_modules, plain_modules):
        for p1, p2 in zip(m1.parameters(), m2.parameters()):
            assert same(p1.grad, p2.grad)


def test_hard_graphs_match_plain_backward():
    def cases():
        torch.manual_seed(0)
        tied = nn.Linear(3, 3)
        x = torch.randn(2, 3)
        yield "tied weight", [tied.weight, tied.bias], [tied(tied(x)).sum()], None

        w = torch.randn(3, requires_grad=True)
        y = w.exp()
        yield "several roots", [w], [y.sum(), (y * y).mean()], None

        v = torch.randn(3, requires_grad=True)
        yield "vector root", [v], [v * 2 + v**2], [torch.tensor([1.0, 0.5, -1.0])]

        u = torch.randn(4, requires_grad=True)
        h = u * 2
        h.relu_()  # a valid in-place op
        yield "in-place", [u], [h.sum()], None

        p = torch.randn(3, requires_grad=True)
        frozen = torch.randn(3)  # a branch that needs no grad
        yield "no-grad branch", [p], [(p * frozen.exp() + frozen.sin()).sum()], None

    stepped, plain = list(cases()), list(cases())
    for (name, leaves, roots, grads), (_, plain_leaves, plain_roots, plain_grads) in zip(stepped, plain):
        with BackwardStepper(roots, gradient=grads) as stepper:
            stepper.run()
        torch.autograd.backward(plain_roots, grad_tensors=plain_grads)
        for mine, theirs in zip(leaves, plain_leaves):
            assert same(mine.grad, theirs.grad), name


def test_create_graph_gives_a_differentiable_grad():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with BackwardStepper((x**3).sum(), create_graph=True) as stepper:
        stepper.run()
    assert torch.equal(x.grad, 3 * x.detach() ** 2) and x.grad.requires_grad
    (second,) = torch.autograd.grad(x.grad.sum(), x)
    assert torch.equal(second, 6 * x.detach())


def test_nan_grad_first_nonfinite_is_sqrt_in_abs():
    scenario = gradviz.load_scenario("nan-grad")
    roots, modules = scenario.run_forward()
    with BackwardStepper(roots, model=scenario.model, modules=modules) as stepper:
        stepper.run_until(lambda event: event.nonfinite)
        origin = stepper.first_nonfinite
        assert (origin.op, origin.module) == ("SqrtBackward0", "abs")
        assert origin.grad_inputs[0].inf > 0 and all(s.finite for s in origin.grad_outputs)
        assert not stepper.done  # stopped right there
        stepper.run()
    later = [e for e in stepper.events if e.index > origin.index and e.produces_nonfinite]
    assert later and not any(e.nonfinite for e in later)  # they only pass it on


@pytest.mark.parametrize("breaks_at", [None, 0, 37, 199])
def test_first_nonfinite_after_a_whole_run_is_the_node_that_made_it(breaks_at):
    # After run(), the events are checked many at once: the answer must be the one
    # that checking each event alone gives. Huge finite values (whose sums overflow
    # float32) come first and must not read as non-finite.
    x = torch.ones(4, requires_grad=True)
    y = x * 1.0
    for index in range(200):
        y = (y * 0.0).sqrt() if index == breaks_at else y * 1.0  # sqrt(0) sends Inf back
    with BackwardStepper(y.sum() * 3e38) as stepper:  # every gradient is 3e38
        stepper.run()
        origin = stepper.first_nonfinite
        expected = next((event for event in stepper.events if event.nonfinite), None)
    if breaks_at is None:
        assert origin is None and expected is None
    else:
        assert origin is expected and origin.op == "SqrtBackward0"


def test_breakpoints_and_run_until(resnet18_trace):
    scenario = gradviz.load_scenario("resnet18")
    roots, modules = scenario.run_forward()
    with BackwardStepper(roots, model=scenario.model, modules=modules) as stepper:
        stepper.breakpoints.add("ConvolutionBackward0#0")
        ran = stepper.run()
        assert stepper.pending == "ConvolutionBackward0#0"
        assert "ConvolutionBackward0#0" not in [e.node for e in ran]
        event = stepper.step()
        assert event.node == "ConvolutionBackward0#0" and event.module == "layer4.1.conv2"
        assert scenario.model.fc.weight.grad is not None  # AccumulateGrad runs once ready
        with pytest.raises(StepperError, match="'param:fc.weight' has already run"):
            stepper.run_until("param:fc.weight")
        ran = stepper.run_until("param:layer1.0.conv1.weight")
        assert ran[-1].node == "param:layer1.0.conv1.weight"
        assert scenario.model.layer1[0].conv1.weight.grad is not None
        assert scenario.model.conv1.weight.grad is None  # not reached yet
        with pytest.raises(StepperError, match="no node 'nope'"):
            stepper.run_until("nope")
        stepper.breakpoints.clear()
        stepper.run()
        assert stepper.finished and len(stepper.executed) == 134


def test_history_budget_keeps_summaries_drops_old_tensors():
    def run(budget):
        x = torch.randn(1000, requires_grad=True)
        y = x
        for _ in range(20):
            y = y.sin()
        with BackwardStepper(y.sum(), history_bytes=budget) as stepper:
            return stepper.run()

    events = run(30_000)  # two 4 kB gradients per event, one shared with its parent
    kept = [e for e in events if e.tensors is not None]
    assert 0 < len(kept) < len(events) and kept == events[-len(kept):]
    sin_events = [e for e in events if e.op == "SinBackward0"]
    assert len(sin_events) == 20
    assert all(e.grad_inputs[0].shape == (1000,) for e in sin_events)  # summaries stay
    assert kept_bytes(events) <= 30_000 and len(kept) == 7  # 7 distinct of 4 kB
    assert all(e.tensors is None for e in run(0))


def test_an_error_inside_backward_reaches_the_caller_with_its_node():
    x = torch.ones(3, requires_grad=True)
    y = x.sigmoid()
    loss = (y * 2).sum()
    y.add_(1)  # modifies a tensor SigmoidBackward0 saved
    stepper = BackwardStepper(loss)
    with pytest.raises(RuntimeError, match="modified by an inplace operation") as caught:
        while stepper.step() is not None:
            pass
    assert caught.value.gradviz_node == "SigmoidBackward0#0"
    assert stepper.done and stepper.error is caught.value
    with pytest.raises(StepperError, match="backward failed at SigmoidBackward0#0"):
        stepper.step()
    assert no_gradviz_threads()


def test_a_custom_function_that_raises():
    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            raise ValueError("my backward is broken")

    x = torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError, match="my backward is broken") as caught:
        BackwardStepper(Broken.apply(x).exp().sum()).run()
    assert caught.value.gradviz_node == "BrokenBackward#0"
    assert no_gradviz_threads()


def test_abort_mid_backward_leaves_nothing_running(resnet18_trace):
    scenario = gradviz.load_scenario("resnet18")
    stepper = BackwardStepper(scenario.run_forward()[0], model=scenario.model)
    for _ in range(10):
        stepper.step()
    stepper.abort()
    assert stepper.aborted and stepper.done and len(stepper.executed) == 10
    assert not gradviz_threads()  # an aborted backward's thread ends with it
    with pytest.raises(StepperError, match="aborted"):
        stepper.step()
    stepper.abort()  # idempotent
    # Leaving the context mid-backward ends it too.
    with BackwardStepper(gradviz.load_scenario("resnet18").run_forward()[0]) as second:
        second.step()
    assert second.aborted and not gradviz_threads()


def test_hooks_are_removed_after_backward():
    layer = nn.Linear(2, 2)
    loss = layer(torch.ones(1, 2)).sum()
    graph, walk = walk_graph(loss)
    with BackwardStepper(loss, retain_graph=True) as stepper:
        stepper.run()
    calls = []
    for fn in walk.nodes:
        fn.register_prehook(lambda grads: calls.append(1))
    loss.backward()  # would hang here if a gradviz pre-hook were left behind
    assert len(calls) == len(walk.nodes)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: torch.ones(2, requires_grad=True), "leaf tensor"),
        (lambda: torch.ones(2, requires_grad=True) * 2, "not a scalar (shape (2,))"),
        (lambda: (torch.ones(2, requires_grad=True) * 2).grad_fn, "needs the root tensors"),
    ],
)
def test_bad_roots(make, message):
    with pytest.raises(GraphError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BackwardStepper(make())


def test_a_graph_from_other_roots_is_refused():
    x = torch.ones(2, requires_grad=True)
    other = gradviz.build_graph((x.exp() * 3).sum())
    with pytest.raises(GraphError, match="not built from these roots"):
        BackwardStepper((x * 2).sum(), graph=other)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_the_history_on_a_gpu_takes_at_most_an_eighth_of_its_free_memory():
    x = torch.ones(4, device="cuda", requires_grad=True)
    free = torch.cuda.mem_get_info()[0]
    with BackwardStepper((x * 2).sum()) as stepper:
        assert stepper.history_bytes <= free // 8 + (1 << 20)
        assert stepper.history_bytes <= gradviz.engine.backward.DEFAULT_HISTORY_BYTES


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_nodes_run_on_device_threads_and_still_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)).cuda()
    plain = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)).cuda()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 8, device="cuda")
    loss = model(x).sum()
    with BackwardStepper(loss, model=model) as stepper:
        first = stepper.step()
        assert first.grad_outputs[0].device.startswith("cuda")
        stepper.run()
    plain(x).sum().backward()
    for p1, p2 in zip(model.parameters(), plain.parameters()):
        assert same(p1.grad, p2.grad)
    assert any(e.thread != "gradviz-backward" for e in stepper.events)
    assert no_gradviz_threads()


def hooked_chain():
    """x -> mul -> exp -> sum, with a tensor hook on the mul's output that raises."""
    x = torch.ones(3, requires_grad=True)
    h = x * 2
    h.register_hook(lambda grad: 1 / 0)
    return h.exp().sum()


def test_an_exception_between_nodes_is_raised_by_the_next_step_and_placed_truly():
    stepper = BackwardStepper(hooked_chain())
    assert stepper.step().node == "SumBackward0#0"
    # ExpBackward0 runs; then the engine calls the tensor hook before MulBackward0 starts.
    assert stepper.step().node == "ExpBackward0#0"
    assert stepper.done and not stepper.finished
    assert isinstance(stepper.error, ZeroDivisionError)
    assert stepper.error_node == "MulBackward0#0"  # the only node that could start next
    with pytest.raises(ZeroDivisionError) as caught:
        stepper.step()  # never a silent None
    assert caught.value is stepper.error and caught.value.gradviz_node == "MulBackward0#0"
    (note,) = caught.value.__notes__
    assert "after node ExpBackward0#0 (ExpBackward0) ran, before node MulBackward0#0" in note
    assert "before any node ran" not in note
    with pytest.raises(StepperError, match=r"backward failed after node ExpBackward0#0 ran, "
                       r"before MulBackward0#0 started \(ZeroDivisionError\): start a new"):
        stepper.step()
    assert no_gradviz_threads()


def test_between_nodes_with_several_ready_nodes_no_node_is_named():
    x = torch.ones(3, requires_grad=True)
    other = x * 3
    hooked = x * 2  # made later, so the engine reaches it first: `other` is ready then too
    hooked.register_hook(lambda grad: 1 / 0)
    stepper = BackwardStepper(hooked.sum() + other.sum())
    with stepper, pytest.raises(ZeroDivisionError) as caught:
        while stepper.step() is not None:
            pass
    assert stepper.error_node is None and caught.value.gradviz_node is None
    assert "between nodes, after node" in caught.value.__notes__[-1]
    assert len(stepper.executed) >= 2


def test_a_hook_on_the_root_raises_before_any_node_ran():
    loss = (torch.ones(3, requires_grad=True) * 2).sum()
    loss.register_hook(lambda grad: 1 / 0)
    stepper = BackwardStepper(loss)
    with stepper, pytest.raises(ZeroDivisionError) as caught:
        stepper.run()
    assert stepper.executed == [] and stepper.error_node is None
    assert caught.value.__notes__[-1] == "gradviz: raised in backward before any node ran"


def test_run_raises_an_exception_between_nodes_with_its_place():
    stepper = BackwardStepper(hooked_chain())
    with stepper, pytest.raises(ZeroDivisionError, match="division by zero") as caught:
        stepper.run()
    assert stepper.executed == ["SumBackward0#0", "ExpBackward0#0"]
    assert "before node MulBackward0#0 (MulBackward0) started" in caught.value.__notes__[-1]


def test_a_dropped_stepper_ends_its_backward_and_its_thread():
    import gc
    import weakref

    scenario = gradviz.load_scenario("lstm")
    stepper = BackwardStepper(scenario.run_forward()[0], model=scenario.model)
    stepper.step()
    assert gradviz_threads()
    backward = weakref.ref(stepper._backward)
    del stepper
    gc.collect()
    assert no_gradviz_threads()
    gc.collect()
    assert backward() is None  # nothing of it is left: hooks, events, history


def test_reentrant_checkpoint_runs_a_parameter_twice_in_start_order():
    def make():
        torch.manual_seed(0)
        layer = nn.Linear(4, 4)
        x = torch.randn(3, 4, requires_grad=True)
        inside = checkpoint(lambda t: torch.tanh(layer(t)), x, use_reentrant=True)
        return layer, (inside + layer(x)).sum()  # the layer also runs outside it

    plain_layer, plain_loss = make()
    reference = plain_order(plain_loss, model=plain_layer)
    layer, loss = make()
    with BackwardStepper(loss, model=layer) as stepper:
        while stepper.step() is not None:
            pass
    assert stepper.executed == reference  # the engine's start (pre-hook) order
    runs = [e for e in stepper.events if e.node == "param:weight"]
    assert [e.repeat for e in runs] == [0, 1]
    assert runs[0].inside is None and runs[1].inside == "CheckpointFunctionBackward#0"
    inner = stepper.events[runs[1].index - 2]
    assert inner.node == "CheckpointFunctionBackward#0" and inner.index < runs[1].index
    assert torch.equal(runs[1].tensors.param_grad, layer.weight.grad)  # accumulated twice
    assert torch.equal(layer.weight.grad, plain_layer.weight.grad)


def test_run_for_seconds_hands_back_control_until_the_end():
    scenario = gradviz.load_scenario("lstm")
    roots, _ = scenario.run_forward()
    reference = plain_order(gradviz.load_scenario("lstm").run_forward()[0])
    with BackwardStepper(roots) as stepper:
        batches = []
        while not stepper.done:
            batches.append(stepper.run(seconds=0.0))
            assert stepper.done or stepper.paused_by is Pause.TIME
        assert all(len(batch) == 1 for batch in batches)  # the deadline passed at once
        assert [e.node for batch in batches for e in batch] == reference
        assert stepper.finished
        with pytest.raises(StepperError, match="finished"):
            stepper.run(seconds=0.05)


def test_why_the_engine_pauses(resnet18_trace):
    scenario = gradviz.load_scenario("resnet18")
    with BackwardStepper(scenario.run_forward()[0], model=scenario.model) as stepper:
        stepper.start()
        assert stepper.paused_by is Pause.STEPPING
        stepper.breakpoints.add("ConvolutionBackward0#0")
        stepper.run(seconds=60)
        assert (stepper.pending, stepper.paused_by) == ("ConvolutionBackward0#0", Pause.BREAKPOINT)
        ran = stepper.run_until("param:layer4.0.conv1.weight", seconds=60)
        assert ran[-1].node == "param:layer4.0.conv1.weight"
        assert stepper.paused_by is Pause.TARGET
        stepper.step()
        assert stepper.paused_by is Pause.STEPPING
        stepper.breakpoints = set()
        while not stepper.done:
            stepper.run_until("param:conv1.weight", seconds=0.001)
        assert stepper.finished and stepper.paused_by is None


def deep_chain(depth):
    y = torch.ones(4, requires_grad=True)
    for _ in range(depth):
        y = y.sin()
    return y.sum()


def test_short_runs_cost_no_more_on_a_big_graph():
    """run(seconds=...) is how the app continues while drawing: a call must not cost
    anything that grows with the graph (it would make `c` quadratic). The fastest of
    many calls is compared, which a busy machine disturbs least."""
    def per_call(depth):
        with BackwardStepper(deep_chain(depth)) as stepper:
            stepper.run(seconds=0.0)
            times = []
            for _ in range(300):
                start = time.perf_counter()
                stepper.run(seconds=0.0)
                times.append(time.perf_counter() - start)
            return min(times)

    small, big = per_call(400), per_call(40_000)
    assert big < 3 * small + 2e-4, (small, big)


def test_abort_from_another_thread_ends_a_run_promptly():
    with BackwardStepper(deep_chain(30_000)) as stepper:
        stepper.step()
        ran = []
        runner = threading.Thread(target=lambda: ran.extend(stepper.run()))
        runner.start()
        while len(stepper._backward.events) < 100:
            time.sleep(0.001)
        start = time.perf_counter()
        stepper.abort()
        runner.join(5)
        assert not runner.is_alive() and time.perf_counter() - start < 2.0
    assert stepper.aborted and 0 < len(ran) < 30_001
    assert not gradviz_threads()


def test_a_finished_backward_thread_runs_the_next_pass_then_ends(monkeypatch):
    monkeypatch.setattr(backward_threads, "LINGER", 0.5)
    threads = []
    for _ in range(3):
        with BackwardStepper(deep_chain(10)) as stepper:
            stepper.run()
            threads.append(stepper._backward.job.thread)
    assert threads[0] is threads[1] is threads[2] and threads[0].is_alive()
    paused = BackwardStepper(deep_chain(10))
    paused.step()  # a pass paused while another starts: each gets a thread
    with BackwardStepper(deep_chain(10)) as second:
        second.step()
        assert second._backward.job.thread is not paused._backward.job.thread
    paused.abort()
    threads[0].join(5)
    assert not threads[0].is_alive() and no_gradviz_threads()


def test_summaries_are_never_lost_and_the_history_stays_within_its_budget():
    """A residual chain: every add's gradient reaches two nodes, and the engine adds the
    two gradients flowing into each block, in place into a buffer nobody else holds
    (when the stepper holds none: events summarized at once, see _Backward)."""
    def run(budget, seconds):
        torch.manual_seed(0)
        x = torch.randn(2000, requires_grad=True)
        weight = torch.randn(2000, requires_grad=True)
        y = x
        for _ in range(30):
            y = y + torch.tanh(y * weight)
        with BackwardStepper(y.sum(), history_bytes=budget) as stepper:
            while not stepper.done:
                stepper.run(seconds=seconds)
                assert kept_bytes(stepper.events) <= budget
        return stepper.events, weight.grad

    bounded, bounded_grad = run(100_000, 0.002)  # room for a few dozen events of 153
    unbounded, grad = run(1 << 40, None)
    assert sum(e.tensors is None for e in bounded) > 80
    assert torch.equal(bounded_grad, grad)
    for small, full in zip(bounded, unbounded, strict=True):
        assert small.node == full.node
        assert small.grad_outputs == full.grad_outputs and small.grad_inputs == full.grad_inputs
        assert small.param_grad == full.param_grad
