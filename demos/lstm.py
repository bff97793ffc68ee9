"""An LSTM cell predicting a sine wave, unrolled over 400 time steps: a graph of about 6,000 nodes.

Backward through time is a long chain (15 autograd nodes per step): the place to
see gradients fade with distance and to check that a big graph stays usable.
The unrolling is written out with nn.LSTMCell because nn.LSTM on the CPU is one
fused node with its own backward.
"""

import torch
from torch import nn

import gradviz

STEPS = 400


class SineLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(input_size=1, hidden_size=16)
        self.head = nn.Linear(16, 1)

    def forward(self, sequence):
        hidden = torch.zeros(sequence.shape[1], 16)
        state = torch.zeros(sequence.shape[1], 16)
        for x in sequence:
            hidden, state = self.cell(x, (hidden, state))
        return self.head(hidden)


def build() -> gradviz.Scenario:
    torch.manual_seed(0)
    model = SineLSTM()
    t = torch.linspace(0, 16, STEPS + 1)
    wave = torch.sin(t).reshape(STEPS + 1, 1, 1)
    inputs, target = wave[:-1], wave[-1]

    def forward():
        return nn.functional.mse_loss(model(inputs), target)

    return gradviz.Scenario(
        name="lstm",
        model=model,
        forward=forward,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
    )
