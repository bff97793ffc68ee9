"""A training script that hits a NaN at iteration 30: gradviz.watch names where it started.

    python demos/nan_at_iteration.py [RUN.db]

At iteration 30 a "pruning" step zeroes one hidden unit. Its output is then exactly
0, and the naive |x| = sqrt(x**2) that follows has an infinite derivative there:
``SqrtBackward0`` in module ``abs`` sends Inf, ``PowBackward0`` turns Inf * 0 into NaN,
and NaN lands in ``hidden.weight``. The forward pass and the loss stay finite, so
nothing looks wrong until the weights are NaN one step later. gradviz.watch checks
the gradients before ``optimizer.step()``, steps that iteration's own graph again
and stops on the first node that made a NaN/Inf out of finite numbers, with the
file and line of its module's ``forward``. The weights are still clean when it
breaks. On a terminal it opens the app there; elsewhere it prints one line.
"""

import sys

import torch
from torch import nn

import gradviz

NAN_AT = 30


class NaiveAbs(nn.Module):
    def forward(self, x):
        return torch.sqrt(x**2)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(8, 32)
        self.abs = NaiveAbs()
        self.out = nn.Linear(32, 1)

    def forward(self, x):
        return self.out(self.abs(self.hidden(x)))


def prune_unit(model: Net, unit: int) -> None:
    with torch.no_grad():
        model.hidden.weight[unit].zero_()
        model.hidden.bias[unit].zero_()


def main(record: str = "nan_at_iteration.db") -> None:
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    x, y = torch.randn(64, 8), torch.randn(64, 1)

    with gradviz.watch(model, optimizer, record=record, break_on=("nonfinite",)) as w:
        for iteration in range(1, 51):
            if iteration == NAN_AT:
                prune_unit(model, 0)
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    print(w.report())
    print(f"\nread it again: gradviz report {record}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
