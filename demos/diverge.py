"""A training script whose learning rate is far too high: gradviz.watch catches the spike.

    python demos/diverge.py [RUN.db]

An ordinary PyTorch loop; the one added line is ``with gradviz.watch(...)``. Plain
SGD at lr=0.5 on a small regression (0.05 trains it): the updates outgrow the
weights, the gradient norm jumps past 10x its recent median at iteration 6 (a
"spike" break), a step turns the last layer's weights to Inf, and at iteration 8 the
loss is NaN: the watch names the op that first took the bad weight. On a terminal
each break opens the app on that iteration's graph (close it to go on); elsewhere
it prints a line. Then ``gradviz report RUN.db`` reads the record again.
"""

import sys

import torch
from torch import nn

import gradviz


def main(record: str = "diverge.db") -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)  # far too high: 0.05 trains it
    inputs = torch.randn(512, 16)
    targets = inputs[:, :4].sum(dim=1, keepdim=True) + 0.1 * torch.randn(512, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, targets),
                                         batch_size=32, shuffle=True)

    with gradviz.watch(model, optimizer, record=record, break_on=("nonfinite", "spike")) as w:
        for epoch in range(4):
            for x, y in loader:
                loss = nn.functional.mse_loss(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            print(f"epoch {epoch}: loss {loss.item():.4g}")
    print(w.report())
    print(f"\nread it again: gradviz report {record}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
