"""Issue 14 §1: the optical switch (Polatis SCPI), its physics in the world, its QCoDeS driver."""

from __future__ import annotations

import pytest
import pyvisa

from qnetlab.drivers import QnetlabOpticalSwitch
from qnetlab.sim_instruments.fabric import operating_point
from qnetlab.sim_instruments.physics.switch import SwitchFabric

LAB = "qnetlab.sim_instruments.labs:dc_small.yaml@qnetlab"
OXC = "TCPIP0::oxc.lab::3082::SOCKET"


@pytest.fixture
def dc(sim_lab):
    return sim_lab(LAB)


@pytest.fixture
def raw(dc):
    res = pyvisa.ResourceManager(LAB).open_resource(OXC, read_termination="\n",
                                                    write_termination="\n")
    res.write(":OXC:SWIT:DISC:ALL")
    yield res
    res.close()


@pytest.fixture
def oxc(dc):
    inst = QnetlabOpticalSwitch("oxc_test", OXC, visalib=LAB, print_connect_message=False)
    inst.disconnect_all()
    yield inst
    inst.close()


def error(res) -> str:
    return res.query("SYST:ERR?")


def test_identifies_as_polatis_with_the_lab_files_port_count(raw):
    assert raw.query("*IDN?").startswith("Polatis,")
    assert raw.query(":OXC:SWITch:SIZE?") == "8,8"  # ports: 16 in the lab file


@pytest.mark.parametrize("add", [
    ":OXC:SWITch:CONNect:ADD (@1,2),(@9,10)",
    ":oxc:swit:conn:add (@1,2),(@9,10)",  # the lower case public clients send
    "OXC:SWIT:CONN:ADD (@1:2),(@9:10)",  # channel-list ranges
    ":OXC:SWIT:CONN:ADD (@1),(@9);ADD (@2),(@10)",  # compound message, relative path
])
def test_scpi_variants_make_the_same_patches(raw, add):
    raw.write(add)
    assert raw.query(":oxc:swit:conn:stat?") == "(@1,2),(@9,10)"
    assert raw.query(":OXC:SWIT:CONN:PORT? 10") == "2"
    assert raw.query(":OXC:SWIT:CONN:PORT? 1") == "9"
    assert raw.query(":OXC:SWIT:CONN:PORT? 3") == "0"
    assert error(raw) == '0,"No error"'


def test_a_port_takes_one_connection_and_a_refused_command_changes_nothing(raw):
    raw.write(":OXC:SWIT:CONN:ADD (@1),(@9)")
    raw.write(":OXC:SWIT:CONN:ADD (@2,3),(@10,9)")  # 3 -> 9 conflicts: nothing of it is made
    first = error(raw)
    assert first.startswith("-221,") and "port 9 already connected to 1" in first
    assert raw.query(":OXC:SWIT:CONN:STAT?") == "(@1),(@9)"
    raw.write(":OXC:SWIT:CONN:ADD (@1,2),(@10,10)")
    assert raw.query(":OXC:SWIT:CONN:STAT?") == "(@1),(@9)"


def test_errors_name_the_port_and_queue_in_order(raw):
    raw.write(":OXC:SWIT:CONN:ADD (@1),(@9)")
    raw.write(":OXC:SWIT:CONN:ADD (@2),(@9)")
    raw.write(":OXC:SWIT:CONN:ADD (@2),(@40)")
    raw.write(":OXC:SWIT:CONN:ADD (@2,3),(@11)")
    raw.write(":OXC:SWIT:CONN:SUB (@4),(@12)")
    raw.write(":OXC:SWIT:CONN:ADD 1,9")
    everything = raw.query(":SYST:ERR:ALL?")
    assert everything.index("-221,") < everything.index("-222,") < everything.index("-104,")
    assert "port 9 already connected to 1" in everything
    assert "egress port 40 not in 9..16" in everything
    assert "no connection 4->12" in everything and "-200," in everything
    assert error(raw) == '0,"No error"'  # ALL? emptied the queue


def test_only_replaces_every_patch_and_disconnect_all_clears(raw):
    raw.write(":OXC:SWIT:CONN:ADD (@1,2),(@9,10)")
    raw.write(":OXC:SWIT:CONN:ONLY (@2,3),(@10,11)")
    assert raw.query(":OXC:SWIT:CONN:STAT?") == "(@2,3),(@10,11)"
    raw.write(":OXC:SWIT:DISC:ALL")
    assert raw.query(":OXC:SWIT:CONN:STAT?") == "(@),(@)"


def test_light_passes_only_while_patched_and_after_the_reconfiguration_time(dc, raw):
    lab = dc.world
    fabric = lab.switches["oxc"]
    link = lab.switched_link("alice", "bob", "h1", "oxc")
    t0 = dc.clock.now()
    operating_point(lab, t0)  # pumps on: light to pass
    assert link.optics(lab.nodes["alice"], t0).eta == 0.0  # no patch: no link
    raw.write(":OXC:SWIT:CONN:ADD (@1,2),(@9,10)")
    t1 = dc.clock.now()
    assert fabric.transmission("alice", "h1", t1) == 0.0  # mirrors still moving
    assert raw.query("*OPC?") == "1"
    settled = dc.clock.now()
    assert settled - t1 == pytest.approx(fabric.reconfig_s, abs=1e-9)  # paid in lab time
    through = fabric.transmission("alice", "h1", settled)
    loss_db = dc.truth()["switches"]["oxc"]["patch_loss_db"]["1-9"]
    assert through == pytest.approx(10 ** (-loss_db / 10) * (1 - 1e-5), rel=1e-9)  # -50 dB from bob
    assert 0.5 < loss_db < 1.5  # about 1 dB a patch
    assert link.optics(lab.nodes["alice"], settled).eta > 0
    assert fabric.transmission("alice", "h2", settled) == 0.0  # patched elsewhere


def test_crosstalk_of_other_lit_patches_lowers_the_transmission():
    few = SwitchFabric("x", 8, seed=1, node_ports={"a": 1}, station_ports={"s": (9, 10)},
                       crosstalk_db=-20.0)
    few.connect([(1, 9)], 0.0)
    alone = few.transmission("a", "s", 1.0)
    few.connect([(2, 10), (3, 11), (4, 12)], 0.0)
    assert few.transmission("a", "s", 1.0) == pytest.approx(alone * (1 - 3 * 0.01))


@pytest.mark.parametrize("ports", [4, 7, 1000])
def test_port_counts_outside_16_to_384_are_refused(ports):
    with pytest.raises(ValueError, match=r"size=\d+ not in 8..192"):
        SwitchFabric.from_config("x", {"ports": ports}, seed=0)


def test_stuck_port_reports_the_patch_but_passes_no_light(dc, raw):
    raw.write(":OXC:SWIT:CONN:ADD (@1,2),(@9,10)")
    raw.query("*OPC?")
    dc.faults.stuck_port(OXC, 9)
    assert raw.query(":OXC:SWIT:CONN:STAT?") == "(@1,2),(@9,10)"
    fabric = dc.world.switches["oxc"]
    assert fabric.transmission("alice", "h1", dc.clock.now()) == 0.0
    assert fabric.transmission("bob", "h1", dc.clock.now()) > 0
    assert dc.truth()["switches"]["oxc"]["stuck"] == [9]


def test_driver_validates_before_sending(oxc, raw):
    assert oxc.size == 8
    with pytest.raises(ValueError, match=r"egress port=20 not an integer in 9..16"):
        oxc.connect({1: 20})
    with pytest.raises(ValueError, match=r"ingress port=0 not an integer in 1..8"):
        oxc.connections({0: 9})
    with pytest.raises(ValueError, match="egress port=9 patched from both 1 and 2"):
        oxc.connections({1: 9, 2: 9})
    oxc.connect({1: 9})
    with pytest.raises(ValueError, match="egress port=9 patched from both 1 and 3"):
        oxc.connect({3: 9})
    with pytest.raises(ValueError, match="ingress port=1 is patched to 9, not 10"):
        oxc.connect({1: 10})
    with pytest.raises(ValueError, match="ingress port=2 is not patched"):
        oxc.disconnect([2])
    assert error(raw) == '0,"No error"'  # nothing refused reached the switch


def test_driver_connections_round_trip(oxc):
    oxc.connect({1: 9, 2: 10})
    assert oxc.connections() == {1: 9, 2: 10}
    assert oxc.port(10) == 2 and oxc.port(5) is None
    oxc.connections({3: 11, 4: 12})
    assert oxc.connections() == {3: 11, 4: 12}
    oxc.disconnect([3])
    assert oxc.connections() == {4: 12}
    oxc.settle()
    oxc.connections({})
    assert oxc.connections() == {}


@pytest.mark.qnetlab_served("qnetlab.sim_instruments.labs:dc_small.yaml", speed=1000)
def test_served_over_tcp_with_pyvisa_py(served_lab):
    """The switch as a lab's bench sees it: its own socket, the driver on pyvisa-py, lower-case
    SCPI from a raw client, the world behind it the served lab's."""
    oxc = QnetlabOpticalSwitch("oxc_tcp", served_lab.address_of(OXC), visalib="@py",
                               print_connect_message=False, timeout=5)
    try:
        oxc.connections({1: 9, 2: 10})
        oxc.settle()
        assert oxc.connections() == {1: 9, 2: 10}
        assert served_lab.truth()["switches"]["oxc"]["patch_loss_db"].keys() == {"1-9", "2-10"}
        raw = oxc.visa_handle
        raw.write(":oxc:swit:conn:add (@3),(@9)")
        assert raw.query(":syst:err?").startswith("-221,")
        served_lab.faults.stuck_port(OXC, 10)
        assert served_lab.truth()["switches"]["oxc"]["stuck"] == [10]
    finally:
        oxc.close()


def test_the_data_center_station_brings_the_switch_up_on_the_lab_clock(dc):
    from qnetlab import stations

    bundle = stations.load("sim_dc_small")
    station, topology, clock = bundle
    try:
        assert set(topology.nodes) == {"alice", "bob", "carol", "dave"}
        assert set(topology.heralds) == {"h1", "h2"} and not topology.links
        oxc = station.components["oxc"]
        assert clock is dc.clock and oxc.clock is clock
        t0 = clock.now()
        oxc.connections({1: 9, 2: 10})
        oxc.settle()
        assert clock.now() - t0 == pytest.approx(0.025)
        assert dc.world.switches["oxc"].patches == {1: 9, 2: 10}
    finally:
        bundle.close()
