"""Where an app can be shown, as a script meets it: a pipe, a file, no terminal at all.

Textual draws on stderr and reads stdin: with either not a terminal, ``gradviz.show``
says so in one line and returns, writing no escape codes anywhere; the CLI refuses.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

WHERE = "from gradviz.runtime.where import where; print(where())"


def run(code, *, stdin=None, stderr=None, env=None, timeout=120):
    return subprocess.run([sys.executable, "-c", code], stdin=stdin, stdout=subprocess.PIPE,
                          stderr=stderr if stderr is not None else subprocess.PIPE,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_where_reads_stdin_and_stderr_not_stdout():
    primary, secondary = pty.openpty()
    try:
        # stdout into a pipe (python train.py | tail): Textual still has stderr to draw on
        piped = run(WHERE, stdin=secondary, stderr=secondary, env={"TERM": "xterm"})
        assert piped.stdout.decode().strip() == "terminal"
        # stderr into a file (2>log): nowhere to draw
        to_file = run(WHERE, stdin=secondary, stderr=subprocess.DEVNULL, env={"TERM": "xterm"})
        assert to_file.stdout.decode().strip() == "None"
        dumb = run(WHERE, stdin=secondary, stderr=secondary, env={"TERM": "dumb"})
        assert dumb.stdout.decode().strip() == "None"
    finally:
        os.close(primary)
        os.close(secondary)
    assert run(WHERE, stdin=subprocess.DEVNULL).stdout.decode().strip() == "None"


SHOW = """import torch, gradviz
a = torch.tensor([2.0, 3.0], requires_grad=True)
Q = 3 * a**3
print("returned", gradviz.show(Q, gradient=torch.ones(2), params={"a": a}))"""


def test_show_without_a_screen_says_so_in_one_line_and_returns():
    started = time.monotonic()
    result = run(SHOW, stdin=subprocess.DEVNULL)  # stdout and stderr are pipes
    assert time.monotonic() - started < 60
    assert result.returncode == 0
    assert result.stdout.decode() == "returned None\n"
    err = result.stderr.decode()
    assert err.count("\n") == 1 and "gradviz.show: no app here" in err
    assert b"\x1b" not in result.stdout + result.stderr  # no escape codes into a pipe


def test_the_app_refuses_when_stderr_is_not_a_terminal():
    primary, secondary = pty.openpty()
    try:
        result = subprocess.run([sys.executable, "-m", "gradviz.cli", "demo", "autograd-basics"],
                                stdin=secondary, stdout=secondary, stderr=subprocess.PIPE,
                                env={**os.environ, "TERM": "xterm"}, timeout=60)
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.returncode == 1
    assert b"the app needs a terminal (stdin and stderr are not one)" in result.stderr
