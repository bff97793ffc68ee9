"""Helpers to drive the app headless and wait for its engine."""

import pytest


def idle(app) -> bool:
    """Nothing running or queued, and the screen shows the session's current graph."""
    view = app.state.view()
    if view.busy or view.queued_steps or view.continue_after:
        return False
    session = app.session
    return session is None or session.graph is None or app.shown_graph is session.graph


async def settle(app, pilot, timeout=60.0, *, loaded=True):
    """Wait until the engine is idle (and, with ``loaded``, a scenario is on screen)."""
    waited = 0.0
    while waited < timeout:
        await pilot.pause(0.05)
        waited += 0.05
        if idle(app) and (app.session is not None or not loaded):
            await pilot.pause(0.05)  # messages posted by the engine's last act land
            if idle(app):
                return
    raise AssertionError(f"the app stayed busy: {app.state.view()}")


async def press(app, pilot, *keys):
    for key in keys:
        await pilot.press(key)
        await settle(app, pilot)


def cell(app, row, column):
    table = app.query_one("#params")
    return str(table.get_cell(row, column))


@pytest.fixture
def settle_fn():
    return settle
