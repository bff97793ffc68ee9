"""Scenarios: plain Python files that say what to look at.

A scenario file defines ``build() -> gradviz.Scenario`` (optionally
``build(weights=None)`` to load a local state dict itself, as ``finetune`` does
before replacing ``fc``). Its module docstring's first line is its description.
The built-in demos are such files, in ``gradviz/demos/`` (see
:mod:`gradviz.model.catalog`).
"""

from __future__ import annotations

import importlib.util
import inspect
import pickle
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import torch

from gradviz.engine.interrupt import Interrupted
from gradviz.errors import GradvizError, ScenarioError, one_line
from gradviz.graph.record import record
from gradviz.graph.walk import build_graph
from gradviz.model.catalog import check_file, describe_file, resolve
from gradviz.model.views import CheckResult


@dataclass
class Scenario:
    """What to run: a forward pass that makes a fresh graph per call, and what to train.

    ``forward`` returns the root tensor(s); ``gradient`` is the external gradient
    for a non-scalar root; ``checks`` are named predicates evaluated after backward,
    such as the tutorial's ``9*a**2 == a.grad``; ``train_note`` is said after each
    training iteration.
    """

    name: str
    forward: Callable[[], torch.Tensor | Sequence[torch.Tensor]]
    description: str = ""
    model: torch.nn.Module | None = None
    params: Mapping[str, torch.Tensor] = field(default_factory=dict)
    optimizer: torch.optim.Optimizer | None = None
    gradient: torch.Tensor | Sequence[torch.Tensor] | None = None
    checks: Mapping[str, Callable[[], Any]] = field(default_factory=dict)
    #: Said after each training iteration (``t``), when something about training this
    #: scenario must be known: that its loss has no minimum, say.
    train_note: str = ""

    def run_forward(self) -> tuple[list[torch.Tensor], dict[int, str]]:
        """Run ``forward`` once: its roots, and the module of each node (see ``record``).

        An exception from the user's forward becomes a one-line ScenarioError that
        names the scenario (the original is its ``__cause__``).
        """
        if self.model is None:
            return _as_roots(self._call_forward(), self.name), {}
        with record(self.model) as recording:
            roots = _as_roots(self._call_forward(), self.name)
        return roots, recording.modules

    def _call_forward(self):
        try:
            return self.forward()
        except (GradvizError, Interrupted):
            raise
        except Exception as error:
            raise ScenarioError(
                f"scenario {self.name!r}: forward() raised {one_line(error)}") from error

    def trace(self) -> Trace:
        """Run ``forward`` once and walk its graph."""
        roots, modules = self.run_forward()
        graph = build_graph(roots, model=self.model, params=self.params, modules=modules)
        return Trace(roots=roots, graph=graph)

    def loss_value(self, roots: Sequence[torch.Tensor]) -> float:
        """The scalar that backward differentiates: sum(gradient * root) for a vector root."""
        grads = self.gradient if isinstance(self.gradient, Sequence) else [self.gradient]
        grads = list(grads) + [None] * (len(roots) - len(grads))
        with torch.no_grad():
            return float(sum(
                (root if grad is None else grad * root).sum() for root, grad in zip(roots, grads)
            ))

    def named_leaves(self) -> dict[str, torch.Tensor]:
        """Every named tensor that can receive a gradient: the model's, then ``params``."""
        leaves = dict(self.model.named_parameters()) if self.model is not None else {}
        leaves.update(self.params)
        return leaves

    def run_checks(self) -> list[CheckResult]:
        """Evaluate each check; one that raises fails with the error as its detail."""
        results = []
        for name, check in self.checks.items():
            try:
                value = check()
                passed = bool(value.all()) if isinstance(value, torch.Tensor) else bool(value)
                results.append(CheckResult(name, passed, ""))
            except Exception as error:  # a check is user code: report, never crash
                results.append(CheckResult(name, False, f"{type(error).__name__}: {error}"))
        return results


@dataclass
class Trace:
    """One forward pass: its root tensors and their graph."""

    roots: list[torch.Tensor]
    graph: nx.DiGraph


def _as_roots(value: Any, scenario: str) -> list[torch.Tensor]:
    roots = [value] if isinstance(value, torch.Tensor) else value
    if not isinstance(roots, Sequence) or not roots or not all(
        isinstance(root, torch.Tensor) for root in roots
    ):
        raise ScenarioError(
            f"scenario {scenario!r}: forward() returned {type(value).__name__}; "
            "it must return the root tensor (such as the loss) or a list of them"
        )
    return list(roots)


def load_scenario(
    name_or_path: str | Path, *, weights: str | Path | None = None
) -> Scenario:
    """Build a scenario from a built-in name or a file; errors name the file.

    ``weights``: a local state dict (``torch.load(..., weights_only=True)``) for the
    scenario's model.
    """
    path = resolve(name_or_path)
    module = _import_file(path)
    build = getattr(module, "build", None)
    if not callable(build):
        raise ScenarioError(f"{path}: defines no build() function returning a gradviz.Scenario")
    takes_weights = "weights" in inspect.signature(build).parameters
    try:
        scenario = build(weights=weights) if takes_weights else build()
    except (GradvizError, Interrupted, KeyboardInterrupt):
        raise
    except BaseException as error:  # SystemExit or a BaseException of the user's own too
        raise ScenarioError(f"{path}: build() raised {one_line(error)}") from error
    if not isinstance(scenario, Scenario):
        raise ScenarioError(
            f"{path}: build() returned {type(scenario).__name__}, not a gradviz.Scenario"
        )
    if not callable(scenario.forward):
        raise ScenarioError(f"{path}: the scenario's forward is not callable")
    if not scenario.description:
        scenario.description = describe_file(path).description
    if weights is not None and not takes_weights:
        if scenario.model is None:
            raise ScenarioError(f"{path}: --weights given, but the scenario has no model")
        load_weights(scenario.model, weights)
    return scenario


def _import_file(path: Path):
    module_name = f"gradviz_scenario_{path.stem.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ScenarioError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ScenarioError(f"{path}:{error.lineno}: syntax error: {error.msg}") from error
    except (Interrupted, KeyboardInterrupt):
        raise
    except BaseException as error:
        raise ScenarioError(f"{path}: importing it raised {one_line(error)}") from error
    finally:
        sys.modules.pop(module_name, None)
    return module


def load_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``model``; a clear error if it is missing or does not fit."""
    path = check_file(path, "weights file")
    try:
        with warnings.catch_warnings():  # torch warns about pickles before it refuses them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise ScenarioError(f"weights file {path} could not be read: {one_line(error)}") from error
    except Exception as error:  # junk unpickles into any error: KeyError: 174812789, EOFError
        raise ScenarioError(
            f"weights file {path} is not a state dict that torch.load(weights_only=True) "
            "can read: save one with torch.save(model.state_dict(), path)"
        ) from error
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]  # a training checkpoint that wraps the state dict
    if not isinstance(state, Mapping):
        raise ScenarioError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    problem = _mismatch(model, state)
    if problem:
        raise ScenarioError(
            f"weights file {path} does not fit {type(model).__name__}: {problem}"
        )
    model.load_state_dict(state)


def _mismatch(model: torch.nn.Module, state: Mapping[str, Any]) -> str:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected),
                         ("wrong shape", wrong_shape)):
        if items:
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            parts.append(f"{len(items)} {label} ({shown})")
    return "; ".join(parts)


