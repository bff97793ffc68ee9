"""Fine-tuning: resnet18 with every parameter frozen and a new fc = Linear(512, 10); only fc learns.

The tutorial's "exclusion from the DAG": frozen parameters do not require grad, so
the whole convolutional trunk drops out of the autograd graph. The optimizer still
holds every parameter, as in the tutorial, and skips the ones without a gradient.
Its loss, (prediction - labels).sum(), has no minimum: training drives it down.
"""

import torch
from torch import nn
from torchvision.models import resnet18

import gradviz

#: What the app says after a training step (t) of a demo with the tutorial's loss.
UNBOUNDED = ("(prediction - labels).sum() has no minimum: training drives it down without "
             "end (the tutorial takes one step)")


def build(weights=None) -> gradviz.Scenario:
    torch.manual_seed(0)
    model = resnet18(weights=None)
    if weights is not None:  # pretrained weights load before the classifier is replaced
        gradviz.load_weights(model, weights)
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Linear(512, 10)
    data = torch.rand(1, 3, 64, 64)
    labels = torch.rand(1, 10)

    def forward():
        return (model(data) - labels).sum()

    return gradviz.Scenario(
        name="finetune",
        model=model,
        forward=forward,
        optimizer=torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9),
        # The tutorial's loss, kept for its graph: it has no minimum, so each training
        # step drives it further down (-478 to -16,239 in three), and the app says so.
        train_note=UNBOUNDED,
        checks={
            "only fc has gradients": lambda: all(
                (p.grad is not None) == name.startswith("fc.")
                for name, p in model.named_parameters()
            ),
        },
    )
