"""Where scenario files are, read without importing torch (so ``gradviz list`` is instant).

A scenario file's module docstring's first line is its description.
"""

from __future__ import annotations

import ast
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

from gradviz.errors import ScenarioError

#: The built-in demos, in the order ``gradviz list`` shows them.
BUILTIN_NAMES = (
    "autograd-basics",
    "resnet18",
    "finetune",
    "mlp-dataloader",
    "lstm",
    "custom-function",
    "nan-grad",
)


@dataclass(frozen=True)
class ScenarioInfo:
    """A scenario file as listed, read without running it."""

    name: str
    description: str
    path: Path


def demos_folder() -> Path:
    """The installed ``gradviz.demos`` package: the project's top-level ``demos/``."""
    return Path(str(importlib.resources.files("gradviz.demos")))


def builtin_scenarios() -> list[ScenarioInfo]:
    """The built-in demos with their one-line descriptions."""
    return [describe_file(resolve(name), name) for name in BUILTIN_NAMES]


def describe_file(path: Path, name: str | None = None) -> ScenarioInfo:
    """Name and description of a scenario file, from its docstring; it is not run."""
    try:
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except SyntaxError:
        docstring = ""
    description = docstring.strip().splitlines()[0] if docstring.strip() else ""
    return ScenarioInfo(name or path.stem, description, path)


def resolve(name_or_path: str | Path) -> Path:
    """The file of a built-in name, or the path given; a one-line error for neither."""
    text = str(name_or_path)
    if text in BUILTIN_NAMES:
        return demos_folder() / f"{text.replace('-', '_')}.py"
    path = Path(text).expanduser()
    if path.suffix == ".py" or path.exists() or "/" in text:
        return check_file(path, "scenario file")
    raise ScenarioError(
        f"no scenario named {text!r}: choose one of {', '.join(BUILTIN_NAMES)}, "
        "or give the path of a .py file that defines build()"
    )


def check_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a file this process can read; else a one-line error saying which."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ScenarioError(f"{what} {path} is a folder: give the file itself")
    if not path.exists():
        raise ScenarioError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ScenarioError(f"{what} {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise ScenarioError(f"{what} {path} cannot be read (permission denied)")
    return path
