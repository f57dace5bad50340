"""Issue 14 §3-5: the data center's link layer, network layer and switch schedulers against the
simulated world's hidden truth (SimFabric: the QNU link-layer model's physics)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from qnetlab.datacenter import (
    Ack,
    Create,
    DataCenter,
    DynamicScheduler,
    Err,
    ErrorCode,
    StaticScheduler,
)
from qnetlab.datacenter.scheduler import round_robin_pairs
from qnetlab.datacenter.timeline import timeline
from qnetlab.sim_instruments.fabric import SimFabric


def fabric(k: int = 6, m: int = 2, seed: int = 5) -> SimFabric:
    return SimFabric.from_spec(f"dc:{k},{m}", seed=seed)


def dynamic(fab: SimFabric) -> DataCenter:
    return DataCenter(fab, DynamicScheduler())


def true_fidelities(fab: SimFabric, dc: DataCenter, cid: int) -> np.ndarray:
    return np.array([fab.true_fidelity(ok.pair_id, 1 if ok.bell_state == "Psi+" else -1, 0.0)
                     for ok in dc.outcomes[cid].oks])


def test_delivered_pairs_meet_their_minimum_fidelity_against_the_hidden_truth():
    fab = fabric()
    dc = dynamic(fab)
    rng = np.random.default_rng(3)
    wanted = {}
    for _ in range(30):
        a, b = (str(x) for x in rng.choice(fab.nodes, 2, replace=False))
        f = float(rng.choice([0.6, 0.7, 0.75, 0.77]))
        dc.submit(Create(a, b, pairs=int(rng.integers(5, 40)), min_fidelity=f,
                         max_time_s=float(rng.uniform(2, 6))), at=float(rng.uniform(0, 15)))
    dc.run(20.0)
    delivered = 0
    for cid, outcome in dc.outcomes.items():
        wanted[cid] = outcome.create.min_fidelity
        if not outcome.oks:
            continue
        truth = true_fidelities(fab, dc, cid)
        delivered += truth.size
        assert np.mean(truth >= outcome.create.min_fidelity) >= 0.99, (cid, truth.min())
        goodness = np.array([ok.goodness for ok in outcome.oks])
        assert np.all(goodness >= outcome.create.min_fidelity)
        assert np.abs(goodness - truth).max() < 0.02  # the estimate is the truth's
        assert max(ok.time_of_goodness for ok in outcome.oks) <= (
            outcome.t_submit + outcome.create.max_time_s)
        assert [ok.sequence for ok in outcome.oks] == list(range(len(outcome.oks)))
    assert delivered > 300
    # the demanding requests were met by a lower bright-state population, not by luck: the
    # fastest setting (alpha 0.2) of these links is below 0.75
    assert dc.estimate("alice", "bob", "h1", (0, 1), 0.2)["fidelity"] < 0.75 <= max(wanted.values())


def test_rejected_when_the_calibrated_links_cannot_meet_the_fidelity():
    fab = fabric()
    dc = dynamic(fab)
    best = dc.best_fidelity("alice", "carol")
    assert 0.7 < best < 0.9
    reply = dc.submit(Create("alice", "carol", pairs=3, min_fidelity=round(best, 3)))
    assert isinstance(reply, Err) and reply.code is ErrorCode.REJECTED
    assert "above the best calibrated alice-carol link" in reply.detail
    ok = dc.submit(Create("alice", "carol", pairs=3, min_fidelity=round(best - 0.02, 3)))
    assert isinstance(ok, Ack)
    dc.run(5.0)
    assert dc.outcomes[ok.create_id].status == "DONE"
    assert dc.outcomes[reply.create_id].oks == []


@pytest.mark.parametrize("create, word", [
    (Create("alice", "alice"), "both 'alice'"),
    (Create("alice", "zed"), "remote='zed' is not a QPU"),
    (Create("alice", "bob", kind="M", bases=("Q",)), "basis 'Q'"),
])
def test_unsupported_requests_get_unsupp(create, word):
    reply = dynamic(fabric()).submit(create)
    assert isinstance(reply, Err) and reply.code is ErrorCode.UNSUPP and word in reply.detail


@pytest.mark.parametrize("kwargs, word", [
    ({"pairs": 0}, "pairs=0"), ({"min_fidelity": 1.5}, "min_fidelity=1.5"),
    ({"max_time_s": -1.0}, "max_time_s=-1.0"), ({"kind": "X"}, "kind='X'"),
])
def test_bad_requests_fail_in_one_line_naming_the_parameter(kwargs, word):
    with pytest.raises(ValueError, match=word) as info:
        Create("alice", "bob", **kwargs)
    assert "\n" not in str(info.value)


def test_expire_when_never_served_and_timeout_when_served_short():
    fab = fabric(4, 1)
    dc = DataCenter(fab, StaticScheduler(fab.nodes, fab.stations, slot_s=0.5))
    cycle = dc.scheduler.cycle
    first, later = cycle[0], cycle[3]  # served in slot 0; its turn comes at 1.5 s
    long = dc.submit(Create(*first, pairs=100_000, min_fidelity=0.6, max_time_s=1.2))
    short = dc.submit(Create(*later, pairs=5, min_fidelity=0.6, max_time_s=1.0))
    dc.run(3.0)
    timed_out, expired = dc.outcomes[long.create_id], dc.outcomes[short.create_id]
    assert timed_out.status == "TIMEOUT" and 0 < len(timed_out.oks) < 100_000
    assert timed_out.error.t == pytest.approx(1.2)
    assert max(ok.time_of_goodness for ok in timed_out.oks) <= 1.2
    assert expired.status == "EXPIRE" and expired.oks == []
    assert expired.error.t == pytest.approx(1.0) and "0 of 5 pairs" in expired.error.detail


def test_priorities_are_served_first():
    fab = fabric(4, 1)
    dc = dynamic(fab)
    low = dc.submit(Create("alice", "bob", pairs=60, min_fidelity=0.6, max_time_s=20,
                           priority=0))
    high = dc.submit(Create("carol", "dave", pairs=60, min_fidelity=0.6, max_time_s=20,
                            priority=5))
    dc.run(20.0)
    lo, hi = dc.outcomes[low.create_id], dc.outcomes[high.create_id]
    assert lo.status == hi.status == "DONE"
    assert hi.oks[-1].time_of_goodness < lo.oks[0].time_of_goodness
    served = [s.create_id for s in dc.log.services]
    assert served == [high.create_id, low.create_id]


def test_a_stuck_switch_port_is_detected_and_routed_around():
    fab = fabric(4, 2)
    dc = dynamic(fab)
    sw = fab.switch
    for port in sw.station_ports["h1"]:  # both inputs of h1 stuck: its patches pass no light
        sw.stick(port)
    reply = dc.submit(Create("alice", "bob", pairs=30, min_fidelity=0.7, max_time_s=10))
    dc.run(10.0)
    outcome = dc.outcomes[reply.create_id]
    assert outcome.status == "DONE"
    assert {ok.station for ok in outcome.oks} == {"h2"}
    assert any("no light" in detail and station == "h1" for _, station, detail in dc.log.faults)
    truth = true_fidelities(fab, dc, reply.create_id)
    assert np.all(truth >= 0.7)
    # without the light check the same request would get pairs heralded by dark counts at h1
    blind = dynamic(fabric(4, 2))
    for port in blind.fabric.switch.station_ports["h1"]:
        blind.fabric.switch.stick(port)
    blind.fabric.patch_transmission = lambda node, at=None: 1.0  # a monitor that sees nothing
    r2 = blind.submit(Create("alice", "bob", pairs=30, min_fidelity=0.7, max_time_s=10))
    blind.run(10.0)
    assert blind.outcomes[r2.create_id].status != "DONE" or np.any(
        true_fidelities(blind.fabric, blind, r2.create_id) < 0.7)


def test_type_m_pairs_come_with_correlated_outcomes():
    fab = fabric(4, 1)
    dc = dynamic(fab)
    reply = dc.submit(Create("alice", "bob", pairs=400, min_fidelity=0.7, max_time_s=30,
                             kind="M", bases=("Z", "X")))
    dc.run(30.0)
    oks = dc.outcomes[reply.create_id].oks
    assert len(oks) == 400 and {ok.basis for ok in oks} == {"Z", "X"}
    z = [ok.outcome * ok.remote_outcome for ok in oks if ok.basis == "Z"]
    x = [ok.outcome * ok.remote_outcome * (1 if ok.bell_state == "Psi+" else -1)
         for ok in oks if ok.basis == "X"]
    # Psi states: anti-correlated in Z, correlated in X with the heralded sign; the fidelity
    # they give, (1 - <ZZ> + 2 s<XX>) / 4 (XX = YY for these states), is the goodness
    fid = (1 - np.mean(z) + 2 * np.mean(x)) / 4
    assert np.mean(z) < -0.4 and np.mean(x) > 0.3
    assert fid == pytest.approx(oks[0].goodness, abs=0.06)


def test_round_robin_covers_every_pair_in_matchings():
    nodes = [f"n{i}" for i in range(6)]
    pairs = round_robin_pairs(nodes)
    assert len(set(pairs)) == 15
    for r in range(5):
        matching = pairs[3 * r:3 * r + 3]
        assert len({n for p in matching for n in p}) == 6  # each node once per round


def test_dynamic_serves_more_than_static_and_decides_fast():
    results = {}
    for name in ("static", "dynamic"):
        fab = fabric(8, 2, seed=9)
        sched = (StaticScheduler(fab.nodes, fab.stations, slot_s=0.5) if name == "static"
                 else DynamicScheduler())
        dc = DataCenter(fab, sched)
        rng = np.random.default_rng(11)
        for _ in range(60):
            a, b = (str(x) for x in rng.choice(fab.nodes, 2, replace=False))
            dc.submit(Create(a, b, pairs=int(rng.integers(5, 30)), min_fidelity=0.65,
                             max_time_s=float(rng.uniform(1, 4)),
                             priority=int(rng.integers(0, 3))), at=float(rng.uniform(0, 20)))
        dc.run(25.0)
        results[name] = sum(o.completed for o in dc.outcomes.values())
        assert dc.log.ms_per_decision < 5.0
        fig = timeline(dc.log, fab.stations)
        assert isinstance(fig, Figure)
        assert len(fig.axes[0].collections) >= len(dc.log.services)
    assert results["dynamic"] >= 1.5 * results["static"] > 0


def test_switch_calibration_measures_every_patch_and_finds_a_stuck_port():
    fab = fabric(6, 2)
    fab.switch.stick(fab.switch.station_ports["h2"][1])
    dc = dynamic(fab)
    t0 = dc.clock.now()
    losses = dc.calibrate_switch()
    assert len(losses) == 6 * 4  # every QPU at every station input
    for (node, station, i), db in losses.items():
        port_in = fab.switch.node_ports[node]
        port_out = fab.switch.station_ports[station][i]
        if station == "h2" and i == 1:
            assert db == float("inf")
        else:  # the true patch loss (crosstalk of the other lit patches: < 0.01 dB)
            assert db == pytest.approx(fab.switch.patch_loss_db(port_in, port_out), abs=0.01)
    assert dc.clock.now() - t0 >= 6 * fab.reconfig_s  # the rounds cost lab time
    found = len(dc.log.faults)
    assert found == 6  # every QPU saw no light at h2's second input
    replies = [dc.submit(Create(a, b, pairs=20, min_fidelity=0.7, max_time_s=10))
               for a, b in (("alice", "bob"), ("carol", "dave"), ("eve", "frank"))]
    dc.run(dc.clock.now() + 10.0)
    assert all(dc.outcomes[r.create_id].status == "DONE" for r in replies)
    assert len(dc.log.faults) == found  # the dead patch was never made again
    assert {s.station for s in dc.log.services} == {"h1"}  # h2 has one input: no links


def chain_fabric() -> SimFabric:
    """alice - bob - carol on fixed links (the bundled chain lab): no direct alice-carol link."""
    from importlib.resources import files

    import yaml

    from qnetlab.sim_instruments.physics.world import Lab

    text = (files("qnetlab.sim_instruments.labs") / "chain.yaml").read_text()
    return SimFabric(Lab(yaml.safe_load(text)["x-lab"]))


def test_no_shared_station_goes_over_a_path_with_swapping_and_a_memory_cutoff():
    fab = chain_fabric()
    dc = dynamic(fab)
    plan = dc.plan_path("alice", "carol", 0.45)
    assert plan.mid == "bob" and {plan.hop1[2], plan.hop2[2]} == {"ab", "bc"}
    assert 0 < plan.cutoff_s < 1e-3  # a few T2 of the target-2030 memory (0.3 ms) at most
    reply = dc.submit(Create("alice", "carol", pairs=8, min_fidelity=0.45, max_time_s=60))
    dc.run(60.0)
    outcome = dc.outcomes[reply.create_id]
    assert isinstance(reply, Ack) and outcome.status == "DONE"
    assert {ok.station for ok in outcome.oks} == {"ab+bc"}
    assert {ok.bell_state for ok in outcome.oks} <= {"Phi+", "Phi-", "Psi+", "Psi-"}
    truth = true_fidelities(fab, dc, reply.create_id)
    assert np.mean(truth >= 0.45) >= 0.99
    goodness = np.array([ok.goodness for ok in outcome.oks])
    assert np.all(goodness >= 0.46) and np.abs(goodness - truth).max() < 0.02
    assert {s.station for s in dc.log.services} == {"ab", "bc"}  # both hops at once


def test_a_path_whose_swapped_pairs_cannot_meet_the_fidelity_is_rejected():
    dc = dynamic(chain_fabric())
    reply = dc.submit(Create("alice", "carol", pairs=2, min_fidelity=0.6))
    assert isinstance(reply, Err) and reply.code is ErrorCode.REJECTED
    assert "swapping at bob gives" in reply.detail
    assert isinstance(dc.submit(Create("alice", "bob", pairs=2, min_fidelity=0.6)), Ack)


def test_swapped_pairs_are_recorded_as_a_run(qnetlab_store):
    from qnetlab.datacenter.runs import record
    from qnetlab.runread import load_run

    fab = chain_fabric()
    dc = dynamic(fab)
    reply = dc.submit(Create("alice", "carol", pairs=3, min_fidelity=0.45, max_time_s=60))
    assert isinstance(dc.submit(Create("alice", "carol", pairs=3, min_fidelity=0.45,
                                       kind="M")), Err)  # type M is not swapped
    dc.run(60.0)
    run = record(qnetlab_store, dc.outcomes[reply.create_id], fab.stations, clock=dc.clock,
                 services=dc.log.services)
    back = load_run(run.run_id, data_dir=qnetlab_store.data_dir)
    assert back.metadata["datacenter"]["status"] == "DONE"
    assert list(back.streams["ok"]["station"]) == [-1, -1, -1]
    names = ("Phi+", "Phi-", "Psi+", "Psi-")
    assert [names[b] for b in back.streams["ok"]["bell"]] == [
        ok.bell_state for ok in dc.outcomes[reply.create_id].oks]
