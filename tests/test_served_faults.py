"""Faults over the wire: the served lab's ``library.faults`` act on its sockets, and qnetlab's
drivers on ``@py`` recover from them as they do in-process (reconnect, ask again, re-apply the
settings after a reboot, never re-enable emission or heating)."""

from __future__ import annotations

import socket
import time

import pytest

from qnetlab import stations
from qnetlab.errors import RecoveryFailed


@pytest.fixture
def station(served_lab):
    bundle = stations.load(served_lab.station_file)
    yield bundle
    bundle.close()


@pytest.fixture
def qnu(station):
    return station.node("alice")["qnu"]


@pytest.fixture
def events(station):
    seen: list[dict] = []
    with station.recovery_listener(seen.append):
        yield seen


def resource(served_lab, inst) -> str:
    return served_lab.served.resource_at(inst.address)


def test_connection_reset_is_recovered_by_reconnecting(served_lab, qnu, events):
    qnu.transducer.measure_time(2.0)
    served_lab.faults.disconnect(resource(served_lab, qnu), duration_s=0.0)
    time.sleep(0.2)  # the server resets the socket within its poll period
    assert qnu.transducer.measure_time() == 2.0
    kinds = [e["kind"] for e in events]
    assert "recovery: InstrumentConnectionError" in kinds and "recovery: reconnected" in kinds


def test_disconnect_for_a_while_is_recovered_after_backoff_in_lab_time(served_lab, qnu, events):
    """Off the network for 3 lab seconds: connections are refused until then; the driver's
    backoff (1 s, then 5 s of lab time, i.e. ms at speed 1000) outlasts it."""
    served_lab.faults.disconnect(resource(served_lab, qnu), duration_s=3.0)
    t0 = qnu.clock.now()
    assert qnu.transducer.measure_time() == 1.0
    assert qnu.clock.now() - t0 >= 3.0
    assert "recovery: reconnected" in [e["kind"] for e in events]


def test_stall_times_out_and_the_retry_gets_its_own_answer(served_lab, qnu, events):
    """A reply stalled past the client's (wall) timeout: the driver times out, clears, asks
    again; the stale reply is dropped by the new message, so replies stay in step."""
    qnu.transducer.measure_time(3.0)
    qnu.timeout(0.3)
    served_lab.faults.delay(resource(served_lab, qnu), 800.0, count=1)  # 0.8 s wall at 1000x
    assert qnu.transducer.measure_time() == 3.0
    assert [e["kind"] for e in events] == ["recovery: InstrumentTimeout"]
    assert qnu.IDN()["model"] == "QNU-1"  # the next exchanges are in step
    assert qnu.transducer.measure_time() == 3.0


def test_garbled_reply_is_recovered(served_lab, qnu, events):
    qnu.transducer.measure_time(4.0)
    served_lab.faults.garble(resource(served_lab, qnu))
    assert qnu.transducer.measure_time() == 4.0
    assert len(events) == 1 and events[0]["kind"].startswith("recovery: ")


def test_reboot_closes_the_socket_and_comes_back_with_defaults_then_settings_reapplied(
        served_lab, station, events):
    """The instrument restarts: the socket is reset, it is away for 2 lab seconds, then it
    answers with its power-on defaults; the driver reconnects, sees the reset and puts its
    settings back."""
    qnu = station.node("alice")["qnu"]
    qnu.transducer.measure_time(5.0)
    name = resource(served_lab, qnu)
    served_lab.faults.reboot(name, down_s=2.0)
    device = served_lab.served.library.device(name)
    assert float(device.stored("measure_time")) != 5.0  # the instrument itself is at defaults
    assert qnu.transducer.measure_time() == 5.0
    kinds = [e["kind"] for e in events]
    assert "recovery: reconnected" in kinds and "recovery: reset" in kinds


def test_reboot_longer_than_the_recovery_policy_fails_cleanly(served_lab, qnu):
    served_lab.faults.reboot(resource(served_lab, qnu), down_s=1e6)
    with pytest.raises(RecoveryFailed, match=r"measure_time|XDUC:MEAS:TIME"):
        qnu.transducer.measure_time()


def test_reboot_refuses_new_connections_while_down(served_lab, qnu):
    served_lab.faults.reboot(resource(served_lab, qnu), down_s=1e6)
    port = int(qnu.address.split("::")[2])
    with pytest.raises(ConnectionError):
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"*IDN?\n")
            if not sock.recv(100):
                raise ConnectionError("closed at once")


def test_watchdog_polls_on_the_served_clock_and_darkens_the_pump_on_an_excursion(served_lab,
                                                                                  station):
    """While a sequence is blocked in a call, the watchdog polls through the served clock's
    alarms (every 5 lab seconds: 5 ms of wall time at 1000x); a heat pulse on alice's fridge
    trips it and its safe action switches the pump off over the wire."""
    from qnetlab.sequences.safety import State, default_watchdog, watch_in_calls

    watchdog = default_watchdog(station, poll_s=5.0)
    pump = station.node("alice")["pump"]
    pump.output("on")
    stop = watch_in_calls(watchdog)
    try:
        served_lab.faults.excursion("alice", power_w=300e-6, duration_s=600)
        deadline = time.monotonic() + 20
        while watchdog.state is State.RUNNING and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop()
    assert watchdog.state is not State.RUNNING, watchdog.events
    assert pump.output() is False
    assert "safe_action" in [e["kind"] for e in watchdog.events]
