"""One rule for "fresh": the engine, ``qnetlab status`` and the dashboard agree on every node."""

from __future__ import annotations

import re

from qnetlab import cli, report
from qnetlab.sequences.calibration import CalibrationGraph, CalibrationStore, default_calibrations
from qnetlab.sequences.calibration.store import NodeState
from qnetlab.stations import read_topology, station_file


def _states(store: CalibrationStore) -> None:
    """alice's cryostat recalibrated (values changed) at t=500, after her pump cavity's last
    success at t=100; bob's pump cavity failed; everything else succeeded at t=100."""
    store.save_node_state("cryostat_ready", "alice", NodeState(500.0, 500.0, "calibrated"), 500)
    store.save_node_state("pump_cavity", "alice", NodeState(100.0, 100.0, "calibrated"), 100)
    store.save_node_state("cryostat_ready", "bob", NodeState(100.0, 100.0, "calibrated"), 100)
    store.save_node_state("pump_cavity", "bob", NodeState(None, 100.0, "failed"), 200)
    store.save_node_state("mw_mode", "bob", NodeState(100.0, 100.0, "in_spec"), 100)


def test_status_dashboard_and_engine_share_one_freshness_rule(qnetlab_data_dir, tmp_path):
    store = CalibrationStore(qnetlab_data_dir)
    _states(store)
    graph = CalibrationGraph(default_calibrations(), read_topology(station_file("sim_link")))
    now = 600.0
    states = store.node_states()
    engine = {f"{c}:{t}": graph.fresh((c, t), states, now) for c, t in graph.keys()}
    assert engine["cryostat_ready:alice"] and engine["cryostat_ready:bob"]
    assert not engine["pump_cavity:alice"]  # a dependency changed after its success
    assert not engine["pump_cavity:bob"]  # failed

    status = {row[0]: row[4] == "fresh" for row in cli._calibration_rows(graph.topology, store,
                                                                          now)}
    html = report.dashboard(store, graph, now, tmp_path / "dash.html").read_text()
    cells = re.findall(r"<tr><td>([a-z_]+:[a-z]+)</td>(?:<td>[^<]*</td>){3}<td>(\w+)</td>", html)
    dash = {name: state == "fresh" for name, state in cells}
    assert status == engine
    assert dash == engine
    store.close()
