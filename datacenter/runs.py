"""Every link-layer request and its outcome as a run in the run store.

One run per request, named ``dc_request``: its metadata hold the CREATE (origin, remote,
pairs, minimum fidelity, maximum time, priority, type, bases, purpose id), the create id and the
outcome (``DONE``, ``TIMEOUT``, ``EXPIRE``, ``REJECTED``, ``UNSUPP``) with the ERR's detail; the
raw stream ``ok`` holds one row per delivered pair (pair id, sequence number, goodness, time of
goodness, Bell state 0..3 = Phi+, Phi-, Psi+, Psi-, station index, -1 for a pair swapped over
two hops). Read back with
``qnetlab.runread.load_run``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from .messages import Err, Outcome
from .network import BELL_NAMES, Service


def outcome_metadata(outcome: Outcome) -> dict[str, Any]:
    """The request and its outcome, as plain values for a run's metadata."""
    create = asdict(outcome.create)
    create["bases"] = list(create["bases"])
    err = outcome.reply if isinstance(outcome.reply, Err) else outcome.error
    return {"create": create, "create_id": outcome.create_id, "status": outcome.status,
            "pairs_delivered": len(outcome.oks), "t_submit": outcome.t_submit,
            "t_done": outcome.t_done, "error": None if err is None else
            {"code": err.code.value, "detail": err.detail, "t": err.t}}


def record(store: Any, outcome: Outcome, stations: list[str], *, clock: Any = None,
           metadata: dict[str, Any] | None = None, services: list[Service] = ()) -> Any:
    """Write ``outcome`` as one run of ``store``; returns the closed run. ``services``: the
    scheduler's log; those of this request become the run's ``served`` events (station, patch
    made, light, end, whether the switch was reconfigured)."""
    meta = {"datacenter": outcome_metadata(outcome), **(metadata or {})}
    run = store.run("dc_request", clock=clock, metadata=meta)
    run.stream("ok", pair_id="i8", sequence="i8", goodness="f8", time_s="f8", bell="i1",
               station="i2", units={"time_s": "s"})
    with run:
        oks = outcome.oks
        if oks:
            index = {s: i for i, s in enumerate(stations)}
            run.streams["ok"].append(
                pair_id=np.array([o.pair_id for o in oks], dtype=np.int64),
                sequence=np.array([o.sequence for o in oks], dtype=np.int64),
                goodness=np.array([o.goodness for o in oks]),
                time_s=np.array([o.time_of_goodness for o in oks]),
                bell=np.array([BELL_NAMES.index(o.bell_state) for o in oks], dtype=np.int8),
                station=np.array([index.get(o.station, -1) for o in oks], dtype=np.int16))
        for s in services:
            if s.create_id == outcome.create_id:
                run.log_event("served", f"{s.station}: {s.a}-{s.b}, patched at {s.t_start:.6f} s"
                              f"{' (reconfigured)' if s.reconfigured else ''}, lit "
                              f"{s.t_lit:.6f} s, {s.pairs} pairs by {s.t_end:.6f} s",
                              lab_time=s.t_start)
        run.log_event(outcome.status, meta["datacenter"]["error"]["detail"]
                      if meta["datacenter"]["error"] else f"{len(oks)} pairs",
                      lab_time=outcome.t_done)
    return run
