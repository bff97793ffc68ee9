"""App rows: a step key to the screen, headless; startup against importing torch."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from common import Row



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


ROWS = [bench_app_latency, bench_app_startup]
