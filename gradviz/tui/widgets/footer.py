"""The footer of keys, kept true while the app does not have the focus."""

from __future__ import annotations

from textual.screen import Screen
from textual.widgets import Footer


class KeysFooter(Footer):
    """Textual's Footer, redrawn when the keys change even while the app is blurred.

    Textual's own skips redrawing while the app lacks the focus. In a browser
    (``gradviz serve``, a notebook cell) the app starts without it until the first
    click: the footer kept the keys of the loading screen (``p open ? help q quit``)
    over a loaded scenario whose keys all worked, for as long as nobody clicked.
    """

    def bindings_changed(self, screen: Screen) -> None:
        self._bindings_ready = True
        if self.is_attached and screen is self.screen:
            self.call_after_refresh(self.recompose)
