"""Where the user's code called something: the first frame outside torch and gradviz.

Forward events name the line that called each op; a NaN's origin names the line that
made it. gradviz's own installed demos count as the user's code.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SourceLine:
    """Where the user's code called an operation."""

    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{os.path.basename(self.file)}:{self.line}"


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_GRADVIZ_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_DEMOS_DIR = _GRADVIZ_DIR + "demos" + os.sep  # installed demos are the user's code
_THREADING = threading.__file__
_internal_code: dict[types.CodeType, bool] = {}


def _is_internal(filename: str) -> bool:
    return (filename.startswith(_TORCH_DIR) or filename == _THREADING
            or filename.startswith("<eval_with_key>")  # torch.fx generated code
            or (filename.startswith(_GRADVIZ_DIR) and not filename.startswith(_DEMOS_DIR)))


def caller_line(frame: types.FrameType | None = None) -> SourceLine | None:
    """The first frame outside torch and gradviz, from ``frame`` (default: the caller) out."""
    frame = frame or sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        internal = _internal_code.get(code)
        if internal is None:
            internal = _internal_code[code] = _is_internal(code.co_filename)
        if not internal:
            return SourceLine(code.co_filename, frame.f_lineno, code.co_name)
        frame = frame.f_back
    return None


def apply_line() -> SourceLine | None:
    """The line that called a custom ``Function.apply`` if one is running (its node is
    made first, then its forward's ops run and see the gap), else the user's line."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "forward" and code.co_varnames[:1] == ("ctx",):
            return caller_line(frame.f_back)  # apply itself is C: the frame below calls it
        frame = frame.f_back
    return caller_line()
