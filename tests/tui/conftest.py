"""Helpers to drive the app headless and wait for its workers."""

import pytest


async def settle(app, pilot, timeout=60.0):
    """Wait until the scenario is loaded and no worker is busy."""
    waited = 0.0
    while waited < timeout:
        await pilot.pause(0.05)
        waited += 0.05
        if app.session is not None and not app.busy:
            return
    raise AssertionError(f"the app stayed busy: {app.busy!r}")


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
