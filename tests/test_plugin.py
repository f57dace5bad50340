"""The pytest plugin as an outside project uses it (pytester, entry-point loading)."""

from __future__ import annotations

OUTSIDE_TESTS = '''
import pytest
import pyvisa


def test_station_fixture(sim_station):
    qnu = sim_station.node("alice")["qnu"]
    assert qnu.link1.peer() == "bob"
    assert sim_station.clock.now() == 0.0
    sim_station.clock.sleep(3600)
    assert sim_station.clock.now() == 3600.0
    fridge = sim_station.node("alice")["fridge"]
    assert fridge.mxc.temperature() < 0.012


def test_state_was_reset(sim_station):
    assert sim_station.clock.now() == 0.0


@pytest.mark.qnetlab_station("sim_chain")
def test_marker_picks_the_station(sim_station):
    assert sorted(sim_station.topology.nodes) == ["alice", "bob", "carol"]


def test_lab_truth_and_faults(sim_lab, qnetlab_seed):
    lab = sim_lab("node")
    assert lab.seed == qnetlab_seed == 7
    truth = lab.truth()
    assert 1549 < truth["nodes"]["alice"]["resonance_nm"] < 1551
    rm = pyvisa.ResourceManager(lab.visalib)
    pump = rm.open_resource("TCPIP0::pump-alice.lab::inst0::INSTR", read_termination="\\n",
                            write_termination="\\n")
    pump.timeout = 100
    lab.faults.delay("TCPIP0::pump-alice.lab::inst0::INSTR", 1.0, count=1)
    with pytest.raises(pyvisa.VisaIOError):
        pump.query("*IDN?")
    pump.close()


def test_same_seed_same_truth(sim_lab):
    a = sim_lab("node").truth()
    b = sim_lab("node").truth()
    assert a == b


def test_store_in_a_temporary_data_dir(qnetlab_store, qnetlab_data_dir):
    import os
    assert os.environ["QNETLAB_DATA"] == str(qnetlab_data_dir)
    run = qnetlab_store.run("outside")
    run.register("x")
    with run:
        run.add_point(x=1.0)
    assert run.hdf5_path.is_relative_to(qnetlab_data_dir)
'''


def test_plugin_fixtures_work_in_an_outside_project(pytester):
    pytester.makepyfile(test_outside=OUTSIDE_TESTS)
    result = pytester.runpytest_subprocess("--qnetlab-seed", "7", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=6)


HOST_TESTS = '''
import pytest
from qcodes.instrument import Instrument


@pytest.fixture(scope="session")
def host_instrument():
    inst = Instrument("host_thing")
    yield inst
    inst.close()


def test_station_then_lab(host_instrument, sim_station, sim_lab):
    from qnetlab.drivers import QnetlabPumpLaser

    lab = sim_lab("node")
    QnetlabPumpLaser("mine", "TCPIP0::pump-alice.lab::inst0::INSTR", visalib=lab.visalib,
                     print_connect_message=False)
    assert sim_station.node("alice")["pump"].name == "pump_alice"


def test_host_instrument_survives_the_plugin_teardown(host_instrument):
    assert Instrument.exist("host_thing")
    assert not Instrument.exist("pump_alice")  # the plugin's own instruments are closed
    assert not Instrument.exist("mine")  # and those opened on the labs it handed out
'''


def test_plugin_teardown_closes_only_the_instruments_it_opened(pytester):
    pytester.makepyfile(test_host=HOST_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_plugin_registers_its_option_and_marker(pytester):
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--qnetlab-seed*"])
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["*qnetlab_station(name)*"])
