"""The qnetlab command line through real subprocesses, and its reports in headless Chromium."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qnetlab.stations import station_file

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def qnetlab(data: Path, *args: str, timeout: float = 300,
            env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "QNETLAB_DATA": str(data), "MPLBACKEND": "Agg", **(env_extra or {})}
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


def test_demo_gives_a_verdict_for_each_claim(demo_data):
    _data, result = demo_data
    out = result.stdout
    witnessed = re.search(r"entanglement witnessed: (yes|no) \(F = ([0-9.]+) \+- ([0-9.]+), "
                          r"([0-9.]+) standard errors (above|below) 0\.5", out)
    assert witnessed, out
    f, err, sigmas = (float(witnessed.group(i)) for i in (2, 3, 4))
    assert witnessed.group(1) == "yes" and abs((f - 0.5) / err - sigmas) < 0.1 + 0.05 * sigmas
    bell = re.search(r"Bell violation: (yes|no) \(\|S\| = ([0-9.]+) \+- ([0-9.]+), "
                     r"([0-9.]+) standard errors (above|below) 2", out)
    assert bell, out
    s_value = float(bell.group(2))
    assert (bell.group(5) == "above") == (s_value > 2)
    assert bell.group(1) == ("yes" if (s_value - 2) / float(bell.group(3)) >= 3 else "no")


def test_demo_values_carry_the_digits_their_uncertainty_supports(demo_data):
    _data, result = demo_data
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("resonance_nm [alice]"))
    value, err = re.search(r"([0-9.]+) \+- ([0-9.]+) nm", line).groups()
    assert "e-" not in line  # no 2.35e-06 beside a value cut to 1550.14
    assert len(value.split(".")[1]) == len(err.split(".")[1])  # same decimal place
    assert len(err.lstrip("0.")) == 2  # two significant digits of uncertainty
    # the calibration table says the same, with the same digits
    row = next(ln for ln in result.stdout.splitlines() if ln.startswith("pump_cavity:alice"))
    assert f"resonance_nm = {value} +- {err} nm" in row and "e-0" not in row


def test_calibrate_again_is_all_fresh(demo_data):
    data, _ = demo_data
    result = qnetlab(data, "calibrate")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(" fresh ") >= 13 - 2  # the demo's entangling took lab time
    status = qnetlab(data, "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    start = lines.index(next(ln for ln in lines if ln.startswith("calibration:target")))
    rows = lines[start + 2:start + 15]
    assert len(rows) == 13 and all(":" in r.split()[0] for r in rows)
    for column in ("outcome", "age", "timeout", "state"):
        at = lines[start].index(column)
        assert all(r[at - 1] == " " and r[at] != " " for r in rows), (column, rows)
    assert "STALE" not in status.stdout and "never" not in status.stdout


def test_entangle_status_runs_and_reports(demo_data):
    data, _ = demo_data
    result = qnetlab(data, "entangle", "--pairs", "300")
    assert result.returncode == 0, result.stderr
    assert "300 of 300 pairs on ab" in result.stdout and "fidelity to the heralded Bell state" \
        in result.stdout
    assert "verdict: delivered 300 of 300 pairs, F >= 0.5" in result.stdout
    status = qnetlab(data, "status")
    assert status.returncode == 0, status.stderr
    assert "fridge interlock" in status.stdout and "link_phase:ab" in status.stdout
    assert re.search(r"^alice\s+[0-9.]+ mK\s+OK\s+off\s+-99.00 dBm$", status.stdout, re.M)
    runs = qnetlab(data, "runs", "--limit", "5")
    assert runs.returncode == 0 and len(runs.stdout.splitlines()) == 6
    first = runs.stdout.splitlines()[1].split()[0]
    assert "entanglement.generate" in runs.stdout.splitlines()[1]
    report = qnetlab(data, "report", first)
    assert report.returncode == 0, report.stderr
    html = Path(report.stdout.strip()).read_text()
    assert html.startswith("<!DOCTYPE html>")
    fidelity = float(re.search(r"fidelity to the heralded Bell state: ([0-9.]+)",
                               result.stdout).group(1))
    assert f"<td>{fidelity:.3f} +- " in html  # the same fidelity the command printed
    assert "entanglement witnessed: yes" in html
    assert html.count("data:image/png;base64,") >= 2  # herald statistics, density matrix
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
    path.write_text(station_file("sim_link").read_text().replace("herald: mid,",
                                                                 "herald: moon,"))
    result = qnetlab(tmp_path, "--station", str(path), "status")
    assert result.returncode == 1
    assert "broken.station.yaml: instruments.network.init: links.ab.herald: 'moon'" in \
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


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single `qnetlab: error` line of a failed command (progress labels aside)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("qnetlab:")]
    assert len(lines) == 1, result.stderr
    assert all(ln.startswith("qnetlab:") or ln.strip() in ("", "pairs", "calibrating",
                                                           "entangling")
               for ln in result.stderr.splitlines()), result.stderr
    return lines[0]


def test_entangle_that_falls_short_exits_nonzero_with_a_verdict(tmp_path):
    # never calibrated: about 0.2 heralds/s at a fidelity far below 0.5
    result = qnetlab(tmp_path, "entangle", "--pairs", "50", "--max-time", "60")
    assert result.returncode == 3, result.stdout + result.stderr
    verdict = next(ln for ln in result.stdout.splitlines() if ln.startswith("verdict:"))
    got = int(re.search(r"(\d+) of 50 pairs", result.stdout).group(1))
    assert got < 50 and f"NOT DELIVERED: {got} of 50 pairs (request EXPIRED" in verdict
    assert "did not deliver" in _one_error_line(result)


def test_entangle_one_pair_says_why_no_fidelity(tmp_path):
    result = qnetlab(tmp_path, "entangle", "--pairs", "1")
    assert "nan" not in result.stdout
    assert "cannot estimate the fidelity from 1 measured pair" in result.stdout
    assert result.returncode == 3 and "fidelity not verified" in _one_error_line(result)
    relaxed = qnetlab(tmp_path, "entangle", "--pairs", "1", "--min-fidelity", "0")
    assert relaxed.returncode == 0, relaxed.stderr
    assert "verdict: delivered 1 of 1 pairs" in relaxed.stdout


def _station_variant(tmp_path: Path, name: str, old: str, new: str,
                     base: str = "sim_link") -> str:
    path = tmp_path / f"{name}.station.yaml"
    text = station_file(base).read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return str(path)


@pytest.mark.parametrize("args,message", [
    (("--station", "sim_node", "demo"), "station sim_node has no link"),
    (("report", "99999999-0000-0000-0000-01a229192657"), "no run '99999999-"),
    (("report", "abc"), "no run 'abc'"),
    (("entangle", "--bases", "X,Q"), "Invalid value for '--bases': 'Q' is not a basis"),
    (("entangle", "--max-time", "-5"), "Invalid value for '--max-time'"),
    (("entangle", "--max-time", "nan"), "Invalid value for '--max-time'"),
    (("entangle", "--bases", "Z", "--min-fidelity", "0.7"), "needs --bases including X, Y"),
])
def test_error_paths_are_one_line_and_record_nothing(tmp_path, args, message):
    result = qnetlab(tmp_path, *args)
    assert result.returncode in (1, 2)
    assert message in _one_error_line(result)
    assert not list(tmp_path.glob("runs/**/*.h5"))  # nothing sent, nothing recorded
    runs = qnetlab(tmp_path, "runs")
    assert "no runs in" in runs.stdout


def test_hardware_station_without_pyvisa_py_says_how_to_install_it(tmp_path):
    # pyvisa-py is a dependency; a sitecustomize hides it, as on a machine that lacks it
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['pyvisa_py'] = None\n")
    path = os.pathsep.join(p for p in (str(hide), os.environ.get("PYTHONPATH")) if p)
    result = qnetlab(tmp_path, "--station", str(station_file("hw_link")), "status",
                     env_extra={"PYTHONPATH": path})
    assert result.returncode == 1
    assert "pip install pyvisa-py" in _one_error_line(result)
    assert not list(tmp_path.glob("runs/**/*.h5"))


@pytest.mark.parametrize("old,new,message", [
    ("qnetlab.drivers.QnetlabQNU", "qnetlab.drivers.Nope",
     "instruments.qnu_alice.type 'qnetlab.drivers.Nope': module 'qnetlab.drivers' has no class"),
    ("qnetlab.drivers.QnetlabQNU", "qnetlab.nowhere.QnetlabQNU",
     "instruments.qnu_alice.type 'qnetlab.nowhere.QnetlabQNU': no module 'qnetlab.nowhere'"),
    ("TCPIP0::qnu-bob.lab::inst0::INSTR", "TCPIP0::qnu-nobody.lab::inst0::INSTR",
     "qnu_bob(QnetlabQNU)] Could not connect at TCPIP0::qnu-nobody.lab::inst0::INSTR: "
     "VI_ERROR_RSRC_NFOUND"),
])
def test_broken_station_files_are_one_line_naming_the_entry(tmp_path, old, new, message):
    station = _station_variant(tmp_path, "broken", old, new)
    result = qnetlab(tmp_path, "--station", station, "entangle", "--pairs", "10")
    assert result.returncode == 1
    assert message in _one_error_line(result)
    debug = qnetlab(tmp_path, "--debug", "--station", station, "status")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("qnetlab: error:")


def test_unusable_data_directory_is_named(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = qnetlab(blocker / "data", "runs")
    assert result.returncode == 1
    assert f"data directory {blocker / 'data'} is not usable" in _one_error_line(result)
    data = tmp_path / "data"
    (data / "qnetlab.db").mkdir(parents=True)  # the database cannot be opened
    result = qnetlab(data, "entangle", "--pairs", "10")
    assert result.returncode == 1
    line = _one_error_line(result)
    assert f"database in {data}" in line and "unable to open database file" in line


def test_no_arguments_prints_the_help(tmp_path):
    result = qnetlab(tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: qnetlab [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in result.stdout and "entangle" in result.stdout


def test_dev_sh_run_passes_its_arguments_to_the_demo(tmp_path):
    venv = Path(sys.prefix)
    root = Path(__file__).resolve().parents[1]
    stamp = venv / ".qnetlab-installed"
    wanted = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()[:16]
    if not stamp.is_file() or stamp.read_text().strip() != wanted:
        pytest.skip("not inside an up-to-date dev.sh environment (dev.sh would rebuild it)")
    env = {**os.environ, "QNETLAB_VENV": str(venv)}
    result = subprocess.run([str(root / "dev.sh"), "run", "--pairs", "500", "--data",
                             str(tmp_path / "d"), "--station", "sim_node"],
                            capture_output=True, text=True, env=env, timeout=120)
    # the demo got --pairs, qnetlab got --data and --station: it refuses a station without a link
    assert result.returncode == 1, result.stderr
    assert "station sim_node has no link" in _one_error_line(result)
    bad = subprocess.run([str(root / "dev.sh"), "run", "--pairs", "5"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "Invalid value for '--pairs'" in _one_error_line(bad)
