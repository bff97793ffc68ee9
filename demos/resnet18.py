"""torchvision's resnet18 on rand(1, 3, 64, 64), loss (prediction - labels).sum(), SGD with momentum.

The tutorial's first example. Offline there are no pretrained weights: the model
starts from a seeded random initialisation, or from a local state dict given with
--weights (such as torchvision's resnet18-f37072fd.pth saved by hand).

The loss is the tutorial's, which has no minimum: one optimizer step shows what a
step does, more (t, gradviz train) drive it down without end, and the app says so.
"""

import torch
from torchvision.models import resnet18

import gradviz

#: What the app says after a training step (t) of a demo with the tutorial's loss.
UNBOUNDED = ("(prediction - labels).sum() has no minimum: training drives it down without "
             "end (the tutorial takes one step)")


def build(weights=None) -> gradviz.Scenario:
    torch.manual_seed(0)
    model = resnet18(weights=None)
    if weights is not None:
        gradviz.load_weights(model, weights)
    data = torch.rand(1, 3, 64, 64)
    labels = torch.rand(1, 1000)

    def forward():
        prediction = model(data)
        return (prediction - labels).sum()

    return gradviz.Scenario(
        name="resnet18",
        model=model,
        forward=forward,
        optimizer=torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9),
        # The tutorial's loss, kept for its graph: it has no minimum, so each training
        # step drives it further down (-478 to -16,239 in three), and the app says so.
        train_note=UNBOUNDED,
    )
