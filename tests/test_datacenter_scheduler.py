"""Issue 14 §4: the switch schedulers' decisions, one at a time (a calibration stub: every
station serves every pair at 100 pairs/s)."""

from __future__ import annotations

import math

import pytest

from qnetlab.datacenter.scheduler import (
    Assignment,
    DynamicScheduler,
    Job,
    Option,
    StaticScheduler,
    View,
)


def view(patched=None, busy=(), rate=100.0, reconfig_s=0.025) -> View:
    return View(node_free=lambda n, t: n not in busy,
                patched=lambda s: (patched or {}).get(s),
                option=lambda job, s: Option(s, (0, 1), 0.05, 0.8, rate),
                reconfig_s=reconfig_s)


def job(cid, a, b, pairs=10, deadline=10.0, priority=0, t_submit=0.0) -> Job:
    return Job(cid, a, b, pairs, 0.6, deadline, priority, t_submit)


def test_priority_comes_before_an_earlier_deadline():
    jobs = [job(1, "a", "b", deadline=2.0), job(2, "c", "d", deadline=9.0, priority=2)]
    choice = DynamicScheduler().choose(0.0, "h1", jobs, view())
    assert isinstance(choice, Assignment) and choice.job.create_id == 2
    assert choice.until == 9.0


def test_earliest_deadline_first_with_a_fairness_credit_for_waiting():
    old = job(1, "a", "b", deadline=10.0, t_submit=0.0)
    new = job(2, "c", "d", deadline=9.5, t_submit=4.0)
    assert DynamicScheduler(fairness_per_s=0.0).choose(4.0, "h1", [old, new], view()).job is new
    # waited 4 s: 10 - 0.2 * 4 = 9.2 < 9.5
    assert DynamicScheduler(fairness_per_s=0.2).choose(4.0, "h1", [old, new], view()).job is old


def test_requests_that_cannot_finish_or_whose_qpus_are_busy_are_left():
    late = job(1, "a", "b", pairs=1000, deadline=5.0)  # 10 s at 100 pairs/s
    busy = job(2, "c", "d")
    sched = DynamicScheduler()
    assert sched.choose(0.0, "h1", [late, busy], view(busy={"c"})) == math.inf
    ok = job(3, "e", "f", pairs=400, deadline=5.0)
    assert sched.choose(0.0, "h1", [late, busy, ok], view(busy={"c"})).job is ok


def test_reconfiguration_counts_and_a_patched_pair_wins_a_tie():
    a, b = job(1, "a", "b", deadline=5.0), job(2, "c", "d", deadline=5.0)
    assert DynamicScheduler().choose(0.0, "h1", [a, b], view(patched={"h1": ("d", "c")})).job is b
    tight = job(3, "e", "f", pairs=100, deadline=1.01)  # 1.0 s of pairs + 25 ms to patch
    assert DynamicScheduler().choose(0.0, "h1", [tight], view()) == math.inf
    assert DynamicScheduler().choose(0.0, "h1", [tight],
                                     view(patched={"h1": ("e", "f")})).job is tight


def test_static_cycle_is_demand_oblivious():
    nodes = [f"n{i}" for i in range(6)]
    sched = StaticScheduler(nodes, ["h1", "h2"], slot_s=0.5)
    seen = {sched.pair_at(k * 0.5, s) for k in range(8) for s in ("h1", "h2")}
    assert len(seen) == 15  # every pair within one cycle of 15 / 2 slots
    want = sched.pair_at(0.0, "h1")
    other = next(p for p in sched.cycle if p != want and p != sched.pair_at(0.0, "h2"))
    jobs = [job(1, *other, deadline=9.0, priority=5)]
    assert sched.choose(0.1, "h1", jobs, view()) == pytest.approx(0.5)  # idle to the slot's end
    jobs.append(job(2, *want, deadline=0.3))
    choice = sched.choose(0.1, "h1", jobs, view())
    assert choice.job.create_id == 2 and choice.until == pytest.approx(0.3)
