"""(b) transformers' Trainer on a tiny BERT for sequence classification.

Gradient accumulation 2, max_grad_norm 1.0, logging_steps 1, report_to [].
What the Trainer computed is its ``state.log_history`` (loss, grad_norm, learning_rate).

``how`` is how the user wraps it:
- "outside": ``with gradviz.watch(model, **watch): trainer.train()`` (no optimizer yet:
  each backward is an iteration);
- "callback": a TrainerCallback enters the watch in on_train_begin with
  ``kwargs["optimizer"]`` (accelerate's AcceleratedOptimizer) and leaves it in on_train_end;
- "callback-inner": the same with ``kwargs["optimizer"].optimizer`` (the real AdamW);
- "gradviz": gradviz's own ``GradvizCallback(**watch)``.

Faults: log (log(|h|-100) in the first encoder layer's intermediate output, via a
forward hook, followed by the layer's GELU... see _inject), lr5.
"""

import tempfile

import torch
from torch.utils.data import Dataset

from tests.loops.common import Log, faults, watching

LAST = None


class ParityDataset(Dataset):
    """Token sequences; label 1 when token 7 appears more often than token 3."""

    def __init__(self, n, seq_len=16, vocab=100, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, vocab, (n, seq_len), generator=g)
        self.ids[:, :4] = torch.randint(3, 8, (n, 4), generator=g)
        self.labels = ((self.ids == 7).sum(1) > (self.ids == 3).sum(1)).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.labels[i]}


def build_model(seed=0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)
    return BertForSequenceClassification(config)


def train(steps, *, inject=None, watch=None, how="gradviz", holder=None, lr=5e-4,
          output_dir=None):
    global LAST
    from transformers import Trainer, TrainerCallback, TrainingArguments

    faults.set(inject)
    model = build_model()
    holder = {} if holder is None else holder
    log = LAST = Log()
    log.extra["events"] = []

    class Faults(TrainerCallback):
        def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
            faults.step(state.global_step + 1)
            if faults.on("lr5"):
                for group in optimizer.param_groups:
                    group["lr"] = 5.0

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            log.tick()

        def on_step_end(self, args, state, control, **kwargs):
            log.tock()

    class Gradviz(TrainerCallback):
        """The user's one line, as a callback (watch=None: does nothing)."""

        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            log.extra["callback_optimizer"] = type(optimizer).__name__
            if watch is None:
                return
            opt = optimizer.optimizer if how == "callback-inner" else optimizer
            self.ctx = watching(model, opt, watch, holder)
            self.ctx.__enter__()

        def on_train_end(self, args, state, control, **kwargs):
            if getattr(self, "ctx", None) is not None:
                self.ctx.__exit__(None, None, None)
                self.ctx = None

    hooks = []
    if "log" in faults.kinds():
        layer = model.bert.encoder.layer[0].intermediate

        def fault(module, args, output):
            if faults.on("log"):
                return torch.log(output.abs() - 100)  # FAULT:log
            return output

        hooks.append(layer.dense.register_forward_hook(fault))

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=output_dir or tmp, per_device_train_batch_size=8,
            gradient_accumulation_steps=2, max_steps=steps, learning_rate=lr, warmup_steps=2,
            max_grad_norm=1.0, logging_steps=1, report_to=[], save_strategy="no",
            use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, seed=0,
            logging_nan_inf_filter=False)
        if how == "gradviz" and watch is not None:  # gradviz's own callback
            from gradviz.integrations.huggingface import GradvizCallback

            ours = GradvizCallback(**watch)
        else:
            ours = Gradviz() if how != "outside" else None
        callbacks = [Faults()] + ([ours] if ours is not None else []) + [Clock()]
        trainer = Trainer(model=model, args=args, train_dataset=ParityDataset(steps * 16 + 32),
                          callbacks=callbacks)
        holder["trainer"] = trainer
        try:
            if how == "outside":
                with watching(model, None, watch, holder):
                    trainer.train()
            else:
                trainer.train()
        finally:
            # a watch entered in on_train_begin, left open when train() raised
            for cb in trainer.callback_handler.callbacks:
                if isinstance(cb, Gradviz) and getattr(cb, "ctx", None) is not None:
                    import sys
                    cb.ctx.__exit__(*sys.exc_info())
                    cb.ctx = None
            if how == "gradviz" and watch is not None:
                holder["watch"] = ours.watch
            for h in hooks:
                h.remove()
            history = [e for e in trainer.state.log_history if "grad_norm" in e]
            log.losses[:] = [e["loss"] for e in history]
            log.grad_norms[:] = [e["grad_norm"] for e in history]
            log.lrs[:] = [e["learning_rate"] for e in history]
            log.extra["log_history"] = trainer.state.log_history
    return log.as_dict()
