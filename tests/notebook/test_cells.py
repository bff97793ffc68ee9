"""What a notebook cell shows of gradviz's objects: an event, a break, a graph's picture."""

from __future__ import annotations

import shutil
import types

import pytest
import torch

import gradviz
from gradviz.model.runs.events import BreakInfo, EventKind, Origin, OriginPhase


def tutorial():
    a = torch.tensor([2.0, 3.0], requires_grad=True)
    b = torch.tensor([6.0, 4.0], requires_grad=True)
    return a, b, 3 * a**3 - b**2


def test_a_step_event_shows_what_came_in_and_what_went_out():
    a, b, Q = tutorial()
    with gradviz.BackwardStepper(Q, gradient=torch.ones(2), params={"a": a, "b": b}) as stepper:
        events = [stepper.step() for _ in range(6)]
    root = events[0]._repr_html_()
    assert "SubBackward0#0" in root and "in: gradient 0" in root and "out: slot 1" in root
    leaf = next(e for e in events if e.node == "param:a")._repr_html_()
    assert ".grad (accumulated)" in leaf and "[36, 81]" in leaf
    assert repr(events[0]).startswith("StepEvent(0, 'SubBackward0#0'")  # the text stays


def test_a_forward_event_shows_its_node_or_why_none():
    a, b, _ = tutorial()
    with gradviz.record_forward() as recording:
        with torch.no_grad():
            a * 2
        3 * a**3 - b**2
    skipped = recording.events[0]._repr_html_()
    assert "no node: grad mode is off (torch.no_grad)" in skipped
    made = recording.events[1]._repr_html_()
    assert "recorded" in made and "PowBackward0" in made and "test_cells.py" in made


def test_a_watch_break_is_a_table_in_a_cell_without_the_training_layer_changing():
    from IPython.core.formatters import DisplayFormatter

    from gradviz.notebook import register_formatters
    from gradviz.training.breaks import WatchBreak

    shell = types.SimpleNamespace(display_formatter=DisplayFormatter())
    register_formatters(shell)
    origin = Origin(OriginPhase.BACKWARD, "SqrtBackward0#0", "SqrtBackward0", "abs",
                    "train.py", 31, "stepped again to the first NaN")
    brk = WatchBreak(7, "nonfinite", "a gradient is NaN/Inf", origin=origin, loss=1.5)
    data, _ = shell.display_formatter.format(brk)
    html = data["text/html"]
    assert "iteration" in html and ">7<" in html and "train.py:31" in html
    assert "SqrtBackward0#0 (SqrtBackward0), made in backward" in html
    info = BreakInfo(3, EventKind.SPIKE, "loss 10x the median")
    assert "loss 10x the median" in shell.display_formatter.format(info)[0]["text/html"]


def test_a_gradviz_error_is_one_line_in_ipython():
    error = gradviz.GraphError("the root has no graph: it does not require grad")
    assert error._render_traceback_() == ["GraphError: the root has no graph: it does not "
                                          "require grad"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_draw_gives_a_picture_that_scrolls_to_the_root(tmp_path):
    a, b, Q = tutorial()
    picture = gradviz.draw(Q, params={"a": a, "b": b})
    html = picture._repr_html_()
    assert "overflow:auto" in html and "max-width:none" in html and "6 nodes, 5 edges" in html
    assert picture._repr_svg_().lstrip().startswith("<?xml") and "SubBackward0" in picture.svg
    width, height = picture.size
    assert width > 0 and height > width  # top-down: taller than wide
    picture.save(tmp_path / "q.svg")
    assert (tmp_path / "q.svg").read_text() == picture.svg
    assert "cluster" not in picture.svg  # no module boxes unless asked for
