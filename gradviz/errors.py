"""One family of user-facing errors, each a single line that says what to do.

The CLI prints ``str(error)`` and exits 1; tracebacks only with ``--debug``.
"""


class GradvizError(Exception):
    """Base of every error gradviz raises for a user's mistake."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows instead of the traceback: one line in a notebook too
        (``%debug`` and ``sys.last_exc`` still have the whole of it)."""
        return [f"{type(self).__name__}: {self}"]


class GraphError(GradvizError, ValueError):
    """The roots given to :func:`gradviz.build_graph` have no autograd graph to walk."""


class ScenarioError(GradvizError):
    """A scenario (built-in or file) could not be loaded, built or run."""


class ExportError(GradvizError):
    """A graph could not be written where the user asked."""


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``: how a user's own exception is quoted."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
