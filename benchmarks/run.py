"""gradviz's benchmarks: each row measures gradviz and a baseline side by side, in one run.

    python benchmarks/run.py            # every row
    python benchmarks/run.py chain      # rows whose name contains "chain"

Not timed tests: CI does not run them. Times are the best of a few repeats
(``time.perf_counter``); memory is the process's peak resident set (VmHWM) over
the measured step, in a fresh subprocess so that earlier rows do not count.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class Row:
    name: str
    ours: str
    baseline: str
    ratio: float | None
    target: str

    @property
    def verdict(self) -> str:
        if self.ratio is None or not self.target.startswith("<="):
            return ""
        return "ok" if self.ratio <= float(self.target[2:]) else "MISSED"


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def chain(depth: int) -> torch.Tensor:
    """A chain of ``sin`` ops: every node saves its input, as most real ops do."""
    y = torch.ones(4, requires_grad=True)
    for _ in range(depth):
        y = y.sin()
    return y


def bare_walk(root) -> object:
    """The least a walker can do: follow next_functions and add bare edges to a DiGraph."""
    import networkx as nx

    graph = nx.DiGraph()
    seen = {root}
    stack = [root]
    while stack:
        fn = stack.pop()
        for child, _ in fn.next_functions:
            if child is None:
                continue
            graph.add_edge(fn, child)
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return graph


def bench_resnet18_vs_torchviz() -> Iterator[Row]:
    import torchvision
    from torchviz import make_dot

    import gradviz

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    loss = (model(torch.rand(1, 3, 64, 64)) - torch.rand(1, 1000)).sum()
    params = dict(model.named_parameters())
    ours = best_of(lambda: gradviz.build_graph(loss, model=model), 20)
    ours_dot = best_of(lambda: gradviz.to_dot(gradviz.build_graph(loss, model=model)), 20)
    theirs = best_of(lambda: make_dot(loss, params=params), 20)
    yield Row("resnet18: build_graph vs torchviz make_dot", f"{ours * 1e3:.2f} ms",
              f"{theirs * 1e3:.2f} ms", ours / theirs, "report")
    yield Row("resnet18: build_graph + to_dot vs make_dot", f"{ours_dot * 1e3:.2f} ms",
              f"{theirs * 1e3:.2f} ms", ours_dot / theirs, "report")


def bench_chain_100k() -> Iterator[Row]:
    import gradviz

    root = chain(100_000)
    ours = best_of(lambda: gradviz.build_graph(root))
    bare = best_of(lambda: bare_walk(root.grad_fn))
    yield Row("100k-node chain: build_graph vs bare edge walk", f"{ours:.3f} s", f"{bare:.3f} s",
              ours / bare, "<=1.5")


_MILLION = textwrap.dedent(
    """
    import time, torch, gradviz

    def hwm_mib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024

    y = torch.ones(4, requires_grad=True)
    for _ in range(1_000_000):
        y = y.sin()
    with open("/proc/self/clear_refs", "w") as f:   # reset the peak to the current RSS
        f.write("5")
    before = hwm_mib()
    start = time.perf_counter()
    graph = gradviz.build_graph(y)
    took = time.perf_counter() - start
    print(graph.number_of_nodes(), took, hwm_mib() - before, before)
    """
)


def bench_chain_1m() -> Iterator[Row]:
    result = subprocess.run([sys.executable, "-c", _MILLION], capture_output=True, text=True)
    if result.returncode != 0:
        yield Row("1M-node chain: build_graph", f"FAILED rc={result.returncode}", "", None,
                  result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "")
        return
    nodes, took, peak, base = result.stdout.split()
    yield Row("1M-node chain: build_graph time", f"{float(took):.2f} s", f"{nodes} nodes", None,
              "report")
    yield Row("1M-node chain: build_graph peak memory", f"+{float(peak):.0f} MiB",
              f"chain alone {float(base):.0f} MiB", None, "report")


def resnet18_batch8(seed: int = 0):
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18()
    data, labels = torch.rand(8, 3, 64, 64), torch.rand(8, 1000)
    return model, lambda: (model(data) - labels).sum()


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
              f"{len(latencies)} steps", None, "< 2 ms " + ("ok" if median < 2e-3 else "MISSED"))


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


_PEAK = """
import torch
def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
"""

_PLAIN_SCRIPT = _PEAK + """
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

_SESSION_SCRIPT = _PEAK + """
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


async def _step_latencies(name: str, steps: int) -> list[float]:
    """From a step key's action to the screen refreshed with its result, app headless.

    Measured inside the app: Pilot's press() adds waits of its own.
    """
    import asyncio

    from gradviz.tui.app import GradvizApp

    class Timed(GradvizApp):
        def action_step(self):
            self.pressed = time.perf_counter()
            super().action_step()

        def _show_progress(self, progress):
            super()._show_progress(progress)
            pressed = self.pressed
            self.call_after_refresh(lambda: latencies.append(time.perf_counter() - pressed))

    latencies: list[float] = []
    app = Timed(name)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.session is None or app.busy:
            await asyncio.sleep(0.01)
        for k in range(steps):
            await pilot.press("n")
            while len(latencies) <= k:
                await asyncio.sleep(0.001)
    return latencies


def bench_app_latency() -> Iterator[Row]:
    import asyncio
    import statistics

    for name, steps, target in (("resnet18", 60, 0.050), ("lstm", 60, 0.100)):
        median = statistics.median(asyncio.run(_step_latencies(name, steps)))
        verdict = "ok" if median < target else "MISSED"
        yield Row(f"app {name}: step key to screen, median", f"{median * 1e3:.1f} ms",
                  f"{steps} steps", None, f"< {target * 1e3:.0f} ms {verdict}")


_APP_TIMING = """
import sys, time
from gradviz.tui.app import GradvizApp

marks = open(sys.argv[1], "w")  # the app captures stdout while it runs


class Timed(GradvizApp):
    def on_mount(self):
        super().on_mount()
        self.call_after_refresh(lambda: marks.write(f"frame {time.time()}\\n"))

    def start_session(self, session):
        super().start_session(session)
        self.call_after_refresh(self._mark_ready)

    def _mark_ready(self):
        marks.write(f"ready {time.time()}\\n")
        marks.flush()
        self.ready = True


import asyncio
async def main():
    app = Timed("resnet18")
    app.ready = False
    async with app.run_test(size=(120, 40)):
        while not app.ready:
            await asyncio.sleep(0.01)
asyncio.run(main())
"""


def bench_app_startup() -> Iterator[Row]:
    import statistics

    import tempfile

    script = Path(tempfile.mkdtemp()) / "app_timing.py"  # Textual wants a source file
    script.write_text(_APP_TIMING)
    marks = script.with_name("marks.txt")
    frames, readies, imports = [], [], []
    for _ in range(3):
        start = time.time()
        subprocess.run([sys.executable, str(script), str(marks)], check=True, timeout=300)
        out = marks.read_text().split()
        frames.append(float(out[out.index("frame") + 1]) - start)
        readies.append(float(out[out.index("ready") + 1]) - start)
        start = time.time()
        subprocess.run([sys.executable, "-c", "import torch, torchvision"], check=True)
        imports.append(time.time() - start)
    frame, ready, imported = (statistics.median(v) for v in (frames, readies, imports))
    yield Row("app: time to first frame", f"{frame:.2f} s", "", None,
              "< 1 s " + ("ok" if frame < 1 else "MISSED"))
    yield Row("app: ready resnet18 vs import torch, torchvision", f"{ready:.2f} s",
              f"{imported:.2f} s", ready / imported, "<=1.3")


BENCHMARKS = [
    bench_resnet18_vs_torchviz,
    bench_chain_100k,
    bench_chain_1m,
    bench_stepper_resnet18,
    bench_stepper_chain,
    bench_session_memory,
    bench_app_latency,
    bench_app_startup,
]


def main(argv: list[str]) -> None:
    pattern = argv[0] if argv else ""
    rows = []
    for bench in BENCHMARKS:
        if pattern in bench.__name__:
            for row in bench():
                rows.append(row)
                print(f"  done: {row.name}", file=sys.stderr, flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    header = f"{'benchmark':<52} {'gradviz':>12} {'baseline':>22} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        print(f"{row.name:<52} {row.ours:>12} {row.baseline:>22} {ratio:>7}  {row.target} "
              f"{row.verdict}")


if __name__ == "__main__":
    main(sys.argv[1:])
