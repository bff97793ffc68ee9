"""(a) nanoGPT's train.py, cut down: AdamW with decay groups, cosine lr with warmup,
gradient accumulation, clip_grad_norm_(1.0), bf16 autocast (or fp16 + GradScaler).

Faults (``inject=``): log, logpow, sqrt0, overflow (in gpt_model), lr5 (divergence),
zerolr (lr 0 for good, ratio-low), newopt (a second optimizer from iteration N).
"""

import math
from contextlib import nullcontext

import torch

from tests.loops.common import Log, faults, watching
from tests.loops.gpt_model import GPT, GPTConfig, get_batch

LAST = None


def train(steps, *, inject=None, watch=None, dtype="bfloat16", gradient_accumulation_steps=4,
          batch_size=4, grad_clip=1.0, flash=True, holder=None, seed=1337,
          learning_rate=6e-3, warmup_iters=4):
    global LAST
    # -----------------------------------------------------------------------------
    # default config values
    weight_decay = 1e-1
    beta1 = 0.9
    beta2 = 0.95
    decay_lr = True # whether to decay the learning rate
    lr_decay_iters = max(steps, 10) # should be ~= max_iters per Chinchilla
    min_lr = learning_rate / 10 # minimum learning rate, should be ~= learning_rate/10 per Chinchilla
    device = 'cpu'
    device_type = 'cuda' if 'cuda' in device else 'cpu' # for later use in torch.autocast
    # -----------------------------------------------------------------------------
    faults.set(inject)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
    ctx = nullcontext() if dtype == 'float32' else torch.amp.autocast(device_type=device_type, dtype=ptdtype)

    model_args = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, bias=True, vocab_size=64,
                      dropout=0.0, flash=flash)
    gptconf = GPTConfig(**model_args)
    model = GPT(gptconf)
    model.to(device)

    # initialize a GradScaler. If enabled=False scaler is a no-op
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))

    # optimizer
    optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)

    # learning rate decay scheduler (cosine with warmup)
    def get_lr(it):
        # 1) linear warmup for warmup_iters steps
        if it < warmup_iters:
            return learning_rate * (it + 1) / (warmup_iters + 1)
        # 2) if it > lr_decay_iters, return min learning rate
        if it > lr_decay_iters:
            return min_lr
        # 3) in between, use cosine decay down to min learning rate
        decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
        assert 0 <= decay_ratio <= 1
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio)) # coeff ranges 0..1
        return min_lr + coeff * (learning_rate - min_lr)

    log = LAST = Log()
    log.extra["lossf"] = []  # what nanoGPT prints: the last micro-step's loss * accumulation
    log.extra["scale"] = []
    X, Y = get_batch(gen, batch_size, gptconf.block_size, gptconf.vocab_size) # fetch the very first batch
    iter_num = 0
    with watching(model, optimizer, watch, holder):
        log.tick()
        while True:
            faults.step(iter_num + 1)
            # determine and set the learning rate for this iteration
            lr = get_lr(iter_num) if decay_lr else learning_rate
            if faults.on("lr5"):
                lr = 5.0
            if faults.on("zerolr"):
                lr = 0.0
            if faults.on("newopt") and not log.extra.get("newopt"):
                # "stage 2": a fresh optimizer, as a fine-tune script does between stages
                optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
                log.extra["newopt"] = iter_num + 1
            for param_group in optimizer.param_groups:
                param_group['lr'] = lr

            # forward backward update, with optional gradient accumulation to simulate larger batch size
            # and using the GradScaler if data type is float16
            loss_sum = 0.0
            for micro_step in range(gradient_accumulation_steps):
                with ctx:
                    logits, loss = model(X, Y)
                    loss = loss / gradient_accumulation_steps # scale the loss to account for gradient accumulation
                loss_sum += loss.item()
                # immediately async prefetch next batch while model is doing the forward pass on the GPU
                X, Y = get_batch(gen, batch_size, gptconf.block_size, gptconf.vocab_size)
                # backward pass, with gradient scaling if training in fp16
                scaler.scale(loss).backward()
            # clip the gradient
            norm = None
            if grad_clip != 0.0:
                scaler.unscale_(optimizer)
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            log.extra["scale"].append(scaler.get_scale() if scaler.is_enabled() else 1.0)
            # step the optimizer and scaler if training in fp16
            scaler.step(optimizer)
            scaler.update()
            # flush the gradients as soon as we can, no need for this memory anymore
            optimizer.zero_grad(set_to_none=True)

            # timing and logging
            lossf = loss.item() * gradient_accumulation_steps
            log.losses.append(loss_sum)
            log.extra["lossf"].append(lossf)
            log.grad_norms.append(None if norm is None else norm.item())
            log.lrs.append(lr)
            log.tock()
            iter_num += 1

            # termination conditions
            if iter_num >= steps:
                break
    return log.as_dict()
