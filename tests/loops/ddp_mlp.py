"""(e) DDP over gloo, 2 CPU processes (torch.multiprocessing.spawn), a small MLP, SGD.

Each rank runs the usual DDP loop inside ``gradviz.watch`` (every rank writes its run to
the same record file). Each rank's log comes back as ``ranks[r]``; the top-level
losses/grad_norms/lrs are rank 0's.

Faults: "log@N" on rank 1 only (log(|h|-100) then ReLU in the MLP; rank 0's gradients
turn NaN only through the all-reduce), "log0@N" on rank 0 only, "lr5@N+".
"""

import json
import os
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from tests.loops.common import Log, faults, watching

LAST = None


class MLP(nn.Module):
    def __init__(self, d_in=32, hidden=64, d_out=4):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, d_out)

    def forward(self, x):
        h = self.fc1(x)
        if faults.on("log" if dist.get_rank() == 1 else "log0"):
            h = torch.log(h.abs() - 100)  # FAULT:log
        h = F.relu(h)
        h = F.relu(self.fc2(h))
        return self.head(h)


def _worker(rank, world_size, port, steps, inject, watch, out, threads):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    faults.set(inject)
    torch.manual_seed(0)
    model = DDP(MLP())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(100 + rank)
    w_true = torch.randn(32, 4, generator=torch.Generator().manual_seed(7))
    log = Log()
    error = None
    try:
        with watching(model, optimizer, watch):
            log.tick()
            for step in range(steps):
                faults.step(step + 1)
                if faults.on("lr5"):
                    for group in optimizer.param_groups:
                        group["lr"] = 5.0
                x = torch.randn(16, 32, generator=g)
                y = (x @ w_true).argmax(1)
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                log.losses.append(loss.item())
                log.grad_norms.append(norm.item())
                log.lrs.append(optimizer.param_groups[0]["lr"])
                log.tock()
    except BaseException as e:  # noqa: BLE001 - report it to the parent
        error = f"{type(e).__name__}: {e}"
    finally:
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump({**log.as_dict(), "error": error}, f)
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(steps, *, inject=None, watch=None, world_size=2, threads=1, holder=None):
    global LAST
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(world_size, _free_port(), steps, inject, watch, out, threads),
                 nprocs=world_size, join=True)
        ranks = []
        for r in range(world_size):
            with open(os.path.join(out, f"rank{r}.json")) as f:
                ranks.append(json.load(f))
    result = {**ranks[0], "ranks": ranks}
    LAST = result
    return result
