"""App rows: the app driven headless, each figure beside what the engine alone takes.

- a step key to the screen refreshed with its result (resnet18, lstm);
- ``c`` from the key to the last node on screen, against ``BackwardStepper`` doing
  ``start()`` + ``run()`` on a fresh forward of the same scenario (resnet18,
  maxvit_t's 2,324 nodes, a 200,000-node chain);
- opening the 200,000-node chain: from the end of its forward to the graph on
  screen, against ``build_graph`` of the same roots (the median of 3 runs);
- startup: the first frame, and resnet18 ready against importing torch.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import Row

SCENARIOS = Path(__file__).with_name("scenarios")


def _timed_app_class():
    from gradviz.model.state import Phase
    from gradviz.tui.app import GradvizApp

    class Timed(GradvizApp):
        """Marks, after the refresh that shows them: progress, the end of backward, a graph."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.marks: list[tuple[str, float]] = []
            self.pressed = 0.0

        def action_step(self):
            self.pressed = time.perf_counter()
            super().action_step()

        def action_forward_step(self):
            self.pressed = time.perf_counter()
            super().action_forward_step()

        def on_forward_stepped(self, message):
            super().on_forward_stepped(message)
            self.call_after_refresh(self._mark, "progress")

        def action_continue(self):
            self.pressed = time.perf_counter()
            super().action_continue()

        def on_progress_made(self, message):
            super().on_progress_made(message)
            self.call_after_refresh(self._mark, "progress")

        def on_state_changed(self, message):
            super().on_state_changed(message)
            view = self.state.view()
            if view.phase is Phase.FINISHED and not view.busy:
                self.call_after_refresh(self._mark, "finished")

        def on_laid_out(self, message):
            super().on_laid_out(message)
            self.call_after_refresh(self._mark, "shown")

        def _mark(self, what: str) -> None:
            self.marks.append((what, time.perf_counter()))

    return Timed


async def _until(condition, timeout: float = 900.0) -> None:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise TimeoutError("the app did not get there")
        await asyncio.sleep(0.002)


def _idle(app) -> bool:
    """Loaded, nothing running, and the screen shows the session's graph (during a stepped
    forward the session has no graph yet: the screen shows the one being built)."""
    view = app.state.view()
    session = app.session
    return (session is not None and not view.busy
            and (session.graph is None or app.shown_graph is session.graph))


async def _step_latencies(ref: str, steps: int, key: str = "n") -> list[float]:
    app = _timed_app_class()(ref)
    latencies = []
    async with app.run_test(size=(120, 40)) as pilot:
        await _until(lambda: _idle(app))
        for _ in range(steps):
            app.marks.clear()
            await pilot.press(key)
            await _until(lambda: any(what == "progress" for what, _ in app.marks))
            shown = next(t for what, t in app.marks if what == "progress")
            latencies.append(shown - app.pressed)
            await _until(lambda: _idle(app))
    return latencies


def bench_app_step_latency() -> Iterator[Row]:
    for name, key, steps, target in (("resnet18", "n", 60, 0.030), ("lstm", "n", 60, 0.050),
                                     ("resnet18", "s", 60, 0.050)):
        median = statistics.median(asyncio.run(_step_latencies(name, steps, key)))
        verdict = "ok" if median < target else "MISSED"
        what = "forward step" if key == "s" else "step"
        yield Row(f"app {name}: {what} key to screen, median", f"{median * 1e3:.1f} ms",
                  f"{steps} steps", None, f"< {target * 1e3:.0f} ms {verdict}")


async def _continue_and_open(ref: str) -> tuple[float, float, float]:
    """(c from key to the end on screen, forward's end to the graph on screen, nodes)."""
    from gradviz.session.scenario import Scenario

    forward_ends = []
    original = Scenario.run_forward

    def run_forward(self):
        result = original(self)
        forward_ends.append(time.perf_counter())
        return result

    Scenario.run_forward = run_forward
    try:
        app = _timed_app_class()(ref)
        async with app.run_test(size=(120, 40)) as pilot:
            # the graph's frame is marked after the refresh that draws it: wait for both
            await _until(lambda: _idle(app) and any(what == "shown" for what, _ in app.marks))
            shown = next(t for what, t in app.marks if what == "shown")
            opened = shown - forward_ends[0]
            nodes = app.state.view().nodes
            app.marks.clear()
            await pilot.press("c")
            await _until(lambda: any(what == "finished" for what, _ in app.marks))
            finished = next(t for what, t in app.marks if what == "finished")
            return finished - app.pressed, opened, nodes
    finally:
        Scenario.run_forward = original


def _engine_alone(ref: str) -> tuple[float, float]:
    """(BackwardStepper start() + run(), build_graph) on a fresh forward of ``ref``."""
    import gradviz
    from gradviz.engine.backward import BackwardStepper

    scenario = gradviz.load_scenario(ref)
    roots, modules = scenario.run_forward()
    started = time.perf_counter()
    gradviz.build_graph(roots, model=scenario.model, params=scenario.params, modules=modules)
    walked = time.perf_counter() - started
    stepper = BackwardStepper(roots, gradient=scenario.gradient, model=scenario.model,
                              params=dict(scenario.params), modules=modules)
    started = time.perf_counter()
    stepper.run()
    return time.perf_counter() - started, walked


def _in_a_fresh_process(ref: str) -> tuple[float, float, int, float, float]:
    """(c, open, nodes, run(), build_graph) for ``ref``, measured in a new Python, as a
    user opens a file: after another big model's app in the same process, the first
    walk of a 200,000-node chain took 2x longer (the memory the old graph freed during
    the chain's forward leaves its nodes scattered), which is not what a user meets."""
    result = Path(tempfile.mkdtemp()) / "continue.json"
    subprocess.run([sys.executable, __file__, ref, str(result)], check=True, timeout=900,
                   cwd=Path(__file__).parent)
    return tuple(json.loads(result.read_text()))


def bench_app_continue() -> Iterator[Row]:
    for ref, label, target, repeats in (("resnet18", "resnet18", None, 1),
                                        (str(SCENARIOS / "maxvit.py"), "maxvit_t", 1.5, 1),
                                        (str(SCENARIOS / "chain200k.py"), "200k chain", 1.5, 3)):
        runs = [_in_a_fresh_process(ref) for _ in range(repeats)]
        took, opened, nodes, run, walked = (statistics.median(column) for column in zip(*runs))
        if target is None:
            yield Row(f"app {label}: c, key to the end on screen", f"{took:.2f} s",
                      f"run() {run * 1e3:.0f} ms", None,
                      "< 1.5 s " + ("ok" if took < 1.5 else "MISSED"))
        else:
            yield Row(f"app {label} ({int(nodes)} nodes): c vs start()+run()", f"{took:.2f} s",
                      f"{run:.2f} s", took / run, f"<={target}")
        if "chain" in label:
            yield Row(f"app {label}: open (forward's end to screen) vs build_graph",
                      f"{opened:.2f} s", f"{walked:.2f} s", opened / walked, "<=2")


_APP_TIMING = """
import asyncio, sys, time
from gradviz.tui.app import GradvizApp

marks = open(sys.argv[1], "w")  # the app owns stdout while it runs


class Timed(GradvizApp):
    def on_mount(self):
        super().on_mount()
        self.call_after_refresh(lambda: marks.write(f"frame {time.time()}\\n"))

    def on_laid_out(self, message):
        super().on_laid_out(message)
        self.call_after_refresh(self._mark_ready)

    def _mark_ready(self):
        marks.write(f"ready {time.time()}\\n")
        marks.flush()
        self.ready = True


async def main():
    app = Timed("resnet18")
    app.ready = False
    async with app.run_test(size=(120, 40)):
        while not app.ready:
            await asyncio.sleep(0.01)

asyncio.run(main())
"""


def bench_app_startup() -> Iterator[Row]:
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


ROWS = [bench_app_step_latency, bench_app_continue, bench_app_startup]


if __name__ == "__main__":  # one scenario's c and open, for _in_a_fresh_process
    took, opened, nodes = asyncio.run(_continue_and_open(sys.argv[1]))
    run, walked = _engine_alone(sys.argv[1])
    Path(sys.argv[2]).write_text(json.dumps([took, opened, nodes, run, walked]))
