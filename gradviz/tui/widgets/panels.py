"""The panels beside the graph: node inspector, parameters, checks.

Each takes plain data (summaries, reports) from the app and never touches torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import DataTable, Static

if TYPE_CHECKING:
    from gradviz.session.optimizer_step import UpdateReport
    from gradviz.session.scenario import CheckResult
    from gradviz.model.summary import TensorSummary


def summary_text(summary: TensorSummary | None, norm_label: str = "|g|") -> Text:
    """One gradient in a line or two: shape, norm, stats, NaN/Inf, a few values
    (``norm_label="|x|"`` for a forward's values)."""
    if summary is None:
        return Text("None (nothing flows)", "grey50")
    text = Text()
    text.append(f"{summary.shape} {summary.dtype}", "grey62")
    if summary.device != "cpu":
        text.append(f" {summary.device}", "grey62")
    text.append(f"  {norm_label}={summary.norm:.4g}", "bold")
    text.append("\n   ")
    text.append(f"  mean={summary.mean:.3g} std={summary.std:.3g} "
                f"min={summary.min:.3g} max={summary.max:.3g}")
    if not summary.finite:
        text.append(f"  NaN={summary.nan} Inf={summary.inf}", "bold red")
    values = ", ".join(f"{v:.4g}" for v in summary.sample)
    more = ", …" if summary.numel > len(summary.sample) else ""
    text.append(f"\n    [{values}{more}]", "grey70")
    return text


class Inspector(ScrollView, can_focus=True):
    """Everything about one node: what it is, what came in, what it sent on.

    It scrolls (tab to it, then the arrow keys, page keys or the mouse wheel), so a
    node with many inputs is never cut off; an error on screen comes first, in red.
    A Line API widget: its text is rendered to lines here, once per change, so a
    new node in it costs no re-layout of the screen (it did, at every step).
    """

    BINDINGS = [
        Binding("up", "scroll_up", "up", show=False),
        Binding("down", "scroll_down", "down", show=False),
        Binding("pageup", "page_up", "page up", show=False),
        Binding("pagedown", "page_down", "page down", show=False),
        Binding("home", "scroll_home", "top", show=False),
        Binding("end", "scroll_end", "bottom", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._failure: Text | None = None
        self._failure_shown = ("", "")
        self._content: list[Any] = []
        self._strips: list[Strip] = []

    def show_failure(self, message: str, hint: str) -> None:
        """Put an error above whatever is shown, until :meth:`show_failure` with ""."""
        if (message, hint) == self._failure_shown:
            return
        self._failure_shown = (message, hint)
        self._failure = Text.assemble(("error: ", "bold red"), (message, "red"),
                                      ("\n" + hint if hint else "", "yellow")) if message else None
        self._draw()

    def show_text(self, text: Text) -> None:
        self._content = [text]
        self._draw()

    def plain_text(self) -> str:
        """What it shows, scrolled or not, as plain text (for tests and copying)."""
        return "\n".join(strip.text.rstrip() for strip in self._strips)

    def _draw(self) -> None:
        width = max(self.scrollable_content_region.width, 20)
        parts = ([self._failure, Text()] if self._failure else []) + self._content
        console = self.app.console
        lines = console.render_lines(Group(*parts), console.options.update_width(width),
                                     style=self.rich_style)
        self._strips = [Strip(line) for line in lines]
        size = Size(width, len(self._strips))
        if size != self.virtual_size:  # its scrollbars redraw on every change of it
            self.virtual_size = size
        self.refresh()

    def on_resize(self) -> None:
        self._draw()

    def render_line(self, y: int) -> Strip:
        index = self.scroll_offset.y + y
        if index < len(self._strips):
            return self._strips[index].crop(0, self.size.width)
        return Strip.blank(self.size.width, self.rich_style)

    def show_node(self, key: str, attrs: dict[str, Any], event: Any,
                  children: list[tuple[int, str]], derivative: str | None,
                  incoming: tuple | None = None) -> None:
        """``event``: the node's StepEvent once it ran; ``incoming``: the waiting gradients
        when the engine is paused at this node; ``children``: (slot, child key)."""
        # Imported here: these modules import torch, which the app's first frame must not
        # wait for (a node is inspected only once torch has loaded a graph).
        from gradviz.graph.regions import region_summary
        from gradviz.graph.saved import FREED, MODIFIED_IN_PLACE, RECOMPUTED, meta_text

        title = Text.assemble((attrs["op"], "bold magenta"), "  ", (key, "grey62"))
        lines: list[Any] = [title]
        facts = Table.grid(padding=(0, 1))
        facts.add_column(style="grey62")
        facts.add_column()
        if attrs.get("name"):
            facts.add_row("name", attrs["name"])
        module = attrs.get("module")
        facts.add_row("module", "(outside the model)" if module is None else (module or "(model)"))
        if attrs.get("shape") is not None:
            facts.add_row("shape", str(tuple(attrs["shape"])))
        if attrs.get("input_shapes"):
            facts.add_row("inputs", ", ".join(f"{name} {tuple(shape)}"
                                              for name, shape in attrs["input_shapes"].items()))
        saved = attrs.get("saved")
        if saved == FREED:
            facts.add_row("saved", "freed: backward already ran through this node")
        elif saved:
            facts.add_row("saved", ", ".join(f"{name} {meta_text(meta)}"
                                             for name, meta in saved.items()))
        if attrs.get("args"):
            facts.add_row("values", ", ".join(f"{k}={_short(v)}" for k, v in attrs["args"].items()))
        if derivative:
            facts.add_row("rule", derivative)
        region = attrs.get("region")
        if region:
            facts.add_row("region", region_summary(region))
            if region.get("params"):
                facts.add_row("inside", ", ".join(region["params"]))
            if region.get("ops"):
                facts.add_row(f"ops ({len(region['ops'])})", ", ".join(region["ops"]))
        lines.append(facts)
        if region and region.get("note"):
            lines.append(Text(region["note"], "yellow"))
        states = _saved_states(saved)
        if MODIFIED_IN_PLACE in states:
            lines.append(Text("a saved tensor was modified in place: backward through this "
                              "node will fail", "bold red"))
        if RECOMPUTED in states:
            lines.append(Text("its saved tensors are recomputed in backward by checkpointing; "
                              "gradviz did not re-run anything to show them", "grey62"))
        if event is not None:
            lines.append(Text(f"ran as step {event.index + 1} in {event.duration * 1e3:.3f} ms",
                              "green"))
            if event.nonfinite:
                lines.append(Text("the first node to make a NaN/Inf gradient", "bold red"))
            lines.append(Text("gradient in:", "bold"))
            lines += [summary_text(s) for s in event.grad_outputs]
            if event.param_grad is not None:
                lines.append(Text(".grad now:", "bold"))
                lines.append(summary_text(event.param_grad))
            if event.grad_inputs:
                lines.append(Text("sent on:", "bold"))
                by_slot = dict(children)
                for slot, summary in enumerate(event.grad_inputs):
                    target = by_slot.get(slot, "(no grad needed)")
                    lines.append(Text.assemble(f"  → slot {slot} ", (target, "cyan")))
                    lines.append(summary_text(summary))
        elif incoming is not None:
            lines.append(Text("next to run; gradient waiting:", "bold yellow"))
            lines += [summary_text(s) for s in incoming]
        else:
            lines.append(Text("not run yet", "grey50"))
        self._content = lines
        self._draw()

    def show_lines(self, lines: list[Any]) -> None:
        self._content = lines
        self._draw()

    def show_group(self, module: str, members: int, run: int) -> None:
        nodes = f"{members} node" + ("s" if members != 1 else "")
        self._content = [Text(module, "bold cyan"),
                         Text(f"{nodes}, {run} run; enter to expand, m to expand all")]
        self._draw()


def _short(value: Any, width: int = 48) -> str:
    """A saved value in at most ``width`` characters (long int lists say how long they are)."""
    text = str(value)
    if len(text) <= width:
        return text
    if isinstance(value, (tuple, list)):
        return f"{text[:width - 16]}…] ({len(value)} values)"
    return text[:width - 1] + "…"


def _saved_states(saved: Any) -> set[str]:
    """The states ("modified in place", "recomputed in backward", ...) of a node's saved tensors."""
    if not isinstance(saved, dict):
        return set()
    states = set()
    for meta in saved.values():
        for one in meta if isinstance(meta, list) else [meta]:
            if one and one.get("state"):
                states.add(one["state"])
    return states


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

    def show_params(self, params: list[tuple[str, tuple[int, ...], bool]]) -> None:
        """(name, shape, frozen) for each parameter, in the model's order."""
        self.clear()
        for name, shape, frozen in params:
            self.add_row(Text(name + (" (frozen)" if frozen else ""),
                              "grey50" if frozen else ""),
                         "", "", "", "", str(shape), "", key=name)

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


class ChecksPanel(Static):
    def show_checks(self, checks: list[CheckResult], expected: list[str]) -> None:
        if not expected:
            self.update(Text("no checks in this scenario", "grey50"), layout=False)
            return
        text = Text("checks\n", "bold")
        results = {c.name: c for c in checks}
        for name in expected:
            result = results.get(name)
            if result is None:
                text.append("  …  ", "grey50")
                text.append(f"{name}  (after backward)\n", "grey50")
            else:
                text.append(" pass " if result.passed else " FAIL ",
                            "bold black on green" if result.passed else "bold white on red")
                text.append(f" {name} {result.detail}\n")
        self.update(text, layout=False)


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

    def add_steps(self, steps: list[Any]) -> None:
        """:class:`gradviz.session.progress.ForwardStep` s, in the order they ran; the cursor
        follows the last."""
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


def forward_step_lines(step: Any) -> list[Any]:
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
