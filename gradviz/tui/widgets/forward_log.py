"""The operations of a forward stepped op by op (the "forward ops" tab), and the
inspector's text for one of them. Plain data in: :class:`~gradviz.model.views.ForwardStep`."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import DataTable

from gradviz.model.views import ForwardStep
from gradviz.tui.widgets.inspector import summary_text


class ForwardLog(DataTable):
    """The operations of a forward stepped op by op: what each recorded in the graph, or
    why nothing (greyed, with the reason: the tutorial's exclusion from the DAG)."""

    # "recorded" before "module": in a side panel the reason must be what shows
    COLUMNS = {"#": 4, "op": 12, "recorded": 48, "module": 20, "output": 18}

    def on_mount(self) -> None:
        self.cursor_type = "row"
        for name, width in self.COLUMNS.items():
            self.add_column(name, key=name, width=width)

    def start(self) -> None:
        self.clear()

    def add_steps(self, steps: list[ForwardStep]) -> None:
        """Steps in the order they ran; the cursor follows the last."""
        rows = []
        for step in steps:
            grey = "grey50" if step.node_type is None else ""
            recorded = (Text(step.node_type, "green") if step.node_type
                        else Text(f"none: {step.reason}", "grey50"))
            rows.append((Text(str(step.index + 1), grey), Text(step.op, grey), recorded,
                         Text(step.module if step.module is not None else "-", grey),
                         Text(str(step.shape) if step.shape is not None else "", grey)))
        self.add_rows(rows)
        self.move_cursor(row=self.row_count - 1)


def forward_step_lines(step: ForwardStep) -> list[Any]:
    """The inspector's text for one forward operation."""
    title = Text.assemble((step.op, "bold magenta"), "  ", (f"operation {step.index + 1}",
                                                            "grey62"))
    facts = Table.grid(padding=(0, 1))
    facts.add_column(style="grey62")
    facts.add_column()
    facts.add_row("module", "(outside the model)" if step.module is None else (step.module or
                                                                              "(model)"))
    if step.source:
        facts.add_row("called at", step.source)
    if step.shape is not None:
        facts.add_row("output", str(step.shape))
    lines: list[Any] = [title, facts]
    if step.node_type:
        lines.append(Text.assemble(("recorded ", "bold green"), (step.node_type, "green"),
                                   " in the graph" + (f" ({', '.join(step.new_nodes)})"
                                                      if step.new_nodes else "")))
    else:
        lines.append(Text.assemble(("recorded nothing: ", "bold yellow"),
                                   (step.reason or "", "yellow")))
        lines.append(Text("autograd keeps no node for an operation whose inputs need no "
                          "gradient: it is left out of the DAG", "grey50"))
    if not step.summarized:
        lines.append(Text("ran with the rest of the forward (c): its values were not read",
                          "grey50"))
    elif step.output is not None:
        lines.append(Text("output values:", "bold"))
        lines.append(summary_text(step.output, norm_label="|x|"))
        if step.zeros is not None:
            lines.append(Text(f"    zeros: {step.zeros:.1%}", "grey70"))
    else:
        lines.append(Text("output changed in place before it could be read", "grey50"))
    return lines
