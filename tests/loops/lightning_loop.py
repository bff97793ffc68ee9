"""(g) A Lightning ``Trainer`` on a tiny LightningModule (an MLP regressor), Adam + StepLR,
``gradient_clip_val=1.0``, ``accumulate_grad_batches`` (default 2).

The watch is gradviz's ``GradvizCallback`` (``how="gradviz"``), or a Callback of the
user's own that enters it in ``on_train_start`` with the real optimizer (``how="real"``:
``trainer.optimizers[0]``) or with the LightningOptimizer wrapper (``how="wrapper"``).

The module logs, per optimizer step, in ``on_before_optimizer_step`` (gradients complete,
not yet clipped) the total gradient norm, the loss sum and the lr: what gradviz should
record.

Faults: "log@N" (log(|h|-100) then ReLU), "lr5@N+".
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from tests.loops.common import Log, faults, watching

LAST = None


def train(steps, *, inject=None, watch=None, holder=None, accumulate=2, clip=1.0,
          how="gradviz", trace=None):
    global LAST
    import lightning as L

    faults.set(inject)
    L.seed_everything(0, verbose=False)
    log = LAST = Log()
    log.extra["loss_micro"] = []
    holder = {} if holder is None else holder

    class Regressor(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 64)
            self.fc2 = nn.Linear(64, 1)
            self._acc = 0.0

        def forward(self, x):
            h = self.fc1(x)
            if faults.on("log"):
                h = torch.log(h.abs() - 100)  # FAULT:log
            return self.fc2(F.relu(h))

        def training_step(self, batch, batch_idx):
            faults.step(self.trainer.global_step + 1)
            x, y = batch
            loss = F.mse_loss(self(x), y)
            self._acc += loss.item() / self.trainer.accumulate_grad_batches
            log.extra["loss_micro"].append(loss.item())
            return loss

        def on_before_optimizer_step(self, optimizer):
            if faults.on("lr5"):
                for g in optimizer.param_groups:
                    g["lr"] = 5.0
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            log.grad_norms.append(torch.nn.utils.get_total_norm(grads).item())
            log.losses.append(self._acc)
            log.lrs.append(optimizer.param_groups[0]["lr"])
            self._acc = 0.0

        def on_train_batch_end(self, outputs, batch, batch_idx):
            if (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0:
                log.tock()

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=1e-2)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    class Gradviz(L.Callback):
        def on_train_start(self, trainer, pl_module):
            opt = pl_module.optimizers() if how == "wrapper" else trainer.optimizers[0]
            log.extra["optimizers"] = {
                "pl_module.optimizers()": type(pl_module.optimizers()).__name__,
                "trainer.optimizers[0]": type(trainer.optimizers[0]).__name__,
                "same": pl_module.optimizers().optimizer is trainer.optimizers[0],
            }
            self.ctx = watching(pl_module, opt, watch, holder)
            self.ctx.__enter__()
            log.tick()

        def on_train_end(self, trainer, pl_module):
            if getattr(self, "ctx", None) is not None:
                self.ctx.__exit__(None, None, None)
                self.ctx = None

        def on_exception(self, trainer, pl_module, exception):
            if getattr(self, "ctx", None) is not None:
                self.ctx.__exit__(type(exception), exception, exception.__traceback__)
                self.ctx = None

    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * accumulate * 8, 16, generator=g)
    y = x[:, :1] * 2 - x[:, 1:2] + 0.1 * torch.randn(len(x), 1, generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    if watch is None:
        callbacks = [_Ticker(log)]
    elif how == "gradviz":  # gradviz's own callback, as its users write it
        from gradviz.integrations.lightning import GradvizCallback

        gradviz_callback = GradvizCallback(**watch)
        callbacks = [gradviz_callback, _Ticker(log)]
    else:
        callbacks = [Gradviz()]
    if trace is not None:
        callbacks.append(trace)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=clip,
                        accumulate_grad_batches=accumulate, callbacks=callbacks)
    model = Regressor()
    holder["trainer"] = trainer
    try:
        trainer.fit(model, loader)
    finally:
        if watch is not None and how == "gradviz":
            holder["watch"] = gradviz_callback.watch
    return log.as_dict()


def _ticker_base():
    import lightning as L
    return L.Callback


class _Ticker:
    """Starts the clock in on_train_start when no watch callback does."""

    def __new__(cls, log):
        import lightning as L

        class Ticker(L.Callback):
            def on_train_start(self, trainer, pl_module):
                log.tick()

        return Ticker()
