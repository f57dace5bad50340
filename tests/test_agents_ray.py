"""Issue 13 §3 on Ray: four sites as Ray actors, each reaching its instruments over TCP.

A local Ray instance started here (two CPUs, one ``site:<name>`` resource per site, no
dashboard, token authentication on with a token of its own), shut down at the end of the
module. The served three-node chain (``served_lab``) has five instrument groups; its two
heralding stations share a site (``site: hub`` in the topology), so four sites: alice, bob,
carol and hub. Each site is an actor ``qnetlab-site-<name>`` that opens only its instruments,
over TCP; the coordinator (this process) talks only to the actors.

Tolerances: the served lab drifts while bytes travel (lab time runs at the served speed), so
recovered values are compared to the hidden truth at the record's lab time with the served
allowances of ``test_served_link`` (resonance 5 pm, bias offset 0.01 mA, swap amplitude 0.04).
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
import ray
import yaml

from qnetlab.agents import calibrate_resuming, load_agents
from qnetlab.agents.ray_agents import actor_name
from qnetlab.runstore import RunStore
from qnetlab.sequences.calibration import CalibrationStore
from qnetlab.sequences.calibration.node_bringup import CryostatReady, MwMode, PumpCavity, QubitSwap
from qnetlab.sequences.entanglement import verify

SITES = ("alice", "bob", "carol", "hub")
ALLOWANCE = {"resonance_nm": 0.005, "bias_offset_ma": 0.01, "swap_amplitude": 0.04}
pytestmark = pytest.mark.qnetlab_served("chain", speed=2000)


@pytest.fixture(scope="module")
def ray_sites():
    """A local Ray instance with a resource per site; token authentication on, with a token
    of this test's own (in the environment, so nothing is written to ~/.ray)."""
    old = os.environ.get("RAY_AUTH_TOKEN")
    os.environ["RAY_AUTH_TOKEN"] = uuid.uuid4().hex
    ray.init(num_cpus=2, resources={f"site:{s}": 1 for s in SITES}, include_dashboard=False,
             namespace="qnetlab", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("RAY_AUTH_TOKEN", None)
        else:
            os.environ["RAY_AUTH_TOKEN"] = old


def four_sites(served_lab, tmp_path):
    """The served chain's station file, its two heralding stations on one site 'hub'."""
    raw = yaml.safe_load(served_lab.station_file.read_text())
    for herald in raw["instruments"]["network"]["init"]["heralds"].values():
        herald["site"] = "hub"
    path = tmp_path / "four_sites.station.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def bring_up() -> list:
    """A node's bring-up calibrations (cryostat, cavity, microwave mode, qubit swap)."""
    return [CryostatReady(), PumpCavity(), MwMode(), QubitSwap()]


def truth_of(served_lab, quantity: str, target: str, at: float) -> float:
    library = served_lab.served.library
    with library.lock:  # the agents' watchdogs keep querying the served world meanwhile
        node = library.lab.truth(at=at)["nodes"][target]
    return {"resonance_nm": node["resonance_nm"], "bias_offset_ma": node["bias_offset_ma"],
            "swap_amplitude": node["swap_amplitude_opt"]}[quantity]


def test_four_sites_on_ray_calibrate_and_entangle_a_link(ray_sites, served_lab, tmp_path):
    bundle = load_agents(four_sites(served_lab, tmp_path), cluster="auto")
    try:
        assert set(bundle.sites) == set(SITES)
        assert {s["site"] for s in bundle.status().values()} == set(SITES)
        for site in SITES:  # named actors, one per site, placed by the site's resource
            assert ray.get_actor(actor_name(site), namespace="qnetlab") is not None
        assert ray.available_resources().get("site:alice", 0) == 0  # taken by its actor
        # the instrument's own exception crosses the process boundary: type and words
        with pytest.raises(ValueError, match=r"20\.0.*power"):
            bundle.node("alice")["pump"].power(20.0)
        with pytest.raises(KeyError, match="qnu_bob has no link to 'nobody'"):
            bundle.node("bob")["qnu"].link_to("nobody")
        assert bundle.node("bob")["qnu"].link_to("carol").peer() == "carol"
        data = tmp_path / "data"
        store, runs = CalibrationStore(data), RunStore(data)
        report = calibrate_resuming(bundle, data_dir=data, store=store, runs=runs)
        assert report.ok, report.table()
        assert report.restarted == []
        assert report.by_status("calibrated")
        for (quantity, target), rec in store.state().items():
            if quantity in ALLOWANCE:
                true = truth_of(served_lab, quantity, target, rec.lab_time)
                assert abs(rec.value - true) < ALLOWANCE[quantity], (quantity, target)
        result = verify(bundle, "ab", pairs=300, calibration=store.as_dict(), runs=runs,
                        bootstrap=10)
        assert result.tomography.fidelity > 0.5, result.tomography
        runs.close()
    finally:
        bundle.close()
    world = served_lab.served.library.lab
    assert not any(world.nodes[n].pump.emitting for n in ("alice", "bob", "carol"))


def test_a_killed_site_restarts_safe_and_the_calibration_resumes(ray_sites, served_lab,
                                                                  tmp_path):
    bundle = load_agents(four_sites(served_lab, tmp_path), cluster="auto")
    world = served_lab.served.library.lab
    try:
        pids = bundle.transport.pids()
        killed: list[str] = []
        seen_at_restart: dict[str, object] = {}

        def kill_bob_after_its_cavity(result) -> None:
            # bob's laser on (as a step between measurements leaves it) when its agent dies
            if (result.cal, result.target) == ("pump_cavity", "bob") and not killed:
                bundle.node("bob")["pump"].output("on")
                assert world.nodes["bob"].pump.output_on
                os.kill(pids["bob"], signal.SIGKILL)
                killed.append("bob")

        wait_ready = bundle.transport.wait_ready

        def watching_wait_ready(site, timeout_s):
            status = wait_ready(site, timeout_s)
            seen_at_restart[site] = (status, world.nodes[site].pump.output_on)
            return status

        bundle.transport.wait_ready = watching_wait_ready
        data = tmp_path / "data"
        store = CalibrationStore(data)
        report = calibrate_resuming(bundle, targets=("alice", "bob"), data_dir=data,
                                    store=store, progress=kill_bob_after_its_cavity,
                                    calibrations=bring_up())
        assert killed == ["bob"] and report.restarted[:1] == ["bob"]
        assert report.ok, report.table()
        # the restarted agent put bob safe before anything else ran on it
        status, output_on = seen_at_restart["bob"]
        assert status["restarted"] is True and output_on is False
        assert "pump_bob" in status["safe_at_start"]
        new_pids = bundle.transport.pids()
        assert new_pids["bob"] != pids["bob"]
        assert {s: new_pids[s] for s in ("alice", "carol", "hub")} == {
            s: pids[s] for s in ("alice", "carol", "hub")}  # the other sites kept running
        # resumed where it stopped: alice's steps not redone (fresh, or checked in spec when
        # the served lab's fast lab time outran their timeout), bob's remaining steps done
        assert report.result("pump_cavity", "alice").status in ("fresh", "in_spec")
        assert report.result("qubit_swap", "bob").status == "calibrated"
        # no quantity recorded twice
        for quantity, target in store.state():
            assert len(store.history(quantity, target)) == 1, (quantity, target)
    finally:
        bundle.close()


def test_the_cli_calibrates_on_the_cluster(ray_sites, served_lab, tmp_path, capsys):
    from qnetlab.cli import run_cli

    station = four_sites(served_lab, tmp_path)
    code = run_cli(["--station", str(station), "--data", str(tmp_path / "data"), "--cluster",
                    "auto", "calibrate", "cryostat_ready:carol"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "cryostat_ready:carol" in out and "(ok)" in out
    assert not ray.util.list_named_actors()  # the command ended its actors
