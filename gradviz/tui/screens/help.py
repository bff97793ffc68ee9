"""The help screen: every key, and the legend of the graph's glyphs."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from gradviz.model.progress import NodeState
from gradviz.tui.widgets.graph_view import GLYPHS

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
    ("x i r", "when a gradviz.watch break opened the app: stop training, no more breaks "
              "of this kind in this run, the whole run so far"),
    ("ctrl+p", "command palette"),
    ("?", "this help"),
    ("q", "quit"),
]

#: What each node glyph of the graph means, in the order the legend lists them.
LEGEND = [(NodeState.PENDING, "the node the engine waits at"),
          (NodeState.READY, "ready: all its gradients have arrived"),
          (NodeState.DONE, "done"), (NodeState.WAITING, "waiting for gradients"),
          (NodeState.BROKEN, "where a NaN/Inf started, or where backward failed"),
          (NodeState.NEW, "recorded by the forward operation that just ran")]


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
        for state, what in LEGEND:
            glyph, style = GLYPHS[state]
            legend.append(f"  {glyph} ", style)
            legend.append(f"{what}\n")
        legend.append("  |g out|", "green")
        legend.append(" the largest gradient a node sent on (a parameter's: "
                      "|grad|, its .grad);\n  the inspector shows what came in, |g in|, "
                      "and each edge's |g out|\n")
        with VerticalScroll(id="help"):
            yield Static(Text.assemble(("gradviz: PyTorch's backward, one node at a time", "bold"),
                                       ("   escape closes, ↑ ↓ scroll", "grey50")))
            yield Static(keys)
            yield Static(legend)
