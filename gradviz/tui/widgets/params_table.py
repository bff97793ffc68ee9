"""The parameters table: every parameter's gradient as it lands, then what the optimizer
did to it. Plain data in (:class:`~gradviz.model.views.ParamRow`, summaries, an
:class:`~gradviz.model.updates.UpdateReport`).

Its columns fit its width (see :func:`gradviz.tui.fit.fit_columns`): the values people
watch win over long names, which give up their middle; each column is as wide as what
it holds, and a value column that does not fit whole starts at the panel's edge (scroll
right to it) rather than showing its first digits, which read as another number. At
80x24 that is the name, ``|grad|`` and, for the tutorial's small tensors, ``grad``.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import events
from textual.widgets import DataTable

from gradviz.model.summary import SAMPLE_SIZE, TensorSummary
from gradviz.model.updates import UpdateReport
from gradviz.model.views import ParamRow
from gradviz.tui.fit import cut_end, cut_middle, fit_columns

NAME = "parameter"
#: The value columns, most watched first; "grad" (the values themselves) only where a
#: parameter is small enough for them to be shown.
VALUES = ("|grad|", "grad", "|Δ|/|p|", "|Δ|", "shape", "optimizer state")
#: The most a value column grows to (its text is cut, with an ellipsis, beyond).
MOST = {"grad": 30, "optimizer state": 40, "shape": 20}
FROZEN = " (frozen)"
#: A name keeps this much before a value column after |grad| takes its room: shorter,
#: resnet18's names all read "layer1…weight" (at 80x24: 22, "layer4.1.conv2.weight").
MIN_NAME = 20


class ParamsTable(DataTable):
    """Every parameter: its gradient as it arrives, then what the optimizer did to it."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._rows: list[ParamRow] = []
        self._cells: dict[str, dict[str, Any]] = {}  # name -> column -> full text
        self._columns: tuple[str, ...] = ()
        self._needed: dict[str, int] = {}  # column -> the width its header and cells need
        self._widths: dict[str, int] = {}  # column -> its width now
        self._laid_out_for = -1

    def show_params(self, rows: list[ParamRow]) -> None:
        """Each parameter, in the model's order."""
        self._rows = list(rows)
        self._cells = {row.name: {"shape": str(row.shape)} for row in rows}
        small = any(_numel(row.shape) <= SAMPLE_SIZE and not row.frozen for row in rows)
        self._columns = tuple(c for c in VALUES if c != "grad" or small)
        self._needed = {c: len(c) for c in self._columns}
        self._needed["shape"] = max([len("shape")] + [len(str(r.shape)) for r in rows])
        self._rebuild()

    def show_grad(self, name: str, summary: TensorSummary) -> None:
        if name not in self._cells:
            return
        self._set(name, "|grad|", Text(f"{summary.norm:.4g}", "red" if not summary.finite else ""))
        if summary.numel <= len(summary.sample) and "grad" in self._columns:
            self._set(name, "grad", "[" + ", ".join(f"{v:.4g}" for v in summary.sample) + "]")
        self.move_cursor(row=self.get_row_index(name))  # follow the gradient as it lands

    def show_update(self, report: UpdateReport) -> None:
        for update in report.params:
            if update.name not in self._cells:
                continue
            if not update.updated:
                self._set(update.name, "|Δ|", Text(update.skipped, "grey50"))
                continue
            self._set(update.name, "|Δ|", f"{update.update.norm:.3g}")
            self._set(update.name, "|Δ|/|p|", Text("p was 0", "grey50") if update.ratio is None
                      else f"{update.ratio:.3g}")
            self._set(update.name, "optimizer state", ", ".join(
                f"{k}={_state_text(v)}" for k, v in update.state.items()))

    def clear_grads(self) -> None:
        """A new forward: the gradients, and the last step's updates, are of the past."""
        for name, cells in self._cells.items():
            for column in ("|grad|", "grad", "|Δ|", "|Δ|/|p|"):
                if cells.pop(column, None) is not None and column in self._widths:
                    self.update_cell(name, column, "")

    def shown(self, name: str, column: str) -> str:
        """The cell's text as it is drawn (cut to its column, for tests and copying)."""
        return str(self.get_cell(name, column))

    # ------------------------------------------------------------ fitting the width
    def on_resize(self, event: events.Resize) -> None:
        if event.size.width != self._laid_out_for:
            self._rebuild()

    def _set(self, name: str, column: str, value: Any) -> None:
        self._cells[name][column] = value
        needed = min(len(str(value)), MOST.get(column, 12))
        if needed > self._needed.get(column, 0):
            self._needed[column] = needed
            self._rebuild()  # a column grew: the widths change (a few times a session)
        else:
            self.update_cell(name, column, self._fitted(column, value))

    def _rebuild(self) -> None:
        """All columns again, at widths that fit the table's width now."""
        width = self.scrollable_content_region.width or self.size.width or 1000  # not laid out
        self._laid_out_for = self.size.width
        longest = max([len(NAME)] + [len(r.name) + (len(FROZEN) if r.frozen else 0)
                                     for r in self._rows])
        name_width, widths = fit_columns(width, longest,
                                         [(c, self._needed[c]) for c in self._columns],
                                         padding=2 * self.cell_padding, min_name=MIN_NAME)
        self._widths = {NAME: name_width, **widths}
        cursor = self.cursor_row
        self.clear(columns=True)
        self.add_column(cut_end(NAME, name_width), key=NAME, width=name_width)
        for column in self._columns:
            self.add_column(column, key=column, width=self._widths[column])
        for row in self._rows:
            cells = self._cells[row.name]
            self.add_row(self._name_cell(row, name_width),
                         *[self._fitted(c, cells.get(c, "")) for c in self._columns],
                         key=row.name)
        if self._rows:
            self.move_cursor(row=min(cursor, len(self._rows) - 1), animate=False)

    def _fitted(self, column: str, value: Any) -> Any:
        width = self._widths.get(column)
        if width is None or len(str(value)) <= width:
            return value
        if isinstance(value, Text):
            return Text(cut_end(value.plain, width), value.style)
        return cut_end(str(value), width)

    @staticmethod
    def _name_cell(row: ParamRow, width: int) -> Text:
        if row.frozen:
            return Text(cut_middle(row.name, max(width - len(FROZEN), 4)) + FROZEN, "grey50")
        return Text(cut_middle(row.name, width))


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def _state_text(value: Any) -> str:
    norm = getattr(value, "norm", None)
    if norm is not None:
        return f"|{norm:.3g}|"
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)
