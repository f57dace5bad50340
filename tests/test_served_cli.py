"""``qnetlab sim serve`` as a user runs it (a process of its own, stopped by a signal), and the
``served_lab`` fixture as another project's CI uses it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from qnetlab.cli import run_cli
from qnetlab.sim_instruments import lab_file


def start_serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qnetlab", "sim", "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the station file never appeared"
        time.sleep(0.05)


def served_ports(station: dict) -> list[int]:
    specs = station["instruments"].values()
    ports = [int(s["address"].split("::")[2]) for s in specs if s.get("address")]
    return ports + [int(s["init"]["port"]) for s in specs if s.get("type", "").endswith(
        "ServedClock")]


def idn(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"*IDN?\n")
        return sock.recv(4096)


def assert_free(port: int) -> None:
    """A restarted server can listen on the port again (as ``sim serve`` binds it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(1)


def link_lab_resources() -> int:
    """How many instruments the built-in link lab file declares."""
    return len(yaml.safe_load(Path(lab_file("link")).read_text())["resources"])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_serve_writes_the_station_file_and_a_signal_stops_it_cleanly(tmp_path, signum):
    out = tmp_path / "served.station.yaml"
    proc = start_serve("--speed", "100", "--station-out", str(out))
    try:
        wait_for(out, proc)
        station = yaml.safe_load(out.read_text())
        ports = served_ports(station)
        assert len(ports) == link_lab_resources() + 1  # the link lab's instruments, the clock
        client = socket.create_connection(("127.0.0.1", ports[0]), timeout=5)  # left open
        assert b"QNU" in idn(ports[0])
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=15)
    finally:
        proc.kill() if proc.poll() is None else None
    client.close()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and err.strip().endswith("qnetlab: served lab stopped")
    for port in ports:
        assert_free(port)


def test_serve_prints_the_station_file_and_stops_on_ctrl_c(tmp_path):
    proc = start_serve("--speed", "10")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any("serving" in line for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, lines
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=15)
    reader.join(5)
    assert proc.returncode == 0, lines
    station = yaml.safe_load(out)
    assert station["instruments"]["lab_clock"]["type"] == "qnetlab.clock.ServedClock"
    assert {s["init"]["visalib"] for s in station["instruments"].values()
            if s.get("address")} == {"@py"}


@pytest.mark.parametrize(("args", "message"), [
    (["nosuch.yaml"], "qnetlab: error (qnetlab sim serve): Invalid value for LAB: lab file "
                      "'nosuch.yaml' not found"),
    (["--speed", "0"], "qnetlab: error (qnetlab sim serve): Invalid value for '--speed': 0.0 "
                       "is not in the range"),
    (["--port-base", "70000"], "qnetlab: error (qnetlab sim serve): Invalid value for "
                               "'--port-base': 70000 is not in the range 1<=x<=65535"),
])
def test_serve_errors_are_one_line(capsys, args, message):
    assert run_cli(["sim", "serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_serve_refuses_a_lab_no_station_file_describes(tmp_path, capsys):
    lab = tmp_path / "lonely.yaml"
    lab.write_text('spec: "1.1"\nresources: {}\n')
    assert run_cli(["sim", "serve", str(lab)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"qnetlab: error: lab {lab}: no bundled station file uses it")
    assert err.count("\n") == 1


OUTSIDE = '''
import pytest
import yaml
from pathlib import Path
from qnetlab import stations
from qnetlab.sim_instruments import lab_file


@pytest.mark.qnetlab_served("node", speed=500)
def test_ci_drives_the_served_lab(served_lab):
    bundle = stations.load(served_lab.station_file)
    try:
        assert bundle.node("alice")["qnu"].IDN()["model"] == "QNU-1"
        assert bundle.clock.speed == 500
    finally:
        bundle.close()


def test_default_is_the_link_lab(served_lab):
    declared = yaml.safe_load(Path(lab_file("link")).read_text())["resources"]
    assert len(served_lab.served.resources) == len(declared)
    assert served_lab.address_of("TCPIP0::herald-mid.lab::inst0::INSTR").startswith(
        "TCPIP0::127.0.0.1::")
'''


def test_fixture_serves_on_free_ports_and_leaves_no_thread_socket_or_fd(pytester):
    pytester.makepyfile(test_ci=OUTSIDE)
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "-k", "nothing")  # imports, caches
    threads = set(threading.enumerate())
    fds = set(os.listdir("/proc/self/fd"))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert set(threading.enumerate()) <= threads
    assert set(os.listdir("/proc/self/fd")) <= fds
