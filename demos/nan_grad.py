"""A naive |x| = sqrt(x**2) after a dead unit: SqrtBackward0 in module abs sends Inf, NaN reaches hidden.

Forward is finite (sqrt(0) = 0) but the derivative of sqrt at 0 is infinite, and
Inf * 0 in PowBackward0 is NaN, which lands in hidden.weight and hidden.bias. The
first node to produce a non-finite gradient is the SqrtBackward0 made by `abs`.
"""

import torch
from torch import nn

import gradviz


class NaiveAbs(nn.Module):
    def forward(self, x):
        return torch.sqrt(x**2)


class DeadUnitNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.abs = NaiveAbs()
        self.out = nn.Linear(8, 1)
        with torch.no_grad():  # unit 0 is dead, as after pruning: its output is exactly 0
            self.hidden.weight[0].zero_()
            self.hidden.bias[0].zero_()

    def forward(self, x):
        return self.out(self.abs(self.hidden(x)))


def build() -> gradviz.Scenario:
    torch.manual_seed(0)
    model = DeadUnitNet()
    x = torch.randn(16, 4)
    target = torch.randn(16, 1)

    def forward():
        return nn.functional.mse_loss(model(x), target)

    return gradviz.Scenario(
        name="nan-grad",
        model=model,
        forward=forward,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        checks={
            "all gradients finite": lambda: all(
                bool(p.grad.isfinite().all()) for p in model.parameters() if p.grad is not None
            ),
        },
    )
