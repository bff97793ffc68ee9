"""A chain of 200,000 sin nodes: the deepest graph the app is measured on."""

import torch

import gradviz


def build() -> gradviz.Scenario:
    x = torch.ones(8, requires_grad=True)

    def forward():
        y = x
        for _ in range(200_000):
            y = y.sin()
        return y.sum()

    return gradviz.Scenario(name="chain200k", params={"x": x}, forward=forward)
