"""gradviz.watch inside transformers' ``Trainer``: one iteration per optimizer step.

>>> trainer = Trainer(model, args, train_dataset=data,                 # doctest: +SKIP
...                   callbacks=[GradvizCallback(record="run.db", break_on=("nonfinite",))])

The watch starts at ``on_train_begin``, when the Trainer has built its optimizer (an
accelerate ``AcceleratedOptimizer``: the watch follows the optimizer inside it), and
ends at ``on_train_end``. Its numbers are the Trainer's: gradient accumulation is
several backwards of one iteration, the loss is the sum of the losses backwarded (the
Trainer divides each by the accumulation steps, so it is their mean, as it logs), the
gradient norm is the one before clipping (what the Trainer logs as ``grad_norm``;
``grad_norm_clipped`` is what the step saw) and the learning rate is the one the step
used. ``callback.watch`` is the :class:`gradviz.Watch` (``callback.watch.last`` for
your own logger). A training that raises calls no callback: its watch is closed as
failed by the next training's callback, or when the process ends.
"""

from __future__ import annotations

from transformers import TrainerCallback

from gradviz.integrations import _watching


class GradvizCallback(TrainerCallback):
    """``GradvizCallback(**watch_options)``: the options of :func:`gradviz.watch`."""

    def __init__(self, **watch_options):
        self.options = watch_options
        self.watch = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.watch = _watching.enter(model, optimizer, self.options)

    def on_train_end(self, args, state, control, **kwargs):
        _watching.leave(self.watch)
