"""Issue 11 §4: public third-party drivers, unchanged, against the lab served over TCP.

QCoDeS's own ``LakeshoreModel372`` and ``Keysight33522B`` run on pyvisa-py (``@py``) raw
sockets, QCoDeS's ``OxfordTriton`` on its own plain TCP connection (an ``IPInstrument``, port
33576 on the product, one client at a time), and pymeasure's ``KeysightN7776C`` (written from
Keysight's manual) over a pyvisa-py ``VISAAdapter``: what a lab's own scripts would do against a
real bench. Nothing here imports a qnetlab driver; the served world's truth is read only to check
that the clients' settings reached the physics.
"""

from __future__ import annotations

import socket

import pytest
from qcodes.instrument_drivers.Keysight import Keysight33522B
from qcodes.instrument_drivers.Lakeshore import LakeshoreModel372
from qcodes.instrument_drivers.oxford import OxfordTriton

from conftest import AOM_A, FRIDGE_A, PUMP_A, TRITON_A

pytestmark = pytest.mark.qnetlab_served("link", speed=1000)


def host_port(address: str) -> tuple[str, int]:
    """``TCPIP0::127.0.0.1::<port>::SOCKET`` -> ("127.0.0.1", port)."""
    _, host, port, _ = address.split("::")
    return host, int(port)


def world(served_lab):
    return served_lab.served.library.lab


def test_stock_lakeshore_372_over_tcp_reads_the_served_fridge(served_lab):
    ls = LakeshoreModel372("tcp_ls372", served_lab.address_of(FRIDGE_A), visalib="@py",
                           timeout=5)
    try:
        assert ls.IDN()["vendor"] == "LSCI" and ls.IDN()["model"] == "372"
        mxc = world(served_lab).nodes["alice"].fridge.mxc_k
        assert ls.ch06.temperature() == pytest.approx(mxc, rel=0.05)  # the MXC's thermometer
        ls.sample_heater.output_range("off")
        assert ls.sample_heater.output_range() == "off"
    finally:
        ls.close()


def test_stock_keysight_33522b_over_tcp_gates_the_served_pump(served_lab):
    awg = Keysight33522B("tcp_awg", served_lab.address_of(AOM_A), visalib="@py", timeout=5)
    node = world(served_lab).nodes["alice"]
    try:
        assert awg.IDN()["model"] == "33522B"
        ch = awg.ch1
        ch.function_type("PULS")
        ch.pulse_width(1e-6)
        ch.frequency(1e5)
        ch.output("ON")
        assert ch.output() == "ON"  # a write is done when the next query is answered
        assert node.pump.duty_cycle == pytest.approx(0.1)
        ch.output("OFF")
        assert ch.output() == "OFF"
        assert node.pump.duty_cycle == 0.0
        assert awg.error() == (0, "No error")
    finally:
        awg.close()


def test_stock_oxford_triton_over_its_own_tcp_connection_one_client_at_a_time(served_lab):
    host, port = host_port(served_lab.address_of(TRITON_A))
    triton = OxfordTriton("tcp_triton", address=host, port=port, timeout=5)
    fridge = world(served_lab).nodes["alice"].fridge
    try:
        assert triton.get_idn()["model"] == "TRITON"
        assert triton.MC() == pytest.approx(fridge.mxc_k, rel=1e-3)
        assert triton.action() == "Circulating"
        try:  # the product takes one client: a second connection is closed at once
            with socket.create_connection((host, port), timeout=5) as second:
                second.sendall(b"*IDN?\r\n")
                reply = second.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            reply = b""
        assert reply == b""
        assert triton.MC() == pytest.approx(fridge.mxc_k, rel=1e-3)  # the first goes on
    finally:
        triton.close()


def test_pymeasure_n7776c_over_pyvisa_py_sweeps_the_served_laser(served_lab):
    from pymeasure.adapters import VISAAdapter
    from pymeasure.instruments.keysight import KeysightN7776C

    adapter = VISAAdapter(served_lab.address_of(PUMP_A), visa_library="@py",
                          read_termination="\n", write_termination="\n", timeout=5000)
    with pytest.warns(FutureWarning, match="SCPI"):  # pymeasure's own notice
        laser = KeysightN7776C(adapter)
    try:
        assert laser.id.startswith("Keysight Technologies,N7776C,")
        laser.wavelength = 1551.25
        assert laser.wavelength == pytest.approx(1551.25)
        laser.sweep_wl_start, laser.sweep_wl_stop = 1550.0, 1550.1
        laser.sweep_step, laser.sweep_speed = 0.0001, 1
        laser.sweep_mode, laser.sweep_twoway = "CONT", False
        laser.wl_logging, laser.trigger_out, laser.trigger_in = True, "STF", "IGN"
        assert laser.valid_sweep_params() is True
        laser.sweep_state = 1
        while laser.sweep_state == 1:  # the sweep runs in the served lab's time
            pass
        wl = laser.get_wl_data()  # an IEEE block over TCP, read to its declared length
        assert wl.size == 1001 and wl[0] == pytest.approx(1550e-9) and \
            wl[-1] == pytest.approx(1550.1e-9)
    finally:
        adapter.close()
