"""The scenario picker: a built-in demo, or the path of a scenario file."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option


class PickerScreen(ModalScreen[str | None]):
    """Choose a built-in demo, or type the path of a scenario file (tab reaches it).

    Without ``files`` (under ``gradviz serve``) there is no path input: the list is all.
    """

    BINDINGS = [Binding("escape", "dismiss(None)", "close")]
    AUTO_FOCUS = "#demos"

    def __init__(self, scenarios: list[tuple[str, str]], *, files: bool = True) -> None:
        super().__init__()
        self.scenarios = scenarios
        self.files = files

    def compose(self) -> ComposeResult:
        with Vertical(id="picker"):
            yield Label(Text("gradviz: choose a scenario (enter)"
                             + (", or tab to type a file's path" if self.files else ""), "bold"))
            yield OptionList(*[Option(Text.assemble((name, "bold cyan"), "\n  ",
                                                    (description, "grey70")), id=name)
                               for name, description in self.scenarios], id="demos")
            if self.files:
                yield Label("or open a scenario file (.py defining build()):")
                yield Input(placeholder="path/to/scenario.py", id="path")
            yield Label(Text("escape closes", "grey50"))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.value.strip():
            self.dismiss(event.value.strip())
