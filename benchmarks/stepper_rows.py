"""Stepper rows: BackwardStepper.run() and step() against a plain backward, session memory."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import torch

from common import PEAK, Row, resnet18_batch8



def bench_stepper_resnet18() -> Iterator[Row]:
    import statistics

    from gradviz import BackwardStepper

    model, forward = resnet18_batch8()
    plain, stepped = [], []
    for _ in range(5):
        model.zero_grad(set_to_none=True)
        loss = forward()
        start = time.perf_counter()
        loss.backward()
        plain.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
        stepper = BackwardStepper(forward(), model=model)
        start = time.perf_counter()
        stepper.run()
        stepped.append(time.perf_counter() - start)
    ours, theirs = statistics.median(stepped), statistics.median(plain)
    yield Row("resnet18 b8: run() vs loss.backward()", f"{ours * 1e3:.1f} ms",
              f"{theirs * 1e3:.1f} ms", ours / theirs, "<=1.3")

    latencies = []
    for _ in range(3):
        model.zero_grad(set_to_none=True)
        stepper = BackwardStepper(forward(), model=model)
        stepper.start()
        while not stepper.done:
            start = time.perf_counter()
            stepper.step()
            latencies.append(time.perf_counter() - start)
    median = statistics.median(latencies)
    yield Row("resnet18 b8: step() latency, median", f"{median * 1e3:.2f} ms",
              f"{len(latencies)} steps", None, "< 1 ms " + ("ok" if median < 1e-3 else "MISSED"))


def bench_stepper_chain() -> Iterator[Row]:
    import statistics

    from gradviz import BackwardStepper

    def chain_loss():
        y = torch.ones(64, requires_grad=True)
        for _ in range(10_000):
            y = y.sin()
        return y.sum()

    plain, stepped, running = [], [], []
    for _ in range(3):
        loss = chain_loss()
        start = time.perf_counter()
        loss.backward()
        plain.append(time.perf_counter() - start)
        stepper = BackwardStepper(chain_loss())
        start = time.perf_counter()
        stepper.start()  # registers 20,000 hooks
        started = time.perf_counter()
        stepper.run()
        stepped.append(time.perf_counter() - start)
        running.append(time.perf_counter() - started)
    theirs = statistics.median(plain)
    ours = statistics.median(stepped)
    yield Row("10k chain: start()+run() vs backward()", f"{ours * 1e3:.0f} ms",
              f"{theirs * 1e3:.0f} ms", ours / theirs, "<=3")
    ours = statistics.median(running)
    yield Row("10k chain: run() alone vs backward()", f"{ours * 1e3:.0f} ms",
              f"{theirs * 1e3:.0f} ms", ours / theirs, "report")


_PLAIN_SCRIPT = PEAK + """
import torchvision
torch.manual_seed(0)
model = torchvision.models.resnet18()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
data, labels = torch.rand(8, 3, 64, 64), torch.rand(8, 1000)
loss = (model(data) - labels).sum()
loss.backward()
optimizer.step()
print(hwm_mib())
"""

_SESSION_SCRIPT = PEAK + """
import torchvision, gradviz
torch.manual_seed(0)
model = torchvision.models.resnet18()
data, labels = torch.rand(8, 3, 64, 64), torch.rand(8, 1000)
scenario = gradviz.Scenario(name="r18b8", model=model,
                            forward=lambda: (model(data) - labels).sum(),
                            optimizer=torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9))
session = gradviz.Session(scenario)
session.forward()
for _ in range(20):
    session.step()
session.run_backward()
for event in session.stepper.events:   # browse every event's summaries
    event.grad_inputs
session.optimizer_step()
print(hwm_mib())
"""


def bench_session_memory() -> Iterator[Row]:
    def peak(script):
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                check=True)
        return float(result.stdout.split()[-1])

    ours, theirs = peak(_SESSION_SCRIPT), peak(_PLAIN_SCRIPT)
    yield Row("resnet18 b8: session peak RSS vs plain script", f"{ours:.0f} MiB",
              f"{theirs:.0f} MiB", ours / theirs, "<=1.5")


def _continue_like_the_app(stepper) -> None:
    """What the app's `c` does on a graph too big to animate: run in slices of
    BIG_FRAME_SECONDS, describing each slice's events for the screen (the summaries
    within a third of the slice) before the next; the screen draws between slices."""
    from gradviz.session.progress import describe
    from gradviz.runtime.quiet_gc import paused_gc
    from gradviz.tui.app import BIG_FRAME_SECONDS

    while not stepper.done:
        events = stepper.run(seconds=BIG_FRAME_SECONDS)
        with paused_gc():
            describe(stepper, events, {}, seconds=BIG_FRAME_SECONDS / 3)


def bench_stepper_continue() -> Iterator[Row]:
    """Continuing in slices costs about what run() costs: on maxvit_t (2,325 nodes)
    and on a 200,000-node chain (issue 7: `c` within 1.5x of run())."""
    import statistics

    import torchvision

    from gradviz import BackwardStepper

    torch.manual_seed(0)
    maxvit = torchvision.models.maxvit_t(weights=None)
    images = torch.rand(1, 3, 224, 224)

    def deep_chain():
        y = torch.ones(4, requires_grad=True)
        for _ in range(200_000):
            y = y.sin()
        return y.sum()

    cases = (("maxvit_t, 2,325 nodes", lambda: maxvit(images).square().mean(), 3),
             ("200k chain", deep_chain, 2))
    for name, forward, repeats in cases:
        whole, sliced = [], []
        for _ in range(repeats):
            maxvit.zero_grad(set_to_none=True)
            stepper = BackwardStepper(forward())
            start = time.perf_counter()
            stepper.run()
            whole.append(time.perf_counter() - start)
            del stepper
            maxvit.zero_grad(set_to_none=True)
            stepper = BackwardStepper(forward())
            start = time.perf_counter()
            _continue_like_the_app(stepper)
            sliced.append(time.perf_counter() - start)
            del stepper
        ours, theirs = statistics.median(sliced), statistics.median(whole)
        yield Row(f"{name}: continue in slices vs run()", f"{ours:.2f} s",
                  f"{theirs:.2f} s", ours / theirs, "<=1.5")


ROWS = [bench_stepper_resnet18, bench_stepper_chain, bench_stepper_continue,
        bench_session_memory]
