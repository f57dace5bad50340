"""Issue 14 §2: the generated data-center lab (`dc:K,M`): K QPU nodes with their instruments,
M heralding stations, one optical switch, as lab and station files from one description."""

from __future__ import annotations

import pytest
import yaml

from qnetlab import stations, topologies
from qnetlab.sim_instruments.fabric import SimFabric


def test_dc_16_4_has_a_32_port_switch_between_the_qnus_and_the_stations():
    net = topologies.build("dc:16,4")
    lab = net.x_lab()
    oxc = lab["switches"]["oxc"]
    assert oxc["ports"] == 32 and lab["links"] == {}
    assert oxc["nodes"] == {node: i + 1 for i, node in enumerate(net.nodes)}
    assert [p for h in net.heralds for p in oxc["stations"][h]] == list(range(17, 25))
    kinds = [i.kind for i in net.instruments()]
    assert kinds.count("qnu") == 16 and kinds.count("herald") == 4 and kinds.count("switch") == 1
    assert {"pump", "aom", "fridge", "gas"} <= set(kinds)
    text = topologies.lab_file("dc:16,4", topologies_dir())
    assert yaml.safe_load(text.read_text())["x-lab"]["switches"] == lab["switches"]
    fabric = SimFabric.from_spec("dc:16,4")
    assert fabric.nodes == sorted(net.nodes) and fabric.stations == list(net.heralds)
    assert fabric.switch.size == 16


def topologies_dir() -> str:
    from importlib.resources import files

    return str(files("qnetlab.sim_instruments"))


@pytest.mark.parametrize("spec, words", [
    ("dc:65,2", ["K=65", "K 2..64"]), ("dc:4,0", ["M=0", "M 1..32"]), ("dc:4", ["dc:K,M"]),
])
def test_bad_data_center_specs_are_one_line(spec, words):
    with pytest.raises(topologies.SpecError) as err:
        topologies.build(spec)
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words)


def test_the_generated_station_brings_the_switch_and_every_node_up(sim_lab):
    lab = sim_lab("dc:4,2")
    bundle = stations.load("dc:4,2")
    station, topology, clock = bundle
    try:
        assert clock is lab.clock
        assert set(topology.nodes) == {"alice", "bob", "carol", "dave"}
        assert set(topology.heralds) == {"h1", "h2"}
        oxc = station.components["oxc"]
        assert oxc.size == 8 and oxc.clock is clock
        oxc.connections({1: 9, 2: 10})
        oxc.settle()
        assert lab.world.switches["oxc"].patches == {1: 9, 2: 10}
        assert bundle.node("dave")["pump"].output() is False  # the station starts it dark
    finally:
        bundle.close()
