"""The parameters table: every parameter's gradient as it lands, then what the optimizer
did to it. Plain data in (:class:`~gradviz.model.views.ParamRow`, summaries, an
:class:`~gradviz.model.updates.UpdateReport`)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from gradviz.model.summary import TensorSummary
from gradviz.model.updates import UpdateReport
from gradviz.model.views import ParamRow


class ParamsTable(DataTable):
    """Every parameter: its gradient as it arrives, then what the optimizer did to it."""

    # The columns people watch first: the table is often wider than its panel. Fixed
    # widths: a width that follows the values re-lays the screen out at every gradient.
    COLUMNS = {"parameter": None, "|grad|": 9, "|Δ|/|p|": 9, "grad": 18, "|Δ|": 9,
               "shape": 16, "optimizer state": 40}

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        for name, width in self.COLUMNS.items():
            self.add_column(name, key=name, width=width)

    def show_params(self, rows: list[ParamRow]) -> None:
        """Each parameter, in the model's order."""
        self.clear()
        for row in rows:
            self.add_row(Text(row.name + (" (frozen)" if row.frozen else ""),
                              "grey50" if row.frozen else ""),
                         "", "", "", "", str(row.shape), "", key=row.name)

    def show_grad(self, name: str, summary: TensorSummary) -> None:
        if name not in self.rows:
            return
        norm = Text(f"{summary.norm:.4g}", "red" if not summary.finite else "")
        values = ""
        if summary.numel <= len(summary.sample):  # a handful of elements: show them
            values = "[" + ", ".join(f"{v:.4g}" for v in summary.sample) + "]"
        self.update_cell(name, "|grad|", norm)
        self.update_cell(name, "grad", values)
        self.move_cursor(row=self.get_row_index(name))  # follow the gradient as it lands

    def show_update(self, report: UpdateReport) -> None:
        for update in report.params:
            if update.name not in self.rows:
                continue
            if not update.updated:
                self.update_cell(update.name, "|Δ|", Text(update.skipped, "grey50"))
                continue
            self.update_cell(update.name, "|Δ|", f"{update.update.norm:.3g}")
            ratio = (Text("p was 0", "grey50") if update.ratio is None
                     else f"{update.ratio:.3g}")
            self.update_cell(update.name, "|Δ|/|p|", ratio)
            self.update_cell(update.name, "optimizer state", ", ".join(
                f"{k}={_state_text(v)}" for k, v in update.state.items()))

    def clear_grads(self) -> None:
        """A new forward: the gradients, and the last step's updates, are of the past."""
        for name in list(self.rows):
            for column in ("|grad|", "grad", "|Δ|", "|Δ|/|p|"):
                self.update_cell(name, column, "")


def _state_text(value: Any) -> str:
    norm = getattr(value, "norm", None)
    if norm is not None:
        return f"|{norm:.3g}|"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)
