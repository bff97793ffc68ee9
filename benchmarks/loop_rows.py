"""The loop zoo's rows (tests/loops): each loop watched against itself unwatched.

The loops are the ones the tests run, written the way their communities write them:
transformers' Trainer (tiny BERT) and Lightning's Trainer with gradviz's callbacks, a
torch.compile'd GPT (inductor), a nanoGPT-style loop. Each round runs the loop plain,
record-only and with nonfinite+spike breaks, one after the other (rounds interleave the
three, so a busy machine slows them alike); a row is the median per-iteration time
after the warm-up iterations, over all rounds, wall and the training thread's CPU.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from common import Row

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.loops

ROUNDS = 3


def _rows(name: str, loop: str, steps: int, targets: tuple[str, str], skip: int = 3,
          **options) -> Iterator[Row]:
    from tests.loops.harness import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times: dict[str, dict[str, list[float]]] = {}
        for _ in range(ROUNDS):
            for mode in ("plain", "record", "breaks"):
                out = run(loop, mode, steps=steps, **options)
                if out.error is not None:
                    raise RuntimeError(f"{loop} {mode}: {out.error}")
                for clock in ("times", "cpu_times"):
                    times.setdefault(mode, {}).setdefault(clock, []).extend(
                        out.result[clock][skip:])
    finally:
        torch.set_num_threads(threads)
    for mode, target in zip(("record", "breaks"), targets):
        for clock, label in (("times", "wall"), ("cpu_times", "CPU")):
            ours = statistics.median(times[mode][clock])
            base = statistics.median(times["plain"][clock])
            yield Row(f"{name}, {'record-only' if mode == 'record' else 'breaks'} ({label})",
                      f"{ours * 1e3:.1f} ms", f"{base * 1e3:.1f} ms", ours / base, target)


def bench_loop_compiled() -> Iterator[Row]:
    yield from _rows("watch torch.compile GPT (inductor)", "compiled_gpt", 16,
                     ("report", "<=1.10"), skip=4)


def bench_loop_trainers() -> Iterator[Row]:
    yield from _rows("watch transformers Trainer, tiny BERT", "hf_trainer", 16,
                     ("report", "report"))
    yield from _rows("watch Lightning Trainer, MLP", "lightning", 24, ("report", "report"))


def bench_loop_nanogpt() -> Iterator[Row]:
    yield from _rows("watch nanoGPT-style loop (bf16, accumulation 4)", "nanogpt", 16,
                     ("report", "report"))


ROWS = [bench_loop_compiled, bench_loop_trainers, bench_loop_nanogpt]
