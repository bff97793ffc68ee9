"""The core never imports Textual, and the CLI's list needs no torch."""

import subprocess
import sys


def imported_after(code):
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, timeout=120)
    return set(result.stdout.split())


def test_core_does_not_import_textual():
    modules = imported_after(
        "import gradviz.graph.walk, gradviz.graph.record, gradviz.graph.export, "
        "gradviz.session.scenario, gradviz.session.session, gradviz.model.state, "
        "gradviz.engine.forward, gradviz.engine.why_no_grad, gradviz.training.watch, "
        "gradviz.model.run_history"
    )
    assert "torch" in modules and "textual" not in modules


def test_listing_scenarios_needs_no_torch():
    modules = imported_after("from gradviz.cli import main; main(['list'])")
    assert "torch" not in modules


def test_the_apps_first_frame_waits_for_no_torch():
    modules = imported_after("import gradviz.tui.app")
    assert "textual" in modules and "torch" not in modules
