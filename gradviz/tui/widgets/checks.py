"""The scenario's checks, after backward: pass or FAIL, and what each saw."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from gradviz.model.views import CheckResult


class ChecksPanel(Static):
    """Each check of the scenario: pending until backward ends, then pass or FAIL."""

    def show_checks(self, checks: list[CheckResult], expected: list[str]) -> None:
        if not expected:
            self.update(Text("no checks in this scenario", "grey50"), layout=False)
            return
        lines = []  # its title is the panel's border title (a row more at 80x24)
        results = {c.name: c for c in checks}
        for name in expected:
            result = results.get(name)
            if result is None:
                lines.append(Text.assemble(("  …  ", "grey50"),
                                           (f"{name}  (after backward)", "grey50")))
            else:
                lines.append(Text.assemble(
                    (" pass " if result.passed else " FAIL ",
                     "bold black on green" if result.passed else "bold white on red"),
                    f" {name} {result.detail}".rstrip()))
        self.update(Text("\n").join(lines))
