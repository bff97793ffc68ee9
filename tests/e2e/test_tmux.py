"""The app in a real terminal: tmux runs `gradviz demo autograd-basics`, keys go in, text comes out."""

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

#: A tmux server of the tests' own (``tmux -L``): the developer's sessions are not touched,
#: and their ``tmux kill-server`` does not end a test's pane.
SOCKET = f"gradviz-tests-{uuid.uuid4().hex[:8]}"
TMUX = ["tmux", "-L", SOCKET]


@pytest.fixture(scope="module", autouse=True)
def own_tmux_server():
    yield
    subprocess.run([*TMUX, "kill-server"], capture_output=True)
    # tmux leaves its socket file behind
    folder = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
    (folder / SOCKET).unlink(missing_ok=True)


def pane(session):
    return subprocess.run([*TMUX, "capture-pane", "-p", "-t", session], capture_output=True,
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
    subprocess.run([*TMUX, "new-session", "-d", "-s", session, "-x", "120", "-y", "40", command],
                   check=True)
    try:
        wait_for(session, "step 0/6")
        for _ in range(6):
            subprocess.run([*TMUX, "send-keys", "-t", session, "n"], check=True)
            time.sleep(0.3)
        screen = wait_for(session, "step 6/6")
        assert "[36, 81]" in screen and "[-12, -8]" in screen
        assert "9*a**2 == a.grad" in screen and "pass" in screen
        subprocess.run([*TMUX, "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while "step 6/6" in pane(session) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "step 6/6" not in pane(session)  # the app has exited
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)


def start(command, size=("120", "40")):
    session = f"gradviz-{uuid.uuid4().hex[:8]}"
    line = f"env -u COLUMNS -u LINES {sys.executable} -m gradviz.cli {command}; echo EXIT=$?; sleep 30"
    subprocess.run([*TMUX, "new-session", "-d", "-s", session, "-x", size[0], "-y", size[1], line],
                   check=True)
    return session


def keys(session, *pressed):
    subprocess.run([*TMUX, "send-keys", "-t", session, *pressed], check=True)


def test_a_failed_load_stays_on_screen_and_q_exits_with_1(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import torch, gradviz\n"
                      "def build():\n"
                      "    w = torch.ones(3, requires_grad=True)\n"
                      "    def forward():\n"
                      "        raise ValueError('no batch')\n"
                      "    return gradviz.Scenario(name='b', params={'w': w}, forward=forward)\n")
    session = start(f"open {broken}")
    try:
        screen = wait_for(session, "could not open it")
        assert "forward() raised ValueError: no batch" in screen and "p: choose a scenario" in screen
        time.sleep(1.0)
        assert "could not open it" in pane(session)  # it stays; nothing spins over it
        keys(session, "q")
        wait_for(session, "EXIT=1", timeout=15)
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)


def test_twenty_quick_steps_in_a_real_terminal_are_twenty_steps():
    session = start("demo resnet18")
    try:
        wait_for(session, "step 0/134")
        for _ in range(20):
            keys(session, "n")
            time.sleep(0.05)
        wait_for(session, "step 20/134", timeout=30)
        time.sleep(0.5)
        assert "step 20/134" in pane(session)  # exactly twenty: none dropped, none doubled
        keys(session, "q")
        wait_for(session, "EXIT=0", timeout=15)
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)


def test_q_during_a_slow_forward_ends_the_process_at_once(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text("import torch, gradviz\n"
                    "w = torch.ones(3, requires_grad=True)\n"
                    "calls = []\n"
                    "def forward():\n"
                    "    calls.append(1)\n"
                    "    y = w\n"
                    "    for _ in range(5 if len(calls) == 1 else 5_000_000):\n"
                    "        y = y * 1.0\n"
                    "    return y.sum()\n"
                    "def build():\n"
                    "    return gradviz.Scenario(name='slow', params={'w': w}, forward=forward)\n")
    session = start(f"open {slow}")
    try:
        wait_for(session, "step 0/")
        keys(session, "f")
        wait_for(session, "forward pass")
        time.sleep(0.5)
        quit_at = time.monotonic()
        keys(session, "q")
        wait_for(session, "EXIT=0", timeout=15)
        assert time.monotonic() - quit_at < 3
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)
