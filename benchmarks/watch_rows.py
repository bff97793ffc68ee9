"""gradviz.watch rows: a watched training iteration against the same iteration unwatched.

Watched and plain iterations are interleaved in one process (blocks of 3, 7 rounds)
so that a busy machine slows both alike; each row is the median per-iteration time,
and ``±`` is the spread of the plain iterations (interquartile range / median), a
measure of how noisy the machine was. Each model gets two rows: wall time with
torch's default threads (the target, on a quiet machine), and the main thread's CPU
time with one torch thread (``time.thread_time``: on a machine shared with other
work it hardly moves, where wall time swings by 2x). Memory rows run in fresh
subprocesses (three each, median): the peak resident set over the loop, less the
resident set before it.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from common import PEAK, Row

ROUNDS, BLOCK = 7, 3


def _resnet18(size: int):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    data, labels = torch.rand(8, 3, size, size), torch.randint(0, 1000, (8,))
    return model, optimizer, lambda: torch.nn.functional.cross_entropy(model(data), labels)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=4, n_head=4, n_embd=256, vocab_size=8192, n_positions=128)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    tokens = torch.randint(0, config.vocab_size, (8, 128))
    return model, optimizer, lambda: model(tokens, labels=tokens).loss


def _iteration(optimizer, make_loss: Callable[[], torch.Tensor]) -> tuple[float, float]:
    """Wall and this thread's CPU seconds of one iteration."""
    wall, cpu = time.perf_counter(), time.thread_time()
    loss = make_loss()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    loss.item()  # what a loop that logs its loss waits for
    return time.perf_counter() - wall, time.thread_time() - cpu


def _interleaved(model, optimizer, make_loss, clock: int, **watch_kwargs):
    """Median watched and plain times (``clock`` 0: wall, 1: CPU), and the plain spread."""
    import gradviz

    plain, watched = [], []
    _iteration(optimizer, make_loss)  # warm-up: optimizer state, allocator
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(ROUNDS):
            for _ in range(BLOCK):
                plain.append(_iteration(optimizer, make_loss)[clock])
            with gradviz.watch(model, optimizer, record=Path(folder) / f"run{round_}.db",
                               on_break="report", **watch_kwargs):
                for _ in range(BLOCK):
                    watched.append(_iteration(optimizer, make_loss)[clock])
    quartiles = statistics.quantiles(plain, n=4)
    base = statistics.median(plain)
    return statistics.median(watched), base, (quartiles[2] - quartiles[0]) / base


def _rows(name: str, build, target="<=1.05", **watch_kwargs) -> Iterator[Row]:
    """The wall-time row (default threads) and the CPU-time row (one thread) of a model."""
    threads = torch.get_num_threads()
    for clock, label in ((0, "wall"), (1, "CPU, 1 thread")):
        if clock:
            torch.set_num_threads(1)
        try:
            model, optimizer, make_loss = build()
            watched, plain, spread = _interleaved(model, optimizer, make_loss, clock,
                                                  **watch_kwargs)
        finally:
            torch.set_num_threads(threads)
        yield Row(f"{name} ({label})", f"{watched * 1e3:.1f} ms",
                  f"{plain * 1e3:.1f} ms ±{spread:.0%}", watched / plain, target)


BREAKS = ("nonfinite", "spike")


def bench_watch_resnet18() -> Iterator[Row]:
    yield from _rows("watch resnet18 b8 224px", lambda: _resnet18(224), target="<=1.03")
    yield from _rows("watch resnet18 b8 224px, breaks", lambda: _resnet18(224),
                     target="<=1.03", break_on=BREAKS)
    yield from _rows("watch resnet18 b8 64px", lambda: _resnet18(64))
    yield from _rows("watch resnet18 b8 64px, breaks", lambda: _resnet18(64), break_on=BREAKS)


def bench_watch_gpt2() -> Iterator[Row]:
    yield from _rows("watch GPT-2 4x256 b8x128", _gpt2, target="<=1.03")
    yield from _rows("watch GPT-2 4x256 b8x128, breaks", _gpt2, target="<=1.03",
                     break_on=BREAKS)


def bench_nan_origin_search() -> Iterator[Row]:
    """What a NaN costs once found: stepping the kept graph again to its first NaN node."""
    from gradviz.training.diagnosis.nan_origin import backward_origin

    model, optimizer, make_loss = _resnet18(224)
    searches, plain = [], []
    for _ in range(3):
        loss = make_loss()
        start = time.perf_counter()
        loss.backward(retain_graph=True)
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        backward_origin([loss], None, model=model, modules={})  # finite: steps it all
        searches.append(time.perf_counter() - start)
    ours, theirs = statistics.median(searches), statistics.median(plain)
    yield Row("NaN origin, worst case (no NaN: whole re-step)", f"{ours * 1e3:.0f} ms",
              f"{theirs * 1e3:.0f} ms backward", ours / theirs, "report")


_MEMORY = PEAK + """
import sys, tempfile, gradviz, gradviz.training.watch, torchvision
torch.manual_seed(0)
model = torchvision.models.resnet18()
optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
data, labels = torch.rand(8, 3, 224, 224), torch.randint(0, 1000, (8,))

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

def loop():
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(model(data), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

before = rss_mib()
mode = sys.argv[1]
if mode == "plain":
    loop()
else:
    kwargs = {"break_on": ("nonfinite",)} if mode == "origin" else {}
    with tempfile.TemporaryDirectory() as folder:
        with gradviz.watch(model, optimizer, record=folder + "/run.db", on_break="report",
                           **kwargs):
            loop()
print(hwm_mib() - before)
"""


def bench_watch_memory() -> Iterator[Row]:
    # A fixed mmap threshold: glibc then returns big blocks at once, and peaks repeat.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")

    def peak(mode):
        result = subprocess.run([sys.executable, "-c", _MEMORY, mode], capture_output=True,
                                text=True, check=True, env=env)
        return float(result.stdout.split()[-1])

    peaks = {"plain": [], "watch": [], "origin": []}
    for _ in range(3):
        for mode, found in peaks.items():
            found.append(peak(mode))
    plain = statistics.median(peaks["plain"])
    for mode, label, target in (("watch", "watch", "<=1.05"),
                                ("origin", "watch, break_on nonfinite", "report")):
        ours = statistics.median(peaks[mode])
        yield Row(f"resnet18 b8 224px: peak training memory, {label}", f"{ours:.0f} MiB",
                  f"{plain:.0f} MiB", ours / plain, target)


ROWS = [bench_watch_resnet18, bench_watch_gpt2, bench_nan_origin_search, bench_watch_memory]
