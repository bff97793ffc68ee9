"""Where an app can be shown: a Jupyter cell, a terminal, or nowhere.

Standard library only, so that every layer can ask (the CLI before it takes the
screen, ``gradviz.show``, a ``gradviz.watch`` break) and all of them answer alike.

* **notebook**: a Jupyter kernel (ipykernel): IPython is already imported and its
  shell has a ``kernel``. That covers ipykernel's ZMQInteractiveShell and the shells
  built on it (Spyder, Colab); IPython's terminal shell has no kernel and counts as a
  terminal. The kernel cannot know whether a browser shows its output (nbclient
  runs without one): the notebook entry starts an app only once a page has measured
  it, so a headless run never waits for keys.
* **terminal**: Textual's Linux driver reads keys from ``sys.__stdin__`` and draws
  on ``sys.__stderr__`` (not stdout): both must be ttys, and ``TERM`` must not be
  ``dumb``. So ``python train.py | tail`` still has a terminal, while
  ``python train.py </dev/null`` or ``2>log`` has none: an app started there would
  write escape codes into the file and wait for keys that never come.
* a Textual driver named in ``TEXTUAL_DRIVER`` (textual-serve's web driver, under
  ``gradviz serve``) stands in for a terminal.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Literal

Place = Literal["notebook", "terminal"]


def where() -> Place | None:
    """``"notebook"``, ``"terminal"``, or None where no app can be shown."""
    if kernel_shell() is not None:
        return "notebook"
    if has_terminal():
        return "terminal"
    return None


def kernel_shell() -> Any | None:
    """The IPython shell of the Jupyter kernel this runs in, else None.

    Never imports IPython: a program that has not imported it is not in a kernel.
    """
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    try:
        shell = ipython.get_ipython()
    except Exception:  # a half-imported or replaced IPython: not a kernel we can use
        return None
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    return shell


def has_terminal() -> bool:
    """Whether Textual can take this process's terminal (see the module's docstring)."""
    if os.environ.get("TEXTUAL_DRIVER"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    return _is_tty(sys.__stdin__) and _is_tty(sys.__stderr__)


def _is_tty(stream: Any) -> bool:
    try:
        return stream is not None and os.isatty(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or replaced by a file-like object
        return False
