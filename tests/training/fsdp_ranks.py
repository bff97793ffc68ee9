"""FSDP2 (``fully_shard``) loops under gradviz.watch on CPU/gloo, for ``torchrun``.

    torchrun --nproc-per-node 2 tests/training/fsdp_ranks.py OUT CASE

``OUT`` gets the records (``case.db``, every rank's runs in one file), the same loops
run unsharded on the whole batches under a watch (``case-whole.db``, written by rank
0) and a JSON per rank of what the loop itself saw (``case-rankR.json``). Cases:

- ``runs``: seven watches, one after the other, each on a fresh copy of the model:
  ``plain`` (clip_grad_norm_, no breaks: one collective per iteration), ``float64``
  (the same in float64: what is left is the norms' own rounding), ``breaks``
  (nonfinite and spike breaks, two micro-batches per step, clip_grad_value_), ``hsdp``
  (every rank a replica: whole parameters, (Replicate(), Shard(0)) placements),
  ``sampled`` (update_sample=1024: the larger parameter sampled on each shard),
  ``nan-shard`` (rank 1 writes a NaN into its shard of a gradient at iteration 3),
  ``nan-loss`` (rank 0's batch holds a NaN at iteration 2), then ``alone`` (only rank 0
  watches);
- ``raise``: rank 1's loop raises at iteration 3, before its step;
- ``leave``: the same, but rank 1 catches it outside the watch and lingers before it
  exits: rank 0 waits at the watch's collective for the (shortened) timeout only.

The model's shapes make FSDP2's shards uneven on 2 ranks (37 rows: 19 + 18; a (3,)
gate: 2 + 1), and a 97x61 table is larger than a sample of 1024 on either shard.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

import gradviz

torch.set_num_threads(1)
STEPS = 5
PER_RANK = 8


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(24)
        self.fc1 = nn.Linear(24, 37)
        self.fc2 = nn.Linear(37, 24)
        self.gate = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x)))) * self.gate.mean()


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(12, 24)
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.table = nn.Parameter(torch.randn(97, 61) * 0.02)
        self.head = nn.Linear(24, 5)

    def forward(self, x):
        h = self.embed(x) + (self.table ** 2).mean() * 10.0
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def batches(world: int, seed: int = 1234):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(world * PER_RANK, 12, generator=generator),
             torch.randint(0, 5, (world * PER_RANK,), generator=generator))
            for _ in range(STEPS)]


def sharded(model: nn.Module, world: int, *, hsdp: bool = False) -> nn.Module:
    # HSDP: two replicas of world / 2 shards ((Replicate(), Shard(0)) placements); on 2
    # ranks each shard group is one rank: nothing may be added up over the replicas
    mesh = (init_device_mesh("cpu", (2, world // 2), mesh_dim_names=("replicate", "shard"))
            if hsdp else init_device_mesh("cpu", (world,)))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def train(model, optimizer, data, *, rank, world, micro=1, clip=None, fault=None,
          dtype=torch.float32, record=None, **watch):
    """The loop, under a watch when ``record`` is given; what the loop saw."""
    seen = {"clip": [], "losses": [], "breaks": []}
    watch.setdefault("on_break", seen["breaks"].append)
    with (gradviz.watch(model, optimizer, record=record, **watch) if record is not None
          else _nothing()) as w:
        for step, (x, y) in enumerate(data, 1):
            x = x.to(dtype)
            optimizer.zero_grad()
            for part_x, part_y in zip(x.chunk(micro), y.chunk(micro)):
                if world > 1:  # this rank's rows of the micro-batch
                    part_x, part_y = part_x.chunk(world)[rank], part_y.chunk(world)[rank]
                if fault == "nan-loss" and step == 2 and rank == 0:
                    part_x = part_x.clone()
                    part_x[0, 0] = float("nan")
                loss = torch.nn.functional.cross_entropy(model(part_x), part_y)
                loss.backward()
                seen["losses"].append(loss.item())
            if fault == "nan-shard" and step == 3 and rank == 1:
                with torch.no_grad():
                    model.blocks[1].fc1.weight.grad.to_local()[0, 0] = float("nan")
            if fault in ("raise", "leave") and step == 3 and rank == 1:
                raise RuntimeError("rank 1's loop failed")
            if clip == "norm":
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                seen["clip"].append(float(norm.full_tensor() if hasattr(norm, "full_tensor")
                                          else norm))
            elif clip == "value":
                torch.nn.utils.clip_grad_value_(model.parameters(), 0.02)
            optimizer.step()
    seen["breaks"] = [(b.iteration, b.reason.value) for b in seen["breaks"]]
    seen["iterations"] = w.iteration if w is not None else None
    return seen


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


CASES = {  # name: (loop settings, watch settings)
    "plain": ({"clip": "norm"}, {}),
    "float64": ({"clip": "norm", "dtype": torch.float64}, {}),
    "breaks": ({"clip": "value", "micro": 2}, {"break_on": ("nonfinite", "spike")}),
    "hsdp": ({"hsdp": True, "clip": "norm"},
             {"break_on": ("nonfinite",), "update_sample": None}),
    "sampled": ({}, {"update_sample": 1024}),
    "nan-shard": ({"fault": "nan-shard"}, {"break_on": ("nonfinite",)}),
    "nan-loss": ({"fault": "nan-loss"}, {"break_on": ("nonfinite",)}),
}


def run(case: str, out: Path, rank: int, world: int) -> dict:
    """One case: the sharded run under the watch, then (rank 0) the whole model's."""
    loop, watch = dict(CASES[case][0]), CASES[case][1]
    torch.manual_seed(0)
    whole = TinyNet().to(loop.pop("dtype", torch.float32))
    model = sharded(copy.deepcopy(whole), world, hsdp=loop.pop("hsdp", False))
    data = batches(world)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    dtype = next(whole.parameters()).dtype
    seen = train(model, optimizer, data, rank=rank, world=world, record=out / f"{case}.db",
                 dtype=dtype, **loop, **watch)
    if rank == 0 and not loop.get("fault"):
        reference = torch.optim.AdamW(whole.parameters(), lr=1e-2)
        train(whole, reference, data, rank=0, world=1, record=out / f"{case}-whole.db",
              update_sample=None, on_break="report", dtype=dtype,
              **{k: v for k, v in loop.items() if k != "fault"})
    return seen


def main() -> None:
    out, case = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    seen: dict = {}
    try:
        if case == "runs":
            for name in CASES:
                seen[name] = run(name, out, rank, world)
            torch.manual_seed(0)
            model = sharded(TinyNet(), world)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
            # only rank 0 watches: it must say so and go on, not wait for rank 1
            seen["alone"] = train(model, optimizer, batches(world), rank=rank, world=world,
                                  record=out / "alone.db" if rank == 0 else None)
        elif case == "raise":
            torch.manual_seed(0)
            model = sharded(TinyNet(), world)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
            train(model, optimizer, batches(world), rank=rank, world=world, fault="raise",
                  record=out / "raise.db")
        elif case == "leave":
            from gradviz.training.norms import rank_sums

            rank_sums.TIMEOUT = datetime.timedelta(seconds=3)
            torch.manual_seed(0)
            model = sharded(TinyNet(), world)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
            started = time.monotonic()
            try:
                seen = train(model, optimizer, batches(world), rank=rank, world=world,
                             fault="leave", record=out / "leave.db")
            except RuntimeError as error:  # rank 1's own; on rank 0, gloo's, once 1 is gone
                seen = {"error": str(error).splitlines()[0], "rank": rank}
                if rank == 1:
                    time.sleep(8)  # alive, but out of the loop
            seen["seconds"] = time.monotonic() - started
    finally:
        (out / f"{case}-rank{rank}.json").write_text(json.dumps(seen))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
