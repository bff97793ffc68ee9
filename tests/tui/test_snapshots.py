"""Snapshots of the main screens (a second line behind the Pilot tests' assertions).

Only screens whose text is deterministic: node timings vary from run to run, so a
screen after backward has run takes every node's time as 0.1 ms. At 80x24 (a laptop's
default terminal) and 120x40.
"""

import pytest

from gradviz.tui.app import make_app

from .conftest import press, settle

SIZES = [(80, 24), (120, 40)]


@pytest.fixture
def steady_timings(monkeypatch):
    import gradviz.session.progress as progress

    made = progress.NodeRun
    monkeypatch.setattr(progress, "NodeRun",
                        lambda key, index, duration, *rest: made(key, index, 1e-4, *rest))


async def _loaded(pilot):
    await settle(pilot.app, pilot)


def test_start_screen(snap_compare):
    assert snap_compare(make_app("autograd-basics"), terminal_size=(120, 40), run_before=_loaded)


def test_resnet18_modules_collapsed(snap_compare):
    assert snap_compare(make_app("resnet18"), press=["m"], terminal_size=(120, 40),
                        run_before=_loaded)


def test_help_screen(snap_compare):
    assert snap_compare(make_app("autograd-basics"), press=["question_mark"],
                        terminal_size=(120, 40), run_before=_loaded)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_resnet18_after_continue(snap_compare, steady_timings, size):
    async def continued(pilot):
        await settle(pilot.app, pilot)
        await press(pilot.app, pilot, "c")
        # the engine's last report (every parameter's gradient) may land after the state
        # says finished: wait until the flow plot has drawn all 62
        for _ in range(200):
            if "of 62 parameters" in str(pilot.app.query_one("#flow").border_title):
                break
            await pilot.pause(0.05)
        await pilot.pause(0.1)

    assert snap_compare(make_app("resnet18"), terminal_size=size, run_before=continued)


@pytest.mark.parametrize("size", SIZES, ids=lambda size: f"{size[0]}x{size[1]}")
def test_autograd_basics_stepped_to_the_end(snap_compare, steady_timings, size):
    async def stepped(pilot):
        await settle(pilot.app, pilot)
        await press(pilot.app, pilot, *["n"] * 6)

    assert snap_compare(make_app("autograd-basics"), terminal_size=size, run_before=stepped)


def test_start_screen_80x24(snap_compare):
    assert snap_compare(make_app("autograd-basics"), terminal_size=(80, 24), run_before=_loaded)
