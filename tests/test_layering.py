"""The layers hold: import-linter's contracts (pyproject.toml) pass, and fail on a forbidden
import, function-local ones included; the torch-free layers and the app import no torch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([LINT, "--no-cache", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def imported_after(code):
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=120)
    return set(result.stdout.split())


def test_the_layering_contracts_are_kept():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_forbidden_import_breaks_them_even_inside_a_function(tmp_path):
    shutil.copytree(ROOT / "gradviz", tmp_path / "gradviz",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "gradviz" / "model" / "sneaky.py").write_text(
        "def total(values):\n    import torch  # hidden in a function\n"
        "    return torch.tensor(values).sum()\n")
    (tmp_path / "gradviz" / "tui" / "widgets" / "peek.py").write_text(
        "def grads(session):\n    from gradviz.session.session import Session\n"
        "    return Session\n")
    (tmp_path / "gradviz" / "training" / "opener.py").write_text(
        "def open_it(pause):\n    from gradviz.tui.app import run_app\n    run_app(pause=pause)\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    out = " ".join(result.stdout.split())
    assert "gradviz.model.sneaky -> torch" in out
    assert "gradviz.tui.widgets.peek -> gradviz.session.session" in out
    assert "gradviz.training.opener -> gradviz.tui.app" in out


def _modules(package: str) -> list[str]:
    folder = ROOT.joinpath(*package.split("."))
    return [f"{package}.{path.relative_to(folder).with_suffix('').as_posix().replace('/', '.')}"
            .removesuffix(".__init__") for path in sorted(folder.rglob("*.py"))]


@pytest.mark.parametrize("package", ["gradviz.model", "gradviz.runtime", "gradviz.tui"])
def test_the_plain_layers_and_the_app_import_no_torch(package):
    modules = imported_after("import " + ", ".join(_modules(package)))
    assert "torch" not in modules
    assert ("textual" in modules) == (package == "gradviz.tui")


def test_nothing_below_the_app_imports_textual():
    modules = imported_after(
        "import gradviz.graph.walk, gradviz.graph.record, gradviz.graph.export, "
        "gradviz.session.scenario, gradviz.session.session, gradviz.engine.forward, "
        "gradviz.engine.why_no_grad, gradviz.training.watch, gradviz.model.runs.history")
    assert "torch" in modules and "textual" not in modules


def test_listing_scenarios_needs_no_torch():
    modules = imported_after("from gradviz.cli import main; main(['list'])")
    assert "torch" not in modules


#: gradviz.__all__ before the restructuring: every name keeps working.
PUBLIC = ["BackwardAborted", "BackwardStepper", "CheckResult", "Exclusion", "ExportError",
          "ForwardAborted", "ForwardEvent", "ForwardRecording", "ForwardStepper", "GradvizError",
          "GraphError", "NoGradExplanation", "NoGradReason", "OptimizerWatch", "ParamUpdate",
          "Pause", "RecordError", "Recording", "RunHistory", "RunRecord", "Scenario",
          "ScenarioError", "Session", "SourceLine", "StepEvent", "StepperError", "TensorSummary",
          "TrainingPause", "TrainingStopped", "UpdateReport", "Watch", "WatchBreak", "WatchError",
          "WatchReport", "build_graph", "builtin_scenarios", "load_scenario", "load_weights",
          "record", "record_forward", "show", "summarize", "to_dot", "to_json", "watch",
          "why_no_grad"]


def test_the_public_api_is_importable_as_before():
    code = (f"import gradviz; assert set({PUBLIC!r}) <= set(gradviz.__all__); "
            "[getattr(gradviz, name) for name in gradviz.__all__]; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
