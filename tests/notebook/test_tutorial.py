"""The tutorial notebook (demos/autograd_tutorial.ipynb) runs from top to bottom in a real
kernel, headless with nbclient: every cell, no error, the tutorial's checks true.

Without a page to measure them, the apps it shows never start: nothing waits for keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "demos" / "autograd_tutorial.ipynb"


def test_the_tutorial_is_stored_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"]


def text_of(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        for kind in ("text/plain", "text/html"):
            parts.append(str(output.get("data", {}).get(kind, "")))
    return "\n".join(parts)


@pytest.mark.timeout(420)
def test_the_tutorial_runs_in_a_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed")
    pytest.importorskip("panel", reason="Panel is not installed (pip install 'gradviz[notebook]')")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, if one fails
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [text_of(cell) for cell in code]
    errors = [o for cell in code for o in cell.outputs if o["output_type"] == "error"]
    assert errors == []
    everything = "\n".join(outputs)
    assert "'notebook'" in outputs[0]
    assert "AddmmBackward0" in outputs[1]
    assert everything.count("tensor([True, True])") == 2  # 9*a**2 == a.grad, -2*b == b.grad
    assert "[('linear', 'fc'), ('sub', None), ('sum', None)]" in everything
    assert "no input requires grad (conv1.weight has requires_grad=False)" in everything
    assert "<svg" in everything and "SubBackward0#0" in everything  # a picture, an event
    shows = [cell for cell in code if "gradviz.show(" in cell.source]
    assert len(shows) == 3
    for cell in shows:  # the app's output (Panel's), no error, no escape codes in a stream
        kinds = {kind for o in cell.outputs for kind in o.get("data", {})}
        assert "application/vnd.holoviews_exec.v0+json" in kinds, cell.source
        assert not any("\x1b" in o.get("text", "") for o in cell.outputs)
