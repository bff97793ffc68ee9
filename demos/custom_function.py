"""A user-defined torch.autograd.Function (the Legendre polynomial P3) fitted to sin(x) with SGD.

From PyTorch's "Defining new autograd functions" example: y = a + b * P3(c + d*x),
where P3's forward and backward are written by hand. Its node in the graph is
LegendrePolynomial3Backward; a gradcheck verifies the hand-written backward.
"""

import math

import torch

import gradviz


class LegendrePolynomial3(torch.autograd.Function):
    """P3(x) = (5x^3 - 3x) / 2, with its derivative 1.5 (5x^2 - 1) written by hand."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return 0.5 * (5 * x**3 - 3 * x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * 1.5 * (5 * x**2 - 1)


def build() -> gradviz.Scenario:
    torch.manual_seed(0)
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    params = {
        "a": torch.full((), 0.0, requires_grad=True),
        "b": torch.full((), -1.0, requires_grad=True),
        "c": torch.full((), 0.0, requires_grad=True),
        "d": torch.full((), 0.3, requires_grad=True),
    }
    a, b, c, d = params.values()

    def forward():
        prediction = a + b * LegendrePolynomial3.apply(c + d * x)
        return (prediction - y).pow(2).sum()

    def backward_matches_derivative():
        probe = torch.randn(8, dtype=torch.float64, requires_grad=True)
        return torch.autograd.gradcheck(LegendrePolynomial3.apply, (probe,))

    return gradviz.Scenario(
        name="custom-function",
        params=params,
        forward=forward,
        optimizer=torch.optim.SGD(params.values(), lr=5e-6),
        checks={"gradcheck(LegendrePolynomial3)": backward_matches_derivative},
    )
