"""show_app outside a kernel, and the app's threads: a notebook kernel lives on after an
app, so an app must leave no thread and no process-wide setting behind."""

from __future__ import annotations

import threading

import pytest

from gradviz.errors import GradvizError
from gradviz.tui.app import make_app
from tui.conftest import settle  # tests/ is on the path: tests/tui is a package


def test_show_app_outside_a_kernel_refuses_in_one_line_and_ends_the_apps_threads():
    from gradviz.notebook import show_app

    app = make_app("autograd-basics")
    with pytest.raises(GradvizError, match="show_app needs a Jupyter kernel"):
        show_app(app)
    assert not app.engine.alive


async def test_the_app_lays_out_on_its_own_thread_and_sets_no_stack_size_for_others():
    before = threading.stack_size()
    app = make_app("resnet18")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("m")  # fold: a new layout, off the UI thread
        await settle(app, pilot)
        assert threading.stack_size() == before  # a kernel's later threads keep their own
        names = {t.name for t in threading.enumerate()}
        assert {"gradviz-engine", "gradviz-layout"} <= names
    names = {t.name for t in threading.enumerate()}
    assert "gradviz-layout" not in names and not app.engine.alive
