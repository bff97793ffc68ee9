"""(f) An LSTM text classifier over packed variable-length sequences, with a hand-written
LayerNorm and a custom ``torch.autograd.Function`` (a gradient-scaled "soft clamp"), Adam.

Faults:
- "fnbwd@N": the custom Function's backward divides by zero (its saved scale is 0);
- "norm0@N": 0/0 in the hand-written LayerNorm (a constant feature row, eps = 0);
- "sqrt0@N": a norm feature ``sqrt(sum(h^2))`` of an all-zero row (NaN only in backward);
- "log@N": ``log(|h| - 100)`` followed by a ReLU in the head;
- "lr5@N+";
- "kbd@N": KeyboardInterrupt at the top of iteration N.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from tests.loops.common import Log, faults, watching

LAST = None


class SoftClamp(torch.autograd.Function):
    """y = c * tanh(x / c); backward rescales the gradient by 1/c (a 'temperature')."""

    @staticmethod
    def forward(ctx, x, c):
        ctx.save_for_backward(x)
        ctx.c = c
        ctx.inv = 0.0 if faults.on("fnbwd") else 1.0
        return c * torch.tanh(x / c)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        t = torch.tanh(x / ctx.c)
        return grad * (1 - t * t) / ctx.inv, None  # FAULT:fnbwd


class MyLayerNorm(nn.Module):
    """The LayerNorm everyone writes once (eps=0: 'it is never constant anyway')."""

    def __init__(self, d, eps=0.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(d))
        self.beta = nn.Parameter(torch.zeros(d))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return self.gamma * (x - mu) / torch.sqrt(var + self.eps) + self.beta  # FAULT:norm0


class Classifier(nn.Module):
    def __init__(self, vocab=50, emb=16, hidden=32, classes=3):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.norm = MyLayerNorm(hidden)
        self.proj = nn.Linear(hidden + 1, hidden)
        self.out = nn.Linear(hidden, classes)

    def forward(self, tokens, lengths):
        x = self.embedding(tokens)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        h = h[-1]
        if faults.on("norm0"):
            h = torch.cat([h[:1] * 0 + 0.5, h[1:]])  # one row constant
        h = self.norm(h)
        if faults.on("sqrt0"):
            h = torch.cat([h[:1] * 0, h[1:]])
        feat = torch.sqrt((h * h).sum(-1, keepdim=True))  # FAULT:sqrt0
        h = self.proj(torch.cat([h, feat], -1))
        if faults.on("log"):
            h = torch.log(h.abs() - 100)  # FAULT:log
        h = F.relu(h)
        h = SoftClamp.apply(h, 3.0)
        return self.out(h)


def make_data(n=256, vocab=50, max_len=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, max_len + 1, (n,), generator=g)
    tokens = torch.zeros(n, max_len, dtype=torch.long)
    for i, L in enumerate(lengths.tolist()):
        tokens[i, :L] = torch.randint(1, vocab, (L,), generator=g)
    labels = (tokens.sum(1) % 3)
    return tokens, lengths, labels


def train(steps, *, inject=None, watch=None, holder=None, batch_size=16, lr=3e-3, seed=0):
    global LAST
    faults.set(inject)
    torch.manual_seed(seed)
    tokens, lengths, labels = make_data()
    model = Classifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    log = LAST = Log()
    with watching(model, optimizer, watch, holder):
        log.tick()
        for step in range(steps):
            faults.step(step + 1)
            if faults.on("lr5"):
                for group in optimizer.param_groups:
                    group["lr"] = 5.0
            if faults.on("kbd"):
                raise KeyboardInterrupt  # FAULT:kbd (Ctrl-C, as the user presses it)
            i = torch.arange(step * batch_size, (step + 1) * batch_size) % len(tokens)
            # the norm0/sqrt0 faults need a batch whose first row survives the LSTM
            logits = model(tokens[i], lengths[i])
            loss = F.cross_entropy(logits, labels[i])
            optimizer.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            optimizer.step()
            log.losses.append(loss.item())
            log.grad_norms.append(norm.item())
            log.lrs.append(optimizer.param_groups[0]["lr"])
            log.tock()
    return log.as_dict()
