"""Heralded entanglement generation on a link, through link-layer requests.

A run asks one end for ``pairs`` heralded pairs (single-click or two-photon), either measured
at once in the requested bases or kept in memory, and streams every delivered pair (herald
time, detector pattern and so Bell state, attempts, both ends' bases and outcomes) into the
run's HDF5 file as it arrives. A ``stop`` callable ends the run cleanly between polls: every
pair taken so far is kept and the run says it was stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qnetlab.clock import Clock
from qnetlab.drivers.qnu import RESULT_COLUMNS, LinkRequest, QNULink
from qnetlab.runstore import Run, RunStore, Stream
from qnetlab.sequences.pumps import node_pumps, pumps_emitting
from qnetlab.stations import StationBundle

from .frames import bell_sign

PROTOCOLS = ("single_click", "two_photon")
# what a run keeps of each pair (stream field, dtype in memory)
TAKEN_COLUMNS = (("seq", "i8"), ("herald_time_s", "f8"), ("pattern", "i2"), ("attempts", "i8"),
                 ("basis_a", "i2"), ("basis_b", "i2"), ("outcome_a", "f8"), ("outcome_b", "f8"))
# where each comes from: (column, end 0 here / 1 there, index in the RES? row)
_FROM_ROWS = tuple((name, end, RESULT_COLUMNS.index(field)) for name, end, field in (
    ("seq", 0, "seq"), ("herald_time_s", 0, "herald_time_s"), ("pattern", 0, "pattern"),
    ("attempts", 0, "attempts"), ("basis_a", 0, "basis_index"), ("basis_b", 1, "basis_index"),
    ("outcome_a", 0, "outcome"), ("outcome_b", 1, "outcome")))


@dataclass
class Generation:
    """What one generation run delivered, seen from both ends of the link."""

    link: str
    ends: tuple[str, str]
    protocol: str
    request_id: int
    requested: int
    bases: tuple[tuple[str, ...], tuple[str, ...]]
    herald_time_s: np.ndarray
    pattern: np.ndarray
    attempts: np.ndarray
    basis_index: tuple[np.ndarray, np.ndarray]
    outcome: tuple[np.ndarray, np.ndarray]
    started_s: float
    ended_s: float
    state: str
    stopped: bool = False
    run_guid: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.herald_time_s.size)

    @property
    def sign(self) -> np.ndarray:
        return bell_sign(self.pattern)

    def basis_letters(self, end: int) -> np.ndarray:
        return np.asarray(self.bases[end])[self.basis_index[end]]

    @property
    def rate_hz(self) -> float:
        span = self.ended_s - self.started_s
        return len(self) / span if span > 0 else 0.0

    @property
    def attempts_total(self) -> int:
        return int(self.attempts.sum())


def link_pumps(bundle: StationBundle, link: str) -> contextlib.AbstractContextManager[None]:
    """Both ends' pumps emitting for the run; lasers off and gates closed afterwards whatever
    happens."""
    return pumps_emitting(*node_pumps(bundle, *bundle.topology.links[link].nodes))


def set_protocol(bundle: StationBundle, link: str, protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r} is not one of {PROTOCOLS}")
    for node in bundle.topology.links[link].nodes:
        bundle.node(node)["qnu"].engine.protocol(protocol)


def generate(bundle: StationBundle, link: str, pairs: int, *, protocol: str | None = None,
             min_fidelity: float = 0.0, max_time_s: float = 3600.0, keep: bool = False,
             bases: Sequence[str] = ("Z",), bases_peer: Sequence[str] | None = None,
             runs: RunStore | None = None, name: str = "entanglement.generate",
             stop: Callable[[], bool] | None = None, poll_s: float = 2.0,
             progress: Callable[[int, int], None] | None = None,
             calibration: dict[str, Any] | None = None) -> Generation:
    """Generate ``pairs`` heralded pairs on ``link`` and stream them to the run store."""
    if pairs < 1:
        raise ValueError(f"pairs={pairs} must be >= 1")
    a, b = bundle.topology.links[link].nodes
    qa, qb = bundle.node(a)["qnu"], bundle.node(b)["qnu"]
    if protocol is not None:
        set_protocol(bundle, link, protocol)
    protocol = qa.engine.protocol()
    here, there = qa.link_to(b), qb.link_to(a)
    bases_a, bases_b = tuple(bases), tuple(bases_peer if bases_peer is not None else bases)
    clock = bundle.clock
    runs = runs or RunStore()
    run = runs.run(name, station=bundle.station, clock=clock, sample=link,
                   calibration=calibration or {},
                   metadata={"link": link, "ends": [a, b], "protocol": protocol, "pairs": pairs,
                             "keep": keep, "bases": [list(bases_a), list(bases_b)]})
    run.register("lab_time", unit="s")
    run.register("delivered", setpoints=("lab_time",))
    run.stream("heralds", seq="i8", herald_time_s="f8", pattern="i2", attempts="i8",
               basis_a="i1", basis_b="i1", outcome_a="f4", outcome_b="f4",
               units={"herald_time_s": "s"})
    with run, link_pumps(bundle, link):
        request = here.create(pairs, min_fidelity=min_fidelity, max_time_s=max_time_s,
                              keep=keep, bases_here=bases_a, bases_peer=bases_b)
        t_start = clock.now()
        pulled = _Puller(here, there, request, run.streams["heralds"], runs.flush_period_s,
                         runs.chunk_rows)
        try:
            state = _poll(pulled, run, clock, poll_s, t_start + max_time_s, stop, progress)
        finally:
            pulled.write()  # whatever was read reaches the file, however the loop ended
        run.add_point(lab_time=clock.now(), delivered=pulled.count)
        if state == "STOPPED":
            run.dataset.add_metadata("qnetlab_stopped", "stopped by request")
    t = pulled.taken
    return Generation(
        link=link, ends=(a, b), protocol=protocol, request_id=request.id, requested=pairs,
        bases=(bases_a, bases_b), herald_time_s=t("herald_time_s"), pattern=t("pattern"),
        attempts=t("attempts"), basis_index=(t("basis_a"), t("basis_b")),
        outcome=(t("outcome_a"), t("outcome_b")), started_s=t_start,
        ended_s=float(t("herald_time_s")[-1]) if pulled.count else clock.now(),
        state=state, stopped=state == "STOPPED", run_guid=run.guid,
        extra={"hdf5_path": run.hdf5_path})


def _poll(pulled: _Puller, run: Run, clock: Clock, poll_s: float, deadline: float,
          stop: Callable[[], bool] | None, progress: Callable[[int, int], None] | None
          ) -> str:
    """Poll the request every ``poll_s`` of lab time, taking new pairs, until it has them all,
    it ends, the deadline passes or ``stop()`` says so; returns the final state.

    A poll that brings pairs costs two queries (one per end); the request's state is asked
    only when a poll brings none (to see it expire or fail) and once at the end."""
    here, request = pulled.here, pulled.request
    while True:
        new = pulled.take()
        if new:
            run.add_point(lab_time=clock.now(), delivered=pulled.count)
            if progress is not None:
                progress(pulled.count, request.pairs)
        if pulled.count >= request.pairs:
            break
        if (not new and here.status(request).finished) or clock.now() >= deadline:
            break
        if stop is not None and stop():
            return "STOPPED"
        clock.sleep(poll_s)
    status = here.status(request)
    if pulled.take():  # heralded between the last poll and the end
        run.add_point(lab_time=clock.now(), delivered=pulled.count)
    return status.state


class _Puller:
    """Reads a request's pairs from both ends as they arrive, only the ones not read yet, and
    streams them to the run: each pair crosses the link and reaches the file once, so a run
    costs in proportion to the pairs it delivers, however many polls it takes.

    Pairs land in arrays sized for the request (one copy per pair) and go to the file in
    batches, like the store's own points: as soon as ``flush_period_s`` (wall) has passed since
    the last write or a full chunk is waiting, and at the end. On hardware polls come seconds
    apart, so every poll writes at once; in simulation, where polls come microseconds apart,
    one HDF5 write and flush covers many polls."""

    def __init__(self, here: QNULink, there: QNULink, request: LinkRequest, stream: Stream,
                 flush_period_s: float, flush_rows: int) -> None:
        self.here, self.there, self.request, self.stream = here, there, request, stream
        self.flush_period_s, self.flush_rows = flush_period_s, flush_rows
        self.count = 0
        self.columns = {k: np.empty(request.pairs, v) for k, v in TAKEN_COLUMNS}
        self._written = 0
        self._last_write = time.perf_counter()

    def take(self) -> int:
        """Read the pairs delivered since the last call from both ends (the same ones), queue
        them for the stream and write what is due; returns how many were taken."""
        n = self._read()
        if time.perf_counter() - self._last_write >= self.flush_period_s:
            self.write()
        elif self.count - self._written >= self.flush_rows:  # whole chunks, compressed once
            self.write(self.count - self.count % self.flush_rows)
        return n

    def _read(self) -> int:
        """Pairs ``count`` onwards from ``here``, then the same ones from ``there``."""
        start = self.count
        ra = self.here.result_rows(self.request, start=start)
        if not len(ra):
            return 0
        rb = self.there.result_rows(self.request, start=start, count=len(ra))
        n = min(len(rb), self.request.pairs - start)  # never more than the request asked
        ra, rb = ra[:n], rb[:n]
        if n and (ra[0, 0] != start or ra[-1, 0] != start + n - 1
                  or not np.array_equal(ra[:, 0], rb[:, 0])):
            raise RuntimeError(f"link request {self.request.id}: the two ends returned "
                               f"different pairs from seq {start}")
        end, c = start + n, self.columns
        for name, end_rows, col in _FROM_ROWS:
            c[name][start:end] = (ra, rb)[end_rows][:, col]
        self.count = end
        return n

    def write(self, upto: int | None = None) -> None:
        """Append the pairs taken but not yet written (up to ``upto``, default all) to the
        stream, in one HDF5 write."""
        upto = self.count if upto is None else upto
        if upto > self._written:
            sl = slice(self._written, upto)
            self.stream.append(**{k: v[sl] for k, v in self.columns.items()})
            self._written = upto
        self._last_write = time.perf_counter()

    def taken(self, name: str) -> np.ndarray:
        """Column ``name`` of every pair taken, in order."""
        return self.columns[name][:self.count]
