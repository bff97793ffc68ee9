"""torchvision's maxvit_t on one 224x224 image: a 2,325-node graph."""

import torch
from torchvision.models import maxvit_t

import gradviz


def build() -> gradviz.Scenario:
    torch.manual_seed(0)
    model = maxvit_t(weights=None)
    image = torch.rand(1, 3, 224, 224)

    def forward():
        return model(image).sum()

    return gradviz.Scenario(name="maxvit_t", model=model, forward=forward,
                            optimizer=torch.optim.SGD(model.parameters(), lr=1e-3))
