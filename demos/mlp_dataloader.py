"""A small MLP trained with Adam on a synthetic TensorDataset, one DataLoader batch per forward.

Where the tutorial notes end: a Dataset holds (x, y) pairs, a DataLoader serves
shuffled batches of them. Three classes, 20 features, batches of 32.
"""

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import gradviz


def build() -> gradviz.Scenario:
    torch.manual_seed(0)
    features = torch.randn(512, 20)
    classes = (features @ torch.randn(20, 3)).argmax(dim=1)
    loader = DataLoader(
        TensorDataset(features, classes),
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
    loss_fn = nn.CrossEntropyLoss()

    def batches():
        while True:  # one epoch after another
            yield from loader

    stream = batches()

    def forward():
        x, y = next(stream)
        return loss_fn(model(x), y)

    return gradviz.Scenario(
        name="mlp-dataloader",
        model=model,
        forward=forward,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
    )
