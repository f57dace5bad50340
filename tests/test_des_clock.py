"""The discrete-event lab clock: several threads waiting on one VirtualClock at once."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qnetlab.clock import ClockDeadlock, VirtualClock, WallClock

SLEEPS = st.lists(st.lists(st.integers(0, 50).map(float), max_size=6), min_size=1, max_size=5)


def run_sleepers(plan: list[list[float]]
                  ) -> tuple[dict[str, list[float]], list[tuple[float, str]], float]:
    """Each plan row is one participant's sleeps; returns the lab time after each sleep, the
    order in which wake-ups happened, and the clock at the end."""
    clock = VirtualClock()
    times: dict[str, list[float]] = {}
    order: list[tuple[float, str]] = []

    def sleeper(name: str, sleeps: list[float]) -> None:
        for s in sleeps:
            clock.sleep(s)
            times[name].append(clock.now())
            order.append((clock.now(), name))

    with clock.participant("main"):
        parts = []
        for i, sleeps in enumerate(plan):
            times[f"p{i}"] = []
            parts.append(clock.spawn(f"p{i}", lambda n=f"p{i}", s=sleeps: sleeper(n, s)))
        for part in parts:
            part.join()
    return times, order, clock.now()


@settings(max_examples=40, deadline=None)
@given(SLEEPS)
def test_each_participant_wakes_at_exactly_its_ideal_lab_times(plan):
    times, order, end = run_sleepers(plan)
    for i, sleeps in enumerate(plan):
        ideal, t = [], 0.0
        for s in sleeps:
            t += s
            ideal.append(t)
        assert times[f"p{i}"] == ideal
    # the clock ends at the latest wake-up: no lab time lost or invented
    assert end == max((sum(s) for s in plan), default=0.0)
    # wake-ups happen in lab-time order
    assert [t for t, _ in order] == sorted(t for t, _ in order)
    assert len(order) == sum(map(len, plan))


@settings(max_examples=25, deadline=None)
@given(SLEEPS)
def test_the_interleaving_is_the_same_every_run(plan):
    first = run_sleepers(plan)
    assert run_sleepers(plan) == first


def test_ties_wake_in_name_order_and_time_only_moves_when_all_wait():
    clock, log = VirtualClock(), []

    def worker(name: str) -> None:
        for _ in range(3):
            clock.sleep(10)
            log.append((clock.now(), name))

    with clock.participant("main"):
        parts = [clock.spawn(n, lambda n=n: worker(n)) for n in ("c", "a", "b")]
        for p in parts:
            p.join()
    assert log == [(t, n) for t in (10.0, 20.0, 30.0) for n in ("a", "b", "c")]
    assert clock.now() == 30.0


def test_a_participant_blocked_on_a_clock_lock_lets_time_pass_for_others():
    clock, log = VirtualClock(), []
    lock = clock.lock("fridge")

    def holder() -> None:
        with lock:
            clock.sleep(100)  # holds the instrument for 100 s of lab time
            log.append(("holder done", clock.now()))

    def waiter() -> None:
        clock.sleep(1)
        with lock:
            log.append(("waiter got lock", clock.now()))

    def other() -> None:
        clock.sleep(50)
        log.append(("other", clock.now()))

    with clock.participant("main"):
        parts = [clock.spawn("a-holder", holder), clock.spawn("b-waiter", waiter),
                 clock.spawn("c-other", other)]
        for p in parts:
            p.join()
    assert log == [("other", 50.0), ("holder done", 100.0), ("waiter got lock", 100.0)]
    assert clock.now() == 100.0


def test_a_true_deadlock_raises_in_every_participant_instead_of_hanging():
    clock = VirtualClock()
    first, second = clock.lock("first"), clock.lock("second")
    errors: dict[str, BaseException | None] = {}

    def take(name: str, a, b) -> None:
        with a:
            clock.sleep(1)
            try:
                with b:
                    errors[name] = None
            except ClockDeadlock as exc:
                errors[name] = exc

    with clock.participant("main"):
        parts = [clock.spawn("x", lambda: take("x", first, second)),
                 clock.spawn("y", lambda: take("y", second, first))]
        for p in parts:
            p.join()
    # the first to get its error releases its lock, so the other may get through
    assert isinstance(errors["x"], ClockDeadlock)
    assert "deadlock" in str(errors["x"]) and "x" in str(errors["x"])
    assert clock.now() == 1.0


def test_alarms_fire_at_their_lab_times_while_participants_wait():
    clock, fired = VirtualClock(), []
    lock = clock.lock("fridge")
    alarm = clock.every(10.0, lambda t: (lock.acquire(), fired.append((t, clock.now())),
                                         lock.release()))

    def busy() -> None:
        with lock:
            clock.sleep(25)  # the alarm due at 10 must wait for the lock
        clock.sleep(20)

    with clock.participant("main"):
        clock.spawn("busy", busy).join()
    alarm.cancel()
    # called at 10, waited for the lock until 25; no burst after a late callback: next at 35
    assert fired == [(10.0, 25.0), (35.0, 35.0), (45.0, 45.0)]
    assert clock.now() == 45.0
    # without participants alarms fire inline in the advance, as before
    clock2, seen = VirtualClock(), []
    clock2.every(5.0, seen.append)
    clock2.advance(12)
    assert seen == [5.0, 10.0]


def test_threads_that_are_not_participants_keep_advancing_at_once():
    clock = VirtualClock()
    clock.sleep(5)
    done = threading.Event()

    def plain() -> None:
        clock.sleep(7)
        done.set()

    t = threading.Thread(target=plain)
    t.start()
    t.join(5)
    assert done.is_set() and clock.now() == 12.0


def test_real_time_clocks_offer_the_same_calls():
    clock = WallClock()
    out = []
    with clock.participant("main"):
        h = clock.spawn("w", lambda: out.append(1))
        h.join()
    with clock.lock("x"):
        pass
    assert out == [1] and h.done and h.error is None


def test_a_spawned_participants_exception_is_kept_for_join():
    clock = VirtualClock()

    def boom() -> None:
        clock.sleep(3)
        raise RuntimeError("boom")

    with clock.participant("main"):
        part = clock.spawn("w", boom)
        part.join()
    assert isinstance(part.error, RuntimeError) and clock.now() == 3.0


@pytest.mark.parametrize("n", [16])
def test_many_participants_finish_fast(n):
    clock = VirtualClock()

    def worker(i: int) -> None:
        for k in range(50):
            clock.sleep(1 + (i * k) % 7)

    with clock.participant("main"):
        parts = [clock.spawn(f"w{i:02d}", lambda i=i: worker(i)) for i in range(n)]
        for p in parts:
            p.join()
    assert clock.now() == max(sum(1 + (i * k) % 7 for k in range(50)) for i in range(n))


def test_an_alarm_whose_callback_waits_after_the_last_participant_left_still_finishes():
    """The last participant leaves while the watchdog's alarm is due at the same lab time:
    the alarm's callback (an instrument reply that takes lab time, under the instrument's
    lock) runs after the others have gone, and must finish, so that a thread outside the
    clock waiting for that instrument is not blocked for ever (it hung `qnetlab serve`)."""
    clock, lock, finished = VirtualClock(), None, threading.Event()
    lock = clock.lock("triton")

    def poll(t: float) -> None:
        with lock:
            clock.sleep(2.0)  # the Triton's slow reply
        finished.set()

    clock.every(5.0, poll)
    with clock.participant("a-sequence"):  # named before the alarm: it leaves first at 5
        clock.sleep(5.0)
    assert finished.wait(5.0), "the alarm's callback never finished"
    with lock:  # what the service's own thread does next: not blocked
        assert clock.now() == 7.0
