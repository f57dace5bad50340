"""Issue 13 §3: one agent per site, in this process.

The coordinator talks only to agents; the calibrations and sequences run unchanged on the
``AgentBundle``: the same calls on the same seeded lab give the same calibrated values as on a
plain station, the instrument's own exception (type and words) reaches the caller, calls from
several threads at once get their own answers, and each site's watchdog acts on its own site.
"""

from __future__ import annotations

import threading

import pytest
from qcodes.instrument import Instrument

from qnetlab import stations
from qnetlab.agents import AgentBundle, InstrumentProxy, load_agents, sites_of
from qnetlab.runread import load_run
from qnetlab.sequences.calibration import CalibrationStore, calibrate
from qnetlab.stations import TopologyError, parse_topology


def calibrated_values(bundle, data) -> tuple[dict, object]:
    store = CalibrationStore(data)
    report = calibrate(bundle, data_dir=data, store=store)
    assert report.ok, report.table()
    return {k: (r.value, r.uncertainty) for k, r in store.state().items()}, report


def test_agents_calibrate_the_link_exactly_like_the_station(sim_lab, tmp_path):
    lab = sim_lab("link", seed=22)
    plain = stations.load("sim_link")
    expected, _ = calibrated_values(plain, tmp_path / "plain")
    t_plain = lab.clock.now()
    plain.close()
    lab.reset()
    bundle = load_agents("sim_link", watchdog=False)
    try:
        assert isinstance(bundle, AgentBundle)
        assert isinstance(bundle.node("alice")["qnu"], InstrumentProxy)
        got, report = calibrated_values(bundle, tmp_path / "agents")
        assert got == expected  # same calls in the same order on the same seed: same values
        assert lab.clock.now() == pytest.approx(t_plain)
        # datasets name the instruments' own parameters, with the agents' snapshots
        mw = report.result("mw_mode", "alice")
        data = load_run(mw.runs[-1], tmp_path / "agents")
        names = set(data.dataset.description.interdeps.names)
        assert {"qnu_alice_transducer_bias", "qnu_alice_transducer_mw_frequency"} <= names
        assert "qnu_alice" in data.dataset.snapshot["station"]["instruments"]
    finally:
        bundle.close()


def test_each_site_loads_only_its_own_instruments(sim_lab):
    sim_lab("link")
    bundle = load_agents("sim_link", watchdog=False)
    try:
        loaded = {s: set(a.bundle.station.components) for s, a in
                  bundle.transport.agents.items()}
        assert loaded == {"alice": {"qnu_alice", "pump_alice", "aom_alice", "fridge_alice",
                                    "triton_alice"},
                          "bob": {"qnu_bob", "pump_bob", "aom_bob", "fridge_bob", "triton_bob"},
                          "mid": {"herald_mid"}}
        assert bundle.instrument("herald_mid").site == "mid"
        assert bundle.herald("ab").name == "herald_mid"
    finally:
        bundle.close()
    assert not Instrument._all_instruments  # closing the bundle closed every site


def test_proxies_relay_the_instruments_own_errors(sim_lab):
    sim_lab("link")
    bundle = load_agents("sim_link", watchdog=False)
    try:
        agent = bundle.transport.agents["alice"]
        real = agent.bundle.station.components["pump_alice"]
        proxy = bundle.node("alice")["pump"]
        with pytest.raises(ValueError) as direct:
            real.power(20.0)
        with pytest.raises(ValueError) as relayed:
            proxy.power(20.0)
        assert str(relayed.value) == str(direct.value) and "20.0" in str(relayed.value)
        with pytest.raises(KeyError, match="qnu_alice has no link to 'nobody'"):
            bundle.node("alice")["qnu"].link_to("nobody")
        with pytest.raises(AttributeError, match="no parameter, submodule or method 'nonsense'"):
            _ = proxy.nonsense
        assert hasattr(bundle.node("alice")["aom"], "open_gate")
        assert not hasattr(proxy, "open_gate")
        # a method returning an instrument module gives a proxy of it, on the same agent
        link = bundle.node("alice")["qnu"].link_to("bob")
        assert isinstance(link, InstrumentProxy) and link.peer() == "bob"
        assert link.fiber_length() == pytest.approx(2.0)
        # set_to restores the instrument's value, read on its agent
        before = proxy.power()
        with proxy.power.set_to(before - 1.0):
            assert real.power() == pytest.approx(before - 1.0)
        assert real.power() == pytest.approx(before)
    finally:
        bundle.close()


def test_calls_from_many_threads_get_their_own_answers(sim_lab):
    """Calibration workers call agents from several threads at once (same site or not):
    each call gets the answer to its own question."""
    sim_lab("link")
    bundle = load_agents("sim_link", watchdog=False)
    errors: list[BaseException] = []
    try:
        powers = {"alice": 1.5, "bob": -2.5}
        for node, dbm in powers.items():
            bundle.node(node)["pump"].power(dbm)

        def worker(node: str) -> None:
            peer = "bob" if node == "alice" else "alice"
            try:
                for _ in range(25):
                    assert bundle.node(node)["pump"].power() == pytest.approx(powers[node])
                    assert bundle.node(node)["qnu"].link_to(peer).peer() == peer
                    assert bundle.node(node)["aom"].gate_mode() == "cw"
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in powers for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
    finally:
        bundle.close()


def test_a_sites_watchdog_makes_only_its_site_safe(sim_lab):
    lab = sim_lab("link")
    bundle = load_agents("sim_link", watchdog=True)
    events: list[dict] = []
    try:
        with bundle.recovery_listener(events.append):
            for node in ("alice", "bob"):
                pump = bundle.node(node)["pump"]
                pump.output("on")
            lab.faults.excursion("alice", power_w=3e-3, duration_s=3600)
            bundle.clock.sleep(600)
            bob = bundle.node("bob")["pump"]
            assert bob.output() is True  # the other site is not touched
            assert bundle.node("alice")["pump"].output() is False  # this call brings events
        assert any(e["site"] == "alice" and e["kind"] == "safe_action" for e in events), events
        assert not any(e["site"] == "bob" for e in events)
        status = bundle.status()
        assert status["alice"]["watchdog"] in ("suspended", "suspending", "aborted")
        assert status["bob"]["watchdog"] == "running"
    finally:
        bundle.close()


def test_sites_default_to_nodes_and_heralds_and_a_topology_may_group_them():
    spec = {"nodes": {"alice": dict(qnu="qa", pump="pa", aom="aa", fridge="fa", gas="ga",
                                    site="rack1"),
                      "bob": dict(qnu="qb", pump="pb", aom="ab", fridge="fb", gas="gb")},
            "heralds": {"mid": {"qnu": "hm", "site": "rack1"}},
            "links": {"ab": {"nodes": ["alice", "bob"], "herald": "mid",
                             "fiber_km": [1, 1]}}}
    sites = sites_of(parse_topology(spec))
    assert {s: (v.nodes, v.heralds) for s, v in sites.items()} == {
        "rack1": (["alice"], ["mid"]), "bob": (["bob"], [])}
    assert parse_topology(spec).as_dict()["nodes"]["alice"]["site"] == "rack1"
    spec["heralds"]["mid"]["site"] = ""
    with pytest.raises(TopologyError, match=r"heralds\.mid\.site: site='': must be a non-empty"):
        parse_topology(spec)
    spec["heralds"]["mid"]["site"] = "rack 1"
    with pytest.raises(TopologyError, match="site='rack 1': a site name uses only"):
        sites_of(parse_topology(spec))


def test_cluster_refuses_a_lab_simulated_inside_one_process(tmp_path, capsys):
    from qnetlab.cli import run_cli

    code = run_cli(["--station", "sim_link", "--data", str(tmp_path), "--cluster", "auto",
                    "calibrate"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("qnetlab: error: --cluster: sim_link.station.yaml: instrument ")
    assert "qnetlab sim serve LAB --station-out F" in err[0]
