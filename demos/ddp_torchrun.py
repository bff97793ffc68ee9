"""Data-parallel training under torchrun, every rank recorded by gradviz.watch.

    torchrun --nproc-per-node 2 demos/ddp_torchrun.py --record ddp.db
    gradviz report ddp.db        # both ranks' runs: they agree, or where one parted
    gradviz open ddp.db          # rank 0's run, with the ranks' verdict in its headline

A training script, not a scenario (it has no ``build()``): the loop people launch
with ``torchrun``, with one line added around it. Each rank trains a
``DistributedDataParallel`` copy of a small MLP on its own shard of a synthetic
dataset (``DistributedSampler``), with gloo on the CPU (nccl where every rank has a
GPU). ``gradviz.watch`` records every rank's run into the one record file (the ranks
of one host share it; across hosts, give each host a local path and read them
together: ``gradviz report host0.db host1.db``). After DDP's all-reduce every rank
holds the same gradients, so the report finds the ranks in agreement;
``--fault-at N`` makes the last rank scale one gradient at iteration N, after the
all-reduce, as a rank-local bug would: the report names that iteration, the
parameter (``2.weight``) and the rank (with two ranks: that one of the two parted).
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import gradviz


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", default="ddp.db", help="the record file (default ddp.db)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps (default 30)")
    parser.add_argument("--fault-at", type=int, metavar="N",
                        help="the last rank changes one gradient at iteration N (a demo bug)")
    parser.add_argument("--cpu", action="store_true", help="gloo on the CPU even with GPUs")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    use_cuda = (not args.cpu and torch.cuda.is_available()
                and torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    dist.init_process_group("nccl" if use_cuda else "gloo")  # torchrun's env:// rendezvous
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if use_cuda else "cpu")

    torch.manual_seed(0)  # the same initial weights on every rank (DDP broadcasts rank 0's)
    features = torch.randn(1024, 20)
    classes = (features @ torch.randn(20, 4)).argmax(dim=1)
    dataset = TensorDataset(features, classes)
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=32, sampler=sampler)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 4)).to(device)
    model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    faulty = args.fault_at is not None and rank == world - 1

    step, epoch = 0, 0
    with gradviz.watch(model, optimizer, record=args.record, on_break="report"):
        while step < args.steps:
            sampler.set_epoch(epoch)
            for x, y in loader:
                loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
                optimizer.zero_grad()
                loss.backward()  # DDP's all-reduce: every rank now holds the same gradients
                step += 1
                if faulty and step == args.fault_at:  # a rank-local bug, after the all-reduce
                    model.module[2].weight.grad.mul_(1.001)
                optimizer.step()
                if rank == 0 and step % 10 == 0:
                    print(f"step {step}: loss {loss.item():.4f}", flush=True)
                if step == args.steps:
                    break
            epoch += 1
    dist.barrier()  # every rank's run is finished in the record before rank 0 points at it
    if rank == 0:
        print(f"recorded {world} ranks in {args.record}: gradviz report {args.record}",
              flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
