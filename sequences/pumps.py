"""Pump light only while a measurement needs it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def pumps_emitting(*pumps: Any) -> Iterator[None]:
    """Pump light on for a measurement; shutters closed again afterwards, whatever happens."""
    try:
        for pump in pumps:
            pump.output("on")
            pump.shutter("open")
        yield
    finally:
        for pump in pumps:
            pump.shutter("closed")
