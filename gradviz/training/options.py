"""The arguments of :func:`gradviz.watch`, checked: one line for each thing it cannot watch."""

from __future__ import annotations

import torch

from gradviz.errors import GradvizError

BREAK_ON = ("nonfinite", "spike", "signal")
ON_BREAK = ("app", "raise", "report", "keep")


class WatchError(GradvizError):
    """``gradviz.watch`` was given something it cannot watch."""

    __module__ = "gradviz"  # a traceback names it as the user imports it


def check_model(model) -> torch.nn.Module:
    if not isinstance(model, torch.nn.Module):
        got = "None" if model is None else type(model).__name__
        raise WatchError(f"watch() needs the model being trained (a torch.nn.Module), got {got}")
    return model


def check_optimizer(optimizer):
    """The ``torch.optim.Optimizer`` that steps: a wrapper's own (accelerate's
    ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``, anything whose
    ``.optimizer`` is one) is taken from inside it."""
    if optimizer is None:
        return None
    given = optimizer
    for _ in range(8):  # accelerate's wrapper is an Optimizer itself: the inner one steps
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            inner = getattr(optimizer, "_optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is optimizer:
            break
        optimizer = inner
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise WatchError(f"watch()'s optimizer must be a torch.optim.Optimizer (or a wrapper "
                         f"whose .optimizer is one), got {type(given).__name__}")
    if not any(group["params"] for group in optimizer.param_groups):
        raise WatchError(f"the {type(optimizer).__name__} given to watch() has no parameters: "
                         "build it from model.parameters()")
    return optimizer


def check_break_on(break_on) -> tuple[str, ...]:
    if isinstance(break_on, str):
        break_on = (break_on,)
    try:
        reasons = tuple(break_on)
    except TypeError:
        raise WatchError(f"break_on= is a tuple of {', '.join(map(repr, BREAK_ON))}; "
                         f"got {break_on!r}") from None
    for reason in reasons:
        if reason not in BREAK_ON:
            raise WatchError(f"break_on: unknown {reason!r}; choose from "
                             f"{', '.join(map(repr, BREAK_ON))} (and at=N for an iteration)")
    return reasons


def check_on_break(on_break):
    """``on_break=None`` is "report" here; ``gradviz.watch`` (the entry layer, which knows
    a terminal from a notebook) chooses "app" or "keep" for it first."""
    if on_break is None:
        return "report"
    if callable(on_break) or on_break in ON_BREAK:
        return on_break
    raise WatchError(f"on_break= is one of {', '.join(map(repr, ON_BREAK))} or a callable; "
                     f"got {on_break!r}")


def check_at(at) -> int | None:
    if at is not None and (isinstance(at, bool) or not isinstance(at, int) or at < 1):
        raise WatchError(f"at= is the iteration to break at, counted from 1; got {at!r}")
    return at


def check_spike(spike) -> float:
    if isinstance(spike, bool) or not isinstance(spike, (int, float)) or not spike > 1:
        raise WatchError(f"spike= is a factor over the recent median, above 1; got {spike!r}")
    return float(spike)


def check_band(band) -> tuple[float, float]:
    numbers = isinstance(band, (tuple, list)) and len(band) == 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) for b in band)
    if not numbers or not 0 <= band[0] < band[1]:
        raise WatchError(f"band= is (low, high) with 0 <= low < high; got {band!r}")
    return float(band[0]), float(band[1])


def check_update_sample(update_sample) -> int | None:
    if update_sample is not None and (isinstance(update_sample, bool) or
                                      not isinstance(update_sample, int) or update_sample < 1):
        raise WatchError(f"update_sample= is a number of elements, or None; got "
                         f"{update_sample!r}")
    return update_sample
