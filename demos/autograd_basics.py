"""The tutorial's Q = 3a^3 - b^2: backward with gradient [1, 1] gives a.grad = 9a^2, b.grad = -2b.

From "A Gentle Introduction to torch.autograd": a = [2., 3.] and b = [6., 4.] are
leaves that require grad; Q is a vector, so backward needs an external gradient.
"""

import torch

import gradviz


def build() -> gradviz.Scenario:
    a = torch.tensor([2.0, 3.0], requires_grad=True)
    b = torch.tensor([6.0, 4.0], requires_grad=True)

    def forward():
        return 3 * a**3 - b**2

    return gradviz.Scenario(
        name="autograd-basics",
        params={"a": a, "b": b},
        forward=forward,
        gradient=torch.tensor([1.0, 1.0]),
        optimizer=torch.optim.SGD([a, b], lr=0.01),
        checks={
            "9*a**2 == a.grad": lambda: 9 * a**2 == a.grad,
            "-2*b == b.grad": lambda: -2 * b == b.grad,
        },
    )
