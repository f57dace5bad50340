"""Entanglement on the simulated testbed: generation, verification, scans, swapping, time tags,
all against the analytic model of the simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import unitary_group

from qnetlab import stations
from qnetlab.drivers.qnu import RESULT_COLUMNS, QnetlabQNU
from qnetlab.runread import load_run
from qnetlab.sequences.calibration import CalibrationStore, calibrate
from qnetlab.sequences.entanglement import estimators as tomo
from qnetlab.sequences.entanglement import (
    extract_heralds,
    frames,
    generate,
    quick_fidelity,
    swap_chain,
    tomography,
    verify,
)
from qnetlab.sequences.entanglement.scans import scan_alpha, scan_fiber, scan_pump
from qnetlab.sim_instruments.physics.heralding import (
    analytic_fidelity,
    bloch_data,
    false_state,
    probabilities,
    sample_outcomes,
    sample_outcomes_indexed,
    true_state,
)

ENGINE = {"single_click": "SING", "two_photon": "TWOP"}


@pytest.fixture
def link(sim_lab, qnetlab_data_dir):
    lab = sim_lab("link", seed=22)
    bundle = stations.load("sim_link")
    report = calibrate(bundle, data_dir=qnetlab_data_dir)
    assert report.ok, report.table()
    yield lab, bundle, CalibrationStore(qnetlab_data_dir).as_dict()
    bundle.close()


def model(lab, protocol: str = "single_click"):
    """The simulation's own analytic model of the link right now (pumps emitting)."""
    world = lab.world
    for node in world.nodes.values():
        node.pump.output_on = True
    engine = world.engines["alice"]
    engine.protocol = ENGINE[protocol]
    setup = world.links["ab"].herald_setup(engine, lab.clock.now())
    for node in world.nodes.values():
        node.pump.output_on = False
    return setup


def expected_chsh(setup) -> float:
    """|S| of the heralded mixture in the Psi+ frame for the CHSH settings used."""
    f = probabilities(setup).false_fraction
    rho = (1 - f) * true_state(setup, +1) + f * false_state(setup)
    _, _, t = bloch_data(rho)
    angle = {"A0": 0, "A90": 90, "A-45": -45, "A45": 45}

    def e(a, b):
        va = np.array([math.sin(math.radians(angle[a])), 0, math.cos(math.radians(angle[a]))])
        vb = np.array([math.sin(math.radians(angle[b])), 0, math.cos(math.radians(angle[b]))])
        return va @ t @ vb

    return abs(e("A0", "A-45") + e("A0", "A45") + e("A90", "A-45") - e("A90", "A45"))


@pytest.mark.parametrize("protocol", ["single_click", "two_photon"])
def test_generation_matches_the_model_for_both_protocols(link, protocol):
    lab, bundle, cal = link
    gen = generate(bundle, "ab", 3000, protocol=protocol, bases=("X", "Y", "Z"), calibration=cal)
    setup = model(lab, protocol)
    assert len(gen) == 3000 and gen.state == "DONE"
    assert set(np.unique(gen.pattern)) == ({1, 2} if protocol == "single_click"
                                           else {11, 12, 21, 22})
    assert gen.attempts.min() >= 1 and set(np.unique(gen.outcome[0])) == {-1.0, 1.0}
    p_hat = len(gen) / gen.attempts_total
    p = probabilities(setup).total
    assert abs(p_hat - p) < 4 * p_hat / math.sqrt(len(gen))
    rate = p / setup.attempt_period_s
    assert gen.rate_hz == pytest.approx(rate, rel=4 / math.sqrt(len(gen)))
    f, err = quick_fidelity(gen)
    assert abs(f - analytic_fidelity(setup)) < 4 * err, (f, err, analytic_fidelity(setup))
    assert f > 0.5


def test_tomography_and_chsh_agree_with_the_model(link):
    lab, bundle, cal = link
    result = verify(bundle, "ab", pairs=4000, calibration=cal, bootstrap=40)
    setup = model(lab)
    f_model = analytic_fidelity(setup)
    assert abs(result.tomography.fidelity - f_model) < 4 * result.tomography.fidelity_err + 0.01
    assert abs(abs(result.chsh.s) - expected_chsh(setup)) < 4 * result.chsh.s_err
    assert np.all(np.linalg.eigvalsh(result.tomography.rho) > -1e-9)
    assert result.figure is not None and result.figure.is_file()
    assert result.figure.with_name(result.figure.name.replace("density_matrix",
                                                              "heralds")).is_file()
    summary = result.summary()
    assert summary["pairs"] == 4000 and summary["rate_hz"] > 0


@pytest.mark.parametrize("fault", ["phase", "alpha", "hot_pump"])
def test_miscalibration_shows_the_expected_drop(link, fault):
    lab, bundle, cal = link
    good_f = analytic_fidelity(model(lab))
    qa = bundle.node("alice")["qnu"]
    if fault == "phase":
        phase = qa.link_to("bob").phase()
        qa.link_to("bob").phase((phase + math.pi / 2) % (2 * math.pi))
    elif fault == "alpha":
        for n in ("alice", "bob"):
            bundle.node(n)["qnu"].qubit.alpha(0.3)  # the station caps alpha at 0.3
    else:
        for n in ("alice", "bob"):
            bundle.node(n)["aom"].gate_mode("cw")
            bundle.node(n)["pump"].power(8.0)
    gen = generate(bundle, "ab", 3000, bases=("X", "Y", "Z"), calibration=cal)
    f, err = quick_fidelity(gen)
    expected = analytic_fidelity(model(lab))
    assert expected < good_f - 0.05
    assert abs(f - expected) < 4 * err, (fault, f, err, expected)


def _counts(rho: np.ndarray, shots: int, rng) -> np.ndarray:
    probs = np.real(np.einsum("soij,ji->so", tomo._PROJ, rho))
    return np.array([rng.multinomial(shots, p / p.sum()) for p in probs])


@pytest.mark.parametrize("state", ["bell", "werner", "product", "random_mixed"])
def test_tomography_recovers_known_states(state):
    rng = np.random.default_rng(5)
    psi = tomo.PSI_PLUS
    bell = np.outer(psi, psi.conj())
    if state == "bell":
        rho = bell
    elif state == "werner":
        rho = 0.6 * bell + 0.4 * np.eye(4) / 4
    elif state == "product":
        v = np.kron([1, 0], np.array([1, 1]) / np.sqrt(2))
        rho = np.outer(v, v.conj())
    else:
        u = unitary_group.rvs(4, random_state=3)
        rho = u @ np.diag([0.5, 0.3, 0.15, 0.05]) @ u.conj().T
    estimate = tomography(_counts(rho, 4000, rng), bootstrap=20)
    trace_distance = 0.5 * np.abs(np.linalg.eigvalsh(estimate.rho - rho)).sum()
    assert trace_distance < 0.05
    assert abs(estimate.fidelity - tomo.fidelity(rho)) < 4 * estimate.fidelity_err + 0.01


def test_bell_state_identification_from_detector_patterns():
    assert frames.bell_sign(np.array([1, 2, 11, 22, 12, 21])).tolist() == [1, -1, 1, 1, -1, -1]
    # a Psi- herald measured in X or Y flips the second node; Z does not
    out = frames.correct(np.array(["X", "Y", "Z"]), np.ones(3), np.array(["Z", "Z", "Z"]))
    assert out.tolist() == [-1, -1, 1]
    assert len(frames.SWAP_CORRECTION) == 16


def test_heralded_outcomes_show_the_bell_correlations(link):
    _lab, bundle, cal = link
    gen = generate(bundle, "ab", 2000, bases=("Z", "X"), calibration=cal)
    same = gen.basis_index[0] == gen.basis_index[1]
    z = same & (gen.basis_index[0] == 0)
    x = same & (gen.basis_index[0] == 1)
    zz = (gen.outcome[0] * gen.outcome[1])[z].mean()
    xx = (gen.outcome[0] * gen.outcome[1] * gen.sign)[x].mean()
    assert zz < -0.5 and xx > 0.3


def test_generation_stops_cleanly_and_keeps_what_it_took(link):
    _lab, bundle, cal = link
    polls = {"n": 0}

    def stop():
        polls["n"] += 1
        return polls["n"] >= 3

    gen = generate(bundle, "ab", 100000, bases=("Z",), stop=stop, poll_s=1.0, calibration=cal)
    assert gen.stopped and gen.state == "STOPPED" and 0 < len(gen) < 100000
    run = load_run(gen.run_guid)
    assert run.status == "completed" and run.dataset.metadata["qnetlab_stopped"]
    assert run.streams["heralds"]["seq"].size == len(gen)
    np.testing.assert_array_equal(run.streams["heralds"]["pattern"], gen.pattern)


@pytest.mark.parametrize("protocol", ["single_click", "two_photon"])
def test_time_tag_heralds_agree_with_the_engine(link, protocol):
    _lab, bundle, _cal = link
    herald = bundle.herald("ab")
    qa = bundle.node("alice")["qnu"]
    from qnetlab.sequences.entanglement import link_pumps, set_protocol

    set_protocol(bundle, "ab", protocol)
    duration = 4.0 if protocol == "single_click" else 60.0  # Barrett-Kok: p = eta^2 / 2
    with link_pumps(bundle, "ab"):
        request = qa.link_to("bob").create(2000, max_time_s=3600, bases_here=("Z",))
        t0 = bundle.clock.now()
        herald.tagger.record(duration)
        times, channels = herald.tagger.read_tags()
        qa.link_to("bob").wait(request, 7200, poll_s=10)
    found = extract_heralds(times, channels,
                            {1: herald.tagger.det1.delay(), 2: herald.tagger.det2.delay()},
                            herald.engine.herald_window(),
                            rounds=2 if protocol == "two_photon" else 1)
    results = qa.link_to("bob").results(request)
    wait = 2 * 2.0 * 5e-6  # the herald travels back over 2 km
    engine_sync = results.herald_time_s - wait
    inside = (engine_sync >= t0) & (engine_sync < t0 + duration)
    assert found.sync_time_ps.size == inside.sum() > 100
    np.testing.assert_allclose(found.sync_time_ps, engine_sync[inside] * 1e12, atol=2.0)
    np.testing.assert_array_equal(found.pattern, results.pattern[inside])


def test_scans_follow_the_model_and_stay_under_the_plob_bound(link):
    _lab, bundle, cal = link
    alpha = scan_alpha(bundle, "ab", [0.05, 0.15, 0.3], 1500, cal)
    tol = 4 * alpha.fidelity_err + 0.04
    model_at = np.interp(alpha.x, alpha.model_x, alpha.model_fidelity)
    assert np.all(np.abs(alpha.fidelity - model_at) < tol), (alpha.fidelity, model_at)
    assert alpha.fidelity[0] > alpha.fidelity[-1] and alpha.rate_hz[0] < alpha.rate_hz[-1]
    fiber = scan_fiber(bundle, "ab", [1.0, 10.0, 25.0], 600, cal)
    from qnetlab.sequences.entanglement.model import plob_rate

    assert np.all(np.diff(fiber.rate_hz) < 0)
    model_rate = np.interp(fiber.x, fiber.model_x, fiber.model_rate_hz)
    assert np.all(np.abs(fiber.rate_hz / model_rate - 1) < 0.25), (fiber.rate_hz, model_rate)
    for km, rate in zip(fiber.x, fiber.rate_hz, strict=True):
        period = max(1 / 50e3, 2 * km * 5e-6 + 200e-9)
        assert rate < plob_rate(np.array([km]), 1 / period)[0]
    pump = scan_pump(bundle, "ab", [-4.0, 2.0, 8.0], 800, cal)
    assert np.all(np.abs(pump.fidelity - pump.model_fidelity) < 4 * pump.fidelity_err + 0.05)
    for scan in (alpha, fiber, pump):
        assert scan.figures and all(p.is_file() for p in scan.figures)
    assert bundle.node("alice")["qnu"].link_to("bob").fiber_length() == 2.0  # restored


def test_swapping_on_the_chain_yields_the_expected_end_to_end_fidelity(sim_lab,
                                                                       qnetlab_data_dir):
    lab = sim_lab("chain", seed=33)
    bundle = stations.load("sim_chain")
    try:
        report = calibrate(bundle, data_dir=qnetlab_data_dir)
        assert report.ok, report.table()
        results = {}
        for cutoff in (0.5e-3, 50e-3):
            res = swap_chain(bundle, 3000, cutoff, max_time_s=120, bootstrap=30)
            record = lab.world.link_layer.swaps[res.swap_id]
            paulis = frames.swap_paulis(record.bsm, *record.patterns)
            ops = {"I": np.eye(2), **{k: tomo.PAULI[k] for k in "XYZ"}}
            fids = []
            for state, p in zip(record.states, paulis, strict=True):
                u = np.kron(np.eye(2), ops[p])
                fids.append(np.real(tomo.PSI_PLUS.conj() @ u @ state @ u.conj().T @ tomo.PSI_PLUS))
            expected = float(np.mean(fids))
            assert res.swaps > 50
            assert abs(res.tomography.fidelity - expected) < 4 * res.tomography.fidelity_err + 0.02
            results[cutoff] = (res, expected)
        end = bundle.node(res.ends[0])["qnu"].link_to(res.middle)
        full = end.results(res.swap_id)  # a swap's results read in pieces as well as whole
        head, rest = end.results(res.swap_id, 0, 7), end.results(res.swap_id, 7)
        np.testing.assert_array_equal(np.concatenate([head.outcome, rest.outcome]), full.outcome)
        assert head.seq.tolist() == list(range(7)) and len(rest) == len(full) - 7
        short, long_ = results[0.5e-3], results[50e-3]
        assert short[0].swaps < long_[0].swaps  # a tight cutoff discards more
        assert short[1] > long_[1] and short[0].mean_storage_s < long_[0].mean_storage_s
        assert short[1] > 0.3  # two ~0.7 links and memory decay (measured: within 4 sigma above)
    finally:
        bundle.close()


def test_arrival_histogram_and_coincidences_are_exact_on_a_known_stream():
    from qnetlab.sequences.entanglement import arrival_histogram, coincidences

    times = np.array([0, 1500, 2500, 10_000, 10_400, 11_900, 20_000, 20_050], dtype=np.int64)
    chans = np.array([0, 1, 2, 0, 1, 2, 0, 1], dtype=np.uint8)
    hist = arrival_histogram(times, chans, 1, bin_ps=500, n_bins=5)
    assert hist.tolist() == [2, 0, 0, 1, 0]  # delays 50, 400 -> bin 0; 1500 -> bin 3
    assert coincidences(times, chans, 1, 2, window_ps=1000) == 1
    assert coincidences(times, chans, 1, 2, window_ps=1500) == 2
    # sync 0 has a click in both windows (no herald), sync 1 none inside, sync 2 none inside
    assert extract_heralds(times, chans, {1: 1500, 2: 2500}, window_ps=600).pattern.size == 0
    one = extract_heralds(times[[0, 1, 3, 4]], chans[[0, 1, 3, 4]], {1: 1500, 2: 2500}, 600)
    assert one.sync_index.tolist() == [0] and one.pattern.tolist() == [1]
    assert one.sync_time_ps.tolist() == [0]


class _Wire:
    """Every reply the QNUs send while ``recording``: (instrument, command, bytes, rows of a
    RES? block), and the polls (the progress callback) between them."""

    def __init__(self, monkeypatch):
        self.replies: list[tuple[str, str, int, int]] = []
        self.polls: list[tuple[int, int]] = []  # (replies so far, pairs so far)
        self.recording = True
        receive = QnetlabQNU._receive

        def logged(inst, cmd):
            raw = receive(inst, cmd)
            if self.recording:
                rows = 0
                if ":RES? " in cmd and raw.startswith(b"#"):
                    digits = int(raw[1:2])
                    rows = int(raw[2:2 + digits] or 0) // (8 * len(RESULT_COLUMNS))
                self.replies.append((inst.name, cmd, len(raw), rows))
            return raw

        monkeypatch.setattr(QnetlabQNU, "_receive", logged)

    def progress(self, got: int, _total: int) -> None:
        self.polls.append((len(self.replies), got))

    def reads(self, name: str) -> list[tuple[int, int]]:
        """(first seq asked for, rows returned) of each RES? query ``name`` answered."""
        out = []
        for who, cmd, _, rows in self.replies:
            if who == name and ":RES? " in cmd:
                fields = cmd.split(" ", 1)[1].split(",")
                out.append((int(fields[1]) if len(fields) == 3 else 0, rows))
        return out


@pytest.mark.parametrize("ending", ["done", "stopped", "expired"])
def test_pairs_read_as_they_arrive_equal_the_full_results_at_both_ends(link, monkeypatch,
                                                                         ending):
    _lab, bundle, cal = link
    qa, qb = bundle.node("alice")["qnu"], bundle.node("bob")["qnu"]
    wire = _Wire(monkeypatch)
    polls = {"n": 0}

    def stop():
        polls["n"] += 1
        return ending == "stopped" and polls["n"] >= 7  # ~6 s of pairs at ~250 heralds/s

    pairs, max_time = (3000, 3600.0) if ending == "done" else (100_000, 25.0)
    gen = generate(bundle, "ab", pairs, bases=("X", "Z"), stop=stop, poll_s=1.0,
                   max_time_s=max_time, progress=wire.progress, calibration=cal)
    wire.recording = False
    assert gen.state == {"done": "DONE", "stopped": "STOPPED", "expired": "EXPIRED"}[ending]
    n = len(gen)
    assert (n == pairs) == (ending == "done") and n > 1000
    # each pair crossed once from each end: the reads tile 0 .. n without gaps or overlap
    for name in (qa.name, qb.name):
        starts = [start for start, rows in wire.reads(name) if rows]
        sizes = [rows for _, rows in wire.reads(name) if rows]
        assert starts == [0, *np.cumsum(sizes)[:-1].tolist()] and sum(sizes) == n
    bundle.clock.sleep(5.0)
    full_a = qa.link_to("bob").results(gen.request_id)
    full_b = qb.link_to("alice").results(gen.request_id)
    assert (len(full_a) > n) == (ending == "stopped")  # a stopped request goes on delivering
    np.testing.assert_array_equal(gen.herald_time_s, full_a.herald_time_s[:n])
    np.testing.assert_array_equal(gen.pattern, full_a.pattern[:n])
    np.testing.assert_array_equal(gen.attempts, full_a.attempts[:n])
    for end, full in enumerate((full_a, full_b)):
        np.testing.assert_array_equal(gen.basis_index[end], full.basis_index[:n])
        np.testing.assert_array_equal(gen.outcome[end], full.outcome[:n])
    stored = load_run(gen.run_guid).streams["heralds"]
    np.testing.assert_array_equal(stored["seq"], np.arange(n))
    np.testing.assert_array_equal(stored["herald_time_s"], gen.herald_time_s)
    for end, key in enumerate("ab"):
        np.testing.assert_array_equal(stored[f"basis_{key}"], gen.basis_index[end])
        np.testing.assert_array_equal(stored[f"outcome_{key}"], gen.outcome[end])


def test_bytes_and_queries_per_poll_grow_with_the_new_pairs_only(link, monkeypatch):
    """What crosses the wire per poll is proportional to the pairs that poll brings, so a run
    of N pairs moves N rows per end in total, whatever the number of polls."""
    _lab, bundle, cal = link
    wire = _Wire(monkeypatch)
    gen = generate(bundle, "ab", 20_000, bases=("Z",), poll_s=1.0, progress=wire.progress,
                   calibration=cal)
    assert len(gen) == 20_000 and len(wire.polls) > 50
    row = 8 * len(RESULT_COLUMNS)
    overhead = 3 + len(str(row * len(gen)))  # '#', digit count, length, terminator
    res = [(b, rows) for _, cmd, b, rows in wire.replies if ":RES? " in cmd]
    assert sum(rows for _, rows in res) == 2 * len(gen)  # each pair once per end
    assert sum(b for b, _ in res) <= 2 * row * len(gen) + len(res) * overhead
    for (r0, got0), (r1, got1) in itertools.pairwise(wire.polls):  # after set-up
        window = wire.replies[r0:r1]
        assert len(window) <= 4  # a constant number of queries per poll
        moved = sum(b for _, cmd, b, _ in window if ":RES? " in cmd)
        assert moved <= 2 * (row * (got1 - got0) + overhead)


def test_outcomes_looked_up_per_state_and_basis_equal_the_per_pair_sampling():
    """The link layer samples a request's outcomes from a (state, basis, basis) table; it must
    draw exactly what the per-pair Bloch contraction draws from the same random numbers."""
    rng = np.random.default_rng(5)
    u = unitary_group.rvs(4, random_state=3)
    weights = rng.random(4)
    mixed = u @ np.diag(weights / weights.sum()) @ u.conj().T
    states = [true_state_like(+1), true_state_like(-1), mixed]
    n = 50_000
    which, ia, ib = rng.integers(0, 3, n), rng.integers(0, 3, n), rng.integers(0, 2, n)
    dirs_a = np.eye(3)
    dirs_b = np.array([[math.sin(0.7), 0.0, math.cos(0.7)], [0.0, 1.0, 0.0]])
    per_pair = sample_outcomes(states, which, dirs_a[ia], dirs_b[ib], np.random.default_rng(9))
    table = sample_outcomes_indexed(states, which, dirs_a, ia, dirs_b, ib,
                                    np.random.default_rng(9))
    np.testing.assert_array_equal(per_pair[0], table[0])
    np.testing.assert_array_equal(per_pair[1], table[1])
    assert set(np.unique(table[0])) == {-1, 1}


def true_state_like(sign: int) -> np.ndarray:
    """A Bell state Psi+/- mixed with white noise."""
    psi = np.array([0, 1, sign, 0]) / math.sqrt(2)
    return 0.8 * np.outer(psi, psi) + 0.2 * np.eye(4) / 4
