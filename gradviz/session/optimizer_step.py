"""OptimizerWatch: what one ``optimizer.step()`` does to each parameter.

Generic over ``torch.optim``: the update is measured (after - before), never
derived from an optimizer's formula, and the state shown is whatever the
optimizer keeps in ``optimizer.state[param]`` (momentum_buffer, exp_avg,
exp_avg_sq, sum, square_avg, ...).

>>> watch = OptimizerWatch(optimizer, model=model)   # doctest: +SKIP
>>> report = watch.step()                           # calls optimizer.step() once
>>> report["fc.weight"].ratio                        # |update| / |param|
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from gradviz.engine.summary import summarize
from gradviz.graph.values import plain
from gradviz.model.summary import TensorSummary
from gradviz.model.updates import FROZEN, NO_GRAD, ParamUpdate, UpdateReport


class OptimizerWatch:
    """Wraps ``optimizer.step()``; names come from ``model`` and ``names`` (name -> tensor)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        model: torch.nn.Module | None = None,
        names: Mapping[str, torch.Tensor] | None = None,
    ):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"OptimizerWatch needs a torch.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.steps = 0
        by_id: dict[int, str] = {}
        if model is not None:
            for name, param in model.named_parameters(remove_duplicate=False):
                by_id.setdefault(id(param), name)
        for name, tensor in (names or {}).items():
            by_id.setdefault(id(tensor), name)
        self._names = by_id

    def name_of(self, param: torch.Tensor, group: int, index: int) -> str:
        return self._names.get(id(param), f"group{group}[{index}]")

    def step(self, closure: Callable[[], Any] | None = None) -> UpdateReport:
        """Call ``optimizer.step(closure)`` once and report what it did to each parameter."""
        params = [(g, i, p) for g, group in enumerate(self.optimizer.param_groups)
                  for i, p in enumerate(group["params"])]
        # A closure (LBFGS) computes the gradients inside step(): read them after.
        grads_before = {} if closure else {id(p): _maybe_summary(p.grad) for _, _, p in params}
        before = {id(p): p.detach().clone() for _, _, p in params if p.requires_grad}
        loss = self.optimizer.step(closure) if closure else self.optimizer.step()
        self.steps += 1
        updates = []
        for group_index, index, param in params:
            group = self.optimizer.param_groups[group_index]
            grad = grads_before[id(param)] if not closure else _maybe_summary(param.grad)
            old = before.get(id(param))
            old_norm = float(torch.linalg.vector_norm(old if old is not None else param.detach()))
            if old is None or grad is None:
                update, ratio = None, None
                skipped = FROZEN if not param.requires_grad else NO_GRAD
            else:
                update = summarize(param.detach() - old)
                ratio = _ratio(update.norm, old_norm)
                skipped = ""
            updates.append(ParamUpdate(
                name=self.name_of(param, group_index, index),
                shape=tuple(param.shape),
                group=group_index,
                lr=_number(group.get("lr")),
                grad=grad,
                param_norm=old_norm,
                update=update,
                ratio=ratio,
                state={key: _state_value(value)
                       for key, value in self.optimizer.state.get(param, {}).items()},
                skipped=skipped,
            ))
        return UpdateReport(
            step=self.steps,
            optimizer=type(self.optimizer).__name__,
            settings=[{k: plain(v) for k, v in g.items() if k != "params"}
                      for g in self.optimizer.param_groups],
            params=updates,
            loss=None if loss is None else float(loss),
        )


def _maybe_summary(tensor: torch.Tensor | None) -> TensorSummary | None:
    return None if tensor is None else summarize(tensor)


def _ratio(update_norm: float, param_norm: float) -> float | None:
    """|update| / |param|; None where the parameter was all zeros (a BatchNorm bias at
    its start, say): no ratio means anything there, and inf would read as an explosion."""
    if param_norm == 0:
        return None
    return update_norm / param_norm


def _state_value(value: Any) -> Any:
    """A state tensor as a summary; a one-element tensor (Adam's step) as its number."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else summarize(value)
    return plain(value)


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value)
    return None if value is None else float(value)
