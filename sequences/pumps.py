"""Pump light only while a measurement needs it.

Light reaches a transducer through two instruments: the pump laser (output on) and the node's
AOM gate (a waveform generator; output on lets pulses through)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def node_pumps(bundle: Any, *nodes: str) -> list[Any]:
    """The pump lasers and AOM gates of ``nodes``, for :func:`pumps_emitting`."""
    return [bundle.node(n)[role] for n in nodes for role in ("pump", "aom")]


@contextlib.contextmanager
def pumps_emitting(*instruments: Any) -> Iterator[None]:
    """Pump light on for a measurement (lasers on, AOM gates open); the lasers switched off
    again afterwards, whatever happens. A gate stays as set (like the pulse settings it
    carries): the laser's output is what keeps the light off between measurements, and the
    station's safe state closes gates too."""
    try:
        for inst in instruments:
            if hasattr(inst, "open_gate"):
                inst.open_gate()
            else:
                inst.output("on")
        yield
    finally:
        for inst in instruments:
            if not hasattr(inst, "close_gate"):
                inst.output("off")
