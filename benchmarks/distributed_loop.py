"""A 2-rank training loop, watched and plain, for ``benchmarks/distributed_rows.py``.

    torchrun --standalone --nproc-per-node 2 benchmarks/distributed_loop.py OUT.json KIND SIZE [breaks]

``KIND``: ``fsdp`` (FSDP2's ``fully_shard`` per block, then the root) or ``ddp``.
``SIZE``: ``small`` (6 blocks of 64 -> 256 -> 64, 40 parameters: the watch's fixed costs
show) or ``medium`` (6 blocks of 256 -> 1024 -> 256, 3.2M parameters). Blocks of plain
iterations alternate with blocks inside a ``gradviz.watch`` (a new one per block, as a
loop that is watched for a while would be), on gloo, one torch thread per rank. Each
iteration is timed on each rank (forward, backward, step, ``loss.item()``), in wall
time and in the main thread's CPU time; rank 0 writes every rank's times to ``OUT.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torch.distributed as dist
from torch import nn

import gradviz

torch.set_num_threads(1)
ROUNDS, BLOCK, WARM_UP = 15, 4, 5
SIZES = {"small": (64, 256), "medium": (256, 1024)}  # width, hidden
BLOCKS, BATCH = 6, 32
WIDTH, HIDDEN = SIZES[sys.argv[3] if len(sys.argv) > 3 else "small"]


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(WIDTH)
        self.up = nn.Linear(WIDTH, HIDDEN)
        self.down = nn.Linear(HIDDEN, WIDTH)

    def forward(self, x):
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm(x))))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(64, WIDTH)
        self.blocks = nn.ModuleList(Block() for _ in range(BLOCKS))
        self.head = nn.Linear(WIDTH, 10)

    def forward(self, x):
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def build(kind: str, world: int):
    torch.manual_seed(0)
    model = Net()
    if kind == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for block in model.blocks:
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    else:
        model = nn.parallel.DistributedDataParallel(model)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def main() -> None:
    out, kind = Path(sys.argv[1]), sys.argv[2]
    watch = {"break_on": ("nonfinite", "spike"), "on_break": "report"} if "breaks" in sys.argv \
        else {"on_break": "report"}
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, optimizer = build(kind, world)
    generator = torch.Generator().manual_seed(rank)
    x = torch.randn(BATCH, 64, generator=generator)
    y = torch.randint(0, 10, (BATCH,), generator=generator)

    def iteration() -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
        return time.perf_counter() - wall, time.thread_time() - cpu

    for _ in range(WARM_UP):
        iteration()
    plain, watched = [], []
    with tempfile.TemporaryDirectory() as folder:
        for round_ in range(ROUNDS):
            plain.extend(iteration() for _ in range(BLOCK))
            with gradviz.watch(model, optimizer, record=Path(folder) / f"r{rank}-{round_}.db",
                               **watch):
                watched.extend(iteration() for _ in range(BLOCK))
    times = [None] * world
    dist.all_gather_object(times, {"plain": plain, "watched": watched})
    if rank == 0:
        out.write_text(json.dumps({"kind": kind, "world": world, "ranks": times,
                                   "params": sum(p.numel() for p in model.parameters())}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
