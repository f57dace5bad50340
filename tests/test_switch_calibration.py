"""Issue 14 §2: the calibration graph covers the optical switch (per-patch loss) of a data center."""

from __future__ import annotations

import itertools

import pytest

from qnetlab import stations
from qnetlab.sequences.calibration import (
    CalibrationGraph,
    CalibrationStore,
    calibrate,
    default_calibrations,
)

LAB = "qnetlab.sim_instruments.labs:dc_small.yaml@qnetlab"
OXC = "TCPIP0::oxc.lab::3082::SOCKET"
NODES = ("alice", "bob", "carol", "dave")
PATCHES = [f"{n}@{h}" for n in NODES for h in ("h1", "h2")]


@pytest.fixture
def dc(sim_lab):
    return sim_lab(LAB)


@pytest.fixture
def bundle(dc):
    b = stations.load("sim_dc_small")
    yield b
    b.close()


def _patch_only(bundle, **options):
    """The graph's switch calibration alone (the node bring-up is tested elsewhere)."""
    cals = [c for c in default_calibrations() if c.name == "switch_patch_loss"]
    for cal in cals:
        for key, value in options.items():
            setattr(cal, key, value)
    return cals


def test_the_data_center_graph_has_every_nodes_path_to_every_station_and_a_link_lab_none():
    graph = CalibrationGraph(default_calibrations(),
                             stations.read_topology(stations.station_file("sim_dc_small")))
    assert sorted(t for c, t in graph.keys() if c == "switch_patch_loss") == sorted(PATCHES)
    linked = CalibrationGraph(default_calibrations(),  # fixed links: no switch to calibrate
                              stations.read_topology(stations.station_file("sim_link")))
    assert not [k for k in linked.keys() if k[0] == "switch_patch_loss"]


def test_calibrate_records_each_patch_loss_near_the_hidden_truth(dc, bundle, tmp_path):
    report = calibrate(bundle, data_dir=tmp_path, calibrations=_patch_only(bundle))
    assert report.ok, report.table()
    fabric = dc.world.switches["oxc"]
    store = CalibrationStore(tmp_path)
    for node in NODES:
        for herald in ("h1", "h2"):
            for k, egress in enumerate(fabric.station_ports[herald]):
                rec = store.current(f"loss_in{k}_db", f"{node}@{herald}")
                truth = fabric.patch_loss_db(fabric.node_ports[node], egress)
                assert rec.unit == "dB" and 0 < rec.uncertainty < 0.02
                assert rec.value == pytest.approx(truth, abs=0.03), (node, herald, k)
    assert fabric.patches == {}  # every node's patch removed afterwards


def test_a_stuck_port_fails_its_patches_naming_the_port_and_the_rest_completes(
        dc, bundle, tmp_path):
    dc.faults.stuck_port(OXC, 11)  # h2's input 0
    report = calibrate(bundle, data_dir=tmp_path, calibrations=_patch_only(bundle))
    failed = report.by_status("failed")
    assert sorted(failed) == sorted(f"switch_patch_loss:{n}@h2" for n in NODES), report.table()
    detail = report.result("switch_patch_loss", "alice@h2").detail
    assert "patch 1->11" in detail and "port 1 or 11 stuck" in detail
    assert all(report.result("switch_patch_loss", f"{n}@h1").status == "calibrated"
               for n in NODES)
    state = CalibrationStore(tmp_path).node_states()[("switch_patch_loss", "bob@h2")]
    assert state.last_outcome == "failed" and "11" in state.detail


def test_a_rerun_skips_the_fresh_patches_and_remeasures_the_failed(dc, bundle, tmp_path):
    dc.faults.stuck_port(OXC, 2)  # bob's fiber
    first = calibrate(bundle, data_dir=tmp_path, calibrations=_patch_only(bundle))
    assert sorted(first.by_status("failed")) == ["switch_patch_loss:bob@h1",
                                                 "switch_patch_loss:bob@h2"]
    dc.world.switches["oxc"].release(2)  # the port repaired
    dc.advance(60)
    second = calibrate(bundle, data_dir=tmp_path, calibrations=_patch_only(bundle))
    assert second.ok, second.table()
    assert sorted(second.by_status("calibrated")) == first.by_status("failed")
    assert len(second.by_status("fresh")) == len(PATCHES) - 2


def test_patch_steps_hold_the_switch_so_they_never_overlap(dc, bundle, tmp_path):
    report = calibrate(bundle, data_dir=tmp_path, calibrations=_patch_only(bundle))
    slots = sorted(report.schedule, key=lambda s: s.start)
    assert len(slots) == len(PATCHES)
    assert all(a.end <= b.start for a, b in itertools.pairwise(slots))


def test_the_data_center_takes_the_graphs_patch_losses_and_avoids_the_stuck_input(
        dc, bundle, tmp_path):
    from qnetlab.datacenter import DataCenter, DynamicScheduler
    from qnetlab.sim_instruments.fabric import SimFabric

    dc.faults.stuck_port(OXC, 11)  # h2's input 0
    calibrate(bundle, data_dir=tmp_path, calibrations=_patch_only(bundle))
    layer = DataCenter(SimFabric(dc.world), DynamicScheduler())
    losses = layer.load_switch_calibration(CalibrationStore(tmp_path))
    fabric = dc.world.switches["oxc"]
    assert len(losses) == len(NODES) * 3  # h2's input 1: its calibration failed, no value
    for (node, station, i), db in losses.items():
        if (station, i) == ("h2", 0):
            assert db == float("inf")
        else:
            truth = fabric.patch_loss_db(fabric.node_ports[node],
                                         fabric.station_ports[station][i])
            assert db == pytest.approx(truth, abs=0.03)
    assert layer.ways("alice", "bob", "h1") == [(0, 1), (1, 0)]
    assert layer.ways("alice", "bob", "h2") == []  # h2 has one live input: no link there


def test_the_whole_data_center_graph_calibrates_and_a_rerun_measures_nothing(bundle, tmp_path):
    """The default graph on sim_dc_small: node bring-up and the switch's paths, nothing that
    needs a fixed link (a switched heralding station has none) fails."""
    first = calibrate(bundle, data_dir=tmp_path)
    assert first.ok, first.table()
    assert {r.cal for r in first.results} >= {"cryostat_ready", "switch_patch_loss"}
    assert "detector_timing" not in {r.cal for r in first.results}
    second = calibrate(bundle, data_dir=tmp_path)
    assert {r.status for r in second.results} == {"fresh"}, second.table()


def test_a_stuck_port_shows_in_qnetlab_status(dc, bundle, tmp_path):
    import os
    import subprocess
    import sys

    dc.faults.stuck_port(OXC, 1)  # alice's fiber
    calibrate(bundle, data_dir=tmp_path, calibrations=_patch_only(bundle))
    env = {**os.environ, "QNETLAB_DATA": str(tmp_path), "MPLBACKEND": "Agg"}
    status = subprocess.run([sys.executable, "-m", "qnetlab", "--station", "sim_dc_small",
                             "status"], capture_output=True, text=True, env=env, timeout=300)
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line.split()[1] for line in status.stdout.splitlines()
            if line.startswith("switch_patch_loss:")}
    assert rows == {
        f"switch_patch_loss:{p_}": "failed" if p_.startswith("alice@") else "calibrated"
        for p_ in PATCHES}, status.stdout


def test_a_generated_data_center_station_carries_its_cabling_for_the_graph(sim_lab, tmp_path):
    lab = sim_lab("dc:3,2")
    b = stations.load("dc:3,2")
    try:
        oxc, fabric = b.station.components["oxc"], lab.world.switches["oxc"]
        assert oxc.wiring == {**{n: (p,) for n, p in fabric.node_ports.items()},
                              **{h: tuple(p) for h, p in fabric.station_ports.items()}}
        graph = CalibrationGraph(default_calibrations(), b.topology)
        assert sorted(t for c, t in graph.keys() if c == "switch_patch_loss") == sorted(
            f"{n}@{h}" for n in b.topology.nodes for h in b.topology.heralds)
        report = calibrate(b, data_dir=tmp_path, calibrations=_patch_only(b))
        assert report.ok and len(report.results) == 6, report.table()
    finally:
        b.close()
