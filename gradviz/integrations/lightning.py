"""gradviz.watch inside Lightning's ``Trainer``: one iteration per optimizer step.

>>> trainer = lightning.Trainer(callbacks=[GradvizCallback(record="run.db")])  # doctest: +SKIP

Lightning runs the forward and backward inside ``optimizer.step(closure)``, and with
``accumulate_grad_batches`` the last micro-batch's backward only there: so the watch
reads the gradients at ``on_before_optimizer_step`` (whole, and before Lightning clips
them: the norm of record is the one backward made), not in the optimizer's step
pre-hook. The watch follows ``trainer.optimizers[0]`` (the optimizer inside Lightning's
``LightningOptimizer``); it starts at ``on_train_start`` and ends at ``on_train_end``
or ``on_exception`` (status failed, or stopped, or break). ``callback.watch`` is the
:class:`gradviz.Watch`.
"""

from __future__ import annotations

try:
    from lightning.pytorch import Callback
except ImportError:  # the older package name
    from pytorch_lightning import Callback

from gradviz.integrations import _watching


class GradvizCallback(Callback):
    """``GradvizCallback(**watch_options)``: the options of :func:`gradviz.watch`."""

    def __init__(self, **watch_options):
        self.options = watch_options
        self.watch = None

    def on_train_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self.watch = _watching.enter(pl_module, optimizer, self.options)
        self.watch.updates_told = True  # see the module docstring

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.watch is not None:
            self.watch.before_update()

    def on_train_end(self, trainer, pl_module):
        _watching.leave(self.watch)

    def on_exception(self, trainer, pl_module, exception):
        _watching.leave(self.watch, exception)
