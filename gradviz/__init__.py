"""gradviz: see PyTorch's autograd graph, and step through backward in the terminal.

The public names load lazily (PEP 562) so that ``gradviz --help`` and the app's
first frame do not wait for ``import torch``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "GradvizError": "gradviz.core.errors",
    "GraphError": "gradviz.core.errors",
    "ScenarioError": "gradviz.core.errors",
    "ExportError": "gradviz.core.errors",
    "build_graph": "gradviz.core.graph",
    "record": "gradviz.core.record",
    "Recording": "gradviz.core.record",
    "to_dot": "gradviz.core.export",
    "to_json": "gradviz.core.export",
    "Scenario": "gradviz.core.scenario",
    "load_scenario": "gradviz.core.scenario",
    "builtin_scenarios": "gradviz.core.catalog",
    "load_weights": "gradviz.core.scenario",
    "BackwardStepper": "gradviz.core.stepper",
    "StepEvent": "gradviz.core.stepper",
    "StepperError": "gradviz.core.stepper",
    "BackwardAborted": "gradviz.core.stepper",
    "Pause": "gradviz.core.stepper",
    "TensorSummary": "gradviz.core.summary",
    "OptimizerWatch": "gradviz.core.optimizer_watch",
    "UpdateReport": "gradviz.core.optimizer_watch",
    "ParamUpdate": "gradviz.core.optimizer_watch",
    "Session": "gradviz.core.session",
    "show": "gradviz.show",
    "summarize": "gradviz.core.summary",
    "CheckResult": "gradviz.core.scenario",
    "ForwardStepper": "gradviz.core.forward_stepper",
    "ForwardEvent": "gradviz.core.forward_recording",
    "ForwardRecording": "gradviz.core.forward_recording",
    "ForwardAborted": "gradviz.core.forward_recording",
    "Exclusion": "gradviz.core.forward_recording",
    "SourceLine": "gradviz.core.forward_recording",
    "record_forward": "gradviz.core.forward_recording",
    "why_no_grad": "gradviz.core.why_no_grad",
    "NoGradReason": "gradviz.core.why_no_grad",
    "NoGradExplanation": "gradviz.core.why_no_grad",
    "watch": "gradviz.core.watch",
    "Watch": "gradviz.core.watch",
    "WatchBreak": "gradviz.core.watch_break",
    "WatchError": "gradviz.core.watch",
    "TrainingStopped": "gradviz.core.watch_break",
    "TrainingPause": "gradviz.core.watch_break",
    "WatchReport": "gradviz.core.watch_report",
    "RunRecord": "gradviz.core.run_record",
    "RunHistory": "gradviz.core.run_record",
    "RecordError": "gradviz.core.run_record",
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


if TYPE_CHECKING:
    from gradviz.core.catalog import builtin_scenarios
    from gradviz.core.errors import ExportError, GradvizError, GraphError, ScenarioError
    from gradviz.core.export import to_dot, to_json
    from gradviz.core.forward_recording import (
        Exclusion,
        ForwardAborted,
        ForwardEvent,
        ForwardRecording,
        SourceLine,
        record_forward,
    )
    from gradviz.core.forward_stepper import ForwardStepper
    from gradviz.core.graph import build_graph
    from gradviz.core.why_no_grad import NoGradExplanation, NoGradReason, why_no_grad
    from gradviz.core.stepper import (
        BackwardAborted,
        BackwardStepper,
        Pause,
        StepEvent,
        StepperError,
    )
    from gradviz.core.summary import TensorSummary, summarize
    from gradviz.core.optimizer_watch import OptimizerWatch, ParamUpdate, UpdateReport
    from gradviz.core.record import Recording, record
    from gradviz.core.session import Session
    from gradviz.show import show
    from gradviz.core.run_record import RecordError, RunHistory, RunRecord
    from gradviz.core.watch import Watch, WatchError, watch
    from gradviz.core.watch_break import TrainingPause, TrainingStopped, WatchBreak
    from gradviz.core.watch_report import WatchReport
    from gradviz.core.scenario import (
        CheckResult,
        Scenario,
        load_scenario,
        load_weights,
    )
