"""gradviz.show(): the app on a graph from the user's own code (an entry point, like cli.py)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gradviz.graph.record import recorded_modules
from gradviz.session.session import Session


def show(
    roots: torch.Tensor | Sequence[torch.Tensor],
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    gradient: torch.Tensor | Sequence[torch.Tensor] | None = None,
    params: dict[str, torch.Tensor] | None = None,
) -> None:
    """Open the app on ``roots``' graph; returns when it is closed.

    Step its backward (the real one: ``.grad`` is filled as in ``loss.backward()``)
    and then the optimizer. Module names appear when the forward ran inside
    ``gradviz.record(model)``.
    """
    session = Session.for_roots(roots, model=model, params=params, optimizer=optimizer,
                                gradient=gradient,
                                modules=recorded_modules(model) if model is not None else None)
    from gradviz.tui.app import run_app

    run_app(session=session)
