"""The node inspector: everything about one node, one parameter or one folded module.

It draws a frozen :class:`~gradviz.model.views.NodeView` (or a ``ParamView``) and never
touches torch. A Line API widget: its text is rendered to lines here, once per change,
so a new node in it costs no re-layout of the screen (it did, at every step).
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from gradviz.model.node_facts import (
    FREED,
    MODIFIED_IN_PLACE,
    RECOMPUTED,
    meta_text,
    region_summary,
    saved_states,
)
from gradviz.model.summary import TensorSummary
from gradviz.model.views import NodeView, ParamView


#: Which gradient a norm is of, said wherever one is shown: a node's gradient in and
#: what it sends out differ (PowBackward0 of b**2 takes |g|=1.414 in, sends 14.4 out),
#: and the graph's row shows what went out.
IN, OUT, GRAD = "|g in|", "|g out|", "|grad|"


def summary_text(summary: TensorSummary | None, norm_label: str = IN) -> Text:
    """One gradient in a line or two: shape, norm, stats, NaN/Inf, a few values
    (``norm_label="|x|"`` for a forward's values)."""
    if summary is None:
        return Text("None (nothing flows)", "grey50")
    text = Text()
    # the norm first, labelled: which gradient it is stays on screen however narrow
    text.append(f"{norm_label}={summary.norm:.4g}", "bold")
    text.append(f"  {summary.shape} {summary.dtype}", "grey62")
    if summary.device != "cpu":
        text.append(f" {summary.device}", "grey62")
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

    def show_node(self, view: NodeView) -> None:
        """Everything about one node: what it is, what came in, what it sent on."""
        self._content = node_lines(view)
        self._draw()

    def show_param(self, view: ParamView) -> None:
        """A selected parameter: what it is and its ``.grad``, or why it has none."""
        lines: list[Any] = [
            Text.assemble((view.name, "bold blue"), "  ", (str(view.shape), "grey62")),
            Text(f"requires_grad={view.requires_grad}", "grey62")]
        if view.grad is not None:
            lines += [Text(".grad:", "bold"), summary_text(view.grad, GRAD)]
        elif view.why_no_grad is not None:
            lines += [Text("no .grad: why", "bold yellow"), Text(view.why_no_grad, "yellow")]
        else:
            lines.append(Text(f"no .grad; why is unknown: {view.unknown}", "grey50"))
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


def node_lines(view: NodeView) -> list[Any]:
    """The inspector's text for a node: its facts, then its run (or that it waits)."""
    title = Text.assemble((view.op, "bold magenta"), "  ", (view.key, "grey62"))
    lines: list[Any] = [title]
    facts = Table.grid(padding=(0, 1))
    facts.add_column(style="grey62")
    facts.add_column()
    if view.name:
        facts.add_row("name", view.name)
    module = view.module
    facts.add_row("module", "(outside the model)" if module is None else (module or "(model)"))
    if view.shape is not None:
        facts.add_row("shape", str(view.shape))
    if view.input_shapes:
        facts.add_row("inputs", ", ".join(f"{name} {shape}"
                                          for name, shape in view.input_shapes.items()))
    if view.saved == FREED:
        facts.add_row("saved", "freed: backward already ran through this node")
    elif view.saved:
        facts.add_row("saved", ", ".join(f"{name} {meta_text(meta)}"
                                         for name, meta in view.saved.items()))
    if view.args:
        facts.add_row("values", ", ".join(f"{k}={_short(v)}" for k, v in view.args.items()))
    if view.derivative:
        facts.add_row("rule", view.derivative)
    region = view.region
    if region:
        facts.add_row("region", region_summary(region))
        if region.get("params"):
            facts.add_row("inside", ", ".join(region["params"]))
        if region.get("ops"):
            facts.add_row(f"ops ({len(region['ops'])})", ", ".join(region["ops"]))
    lines.append(facts)
    if region and region.get("note"):
        lines.append(Text(region["note"], "yellow"))
    states = saved_states(view.saved)
    if MODIFIED_IN_PLACE in states:
        lines.append(Text("a saved tensor was modified in place: backward through this "
                          "node will fail", "bold red"))
    if RECOMPUTED in states:
        lines.append(Text("its saved tensors are recomputed in backward by checkpointing; "
                          "gradviz did not re-run anything to show them", "grey62"))
    run = view.run
    if run is not None and run.summarized:
        lines.append(Text(f"ran as step {run.index + 1} in {run.duration * 1e3:.3f} ms",
                          "green"))
        if run.nonfinite:
            lines.append(Text("the first node to make a NaN/Inf gradient", "bold red"))
        lines.append(Text("gradient in:", "bold"))
        lines += [summary_text(s, IN) for s in run.grad_outputs]
        if run.param_grad is not None:
            lines.append(Text(".grad now:", "bold"))
            lines.append(summary_text(run.param_grad, GRAD))
        if run.grad_inputs:
            lines.append(Text("sent on:", "bold"))
            by_slot = dict(view.children)
            for slot, summary in enumerate(run.grad_inputs):
                target = by_slot.get(slot, "(no grad needed)")
                lines.append(Text.assemble(f"  → slot {slot} ", (target, "cyan")))
                lines.append(summary_text(summary, OUT))
    elif run is not None:
        lines.append(Text(f"ran as step {run.index + 1}; reading its gradients…", "green"))
    elif view.incoming is not None:
        lines.append(Text("next to run; gradient waiting:", "bold yellow"))
        lines += [summary_text(s, IN) for s in view.incoming]
    else:
        lines.append(Text("not run yet", "grey50"))
    return lines


def _short(value: Any, width: int = 48) -> str:
    """A saved value in at most ``width`` characters (long int lists say how long they are)."""
    text = str(value)
    if len(text) <= width:
        return text
    if isinstance(value, (tuple, list)):
        return f"{text[:width - 16]}…] ({len(value)} values)"
    return text[:width - 1] + "…"
