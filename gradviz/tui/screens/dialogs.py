"""Screens over the main one: the help, and the scenario picker."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

HELP_KEYS = [
    ("n / space", "step: run the next autograd node in PyTorch's engine "
                  "(presses while busy queue up)"),
    ("c", "continue to the end of backward (press c again to pause)"),
    ("o", "optimizer step (after backward, once per backward)"),
    ("t", "one training iteration: forward, backward, optimizer step"),
    ("f", "a new forward pass (a fresh graph; the old one stays if it fails)"),
    ("s", "step a new forward one tensor operation at a time: watch autograd build "
          "the graph (c runs the rest, esc abandons it)"),
    ("e", "export the graph to Graphviz DOT"),
    ("/", "find a node by op, module or parameter name (enter: next match)"),
    ("m", "fold / unfold modules"),
    ("p", "open another scenario (a demo or a file)"),
    ("↑ ↓ enter", "move through the graph, inspect a node, open a module"),
    ("tab", "move between the graph, the node inspector (scrolls) and the tabs: "
            "parameters / forward ops (← → switch tabs)"),
    ("escape", "stop what is running (a forward too), close find, dismiss an error"),
    ("ctrl+p", "command palette"),
    ("?", "this help"),
    ("q", "quit"),
]

LEGEND = [("▶", "bold reverse magenta", "the node the engine waits at"),
          ("◉", "yellow", "ready: all its gradients have arrived"),
          ("●", "green", "done"), ("○", "grey50", "waiting for gradients"),
          ("✖", "bold red", "where a NaN/Inf started, or where backward failed"),
          ("✚", "bold magenta", "recorded by the forward operation that just ran")]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "close")]
    AUTO_FOCUS = "#help"  # it scrolls (↑ ↓ pgup pgdn): at 80x24 the legend is below the fold

    def compose(self) -> ComposeResult:
        keys = Table.grid(padding=(0, 2))
        keys.add_column(style="bold yellow")
        keys.add_column()
        for key, what in HELP_KEYS:
            keys.add_row(key, what)
        legend = Text()
        for glyph, style, what in LEGEND:
            legend.append(f"  {glyph} ", style)
            legend.append(f"{what}\n")
        with VerticalScroll(id="help"):
            yield Static(Text.assemble(("gradviz: PyTorch's backward, one node at a time", "bold"),
                                       ("   escape closes, ↑ ↓ scroll", "grey50")))
            yield Static(keys)
            yield Static(legend)


class PickerScreen(ModalScreen[str | None]):
    """Choose a built-in demo, or type the path of a scenario file (tab reaches it)."""

    BINDINGS = [Binding("escape", "dismiss(None)", "close")]
    AUTO_FOCUS = "#demos"

    def __init__(self, scenarios: list[tuple[str, str]]) -> None:
        super().__init__()
        self.scenarios = scenarios

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Label(Text("gradviz: choose a scenario (enter), or tab to type a file's path",
                             "bold"))
            yield OptionList(*[Option(Text.assemble((name, "bold cyan"), "\n  ",
                                                    (description, "grey70")), id=name)
                               for name, description in self.scenarios], id="demos")
            yield Label("or open a scenario file (.py defining build()):")
            yield Input(placeholder="path/to/scenario.py", id="path")
            yield Label(Text("escape closes", "grey50"))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value.strip())
