"""Snapshots of the main screens (a second line behind the Pilot tests' assertions).

Only screens whose text is deterministic: node timings vary from run to run.
"""

from gradviz.tui.app import make_app

from .conftest import settle


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
