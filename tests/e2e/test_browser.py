"""`gradviz serve` in a real headless Chromium: the page loads the app, a key steps it, the text shows it.

Everything the page asks for comes from the server (a classroom may have no
internet), and the footer shows the scenario's keys before anyone clicks the page.

textual-serve draws the terminal with xterm.js on a canvas, so the page's text is
read from xterm's own buffer (its public ``buffer.active`` API): a script added
before the page's own catches the Terminal when textual-serve's client stores it.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")

# Runs before textual-serve's script: keep the xterm Terminal its client assigns to `terminal`.
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    Object.defineProperty(this, "terminal",
                          {value, writable: true, configurable: true, enumerable: true});
    if (value && value.buffer) (window.__gradvizTerminals ||= []).push(value);
  },
});
"""

READ_TERMINAL = """
const terminal = (window.__gradvizTerminals || [])[0];
if (!terminal) return null;
const buffer = terminal.buffer.active;
const lines = [];
for (let y = 0; y < buffer.length; y++) lines.push(buffer.getLine(y).translateToString(true));
return lines.join("\\n");
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def server():
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gradviz.cli", "serve", "--port", str(port), "autograd-basics"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"

    def up():
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return process.poll() is not None and pytest.fail(
                f"gradviz serve exited:\n{process.stdout.read().decode()}")

    try:
        wait_until(up, 60, f"gradviz serve on {url}")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and the app it started per tab
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    options = webdriver.ChromeOptions()
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options,
                              service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                               {"source": CATCH_TERMINAL})
        yield driver
    finally:
        driver.quit()


@needs_chromium
@pytest.mark.timeout(420)
def test_the_served_app_steps_in_a_browser(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server)
    text = lambda: browser.execute_script(READ_TERMINAL) or ""  # noqa: E731
    screen = wait_until(lambda: "step 0/6" in text() and text(), 180,
                        "the app's first screen (step 0/6) in the page")
    assert "autograd-basics" in screen
    # Before any click (the page has no focus): the footer has the loaded scenario's keys
    footer = wait_until(lambda: "n step" in text() and text(), 30, "the scenario's keys")
    assert "c continue" in footer.splitlines()[-1] or "c continue" in footer
    requested = [json.loads(entry["message"])["message"]["params"]["request"]["url"]
                 for entry in browser.get_log("performance")
                 if '"Network.requestWillBeSent"' in entry["message"]]
    assert any(url.endswith("fonts/RobotoMono-VariableFont_wght.ttf") for url in requested)
    assert [url for url in requested if not url.startswith((server, server.replace("http", "ws"),
                                                            "data:", "chrome:"))] == []
    browser.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea").send_keys("n")
    screen = wait_until(lambda: "step 1/6" in text() and text(), 60,
                        "step 1/6 after pressing n")
    assert "SubBackward0" in screen  # the root node ran first
    shot = tmp_path / "gradviz-serve.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.parametrize("argv, code, message", [
    (["serve", "no-such-demo"], 1, "no-such-demo: no such scenario file or built-in demo"),
    (["serve", "--port", "0"], 2, "must be a port number from 1 to 65535"),
])
def test_serve_says_what_is_wrong_in_one_line(argv, code, message):
    result = subprocess.run([sys.executable, "-m", "gradviz.cli", *argv], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_scenario_that_cannot_load_before_serving(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def build(:\n    pass\n")
    port = free_port()
    result = subprocess.run([sys.executable, "-m", "gradviz.cli", "serve", "--port", str(port),
                             str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("gradviz: error: ")
    assert "broken.py:1: syntax error" in result.stderr
    with socket.socket() as probe:  # and nothing listens: it never served
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_the_served_page_and_its_font_come_from_gradviz():
    from gradviz.serve import TEMPLATES, app_command

    page = (TEMPLATES / "app_index.html").read_text()
    assert "googleapis" not in page and "https://" not in page
    assert "fonts/RobotoMono-VariableFont_wght.ttf" in page
    import textual_serve

    fonts = os.path.join(os.path.dirname(textual_serve.__file__), "static", "fonts")
    assert os.path.isfile(os.path.join(fonts, "RobotoMono-VariableFont_wght.ttf"))
    assert app_command("autograd-basics")[-3:] == ["demo", "autograd-basics", "--no-files"]
    assert "--no-files" not in app_command(None, allow_files=True)


def test_serve_says_when_its_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "gradviz.cli", "serve", "--port", str(port), "autograd-basics"],
            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"gradviz: error: cannot serve on 127.0.0.1:{port}" in result.stderr
