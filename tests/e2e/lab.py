"""A throwaway JupyterLab on localhost and a headless Chromium driving it (no internet).

JupyterLab runs with no token, its own config, runtime and data folders, no news
and no update checks; the page is driven through ``window.jupyterapp`` (exposed with
``--LabApp.expose_app_in_browser``). Panel's terminal draws with xterm.js on a
canvas, so the page's text is read from xterm's own buffer, found through BokehJS
(``Bokeh.index`` -> a view with ``term``).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1400,1200")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def jupyter_lab(root: Path, timeout: float = 90):
    """Yield the base URL of a JupyterLab serving ``root``; its kernels end with it."""
    port = free_port()
    config = root / ".jupyter-config"
    (config / "labconfig").mkdir(parents=True, exist_ok=True)
    # no "get Jupyter news?" toast over the outputs
    (config / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    log = open(root / "jupyterlab.log", "w")
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
               "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=",
               "--ServerApp.password=", "--allow-root", "--LabApp.extension_manager=readonly",
               f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
               "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    env = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}
    env.update(JUPYTER_CONFIG_DIR=str(config), JUPYTER_RUNTIME_DIR=str(root / ".jupyter-runtime"),
               JUPYTER_DATA_DIR=str(root / ".jupyter-data"))
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
                               start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("jupyter lab did not start:\n"
                                   + (root / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the server and its kernels (its group)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@contextlib.contextmanager
def chromium(profile: Path):
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in CHROMIUM_ARGS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the last call (Chrome's performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


# In the page: find the apps' terminals, read their screens, time keys against paints.
HELPERS = r"""
const gv = window.__gv = window.__gv || {recs: {}, poll: null};
gv.now = () => performance.timeOrigin + performance.now();   // wall clock, ms
gv.views = function () {
  const found = [];
  if (!window.Bokeh || !Bokeh.index) return found;
  const roots = Bokeh.index.roots ? [...Bokeh.index.roots] : Object.values(Bokeh.index);
  const walk = (v) => {
    if (!v) return;
    if (v.term && v.term.buffer) found.push(v);
    for (const c of (v.child_views || [])) walk(c);
  };
  roots.forEach(walk);
  return found;
};
gv.cellOf = function (view) {
  const cell = view.el.closest('.jp-Cell');
  return [...gv.panel.content.node.querySelectorAll('.jp-Cell')].indexOf(cell);
};
gv.lines = function (term) {
  const b = term.buffer.active, out = [];
  for (let i = 0; i < term.rows; i++) {
    const line = b.getLine(b.viewportY + i);
    out.push(line ? line.translateToString(true) : '');
  }
  return out;
};
gv.status = function (term) {
  const line = gv.lines(term).find(l => /step \d+\/\d+/.test(l));
  return line ? line.trim() : null;
};
gv.track = function () {
  for (const v of gv.views()) {
    const id = v.model.id;
    if (gv.recs[id]) { gv.recs[id].check('poll'); continue; }
    const rec = gv.recs[id] = {id, seen: gv.now(), first: null, keys: [], changes: [], last: null};
    // xterm paints only while on screen: onRender is the paint; the 5 ms poll reads the
    // buffer of a terminal scrolled out of view
    rec.check = (via) => {
      const s = gv.status(v.term);
      if (s !== rec.last) { rec.last = s; rec.changes.push({t: gv.now(), s, via}); }
      if (rec.first === null && s) rec.first = gv.now();
    };
    v.term.onData(d => rec.keys.push({t: gv.now(), d}));
    v.term.onRender(() => rec.check('render'));
    rec.check('poll');
  }
};
gv.start = function () {
  gv.panel = jupyterapp.shell.currentWidget;
  if (!gv.poll) gv.poll = setInterval(gv.track, 5);
};
gv.summary = function () {
  return gv.views().map(v => ({id: v.model.id, cell: gv.cellOf(v), cols: v.term.cols,
    rows: v.term.rows, status: gv.status(v.term),
    rec: gv.recs[v.model.id] ? Object.fromEntries(Object.entries(gv.recs[v.model.id])
                                 .filter(([k]) => k !== 'check')) : null}));
};
gv.focus = function (cell) {
  const v = gv.views().find(v => gv.cellOf(v) === cell);
  v.el.scrollIntoView({block: 'center'});
  v.term.focus();
};
gv.screen = function (cell) {
  const v = gv.views().find(v => gv.cellOf(v) === cell);
  return v ? gv.lines(v.term).join('\n') : null;
};
"""

# Runs code in the notebook's kernel (not in a cell); its stdout comes back in the
# execute reply (user_expressions): iopub stream messages are not ordered with it.
EXEC_JS = """
const [code, done] = arguments;
const kernel = window.__gv.panel.sessionContext.session.kernel;
const future = kernel.requestExecute({code, store_history: false, silent: false,
                                      user_expressions: {out: '__gv_out.getvalue()'}});
future.done.then((reply) => {
  const c = reply.content;
  if (c.status !== 'ok') return done({error: c.ename + ': ' + c.evalue});
  const out = c.user_expressions.out;
  done(out.status === 'ok' ? {repr: out.data['text/plain']} : {error: out.ename + ': ' + out.evalue});
}, (e) => done({error: String(e)}));
"""
WRAP = """import io as __gv_io, contextlib as __gv_cl
__gv_out = __gv_io.StringIO()
with __gv_cl.redirect_stdout(__gv_out):
    exec(compile({code!r}, "<browser test>", "exec"), globals())
"""

KERNEL_IDLE = """const a = window.jupyterapp, w = a && a.shell.currentWidget;
const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
return !!(k && k.status === 'idle' && w.content && w.content.widgets.length > 0)"""

ALL_RUN = """const ws = window.__gv.panel.content.widgets;
const k = window.__gv.panel.sessionContext.session.kernel;
return ws.every(w => w.model.type !== 'code' || w.model.executionCount) && k.status === 'idle'"""


class Page:
    """The notebook page: run cells, run code in its kernel, find and press its apps."""

    def __init__(self, driver) -> None:
        self.driver = driver

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    def wait(self, predicate, timeout: float, what: str, every: float = 0.05):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(every)

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.wait(lambda: self.js(KERNEL_IDLE), 120, "JupyterLab and an idle kernel", 0.2)
        self.js(HELPERS + "window.__gv.start()")

    def run_all(self, timeout: float = 240) -> None:
        self.js("return jupyterapp.commands.execute('notebook:run-all-cells')")
        self.wait(lambda: self.js(ALL_RUN), timeout, "every cell to run", 0.2)

    def kernel(self, code: str, timeout: float = 60) -> str:
        """Run ``code`` in the notebook's kernel; its stdout."""
        self.driver.set_script_timeout(timeout)
        result = self.driver.execute_async_script(EXEC_JS, WRAP.format(code=code))
        if "error" in result:
            raise AssertionError(f"the kernel: {result['error']} (running {code!r})")
        return ast.literal_eval(result["repr"])

    def terms(self) -> list[dict]:
        return self.js("return window.__gv.summary()")

    def term(self, cell: int) -> dict | None:
        return next((t for t in self.terms() if t["cell"] == cell), None)

    def screen(self, cell: int) -> str:
        return self.js("return window.__gv.screen(arguments[0])", cell) or ""

    def outputs(self) -> list[str]:
        """Each cell's text output, from the notebook's model (an off-screen cell's DOM
        text is empty)."""
        return self.js("""return window.__gv.panel.content.widgets.map(w => !w.model.outputs ? '' :
            w.model.outputs.toJSON().map(o => o.output_type === 'stream' ? [].concat(o.text).join('')
              : ((o.data || {})['text/plain'] ? [].concat(o.data['text/plain']).join('') : '')).join(''))""")

    def press(self, cell: int, keys: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        self.js("window.__gv.focus(arguments[0])", cell)
        ActionChains(self.driver).send_keys(keys).perform()

    def command(self, cell: int, command: str) -> None:
        self.js("window.__gv.panel.content.activeCellIndex = arguments[0];"
                "return jupyterapp.commands.execute(arguments[1])", cell, command)
