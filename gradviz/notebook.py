"""The live app in a Jupyter cell's output (an entry point, like cli.py and show.py).

:func:`show_app` displays a Textual app in the current cell's output and returns at
once; ``gradviz.show`` calls it in a notebook. Keys and the mouse reach the app, the
kernel stays free for the next cell, several apps each run on their own, and an app
ends with its output (cleared, its cell re-run, the notebook closed) or with ``q``.

Why HoloViz Panel's ``Textual`` pane: it is the one maintained bridge from a Textual
app to a notebook cell. It draws with xterm.js (shipped inside Panel, so nothing is
fetched from the internet), syncs it over the kernel's own comms, and runs the app as
tasks on the kernel's asyncio loop: the app sees the user's live tensors, which
textual-serve (a subprocess per browser tab, behind a port) never could, and it needs
no port the browser must reach (JupyterHub, a remote kernel). ipywidgets would mean
writing and bundling the terminal widget ourselves.

What this adds to ``pn.pane.Textual`` (the same code in Panel 1.9.4 and 1.10):

* **one thread**: JupyterLab >= 4.4 sends comm messages to kernel *subshells*
  (``commsOverSubshells``; ipykernel 7 runs each on its own thread and loop), so
  Panel would apply the page's patches, and start the app, on a subshell's thread
  while the kernel's main thread writes the same Bokeh document; and pyviz_comms
  swaps the process-wide ``sys.stdout`` while it handles each message, so a cell's
  ``print`` could vanish meanwhile. Every comm message of our views is handed to the
  kernel's main loop and handled there, without the swap;
* **no 50 ms wait per key**: Panel's page-side CommManager debounces each event by
  50 ms; ours by 0 (its acknowledgements still keep the keys in order);
* **no echo**: the page sends every ``output`` chunk the kernel wrote back to the
  kernel (Panel's CommManager forwards the patches it applied); dropped for our views;
* **starts when measured**: the app starts once the page has measured its terminal,
  never at 0x0, and never where no page shows the output (nbclient, nbconvert):
  nothing runs, nothing waits for keys;
* **closes with its output**: JupyterLab 4 with @pyviz/jupyterlab_pyviz never sends
  Panel's own ``delete``, and the pane stops an app only when a *server* session
  ends; a small page script tells the kernel when our view is removed, and the app
  exits (gradviz's ``on_unmount`` stops its engine and joins its thread);
* **bounded memory**: Panel's ``Terminal.write`` appends every frame to
  ``Terminal.output`` forever, copying it on each write; ours keeps the last chunk;
* **offline**: Panel's notebook JS (Bokeh, Panel, xterm.js) is published inline once
  per kernel, and on Panel < 1.10 with a fix for its inline bundle, which is a
  SyntaxError with the terminal extension;
* the mouse and the alternate screen are switched on at the start (Panel's driver
  does it on the first *resize*, which never comes when the size was right at once).

Known limit: the app shares the kernel's loop, so it freezes while another cell runs
(its keys wait, in order, and arrive when the cell ends).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
import time
import weakref
from typing import Any

from gradviz.errors import GradvizError
from gradviz.runtime.where import Place, kernel_shell
from gradviz.runtime.where import where as _where

__all__ = ["where", "show_app", "NotebookApp", "live_apps", "close_all"]

#: The terminal's height in pixels; its width follows the cell. 640 px is 35 rows of
#: xterm's 18 px cells: above the app's narrow layout (under 100 columns or 30 rows).
DEFAULT_HEIGHT = 640
#: Marks our terminals for the page script.
CSS_CLASS = "gradviz-app"
#: The kernel-side comm target a removed view opens (see _PAGE_JS).
COMM_TARGET = "gradviz-notebook"


def where() -> Place | None:
    """``"notebook"`` in a Jupyter kernel, ``"terminal"`` with one, else None
    (see :mod:`gradviz.runtime.where`)."""
    return _where()


# --------------------------------------------------------------------- Panel's JS
_extension_loaded = False


def _load_extension() -> None:
    """Publish Panel's notebook JS inline, once per kernel: 3.3 MB in this cell's output,
    no CDN, so a classroom without internet (or a notebook opened offline) works."""
    global _extension_loaded
    if _extension_loaded:
        return
    import panel as pn

    _fix_inline_indent(pn)
    # No BrowserInfo model: its comm is Panel's own, whose handler swaps the process-wide
    # sys.stdout for a StringIO while it runs (on a subshell's thread): a cell's print()
    # at that moment was lost.
    pn.config.browser_info = False
    pn.extension("terminal", inline=True)
    _extension_loaded = True


def _split_on_newlines_only(text, width=4, first=False, blank=False):
    pad = " " * width if isinstance(width, int) else str(width)
    return (pad if first else "") + str(text).replace("\n", "\n" + pad)


def _fix_inline_indent(pn) -> None:
    """Panel < 1.10 inlines each JS file through Jinja's ``indent`` filter, which splits on
    everything ``str.splitlines`` does: xterm.js's one-character string literals
    "\\x1c", "\\x1d", "\\x1e" became line breaks, the bundle a SyntaxError, and neither
    Bokeh nor Panel loaded. Panel 1.10 dropped the filter there."""
    if _release(pn.__version__) >= (1, 10):
        return
    import panel.io.notebook as notebook

    notebook._env.filters["indent"] = _split_on_newlines_only


def _release(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


# Once per page (idempotent; displayed with each app, so a reloaded page gets it too):
# * a view of ours carries data-lm-suppress-shortcuts (JupyterLab's notebook shortcuts
#   stay off while a key goes to the app);
# * its removal (cleared output, re-run or deleted cell, closed notebook) opens a comm
#   to COMM_TARGET: @pyviz/jupyterlab_pyviz deletes PyViz.kernels[id] and clears the
#   Bokeh document *before* the view's remove() runs, so the kernel is taken at render;
# * Panel's CommManager no longer echoes our terminals' output back to the kernel.
_PAGE_JS = r"""
(function () {
  const CLASS = %(css)s, TARGET = %(target)s;
  const ours = (v) => v && v.model && (v.model.css_classes || []).includes(CLASS);
  const guard = (v) => {
    if (!ours(v) || !v.el) return;
    v.el.setAttribute('data-lm-suppress-shortcuts', 'true');
    const kernels = window.PyViz && window.PyViz.kernels;
    if (!v.__gvKernel && kernels) v.__gvKernel = kernels[v.model.id] || null;
  };
  const model = (B, name) => { try { return B.Models.get(name); } catch (e) { return null; } };
  function patch() {
    const B = window.Bokeh;
    const Terminal = B && B.Models && model(B, 'panel.models.terminal.Terminal');
    const Manager = B && B.Models && model(B, 'panel.models.comm_manager.CommManager');
    const View = Terminal && Terminal.prototype.default_view;
    if (!View || !Manager) return false;
    if (!View.prototype.__gradviz) {
      View.prototype.__gradviz = true;
      const render = View.prototype.render;
      View.prototype.render = function () { render.apply(this, arguments); guard(this); };
      const remove = View.prototype.remove;
      View.prototype.remove = function () {
        if (ours(this) && this.__gvKernel) {
          try { this.__gvKernel.connectToComm(TARGET).open({removed: this.model.id}); }
          catch (e) { console.warn('gradviz: could not tell the kernel', e); }
        }
        return remove.apply(this, arguments);
      };
      const changed = Manager.prototype._document_changed;
      Manager.prototype._document_changed = function (event) {
        if (event && event.attr === 'output' && event.model instanceof Terminal &&
            (event.model.css_classes || []).includes(CLASS)) return;  // the kernel wrote it
        return changed.apply(this, arguments);
      };
    }
    const walk = (v) => { if (!v) return; guard(v); (v.child_views || []).forEach(walk); };
    if (B.index && B.index.roots) [...B.index.roots].forEach(walk);
    return true;
  }
  if (!patch()) {
    let tries = 0;
    const timer = setInterval(() => { if (patch() || ++tries > 1200) clearInterval(timer); }, 50);
  }
})();
"""


# --------------------------------------------------------------------- the kernel's thread
class _KernelThread:
    """The kernel's main thread and loop (where cells run); hands work to it from others."""

    def __init__(self) -> None:
        try:
            self.loop = asyncio.get_running_loop()  # in a cell: the kernel's own loop
        except RuntimeError:
            self.loop = asyncio.get_event_loop()
        self.ident = threading.get_ident()

    def here(self) -> bool:
        return threading.get_ident() == self.ident

    def call(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the kernel's thread: now if here, else soon."""
        if self.here():
            fn(*args)
        else:
            self.loop.call_soon_threadsafe(fn, *args)


_kernel: _KernelThread | None = None
_live: weakref.WeakSet = weakref.WeakSet()
_target_registered = False


def _register_comm_target(shell) -> None:
    """The page script opens a comm to COMM_TARGET when one of our views is removed."""
    global _target_registered
    if _target_registered:
        return

    def opened(comm, message):  # on whichever thread the kernel hands comm_open to
        removed = (message.get("content", {}).get("data") or {}).get("removed")
        for handle in list(_live):
            if removed in handle.pane._models:
                _kernel.call(handle.pane.view_removed, removed)
        comm.close()

    shell.kernel.comm_manager.register_target(COMM_TARGET, opened)
    _target_registered = True


def _handle_on_kernel_thread(client_comm, message) -> None:
    """pyviz_comms' ``Comm._handle_msg`` without its stdout swap, on the kernel's thread.

    The page's CommManager sends its next events only after this acknowledgement, so
    keys that arrive while a cell runs wait, in order, and are not lost."""

    def run() -> None:
        comm_id = None
        try:
            decoded = client_comm.decode(message)
            comm_id = decoded.pop("comm_id", None)
            if client_comm._on_msg:
                client_comm._on_msg(decoded)
            reply = {"msg_type": "Ready", "content": ""}
        except Exception as error:  # Panel's own handler reports its errors the same way
            try:
                client_comm._on_error(error)
            except Exception:
                pass
            reply = {"msg_type": "Error", "traceback": f"{type(error).__name__}: {error}"}
        if comm_id:
            reply["comm_id"] = comm_id
        client_comm.send(metadata=reply)

    _kernel.call(run)


# --------------------------------------------------------------------- the pane
@functools.lru_cache(maxsize=None)
def _pane_class():
    """Panel is imported only when a notebook shows an app (its import takes 2 s)."""
    import panel as pn
    from panel.config import config
    from panel.io.notebook import render_mimebundle
    from panel.io.state import state
    from panel.pane._textual import PanelDriver

    class QuietTerminal(pn.widgets.Terminal):
        """Panel's Terminal without its ever-growing copy of every frame in ``output``."""

        def __init__(self, *args, **params):
            super().__init__(*args, **params)
            self.written = 0  # characters written, for the tests
            self.trace: list | None = None  # [(time.time(), "key"|"write", ...)] when a list

        def write(self, data):
            text = data.decode("utf8") if isinstance(data, bytes) else str(data)
            if self._output == text:  # Panel's own trick to send an identical chunk again
                self._output = ""
            self._output = text
            self.written += len(text)
            if self.trace is not None:
                self.trace.append((time.time(), "write", len(text)))
            return len(text)

        def _process_event(self, event):
            if self.trace is not None:
                self.trace.append((time.time(), "key", event.key))
            super()._process_event(event)

    class Driver(PanelDriver):
        def start_application_mode(self):
            super().start_application_mode()
            self._resize()  # Panel's driver does this on the first resize only

    class AppPane(pn.pane.Textual):
        """``pn.pane.Textual`` on the kernel's thread, started when measured, closed with
        its last view (see the module's docstring)."""

        def __init__(self, object=None, **params):
            params["css_classes"] = [*params.get("css_classes", []), CSS_CLASS]
            super().__init__(object, **params)
            self._terminal = QuietTerminal(**{
                name: value for name, value in self._terminal.param.values().items()
                if name in pn.viewable.Viewable.param and name != "name"})
            self._size_watcher = None
            self._started = False
            self.on_start = None  # set by NotebookApp
            self.on_exit = None

        @pn.depends("object", watch=True, on_init=True)
        def _set_driver(self):
            super()._set_driver()
            if self.object is not None:
                self.object.driver_class = Driver

        def _render_mimebundle(self, model, doc, comm, location=None):
            # Panel's MimeRenderMixin._render_mimebundle, with the page's CommManager at
            # debounce=0 and the client comm's messages handled on the kernel's thread.
            from panel.models.comm_manager import CommManager

            ref = model.ref["id"]
            manager = CommManager(comm_id=comm.id, plot_id=ref, debounce=0)
            client_comm = state._comm_manager.get_client_comm(
                on_msg=functools.partial(self._on_msg, ref, manager),
                on_error=functools.partial(self._on_error, ref),
                on_stdout=functools.partial(self._on_stdout, ref),
                on_open=lambda _: comm.init())
            # pyviz_comms binds the handler when the page opens the comm: in time
            client_comm._handle_msg = functools.partial(_handle_on_kernel_thread, client_comm)
            self._comms[ref] = (comm, client_comm)
            manager.client_comm_id = client_comm.id
            return render_mimebundle(model, doc, comm, manager, location,
                                     resources="inline" if config.inline else "cdn")

        def _init_app(self, comm):
            if self.object is None or self._started:
                return
            if self._terminal.ncols > 0 and self._terminal.nrows > 0:
                self._start()
            elif self._size_watcher is None:  # wait for the page to measure it
                self._size_watcher = self._terminal.param.watch(self._sized, ["ncols", "nrows"])

        def _sized(self, *events):
            if self._terminal.ncols > 0 and self._terminal.nrows > 0:
                _kernel.call(self._start)

        def _start(self):
            if self._started:
                return
            self._started = True
            self._unwatch_size()
            if self.on_start is not None:
                self.on_start()
            task = _kernel.loop.create_task(self._run_app())
            task.add_done_callback(self._ended)

        async def _run_app(self):
            # Textual's run_async sets asyncio.eager_task_factory on the running loop where
            # Python has it (>= 3.12): here the kernel's, for every task of the kernel.
            # The kernel gets its own factory back once the app has started.
            loop = asyncio.get_running_loop()
            factory = loop.get_task_factory()
            run = asyncio.ensure_future(super()._run_app())
            await asyncio.sleep(0)
            if loop.get_task_factory() is not factory:
                loop.set_task_factory(factory)
            await run

        def _unwatch_size(self):
            if self._size_watcher is not None:
                self._terminal.param.unwatch(self._size_watcher)
                self._size_watcher = None

        def _ended(self, task):
            if self.on_exit is not None:
                self.on_exit(task)

        def view_removed(self, ref):
            """The page removed our view ``ref``: the app ends with its last view."""
            if ref in self._models:
                model, _ = self._models[ref]
                self._cleanup(model)
            elif not self._models:
                self.stop()

        def _cleanup(self, root=None):
            super()._cleanup(root)
            if not self._models:
                self.stop()

        def stop(self):
            if not _kernel.here():
                _kernel.call(self.stop)
                return
            app = self.object
            if app is None:
                return
            self._unwatch_size()
            if self._started and app.is_running:
                app.exit()
            elif not self._started:
                self._started = True  # never start it now
                _shut_down_unstarted(app)
                if self.on_exit is not None:
                    self.on_exit(None)

    return AppPane


def _shut_down_unstarted(app) -> None:
    """An app that never ran has still made its engine thread (gradviz's, in __init__)."""
    shut_down = getattr(app, "shut_down", None)
    if shut_down is not None:
        shut_down()


class NotebookApp:
    """What :func:`show_app` returns: the app, ``close()``, and whether it runs.

    It displays nothing itself (``_ipython_display_`` is empty), so a cell that ends
    in ``gradviz.show(loss)`` shows the app once.
    """

    def __init__(self, app, pane) -> None:
        self.app = app
        self.pane = pane
        self.started_at: float | None = None  # time.time() when the page measured it
        self.exited = threading.Event()
        self.error: BaseException | None = None
        pane.on_start = self._started
        pane.on_exit = self._exited

    def _started(self) -> None:
        self.started_at = time.time()

    def _exited(self, task) -> None:
        if task is not None and not task.cancelled() and task.exception() is not None:
            self.error = task.exception()
        self.exited.set()
        _live.discard(self)
        try:
            self.pane._terminal.write("\x1b[2J\x1b[H\x1b[90m(the app has closed)\x1b[0m\r\n")
        except Exception:  # the page is gone already
            pass

    @property
    def running(self) -> bool:
        return self.app.is_running

    @property
    def started(self) -> bool:
        return self.started_at is not None

    def close(self) -> None:
        """End the app, as ``q`` would: its engine stops and its thread is joined."""
        self.pane.stop()

    def _ipython_display_(self) -> None:  # the app is shown already
        pass

    def __repr__(self) -> str:
        state = ("closed" if self.exited.is_set() else "running" if self.running
                 else "waiting for a page to show it")
        return f"<gradviz app in a notebook cell: {state}>"


def show_app(app, *, height: int = DEFAULT_HEIGHT) -> NotebookApp:
    """Show the Textual ``app`` in this cell's output and return at once.

    Call it from a cell (the kernel's main thread). The app starts when a page has
    measured its output, and ends with ``q``, :meth:`NotebookApp.close`, or when its
    output goes (cleared, the cell run again, the notebook closed).
    """
    global _kernel
    shell = kernel_shell()
    problem = None
    if shell is None:
        problem = "show_app needs a Jupyter kernel: in a terminal, app.run() runs the app"
    elif _kernel is not None and not _kernel.here():
        problem = "show the app from a cell: this is not the kernel's main thread"
    else:
        try:
            import panel  # noqa: F401
        except ImportError:
            problem = "the app in a notebook needs Panel: pip install 'gradviz[notebook]'"
    if problem is not None:
        _shut_down_unstarted(app)  # its threads end here: it will never run
        raise GradvizError(problem)
    if _kernel is None:
        _kernel = _KernelThread()
    from IPython.display import Javascript, display

    _load_extension()
    pane = _pane_class()(app, height=height, sizing_mode="stretch_width")
    handle = NotebookApp(app, pane)
    _live.add(handle)
    _register_comm_target(shell)
    display(Javascript(_PAGE_JS % {"css": json.dumps(CSS_CLASS),
                                   "target": json.dumps(COMM_TARGET)}))
    display(pane)
    return handle


def live_apps() -> list[NotebookApp]:
    """The apps shown in this kernel that have not closed (started or waiting for a page)."""
    return [handle for handle in list(_live) if not handle.exited.is_set()]


def close_all() -> None:
    """Close every app this kernel shows (a reloaded page leaves its apps running)."""
    for handle in live_apps():
        handle.close()


def register_formatters(shell: Any | None = None) -> None:
    """Readable cell output for gradviz's objects that cannot carry their own.

    A :class:`gradviz.WatchBreak` lives in the training layer; it is registered by
    name, so that nothing is imported until one is shown.
    """
    shell = shell or kernel_shell()
    if shell is None:
        return
    html = shell.display_formatter.formatters["text/html"]
    html.for_type_by_name("gradviz.training.breaks", "WatchBreak", _break_html)
    html.for_type_by_name("gradviz.model.runs.events", "BreakInfo", _break_html)


def _break_html(brk) -> str:
    from gradviz.model.cells import break_html

    return break_html(getattr(brk, "info", brk))
