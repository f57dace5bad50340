"""The qnetlab command line through real subprocesses, and its reports in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qnetlab.stations import station_file

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def qnetlab(data: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "QNETLAB_DATA": str(data), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "qnetlab", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo")
    result = qnetlab(data, "demo", "--pairs", "1000")
    assert result.returncode == 0, result.stderr
    return data, result


def test_demo_end_to_end(demo_data):
    _data, result = demo_data
    out = result.stdout
    assert "13 nodes" in out and "(ok)" in out
    for line in ("fidelity to the heralded Bell state", "CHSH |S|", "herald rate",
                 "resonance_nm [alice]"):
        assert line in out
    fidelity = float(re.search(r"Bell state\s+([0-9.]+) \+-", out).group(1))
    assert 0.55 < fidelity < 0.85
    report = Path(re.search(r"report: (\S+)", out).group(1))
    html = report.read_text()
    assert report.is_file() and html.count("data:image/png;base64,") >= 7
    assert "Traceback" not in result.stderr


def test_calibrate_again_is_all_fresh(demo_data):
    data, _ = demo_data
    result = qnetlab(data, "calibrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" fresh ") >= 13 - 2  # the demo's entangling took lab time


def test_entangle_status_runs_and_reports(demo_data):
    data, _ = demo_data
    result = qnetlab(data, "entangle", "--pairs", "300")
    assert result.returncode == 0, result.stderr
    assert "300 pairs on ab" in result.stdout and "fidelity to the heralded Bell state" in \
        result.stdout
    status = qnetlab(data, "status")
    assert status.returncode == 0, status.stderr
    assert "fridge interlock OK" in status.stdout and "link_phase:ab" in status.stdout
    runs = qnetlab(data, "runs", "--limit", "5")
    assert runs.returncode == 0 and len(runs.stdout.splitlines()) == 6
    first = runs.stdout.splitlines()[1].split()[0]
    report = qnetlab(data, "report", first)
    assert report.returncode == 0, report.stderr
    assert Path(report.stdout.strip()).read_text().startswith("<!DOCTYPE html>")
    dash = qnetlab(data, "report", "--dashboard")
    assert dash.returncode == 0, dash.stderr
    assert "pump_cavity:alice" in Path(dash.stdout.strip()).read_text()


@pytest.mark.parametrize("args,message", [
    (("--station", "nowhere", "status"), "no such file, and not a bundled station"),
    (("demo", "--pairs", "5"), "Invalid value for '--pairs'"),
    (("entangle", "--link", "zz", "--pairs", "10"), "'zz' is not a link of"),
    (("report",), "give a RUN"),
    (("report", "999"), "error"),
    (("frobnicate",), "No such command"),
])
def test_failures_are_one_line_with_a_nonzero_exit(tmp_path, args, message):
    result = qnetlab(tmp_path, *args)
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("qnetlab:")]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_station_file_names_file_and_entry(tmp_path):
    path = tmp_path / "broken.station.yaml"
    path.write_text(station_file("sim_link").read_text().replace("station: mid,",
                                                                 "station: moon,"))
    result = qnetlab(tmp_path, "--station", str(path), "status")
    assert result.returncode == 1
    assert "broken.station.yaml: instruments.network.init: links.ab.station: 'moon'" in \
        result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_instrument_is_reported(tmp_path):
    path = tmp_path / "missing.station.yaml"
    path.write_text(station_file("sim_link").read_text().replace(
        "TCPIP0::qnu-bob.lab::inst0::INSTR", "TCPIP0::qnu-nobody.lab::inst0::INSTR"))
    result = qnetlab(tmp_path, "--station", str(path), "status")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("qnetlab: error:") and "VI_ERROR_RSRC_NFOUND" in line


CHECK = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100);
  document.body.setAttribute('data-check', imgs.length + ':' + ok.length + ':' +
                             window.__errors.length);
});
</script>"""


def _render(html_path: Path, tmp_path: Path) -> tuple[int, int, int]:
    probe = tmp_path / f"probe_{html_path.name}"
    probe.write_text(html_path.read_text().replace("</body>", CHECK + "</body>"))
    profile = tmp_path / "chromium-profile"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    match = re.search(r'data-check="(\d+):(\d+):(\d+)"', result.stdout)
    assert match, result.stderr[-2000:]
    return tuple(int(x) for x in match.groups())  # type: ignore[return-value]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                    "(.ci/run installs it)")
def test_reports_load_in_headless_chromium_with_their_figures(demo_data, tmp_path):
    data, result = demo_data
    report = Path(re.search(r"report: (\S+)", result.stdout).group(1))
    images, rendered, errors = _render(report, tmp_path)
    assert images >= 7 and rendered == images and errors == 0
    dash = Path(qnetlab(data, "report", "--dashboard").stdout.strip())
    images, rendered, errors = _render(dash, tmp_path)
    assert errors == 0 and rendered == images
