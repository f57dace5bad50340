"""Lab time paced by wall time: the served lab's clock runs at ``speed`` times real time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qnetlab.clock import VirtualClock


class PacedClock:
    """Paces a lab's :class:`~qnetlab.clock.VirtualClock`: lab time = t0 + speed * wall elapsed.

    The virtual clock still only moves forward when told (:meth:`catch_up`, before each request
    is handled), so the physics stays lazy; a measurement that costs lab time moves it ahead
    of the paced time, and its reply waits (:meth:`wall_until`) until paced time gets there.
    """

    def __init__(self, clock: VirtualClock, speed: float) -> None:
        if not (isinstance(speed, int | float) and speed > 0 and speed < float("inf")):
            raise ValueError(f"speed={speed!r}: must be a number > 0 (lab seconds per wall "
                             "second)")
        self.clock = clock
        self.speed = float(speed)
        self._t0 = clock.now()
        self._w0 = time.monotonic()

    def paced(self) -> float:
        """Lab time as wall time alone sets it."""
        return self._t0 + self.speed * (time.monotonic() - self._w0)

    def now(self) -> float:
        """The served lab's time: the paced time, or later while a measurement's cost is due."""
        return max(self.clock.now(), self.paced())

    def catch_up(self) -> float:
        """Move the lab clock up to the paced time (never back) and return it."""
        return self.clock.advance_to(self.paced())

    def wall_until(self, lab_time: float) -> float:
        """Wall seconds until the paced time reaches ``lab_time`` (0 if it has)."""
        return max(0.0, (lab_time - self.paced()) / self.speed)
