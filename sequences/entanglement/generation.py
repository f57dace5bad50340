"""Heralded entanglement generation on a link, through link-layer requests.

A run asks one end for ``pairs`` heralded pairs (single-click or two-photon), either measured
at once in the requested bases or kept in memory, and streams every delivered pair (herald
time, detector pattern and so Bell state, attempts, both ends' bases and outcomes) into the
run's HDF5 file as it arrives. A ``stop`` callable ends the run cleanly between polls: every
pair taken so far is kept and the run says it was stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qnetlab.drivers.qnu import RESULT_COLUMNS, LinkRequest, LinkResults, QNULink
from qnetlab.runstore import RunStore, Stream
from qnetlab.sequences.pumps import pumps_emitting
from qnetlab.stations import StationBundle

from .frames import bell_sign

PROTOCOLS = ("single_click", "two_photon")


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
    """Both ends' pumps emitting for the run; shutters closed afterwards whatever happens."""
    return pumps_emitting(*(bundle.node(n)["pump"] for n in bundle.topology.links[link].nodes))


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
    stopped = False
    with run, link_pumps(bundle, link):
        request = here.create(pairs, min_fidelity=min_fidelity, max_time_s=max_time_s,
                              keep=keep, bases_here=bases_a, bases_peer=bases_b)
        pulled = _Puller(here, there, request, run.streams["heralds"])
        t_start = clock.now()
        deadline = t_start + max_time_s
        while True:
            status = here.status(request)
            if pulled.take(status.delivered):
                run.add_point(lab_time=clock.now(), delivered=pulled.count)
                if progress is not None:
                    progress(pulled.count, pairs)
            if status.finished or clock.now() >= deadline:
                break
            if stop is not None and stop():
                stopped = True
                break
            clock.sleep(poll_s)
        if not stopped:
            status = here.status(request)
            pulled.take(status.delivered)
        run.add_point(lab_time=clock.now(), delivered=pulled.count)
        if stopped:
            run.dataset.add_metadata("qnetlab_stopped", "stopped by request")
    ra, rb = pulled.results()
    return Generation(
        link=link, ends=(a, b), protocol=protocol, request_id=request.id, requested=pairs,
        bases=(bases_a, bases_b), herald_time_s=ra.herald_time_s, pattern=ra.pattern,
        attempts=ra.attempts, basis_index=(ra.basis_index, rb.basis_index),
        outcome=(ra.outcome, rb.outcome), started_s=t_start,
        ended_s=float(ra.herald_time_s[-1]) if len(ra) else clock.now(),
        state="STOPPED" if stopped else status.state, stopped=stopped, run_guid=run.guid,
        extra={"hdf5_path": run.hdf5_path})


class _Puller:
    """Reads a request's pairs from both ends as they arrive, only the ones not read yet, and
    streams them to the run: each pair crosses the link and reaches the file once, so a run
    costs in proportion to the pairs it delivers, however many polls it takes."""

    def __init__(self, here: QNULink, there: QNULink, request: LinkRequest,
                 stream: Stream) -> None:
        self.here, self.there, self.request, self.stream = here, there, request, stream
        self.count = 0
        self._parts: tuple[list[LinkResults], list[LinkResults]] = ([], [])

    def take(self, delivered: int) -> int:
        """Read pairs ``count`` .. ``delivered`` from both ends and append them to the stream;
        returns how many were taken."""
        want = delivered - self.count
        if want <= 0:
            return 0
        ra = self.here.results(self.request, start=self.count, count=want)
        rb = self.there.results(self.request, start=self.count, count=want)
        n = min(len(ra), len(rb))
        ra, rb = _head(ra, n), _head(rb, n)
        if not np.array_equal(ra.seq, rb.seq) or (n and ra.seq[0] != self.count):
            raise RuntimeError(f"link request {self.request.id}: the two ends returned "
                               f"different pairs from seq {self.count}")
        if n:
            self.stream.append(
                seq=ra.seq, herald_time_s=ra.herald_time_s, pattern=ra.pattern,
                attempts=ra.attempts, basis_a=ra.basis_index, basis_b=rb.basis_index,
                outcome_a=ra.outcome, outcome_b=rb.outcome)
            self._parts[0].append(ra)
            self._parts[1].append(rb)
            self.count += n
        return n

    def results(self) -> tuple[LinkResults, LinkResults]:
        """Everything taken, both ends, in order."""
        return LinkResults.concatenate(self._parts[0]), LinkResults.concatenate(self._parts[1])


def _head(r: LinkResults, n: int) -> LinkResults:
    return r if len(r) == n else LinkResults(*(getattr(r, f)[:n] for f in RESULT_COLUMNS))
