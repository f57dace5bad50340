"""The simulated lab served over TCP (``qnetlab sim serve``): sockets, ports, clients, pacing.

Everything here goes over real loopback sockets: raw sockets where the test plays a client that
knows nothing of qnetlab, pyvisa-py (``@py``) where qnetlab's drivers and stations are the client.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from pathlib import Path

import pytest
import pyvisa
import yaml

from qnetlab import stations
from qnetlab.clock import ServedClock
from qnetlab.sim_instruments import lab_spec
from qnetlab.sim_server import ServedLab
from qnetlab.sim_server.pacing import PacedClock

LINK = lab_spec("link").removesuffix("@qnetlab")
NODE = lab_spec("node").removesuffix("@qnetlab")


def node_lab_with(tmp_path: Path, serve: dict[str, dict]) -> str:
    """The built-in node lab with ``x-serve`` entries on resources (keyed by a part of their
    address, e.g. ``"fridge-alice"``), as a lab file of its own (instrument YAMLs by absolute
    path)."""
    from pyvisa_qnetlab import resolve_lab_path

    source = Path(resolve_lab_path(NODE))
    lab = yaml.safe_load(source.read_text())
    for address, spec in lab["resources"].items():
        spec["filename"] = str((source.parent / spec["filename"]).resolve())
        for part, options in serve.items():
            if part in address:
                spec["x-serve"] = options
    path = tmp_path / "node_served.yaml"
    path.write_text(yaml.safe_dump(lab, sort_keys=False))
    return str(path)


def ask(sock: socket.socket, message: bytes, end: bytes = b"\n") -> bytes:
    """Send one message, read one reply up to ``end`` (a raw client, no qnetlab involved)."""
    sock.sendall(message)
    reply = b""
    while not reply.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        reply += chunk
    return reply


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def port_of(served: ServedLab, kind: str) -> int:
    """The port of the first served resource whose name contains ``kind`` (qnu, fridge ...)."""
    return next(r.port for r in served.resources if kind in r.resource)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# --- serving ------------------------------------------------------------------------------------


def test_every_resource_is_served_and_the_station_file_reaches_it_over_py(served_lab):
    """The printed station file is hardware-style (@py, raw sockets on 127.0.0.1, the lab's
    topology) and stations.load brings every instrument of it up over TCP."""
    raw = yaml.safe_load(served_lab.station_file.read_text())
    served = {r.address for r in served_lab.served.resources}
    drivers = {n: s for n, s in raw["instruments"].items() if s.get("address")}
    assert {s["address"] for s in drivers.values()} == served
    assert all(s["init"]["visalib"] == "@py" for s in drivers.values())
    bundle = stations.load(served_lab.station_file)
    try:
        assert set(bundle.topology.links) == {"ab"}
        for name in drivers:
            idn = bundle.instrument(name).IDN()
            assert idn["vendor"] and idn["serial"], name
        assert isinstance(bundle.clock, ServedClock)
        assert bundle.clock.now() == pytest.approx(served_lab.served.pacer.now(),
                                                   abs=0.5 * served_lab.speed)
    finally:
        bundle.close()


def test_one_world_behind_every_connection_with_per_connection_queues(served_lab):
    """A setting made on one connection is read on another (one lab); each connection has its
    own reply queue and its own error queue, as each TCP connection of a product has."""
    port = port_of(served_lab.served, "qnu-alice")
    with connect(port) as a, connect(port) as b:
        a.sendall(b"XDUC:MEAS:TIME 2.5\n")
        assert float(ask(a, b"XDUC:MEAS:TIME?\n")) == 2.5  # done (connections run in parallel)
        assert float(ask(b, b"XDUC:MEAS:TIME?\n")) == 2.5
        a.sendall(b"*IDN?\n")  # a's reply waits in a's queue ...
        assert float(ask(b, b"XDUC:MEAS:TIME?\n")) == 2.5  # ... b gets its own answer
        assert b"QNU" in ask(a, b"", b"\n")
        a.sendall(b"NO:SUCH:CMD 1\n")
        assert ask(b, b"SYST:ERR?\n").startswith(b"0,")  # a's error is not in b's queue
        assert ask(a, b"SYST:ERR?\n").startswith(b"-113,")


def test_binary_block_is_sent_whole_with_its_declared_length(served_lab):
    """A tag stream (IEEE-488.2 block) comes whole over the socket, whatever bytes it holds."""
    bundle = stations.load(served_lab.station_file)
    try:
        qnu = bundle.node("alice")["qnu"]
        raw = qnu._query_binary("XDUC:PD:LOG:DATA?")
        assert len(raw) % 8 == 0
    finally:
        bundle.close()


def test_max_clients_one_refuses_a_second_connection_until_the_first_closes(tmp_path):
    lab = node_lab_with(tmp_path, {"fridge-alice": {"max_clients": 1}})
    with ServedLab(lab, declared_ports=False) as served:
        port = port_of(served, "fridge")
        first = connect(port)
        assert b"MODEL372" in ask(first, b"*IDN?\r\n")
        with pytest.raises(ConnectionError):  # closed at once: at connect or at the request
            with connect(port) as second:
                ask(second, b"*IDN?\r\n")
        first.close()
        deadline = time.monotonic() + 5
        while served.connections() and time.monotonic() < deadline:
            time.sleep(0.02)
        with connect(port) as third:
            assert b"MODEL372" in ask(third, b"*IDN?\r\n")
        # others accept many at once
        qnu = port_of(served, "qnu")
        with connect(qnu) as x, connect(qnu) as y:
            assert ask(x, b"*IDN?\n") == ask(y, b"*IDN?\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_declared_port_is_used_when_free_and_reassigned_when_taken(tmp_path):
    wanted = free_port()
    lab = node_lab_with(tmp_path, {"qnu-alice": {"port": wanted}})
    with ServedLab(lab) as served:
        assert port_of(served, "qnu") == wanted
        with ServedLab(lab) as second:  # the port is taken now: another one, and it works
            other = port_of(second, "qnu")
            assert other != wanted
            with connect(other) as sock:
                assert b"QNU" in ask(sock, b"*IDN?\n")


def test_port_base_assigns_ports_upwards(tmp_path):
    base = free_port()
    with ServedLab(node_lab_with(tmp_path, {}), port_base=base, declared_ports=False) as served:
        ports = [r.port for r in served.resources]
        assert min(ports) >= base and len(set(ports)) == len(ports)


@pytest.mark.parametrize(("options", "message"), [
    ({"max_clients": 0}, "x-serve.max_clients='0': must be an integer >= 1"),
    ({"port": 70000}, "x-serve.port='70000': must be a TCP port 1..65535"),
])
def test_bad_x_serve_is_one_line_naming_it(tmp_path, options, message):
    lab = node_lab_with(tmp_path, {"qnu-alice": options})
    threads = set(threading.enumerate())
    fds = open_fds()
    with pytest.raises(ValueError, match=message):
        ServedLab(lab).start()
    assert set(threading.enumerate()) <= threads and open_fds() <= fds


# --- time ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [20.0, 200.0])
def test_reply_that_costs_lab_time_is_sent_when_the_paced_clock_reaches_it(tmp_path, speed):
    """An efficiency measurement integrates for measure_time of lab time: its reply leaves
    after measure_time / speed wall seconds, not at once."""
    with ServedLab(node_lab_with(tmp_path, {}), speed=speed) as served:
        with connect(port_of(served, "qnu")) as sock:
            ask(sock, b"XDUC:MEAS:TIME 2\n*OPC?\n")
            start_lab, start = served.pacer.now(), time.monotonic()
            float(ask(sock, b"XDUC:EFF?\n"))
            wall = time.monotonic() - start
            assert wall >= 2.0 / speed * 0.95
            assert served.pacer.now() - start_lab >= 2.0
            assert wall < 2.0 / speed + 0.5


def test_paced_clock_runs_at_speed_and_never_goes_back():
    from qnetlab.clock import VirtualClock

    clock = VirtualClock(100.0)
    paced = PacedClock(clock, 1000.0)
    time.sleep(0.05)
    assert paced.catch_up() == pytest.approx(150.0, abs=25.0)
    clock.advance(500.0)  # a measurement's cost: the lab is ahead of wall time
    assert paced.now() == clock.now() and paced.wall_until(clock.now()) > 0.3
    assert paced.catch_up() == clock.now()  # catching up never moves it back
    with pytest.raises(ValueError, match=r"speed=0: must be a number > 0"):
        PacedClock(clock, 0)


def test_served_clock_follows_the_served_time_and_sleeps_dt_over_speed(tmp_path):
    with ServedLab(node_lab_with(tmp_path, {}), speed=500.0) as served:
        clock = ServedClock("127.0.0.1", served.clock_port)
        assert clock.speed == 500.0
        assert clock.now() == pytest.approx(served.pacer.now(), abs=5.0)
        start, t0 = time.monotonic(), clock.now()
        clock.sleep(50.0)
        assert time.monotonic() - start == pytest.approx(0.1, abs=0.05)
        assert clock.now() - t0 >= 50.0
        assert clock.now() == pytest.approx(served.pacer.now(), abs=5.0)
        with pytest.raises(ValueError, match="sleep: seconds=-1"):
            clock.sleep(-1)


def test_served_clock_alarms_fire_every_period_of_lab_time_and_stop_on_cancel(tmp_path):
    with ServedLab(node_lab_with(tmp_path, {}), speed=1000.0) as served:
        clock = ServedClock("127.0.0.1", served.clock_port)
        times: list[float] = []
        start = clock.now()
        alarm = clock.every(20.0, times.append)  # 20 lab s = 20 ms wall
        time.sleep(0.15)
        alarm.cancel()
        count = len(times)
        time.sleep(0.05)
        assert len(times) == count >= 4
        # never before its due time (a late call may be followed closely by the next one)
        assert all(t >= start + 20.0 * (k + 1) for k, t in enumerate(times))
        assert all(b >= a for a, b in itertools.pairwise(times))
        alarm.cancel()  # twice is fine


def test_served_clock_unreachable_is_one_line(tmp_path):
    port = free_port()
    with pytest.raises(ConnectionError, match=rf"served lab clock at 127.0.0.1:{port}: not "
                                              "reachable"):
        ServedClock("127.0.0.1", port, timeout_s=0.5)
    with pytest.raises(ValueError, match="port=0 must be a TCP port"):
        ServedClock("127.0.0.1", 0)


# --- shutdown ----------------------------------------------------------------------------------


def test_stop_closes_every_socket_and_thread_even_with_clients_connected(tmp_path):
    lab = node_lab_with(tmp_path, {})
    ServedLab(lab).start().stop()  # first use imports and caches; measure the second
    threads, fds = set(threading.enumerate()), open_fds()
    served = ServedLab(lab).start()
    clients = [connect(r.port) for r in served.resources]
    rm = pyvisa.ResourceManager("@py")
    try:
        for sock in clients:
            sock.sendall(b"*IDN?\n")
        inst = rm.open_resource(served.resources[0].address, read_termination="\n",
                                write_termination="\n")
        assert "QNU" in inst.query("*IDN?")
        ports = [r.port for r in served.resources] + [served.clock_port]
        served.stop()
        for sock in clients:  # the server side is gone: the reply then EOF, or a reset
            with contextlib.suppress(ConnectionResetError):
                while sock.recv(4096):
                    pass
        inst.close()
    finally:
        for sock in clients:
            sock.close()
        rm.close()
    assert set(threading.enumerate()) <= threads
    assert open_fds() <= fds
    for port in ports:  # every port is free again
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))


# --- the station's clock entry ---------------------------------------------------------------


def edited_station(served_lab, tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(served_lab.station_file.read_text())
    edit(raw["instruments"])
    path = tmp_path / "edited.station.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda i: i["lab_clock"]["init"].pop("port"),
     r"edited.station.yaml: instruments.lab_clock.init: needs host and port"),
    (lambda i: i.update(clock2=dict(i["lab_clock"])),
     r"edited.station.yaml: more than one qnetlab.clock.ServedClock entry"),
])
def test_bad_clock_entry_is_one_line_and_touches_no_instrument(served_lab, tmp_path, edit,
                                                               message):
    path = edited_station(served_lab, tmp_path, edit)
    with pytest.raises(stations.TopologyError, match=message):
        stations.load(path)
    assert served_lab.served.connections() == 0


def test_without_clock_entry_a_station_on_the_served_lab_runs_on_wall_time(served_lab,
                                                                             tmp_path):
    """As on hardware: no entry, real time (the drivers know nothing of the served clock)."""
    path = edited_station(served_lab, tmp_path, lambda i: i.pop("lab_clock"))
    bundle = stations.load(path)
    try:
        assert not isinstance(bundle.clock, ServedClock)
        assert bundle.clock.now() == pytest.approx(time.time(), abs=5)
    finally:
        bundle.close()


def test_a_large_block_reaches_a_client_that_reads_it_slowly(served_lab):
    """8 MB of tags to a client that waits before reading: the server keeps sending (a busy
    client is not dropped), and the block arrives whole."""
    port = port_of(served_lab.served, "herald-mid")
    with connect(port) as sock:
        ask(sock, b"TAG:REC:DUR 21\nTAG:REC:STAR\n*OPC?\n")
        time.sleep(21.0 / served_lab.speed + 0.05)
        assert ask(sock, b"TAG:REC:STAT?\n") == b"DONE\n"
        sock.sendall(b"TAG:STR:TIME? 0,1000000\n")
        time.sleep(0.5)  # the server's socket buffer fills; it must wait, not give up
        header = sock.recv(2)
        digits = int(header[1:2])
        length = int(sock.recv(digits))
        body = b""
        while len(body) < length + 1:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed mid-block"
            body += chunk
        assert length == 8_000_000 and body.endswith(b"\n")
