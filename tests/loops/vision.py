"""(c) torchvision transfer learning, as in the "finetuning / fixed feature extractor"
tutorial: resnet18(num_classes=10), backbone frozen (requires_grad=False), a new fc,
Nesterov SGD with momentum over fc's parameters, StepLR.

Faults:
- "replace@N": ``model.fc = nn.Linear(...)`` again after the optimizer was built
  (N=0: before the watch/loop; N>=1: inside the loop, at iteration N);
- "stage2@N": at iteration N unfreeze layer4 and build a new optimizer (the old one is
  no longer stepped), as a two-stage fine-tune does;
- "allparams": the optimizer gets ``model.parameters()`` (frozen ones included) with
  weight decay; harmless, since frozen params have no grad;
- "freezelate@N": at iteration N freeze fc again (requires_grad=False) while using
  zero_grad(set_to_none=False): momentum keeps moving it;
- "lr5@N+": lr 5 from iteration N.
"""

import torch
import torch.nn as nn
import torchvision

from tests.loops.common import Log, faults, watching

LAST = None


def train(steps, *, inject=None, watch=None, size=32, batch_size=8, holder=None, seed=0):
    global LAST
    faults.set(inject)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    # a fixed "dataset" of 64 images, 10 classes, class = brightest of 10 stripes
    images = torch.rand(64, 3, size, size, generator=g)
    labels = torch.randint(10, (64,), generator=g)
    for i, c in enumerate(labels.tolist()):
        images[i, :, c * size // 10:(c + 1) * size // 10, :] += 1.0

    model_conv = torchvision.models.resnet18(num_classes=10)
    for param in model_conv.parameters():
        param.requires_grad = False

    # Parameters of newly constructed modules have requires_grad=True by default
    num_ftrs = model_conv.fc.in_features
    model_conv.fc = nn.Linear(num_ftrs, 10)

    criterion = nn.CrossEntropyLoss()

    # Observe that only parameters of final layer are being optimized as
    # opposed to before.
    params = model_conv.parameters() if faults.on("allparams") or "allparams" in faults.kinds() \
        else model_conv.fc.parameters()
    optimizer_conv = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True,
                                     weight_decay=5e-4)

    # Decay LR by a factor of 0.1 every 7 epochs
    exp_lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer_conv, step_size=7, gamma=0.1)

    if any(k == "replace" and at == 0 for k, at, _ in faults.specs):
        model_conv.fc = nn.Linear(num_ftrs, 10)  # FAULT:replace (the optimizer has the old fc)

    log = LAST = Log()
    set_to_none = "freezelate" not in faults.kinds()
    model = model_conv
    model.train()
    with watching(model_conv, optimizer_conv, watch, holder):
        log.tick()
        for step in range(steps):
            faults.step(step + 1)
            if faults.on("replace"):
                model.fc = nn.Linear(num_ftrs, 10)
            if faults.on("stage2"):
                for p in model.layer4.parameters():
                    p.requires_grad = True
                optimizer_conv = torch.optim.SGD(
                    [{"params": model.fc.parameters()},
                     {"params": model.layer4.parameters(), "lr": 1e-3}],
                    lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
                exp_lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer_conv, step_size=7, gamma=0.1)
                log.extra["stage2"] = step + 1
            if faults.on("freezelate"):
                for p in model.fc.parameters():
                    p.requires_grad = False
            if faults.on("lr5"):
                for group in optimizer_conv.param_groups:
                    group["lr"] = 5.0
            idx = torch.arange(step * batch_size, (step + 1) * batch_size) % len(images)
            inputs, targets = images[idx], labels[idx]

            optimizer_conv.zero_grad(set_to_none=set_to_none)
            outputs = model(inputs)
            loss = criterion(outputs, targets)
            if loss.requires_grad:
                loss.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            log.grad_norms.append(torch.nn.utils.get_total_norm(grads).item() if grads else None)
            log.lrs.append(optimizer_conv.param_groups[0]["lr"])
            optimizer_conv.step()
            exp_lr_scheduler.step()

            log.losses.append(loss.item())
            log.tock()
    return log.as_dict()
