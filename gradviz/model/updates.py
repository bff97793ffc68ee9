"""What one ``optimizer.step()`` did to each parameter, as plain data.

Made by :class:`gradviz.OptimizerWatch` (which reads the tensors); read by the app's
parameters table, ``gradviz train`` and the user's own code.

>>> report["fc.weight"].ratio           # doctest: +SKIP
>>> [name for name in report]           # every parameter, in the param groups' order
>>> [u.name for u in report.values() if u.updated]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gradviz.model.summary import TensorSummary

#: ``ParamUpdate.skipped`` for a parameter the step left alone: ``requires_grad=False``.
FROZEN = "frozen"
#: ... or one without a gradient.
NO_GRAD = "no grad"


@dataclass(frozen=True)
class ParamUpdate:
    """One parameter's part of a step. ``skipped``: "" if updated, else "frozen" or "no grad".

    ``ratio`` is |update| / |param before|, None when the parameter was all zeros."""

    name: str
    shape: tuple[int, ...]
    group: int
    lr: float | None
    grad: TensorSummary | None
    param_norm: float
    update: TensorSummary | None
    ratio: float | None
    state: dict[str, Any]
    skipped: str

    @property
    def updated(self) -> bool:
        return not self.skipped


@dataclass(frozen=True, eq=False)
class UpdateReport(Mapping[str, ParamUpdate]):
    """A step's report: a read-only mapping of parameter name -> :class:`ParamUpdate`, in
    the param groups' order (``for name in report``, ``report.values()``, ``report.items()``);
    ``params`` is the same rows as a list."""

    step: int
    optimizer: str
    settings: list[dict[str, Any]]  # each param group's hyperparameters
    params: list[ParamUpdate]
    loss: float | None  # what the closure returned, if one was given

    def __getitem__(self, name: str) -> ParamUpdate:
        for update in self.params:
            if update.name == name:
                return update
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return (update.name for update in self.params)

    def __len__(self) -> int:
        return len(self.params)

    @property
    def updated(self) -> list[ParamUpdate]:
        return [p for p in self.params if p.updated]
