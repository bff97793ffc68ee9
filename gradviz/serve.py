"""``gradviz serve``: the app in a web browser, through textual-serve (an entry point).

Every browser tab that opens the page runs its own ``gradviz demo``/``open`` process.
Made for a classroom, which may have no internet and whose network is shared:

* **no outside host**: textual-serve's page loads its font from Google Fonts; ours
  (``gradviz/web/app_index.html``, textual-serve's template otherwise) declares the
  same Roboto Mono from the font files textual-serve's own wheel ships, served by its
  static route. Everything the page asks for comes from this server.
* **fails before it serves**: the scenario is built, and its first forward run, here
  first; one that cannot load is one line and exit 1, not a page that shows the
  error to each student.
* **serves what it was asked to**: the tabs' apps open the scenario named here and
  the built-in demos, nothing else; the picker's path input (any ``.py`` file on
  this machine's disk, run as code) only with ``--allow-files``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from gradviz.errors import GradvizError, ScenarioError

#: The page template: textual-serve's, with the font served locally.
TEMPLATES = Path(__file__).with_name("web")


def app_command(scenario: str | None, *, weights: str | None = None,
                allow_files: bool = False) -> list[str]:
    """The command each browser tab runs: ``gradviz demo|open ...`` in this Python."""
    from gradviz.model.catalog import BUILTIN_NAMES

    command = [sys.executable, "-m", "gradviz.cli"]
    if scenario in BUILTIN_NAMES:
        command += ["demo", scenario]
    elif scenario is not None:
        path = Path(scenario).expanduser()
        if not path.is_file():
            raise ScenarioError(f"{scenario}: no such scenario file or built-in demo "
                                "(gradviz list)")
        command += ["open", str(path.resolve())]
    if weights is not None:
        command += ["--weights", str(Path(weights).expanduser().resolve())]
    if not allow_files:
        command.append("--no-files")
    return command


def check_loads(scenario: str, weights: str | None = None) -> None:
    """Build the scenario and run its first forward, as each tab's app will: a
    ScenarioError (one line) if it cannot."""
    from gradviz.session.session import Session

    session = Session.load(scenario, weights=weights)
    session.close()


def serve(scenario: str | None, *, host: str, port: int, public_url: str | None = None,
          weights: str | None = None, allow_files: bool = False, debug: bool = False) -> None:
    """Serve the app until interrupted (see the module's docstring)."""
    command = app_command(scenario, weights=weights, allow_files=allow_files)
    try:
        from textual_serve.server import Server
    except ImportError as error:
        raise GradvizError("gradviz serve needs textual-serve: pip install textual-serve"
                           ) from error
    if scenario is not None:
        check_loads(scenario, weights)
    title = f"gradviz {scenario}" if scenario else "gradviz"
    server = Server(shlex.join(command), host=host, port=port, title=title,
                    public_url=public_url, templates_path=TEMPLATES)
    try:
        server.serve(debug=debug)
    except OSError as error:  # the port is taken, the address is not ours
        raise GradvizError(f"cannot serve on {host}:{port}: {error.strerror or error}"
                           ) from error
