"""gradviz: see PyTorch's autograd graph, and step through backward in the terminal.

The public names load lazily (PEP 562) so that ``gradviz --help`` and the app's
first frame do not wait for ``import torch``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from gradviz.version import __version__

_EXPORTS = {
    "GradvizError": "gradviz.errors",
    "GraphError": "gradviz.errors",
    "ScenarioError": "gradviz.errors",
    "ExportError": "gradviz.errors",
    "build_graph": "gradviz.graph.walk",
    "record": "gradviz.graph.record",
    "Recording": "gradviz.graph.record",
    "to_dot": "gradviz.graph.export",
    "to_json": "gradviz.graph.export",
    "draw": "gradviz.graph.picture",
    "GraphPicture": "gradviz.graph.picture",
    "Scenario": "gradviz.session.scenario",
    "load_scenario": "gradviz.session.scenario",
    "builtin_scenarios": "gradviz.model.catalog",
    "load_weights": "gradviz.session.scenario",
    "BackwardStepper": "gradviz.engine.backward",
    "StepEvent": "gradviz.engine.events",
    "StepperError": "gradviz.engine.lifecycle",
    "BackwardAborted": "gradviz.engine.backward_hooks",
    "Pause": "gradviz.engine.backward_hooks",
    "TensorSummary": "gradviz.model.summary",
    "OptimizerWatch": "gradviz.session.optimizer_step",
    "UpdateReport": "gradviz.model.updates",
    "ParamUpdate": "gradviz.model.updates",
    "Session": "gradviz.session.session",
    "show": "gradviz.show",
    "summarize": "gradviz.engine.summary",
    "CheckResult": "gradviz.model.views",
    "ForwardStepper": "gradviz.engine.forward",
    "ForwardEvent": "gradviz.engine.forward_events",
    "ForwardRecording": "gradviz.engine.forward_ops",
    "ForwardAborted": "gradviz.engine.forward_events",
    "Exclusion": "gradviz.engine.forward_events",
    "SourceLine": "gradviz.engine.source_lines",
    "record_forward": "gradviz.engine.forward_ops",
    "why_no_grad": "gradviz.engine.why_no_grad",
    "NoGradReason": "gradviz.engine.why_no_grad",
    "NoGradExplanation": "gradviz.engine.why_no_grad",
    "watch": "gradviz.show",
    "Watch": "gradviz.training.watch",
    "WatchBreak": "gradviz.training.breaks",
    "WatchError": "gradviz.training.options",
    "TrainingStopped": "gradviz.training.breaks",
    "TrainingPause": "gradviz.model.runs.events",
    "WatchReport": "gradviz.model.runs.report",
    "RunRecord": "gradviz.model.runs.history",
    "RunHistory": "gradviz.model.runs.history",
    "RecordError": "gradviz.model.runs.schema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gradviz' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _in_a_notebook() -> None:
    """In a Jupyter kernel, readable cell output for what cannot carry its own (a watch
    break); standard library only, nothing else is imported here."""
    from gradviz.runtime.where import kernel_shell

    if kernel_shell() is not None:
        from gradviz.notebook import register_formatters

        register_formatters()


_in_a_notebook()


if TYPE_CHECKING:
    from gradviz.engine.backward import BackwardStepper
    from gradviz.engine.backward_hooks import BackwardAborted, Pause
    from gradviz.engine.events import StepEvent
    from gradviz.engine.forward import ForwardStepper
    from gradviz.engine.forward_events import Exclusion, ForwardAborted, ForwardEvent
    from gradviz.engine.forward_ops import ForwardRecording, record_forward
    from gradviz.engine.lifecycle import StepperError
    from gradviz.engine.source_lines import SourceLine
    from gradviz.engine.summary import summarize
    from gradviz.engine.why_no_grad import NoGradExplanation, NoGradReason, why_no_grad
    from gradviz.errors import ExportError, GradvizError, GraphError, ScenarioError
    from gradviz.graph.export import to_dot, to_json
    from gradviz.graph.picture import GraphPicture, draw
    from gradviz.graph.record import Recording, record
    from gradviz.graph.walk import build_graph
    from gradviz.model.catalog import builtin_scenarios
    from gradviz.model.runs.events import TrainingPause
    from gradviz.model.runs.history import RunHistory, RunRecord
    from gradviz.model.runs.report import WatchReport
    from gradviz.model.runs.schema import RecordError
    from gradviz.model.summary import TensorSummary
    from gradviz.model.updates import ParamUpdate, UpdateReport
    from gradviz.model.views import CheckResult
    from gradviz.session.optimizer_step import OptimizerWatch
    from gradviz.session.scenario import (
        Scenario,
        load_scenario,
        load_weights,
    )
    from gradviz.session.session import Session
    from gradviz.show import show, watch
    from gradviz.training.breaks import TrainingStopped, WatchBreak
    from gradviz.training.options import WatchError
    from gradviz.training.watch import Watch
