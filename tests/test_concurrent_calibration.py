"""The concurrent calibration graph: independent targets at once in exact lab time, the same
calibrated values as one step after another, deterministic, run files whole, per-site
watchdogs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import pytest

from qnetlab import stations
from qnetlab.runread import list_runs, load_run
from qnetlab.runstore import RunStore
from qnetlab.sequences.calibration import CalibrationStore, calibrate
from qnetlab.sequences.safety import State, guarded_sites, site_watchdogs, working_on

TOLERANCES = {  # recovered vs true, at the record's lab time (as tests/test_calibration.py)
    "resonance_nm": 2e-4, "bias_offset_ma": 1e-4, "swap_amplitude": 0.015,
    "det1_delay_ps": 4000.0, "det2_delay_ps": 4000.0, "phase_rad": 0.2,
}


def _truth(lab, quantity: str, target: str, at: float) -> float:
    t = lab.world.truth(at=at)
    return {
        "resonance_nm": lambda: t["nodes"][target]["resonance_nm"],
        "bias_offset_ma": lambda: t["nodes"][target]["bias_offset_ma"],
        "swap_amplitude": lambda: t["nodes"][target]["swap_amplitude_opt"],
        "det1_delay_ps": lambda: t["stations"][target]["arrival_ps"][0],
        "det2_delay_ps": lambda: t["stations"][target]["arrival_ps"][1],
        "phase_rad": lambda: t["links"][target]["phase_rad"],
    }[quantity]()


def _off_by(quantity: str, value: float, true: float) -> float:
    if quantity == "phase_rad":
        return abs((value - true + math.pi) % (2 * math.pi) - math.pi)
    return abs(value - true)


def _calibrate_chain(lab, data: Path, workers: int | None):
    """A fresh chain lab (same seed), a fresh station and data directory: one calibration."""
    lab.reset()
    data.mkdir()
    bundle = stations.load("sim_chain")
    try:
        report = calibrate(bundle, data_dir=data, workers=workers)
    finally:
        bundle.close()
    store = CalibrationStore(data)
    records = sorted((q, t, r.value, r.lab_time) for (q, t), r in store.state().items())
    errors = {(q, t): _off_by(q, v, _truth(lab, q, t, at)) for q, t, v, at in records
              if q in TOLERANCES}
    store.close()
    return report, records, errors


@pytest.fixture(scope="module")
def chain_runs(tmp_path_factory):
    """The chain calibrated one step after another, then twice concurrently."""
    from qnetlab.pytest_plugin import SimLab, _library
    from qnetlab.sim_instruments import lab_spec

    lab = SimLab(_library(lab_spec("chain")), 22)
    root = tmp_path_factory.mktemp("chain")
    try:
        yield {name: (*_calibrate_chain(lab, root / name, workers), root / name)
               for name, workers in (("serial", 1), ("concurrent", None), ("again", None))}
    finally:
        lab.reset()


def test_concurrent_chain_recovers_the_truth_as_the_serial_one(chain_runs):
    for name in ("serial", "concurrent"):
        report, _, errors, _ = chain_runs[name]
        assert report.ok, report.table()
        assert len(errors) == 3 * 3 + 2 * 3, errors  # every node, station and link quantity
        for (quantity, target), err in errors.items():
            assert err < TOLERANCES[quantity], (name, quantity, target, err)
    serial, concurrent = chain_runs["serial"][0], chain_runs["concurrent"][0]
    assert [r.key for r in serial.results] == [r.key for r in concurrent.results]
    assert [r.status for r in serial.results] == [r.status for r in concurrent.results]


def test_makespan_is_well_below_the_serial_lab_time(chain_runs):
    serial, concurrent = chain_runs["serial"][0], chain_runs["concurrent"][0]
    # one after another the makespan is the sum of the steps; at once, the three nodes' bring
    # up overlaps: about one node plus the two links
    assert serial.makespan_s == pytest.approx(serial.busy_s)
    assert concurrent.makespan_s < 0.5 * serial.makespan_s
    assert concurrent.lab_time_s == pytest.approx(concurrent.makespan_s)
    starts = {s.key: s.start for s in concurrent.schedule}
    assert starts["cryostat_ready:alice"] == starts["cryostat_ready:carol"] == 0.0
    assert starts["pump_operating_point:alice"] == starts["pump_operating_point:carol"]


def test_steps_sharing_a_resource_never_overlap(chain_runs):
    slots = chain_runs["concurrent"][0].schedule
    assert len(slots) == len(chain_runs["concurrent"][0].results)
    for i, a in enumerate(slots):
        for b in slots[i + 1:]:
            if set(a.resources) & set(b.resources):
                assert a.end <= b.start or b.end <= a.start, (a, b)
    herald = next(s for s in slots if s.key == "detector_timing:ab")
    assert set(herald.resources) == {"herald:ab", "node:alice", "node:bob"}


def test_concurrent_runs_are_deterministic_for_a_seed(chain_runs):
    first, again = chain_runs["concurrent"], chain_runs["again"]
    assert first[1] == again[1]  # every record: quantity, target, value, lab time
    assert [(s.key, s.start, s.end) for s in first[0].schedule] == \
           [(s.key, s.start, s.end) for s in again[0].schedule]
    assert [r.detail for r in first[0].results] == [r.detail for r in again[0].results]


def test_every_run_of_the_concurrent_calibration_is_its_own_whole_file(chain_runs):
    report, _, _, data = chain_runs["concurrent"]
    runs = list_runs(data)
    guids = [g for r in report.results for g in r.runs]
    assert len(runs) == len(guids) == len(set(guids)) > 20
    assert len({r["hdf5"] for r in runs}) == len(runs)
    for row in runs:
        assert row["status"] == "completed", row
        run = load_run(row["guid"], data)
        with h5py.File(run.hdf5_path, "r") as f:
            assert f.attrs["guid"] == row["guid"] and f.attrs["status"] == "completed"
            meta = json.loads(f["metadata"][()])
        # each run's file holds its own step (the step that collected it), its own data
        owner = next(r for r in report.results if row["guid"] in r.runs)
        if "calibration" in meta:  # (the link check's entanglement run has its own metadata)
            assert (meta["calibration"], meta["target"]) == (owner.cal, owner.target)
            assert row["name"].startswith(owner.cal + ".")
        assert run.arrays() or run.streams


def test_a_trip_at_one_site_stops_that_site_only(sim_lab, qnetlab_data_dir):
    lab = sim_lab("chain", seed=22)
    bundle = stations.load("sim_chain")
    runs = RunStore(qnetlab_data_dir)
    clock = bundle.clock
    dogs = site_watchdogs(bundle, poll_s=5.0, settle_s=60.0, on_event=runs.log_event)
    finished: dict[str, float] = {}
    try:
        for node in ("alice", "bob", "carol"):
            bundle.node(node)["pump"].power(2.0)
            bundle.node(node)["pump"].output("on")
        lab.faults.excursion("bob", power_w=40e-6, duration_s=300, start_in_s=100)
        with guarded_sites(bundle, dogs) as safe:
            def work(node: str) -> None:
                with working_on([node]):
                    for _ in range(10):
                        safe.clock.sleep(60)
                finished[node] = clock.now()

            start = clock.now()
            with clock.participant("test"):
                parts = [clock.spawn(n, lambda n=n: work(n)) for n in ("alice", "bob", "carol")]
            for part in parts:
                part.join()
                assert part.error is None, part.error
        # alice, carol: ten minutes plus their own polls (slow replies); bob suspended
        assert finished["alice"] == finished["carol"] < start + 601.0
        assert finished["bob"] > finished["alice"] + 60.0
        assert [e["kind"] for e in dogs["bob"].events][:3] == \
            ["suspending", "safe_action", "suspended"]
        assert dogs["bob"].state is State.RUNNING and dogs["bob"].events[-1]["kind"] == "running"
        assert dogs["alice"].events == [] and dogs["carol"].events == []
        assert bundle.node("alice")["pump"].output() and bundle.node("carol")["pump"].output()
    finally:
        runs.close()
        bundle.close()


def test_sixteen_node_chain_calibrates_in_about_one_node_plus_the_links(qnetlab_data_dir):
    bundle = stations.load("chain:16")
    try:
        report = calibrate(bundle, data_dir=qnetlab_data_dir)
    finally:
        bundle.close()
    assert report.ok, report.table()
    node_part = max(s.end for s in report.schedule if s.cal == "pump_operating_point")
    first = sorted(bundle.topology.links)[0]
    herald = bundle.topology.links[first].herald
    one_link = sum(s.end - s.start for s in report.schedule
                   if (s.cal == "detector_timing" and s.target == herald) or s.target == first)
    # the heralds and links of a chain go in two waves (neighbours share a node)
    assert report.makespan_s <= node_part + 2.5 * one_link
    assert report.makespan_s < 0.2 * report.busy_s


def test_the_calibration_report_shows_the_schedule_as_a_gantt_chart(chain_runs, tmp_path):
    from qnetlab.report import calibration_report, schedule_figure

    report = chain_runs["concurrent"][0]
    fig = schedule_figure(report.schedule)
    bars = fig.axes[0].patches
    assert len(bars) == len(report.schedule)
    by_start = sorted((b.get_x(), b.get_x() + b.get_width()) for b in bars)
    assert by_start[0][0] == min(s.start for s in report.schedule)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == \
        ["alice", "bob", "carol", "ab", "bc"]
    page = calibration_report(report, tmp_path / "cal.html").read_text()
    assert f"makespan {report.makespan_s:.0f} s" in page and "data:image/png;base64," in page
    assert page.count("<tr>") >= len(report.results) + len(report.schedule)
