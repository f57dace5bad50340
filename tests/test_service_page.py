"""The live status page in headless Chromium (Debian's, as the report test uses), driven over
the DevTools protocol: it renders the lab, it updates in place when the lab changes, and an
observer's page has no write controls while an admin's has them and the audit log."""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import subprocess
import time
import urllib.request

import pytest
from test_service_harness import make_keys, start

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(.ci/run installs it)")
ERRORS_HOOK = ("window.__errors = []; addEventListener('error', e => "
               "window.__errors.push(String(e.message)));")


class Browser:
    """One headless Chromium page, spoken to over the DevTools websocket."""

    def __init__(self, profile):
        from websockets.sync.client import connect

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--remote-debugging-port=0", f"--user-data-dir={profile}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.stack = contextlib.ExitStack()
        self.stack.callback(self._stop_chromium)
        try:
            self._connect(profile, connect)
        except BaseException:
            self.stack.close()
            raise

    def _stop_chromium(self):
        self.proc.terminate()
        self.proc.wait(30)

    def _connect(self, profile, connect):
        port_file = profile / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < end and self.proc.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = self.stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        self.ids = itertools.count(1)
        self.send("Page.enable")
        self.send("Page.addScriptToEvaluateOnNewDocument", source=ERRORS_HOOK)

    def send(self, method, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == msg_id:
                assert "error" not in reply, reply
                return reply.get("result", {})

    def js(self, expression, tolerate=False):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            assert tolerate, f"{expression}: {result['result'].get('description')}"
            return None
        return result["result"].get("value")

    def open(self, url):
        self.send("Page.navigate", url=url)

    def until(self, expression, timeout_s=60.0):
        end = time.monotonic() + timeout_s
        while True:
            value = self.js(expression, tolerate=True)  # not drawn yet
            if value:
                return value
            assert time.monotonic() < end, (
                f"never true in the page: {expression}; page: " + str(self.js(
                    "JSON.stringify({u: document.body.dataset.updates, s: document.getElementById"
                    "('summary').textContent, e: window.__errors, jobs: document.querySelector("
                    "'#jobs tbody').textContent.slice(0, 300)})", tolerate=True)))
            time.sleep(0.1)

    def close(self):
        self.stack.close()


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    data = tmp_path_factory.mktemp("page-data")
    svc = start(data, "--pace", "0", "--maintain-every", "0", keys=make_keys(data))
    yield svc
    svc.stop()


def test_page_renders_and_updates_in_place_when_the_lab_changes(served, browser):
    browser.open(f"{served.url}/#key={served.keys['admin']}")
    browser.until("document.body.dataset.updates >= 1 && "
                  "document.querySelectorAll('#network [data-node]').length === 2")
    assert browser.js("document.querySelectorAll('#network [data-link]').length") == 1
    assert browser.js("document.querySelectorAll('#network [data-herald]').length") == 1
    assert browser.js("document.querySelectorAll('#calibration [data-cal]').length") == 13
    assert browser.js("[...document.querySelectorAll('#calibration [data-cal]')]"
                      ".every(c => c.dataset.state === 'stale')")  # never calibrated
    assert browser.js("document.querySelector('#network [data-link]').dataset.state") == "stale"
    assert "mK" in browser.js("document.querySelector('[data-mxc=alice]').textContent")
    assert browser.js("location.hash") == ""  # the key left the address bar
    browser.js("window.__same_page = 42")

    with served.client("operator") as c:
        job = c.post("/api/requests", json={"link": "ab", "pairs": 50}).json()
        browser.until(f"!!document.querySelector('#jobs [data-job=\"{job['id']}\"].done')")
        cal = c.post("/api/jobs", json={"kind": "calibrate", "params": {}}).json()
    browser.until(f"!!document.querySelector('#jobs [data-job=\"{cal['id']}\"].done')", 120)
    browser.until("[...document.querySelectorAll('#calibration [data-cal]')]"
                  ".every(c => c.dataset.state === 'fresh')")
    assert browser.js("document.querySelector('#network [data-link]').dataset.state") == "fresh"
    assert browser.js("window.__same_page") == 42  # updated live, never reloaded
    browser.until("document.querySelectorAll('#rate-chart polyline').length === 1")
    browser.until("document.querySelectorAll('#audit [data-audit]').length >= 2")
    assert browser.js("document.querySelectorAll('[data-write]').length") >= 3
    assert browser.js("window.__errors") == []


@pytest.mark.parametrize("who", ["observer", None])
def test_observer_page_has_no_write_controls(served, browser, who):
    key = f"#key={served.keys[who]}" if who else ""
    browser.open(f"{served.url}/{key}")
    browser.until("document.body.dataset.updates >= 1 && document.body.dataset.role")
    browser.until("document.querySelectorAll('#network [data-node]').length === 2")
    assert browser.js("document.body.dataset.role") == (who or "anonymous")
    assert browser.js("document.querySelectorAll('[data-write], form').length") == 0
    assert browser.js("document.getElementById('controls').hidden") is True
    assert browser.js("document.getElementById('audit-section').hidden") is True
    assert browser.js("document.querySelectorAll('#audit [data-audit]').length") == 0
    assert browser.js("window.__errors") == []
