"""Station files: schema-valid, warning-free, topology declared once and validated, one clock."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
from qcodes.station import Station

from qnetlab import stations
from qnetlab.clock import VirtualClock
from qnetlab.sim_instruments import lab_file
from qnetlab.stations import TopologyError, read_topology, station_file

SIMULATED = ["sim_node", "sim_link", "sim_chain"]


def test_bundled_stations():
    assert set(stations.available()) == {*SIMULATED, "hw_link"}


@pytest.mark.parametrize("name", [*SIMULATED, "hw_link"])
def test_station_file_validates_against_the_qcodes_schema_without_warnings(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        station = Station(config_file=str(station_file(name)), default=False)
    assert "network" in station.config["instruments"]


@pytest.mark.parametrize("name", SIMULATED)
def test_load_brings_every_instrument_up_with_the_lab_clock(name, sim_lab):
    lab = sim_lab(name.removeprefix("sim_"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        station, topology, clock = bundle = stations.load(name)
    try:
        assert isinstance(clock, VirtualClock) and clock is lab.clock
        expected = topology.instrument_names() | {"network"}
        assert set(station.components) == expected
        for node in topology.nodes:
            for inst in bundle.node(node).values():
                assert inst.clock is clock
        snap = station.snapshot()
        assert snap["instruments"]["network"]["metadata"]["topology"] == topology.as_dict()
        pump = bundle.node("alice")["pump"]
        assert pump.output() is False  # the station file's initial value: dark
        with pytest.raises(ValueError):
            pump.power(9.0)  # the station narrows the limit to 8 dBm
    finally:
        bundle.close()


def test_simulated_topology_matches_the_simulated_lab():
    for name, lab in (("sim_link", "link"), ("sim_chain", "chain")):
        topo = read_topology(station_file(name)).as_dict()
        world = yaml.safe_load(Path(lab_file(lab)).read_text())["x-lab"]
        assert sorted(topo["nodes"]) == sorted(world["nodes"])
        for link, spec in world["links"].items():
            assert topo["links"][link]["nodes"] == spec["nodes"]
            assert topo["links"][link]["fiber_km"] == [float(x) for x in spec["fiber_km"]]


def _strip(entry: dict) -> dict:
    out = {k: v for k, v in entry.items() if k != "address"}
    out["init"] = {k: v for k, v in entry.get("init", {}).items() if k != "visalib"}
    return out


def test_hardware_template_differs_from_the_simulated_link_only_in_addresses_and_library():
    sim = yaml.safe_load(station_file("sim_link").read_text())["instruments"]
    hw = yaml.safe_load(station_file("hw_link").read_text())["instruments"]
    assert sim.keys() == hw.keys()
    for name in sim:
        assert _strip(sim[name]) == _strip(hw[name]), name
    assert all(hw[n]["init"]["visalib"] == "@py" for n in hw if n != "network")
    assert all(sim[n]["address"] != hw[n]["address"] for n in sim if n != "network")


BROKEN = [
    ("links.ab.herald: 'moon' is not a declared heralding station",
     lambda t: t.replace("herald: mid,", "herald: moon,")),
    ("links.ab.nodes: 'carol' is not a declared node",
     lambda t: t.replace("nodes: [alice, bob], herald", "nodes: [alice, carol], herald")),
    # "station" means only the QCoDeS station: heralding stations are declared as heralds
    ("network.init: unknown keys ['stations'] (allowed: nodes, heralds, links)",
     lambda t: t.replace("      heralds:\n", "      stations:\n")),
    ("links.ab.fiber_km: needs two lengths >= 0 km",
     lambda t: t.replace("fiber_km: [2.0, 2.0]", "fiber_km: [2.0]")),
    ("nodes.bob.pump: no instrument 'pump_bobby'",
     lambda t: t.replace("pump: pump_bob,", "pump: pump_bobby,")),
    ("nodes.alice: missing ['fridge']",
     lambda t: t.replace(", fridge: fridge_alice,", ",")),
    ("nodes.alice: missing ['gas']",
     lambda t: t.replace(", gas: triton_alice}", "}")),
]


@pytest.mark.parametrize("message,edit", BROKEN, ids=[b[0].split(":")[0] for b in BROKEN])
def test_topology_errors_name_the_file_and_the_entry(tmp_path, message, edit):
    path = tmp_path / "mylab.station.yaml"
    path.write_text(edit(station_file("sim_link").read_text()))
    with pytest.raises(TopologyError) as exc:
        stations.load(path)
    assert str(exc.value).startswith("mylab.station.yaml: ")
    assert message in str(exc.value)


def test_declared_fiber_must_match_what_the_qnus_report(tmp_path, sim_lab):
    sim_lab("link")
    path = tmp_path / "wrongfiber.station.yaml"
    path.write_text(station_file("sim_link").read_text().replace(
        "fiber_km: [2.0, 2.0]", "fiber_km: [2.0, 5.0]"))
    with pytest.raises(TopologyError, match=r"links.ab.fiber_km: bob reports 2 km"):
        stations.load(path)


def test_unknown_station_lists_the_bundled_ones():
    with pytest.raises(FileNotFoundError, match="sim_link"):
        stations.load("no_such_station")
