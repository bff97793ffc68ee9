"""The app in a real terminal: tmux runs `gradviz demo autograd-basics`, keys go in, text comes out."""

import shutil
import subprocess
import sys
import time
import uuid

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def pane(session):
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                          text=True).stdout


def wait_for(session, text, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = pane(session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared:\n{pane(session)}")


def test_step_through_the_tutorial_in_tmux():
    session = f"gradviz-{uuid.uuid4().hex[:8]}"
    # A test runner may export COLUMNS/LINES, which Textual would take over the pane size.
    command = f"env -u COLUMNS -u LINES {sys.executable} -m gradviz.cli demo autograd-basics; sleep 30"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command],
                   check=True)
    try:
        wait_for(session, "step 0/6")
        for _ in range(6):
            subprocess.run(["tmux", "send-keys", "-t", session, "n"], check=True)
            time.sleep(0.3)
        screen = wait_for(session, "step 6/6")
        assert "[36, 81]" in screen and "[-12, -8]" in screen
        assert "9*a**2 == a.grad" in screen and "pass" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while "step 6/6" in pane(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "step 6/6" not in pane(session)  # the app has exited
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
