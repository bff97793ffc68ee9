"""(d) ``torch.compile``d tiny GPT (the nanoGPT model) with AdamW, no accumulation.

``backend``: "inductor" (torch.compile's default) or "aot_eager"; ``compile_whole``:
compile the model (nanoGPT's ``model = torch.compile(model)``). ``graph_break``: put a
``print``-free graph break in each Block (``torch._dynamo.graph_break()``), as code
with data-dependent Python does. Returns dynamo's counters in ``extra``.

Faults: log, sqrt0, overflow (gpt_model), lr5.
"""


import torch

from tests.loops.common import Log, faults, watching
from tests.loops.gpt_model import GPT, Block, GPTConfig, get_batch

LAST = None


def _breaking_forward(self, x):
    x = x + self.attn(self.ln_1(x))
    torch._dynamo.graph_break()
    x = x + self.mlp(self.ln_2(x))
    return x


def train(steps, *, inject=None, watch=None, backend="inductor", graph_break=False,
          holder=None, seed=0, batch_size=8, lr=1e-3, watch_compiled=True):
    global LAST
    import torch._dynamo
    from torch._dynamo.utils import counters

    faults.set(inject)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=64)
    model = GPT(config)
    if graph_break:
        for block in model.transformer.h:
            block.forward = _breaking_forward.__get__(block, Block)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    unoptimized = model
    torch._dynamo.reset()
    counters.clear()
    model = torch.compile(model, backend=backend)  # requires PyTorch 2.0

    log = LAST = Log()
    watched = model if watch_compiled else unoptimized
    with watching(watched, optimizer, watch, holder):
        log.tick()
        for it in range(steps):
            faults.step(it + 1)
            if faults.on("lr5"):
                for g in optimizer.param_groups:
                    g["lr"] = 5.0
            X, Y = get_batch(gen, batch_size, config.block_size, config.vocab_size)
            logits, loss = model(X, Y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            log.losses.append(loss.item())
            log.grad_norms.append(norm.item())
            log.lrs.append(optimizer.param_groups[0]["lr"])
            log.tock()
    log.extra["counters"] = {k: dict(v) for k, v in counters.items() if k in ("stats", "graph_break", "aot_autograd", "inductor") and v}
    log.extra["frames_ok"] = counters["stats"]["unique_graphs"]
    log.extra["graph_breaks"] = sum(counters["graph_break"].values())
    log.extra["param_names"] = [n for n, _ in model.named_parameters()][:3]
    return log.as_dict()
