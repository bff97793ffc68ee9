"""The |update|/|param| band per layer that counts as healthy, by optimizer family.

A fixed band (1e-4, 1e-2) raised ``ratio-high`` on 4 of 7 healthy runs: Adam's update is
about ``lr`` per element whatever the gradient, so a layer's |Δ|/|p| is about
``lr / rms(p)``: 0.02 for GPT-2's 0.02-std matrices at lr 1e-3 (0.07 at 3e-3), while
its LayerNorm gains (rms 1) sit at lr itself, 5e-5 at BERT's default lr. SGD with
momentum moves deep BatchNorm layers by 2e-5 of their norm at lr 0.01 and a classifier
by 0.07 at lr 0.1. Measured here on nanoGPT, BERT, resnet18 and mobilenet (25 to 30
iterations each), healthy layers spanned 2e-6 to 0.08.

So the bands flag what is broken whatever the optimizer: a layer moved by more than a
fifth of its norm at every step for 10 steps (it is being rewritten, not trained), or
by less than a millionth (Adam) or ten millionth (SGD, whose gradient-sized steps are
smaller) of it (it has stopped learning: a learning rate of ~0, or vanished gradients).
``band=`` sets another.
"""

from __future__ import annotations

import torch

#: Adam-like optimizers: an update of about lr per element.
ADAPTIVE_BAND = (1e-6, 0.2)
#: SGD-like optimizers (and any other): an update the size of the gradient times lr.
OTHER_BAND = (1e-7, 0.2)

_ADAPTIVE = {"Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SparseAdam", "Adagrad", "Adadelta",
             "RMSprop", "Rprop", "Adafactor", "Lion", "LAMB", "Lamb", "Adan", "AdEMAMix",
             "Sophia", "SophiaG", "Muon", "Shampoo", "DistributedShampoo"}


def default_band(optimizer: torch.optim.Optimizer | None) -> tuple[float, float]:
    """The band for ``optimizer``'s family (its class or a base class by name)."""
    if optimizer is not None and any(cls.__name__ in _ADAPTIVE
                                     for cls in type(optimizer).__mro__):
        return ADAPTIVE_BAND
    return OTHER_BAND
