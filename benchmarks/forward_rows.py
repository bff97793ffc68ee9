"""Forward rows: ForwardStepper.run() and step() against the plain forward pass.

Each row runs the plain forward and the stepped one interleaved, several times, in
one process, and compares medians (the spread is printed beside them: on a shared
machine it is wide). the stepper's on its worker (its start is included), so the plain one runs on a
fresh thread too: on this 2-core machine shared with other work, a forward on the
main thread and one on a new thread were seen to differ by 10x either way. The CPU
rows time the forward's own thread with one intra-op thread, which other
processes barely blur.
"""

from __future__ import annotations

import importlib.util
import statistics
import threading
import time
from collections.abc import Callable, Iterator

import torch

from common import Row


def _on_new_thread(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()`` on a fresh thread, as the stepper's worker is."""
    times = []

    def body():
        wall, cpu = time.perf_counter(), time.thread_time()
        fn()
        times.append((time.perf_counter() - wall, time.thread_time() - cpu))

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return times[0]


def _side_by_side(make_forward, repeats: int):
    """Plain forward and ForwardStepper.run(), interleaved: wall and CPU seconds each."""
    from gradviz import ForwardStepper

    model, forward = make_forward()
    cpu_inside = []

    def timed():  # the worker's CPU time for the forward, its recording included
        start = time.thread_time()
        result = forward()
        cpu_inside.append(time.thread_time() - start)
        return result

    _on_new_thread(forward)  # warm up both paths once
    ForwardStepper(timed, model=model).run()
    plain_wall, plain_cpu, wall, with_graph, events = [], [], [], [], 0
    for _ in range(repeats):
        seconds, cpu = _on_new_thread(forward)
        plain_wall.append(seconds)
        plain_cpu.append(cpu)
        stepper = ForwardStepper(timed, model=model)
        start = time.perf_counter()
        events = len(stepper.run())
        wall.append(time.perf_counter() - start)
        stepper.graph
        with_graph.append(time.perf_counter() - start)
    return {"plain wall": plain_wall, "plain cpu": plain_cpu, "wall": wall,
            "graph": with_graph, "cpu": cpu_inside[1:], "events": events}


def _ms(samples: list[float]) -> str:
    return (f"{statistics.median(samples) * 1e3:.1f} ms "
            f"({min(samples) * 1e3:.0f}-{max(samples) * 1e3:.0f})")


def _rows(label: str, make_forward, repeats: int, target: str) -> Iterator[Row]:
    measured = _side_by_side(make_forward, repeats)
    plain = statistics.median(measured["plain wall"])
    yield Row(f"{label}: run() vs forward, wall", _ms(measured["wall"]),
              _ms(measured["plain wall"]), statistics.median(measured["wall"]) / plain, target)
    yield Row(f"{label}: run() + .graph vs forward, wall", _ms(measured["graph"]),
              _ms(measured["plain wall"]), statistics.median(measured["graph"]) / plain,
              "report")
    # CPU time of the thread, one intra-op thread: what other processes do not blur.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = _side_by_side(make_forward, repeats)
    finally:
        torch.set_num_threads(previous)
    ours, theirs = statistics.median(single["cpu"]), statistics.median(single["plain cpu"])
    yield Row(f"{label}: run() vs forward, CPU, 1 thread", _ms(single["cpu"]),
              _ms(single["plain cpu"]), ours / theirs, target)
    yield Row(f"{label}: cost per op ({single['events']} ops)",
              f"{(ours - theirs) / single['events'] * 1e6:.0f} us/op", "CPU, 1 thread", None,
              "report")


def resnet18(batch: int):
    def make():
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.resnet18()
        data, labels = torch.rand(batch, 3, 64, 64), torch.rand(batch, 1000)
        return model, lambda: (model(data) - labels).sum()

    return make


def gpt2(n_layer: int, n_embd: int, n_head: int, length: int):
    def make():
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        config = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=1024,
                            vocab_size=50257)
        model = GPT2LMHeadModel(config)  # random weights: nothing is downloaded
        tokens = torch.randint(0, config.vocab_size, (1, length))
        return model, lambda: model(tokens, labels=tokens).loss

    return make


def bench_forward_resnet18() -> Iterator[Row]:
    yield from _rows("resnet18 b1 64x64", resnet18(1), 15, "<=3")
    yield from _rows("resnet18 b8 64x64", resnet18(8), 7, "<=3")


def bench_forward_gpt2() -> Iterator[Row]:
    if importlib.util.find_spec("transformers") is None:
        yield Row("gpt2: transformers is not installed", "-", "-", None, "skipped")
        return
    yield from _rows("gpt2-small shape, 128 tokens", gpt2(12, 768, 12, 128), 5, "<=3")
    yield from _rows("gpt2 tiny (2x64), 16 tokens", gpt2(2, 64, 2, 16), 15, "report")


def bench_forward_step_latency() -> Iterator[Row]:
    """A step as the app makes it: let one op run, then read its event's summary."""
    from gradviz import ForwardStepper

    model, forward = resnet18(1)()
    latencies = []
    for _ in range(3):
        stepper = ForwardStepper(forward, model=model)
        while True:
            start = time.perf_counter()
            event = stepper.step()
            if event is None:
                break
            event.output
            latencies.append(time.perf_counter() - start)
    median, worst = statistics.median(latencies), max(latencies)
    yield Row("resnet18 b1: step() + summary, median", f"{median * 1e3:.2f} ms",
              f"max {worst * 1e3:.1f} ms", None,
              "< 50 ms " + ("ok" if median < 0.05 else "MISSED"))


ROWS = [bench_forward_resnet18, bench_forward_gpt2, bench_forward_step_latency]
