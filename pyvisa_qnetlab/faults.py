"""Fault injection for the simulated lab: what real instruments and fridges do to a lab."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .library import QnetlabVisaLibrary


class Faults:
    """Per-device fault state (lab-time based)."""

    def __init__(self) -> None:
        self.clear()
        self.generation = 0  # bumped on disconnect: sessions opened before are dead

    def clear(self) -> None:
        self.reply_delay_s = 0.0
        self.delay_count: int | None = None
        self.garble_count = 0
        self.offline_until: float | None = None
        self.offline = False

    def on_reply(self, reply: bytes, rng: np.random.Generator) -> tuple[bytes, float]:
        """(the reply as it leaves, its delay in lab seconds): a pending delay or garbling
        is applied, and counted down."""
        delay = 0.0
        if self.reply_delay_s > 0 and (self.delay_count is None or self.delay_count > 0):
            delay = self.reply_delay_s
            if self.delay_count is not None:
                self.delay_count -= 1
        if self.garble_count > 0:
            self.garble_count -= 1
            junk = rng.integers(33, 127, size=max(2, len(reply) // 2), dtype=np.uint8)
            reply = bytes(junk) + reply[len(reply) // 2:]
        return reply, delay


class FaultInjector:
    """``lib.faults``: delays, disconnects, garbled replies, resets, fridge excursions."""

    def __init__(self, lib: QnetlabVisaLibrary) -> None:
        self._lib = lib

    def delay(self, resource: str, seconds: float, count: int | None = None) -> None:
        """Delay the next ``count`` replies (all if None) by ``seconds`` of lab time.

        A delay longer than the session's VISA timeout makes the read time out, as on hardware;
        the late reply then still arrives (clear the device to drop it)."""
        if seconds < 0:
            raise ValueError(f"delay: seconds={seconds} must be >= 0")
        f = self._lib.device(resource).faults
        f.reply_delay_s, f.delay_count = float(seconds), count

    def disconnect(self, resource: str, duration_s: float | None = None) -> None:
        """Drop the instrument off the bus; open sessions die (VI_ERROR_CONN_LOST).

        It comes back after ``duration_s`` of lab time, or at :meth:`reconnect`; sessions must
        then be reopened."""
        dev = self._lib.device(resource)
        with dev.lock:
            dev.faults.generation += 1
            dev.faults.offline = True
            dev.faults.offline_until = (None if duration_s is None
                                        else dev.clock.now() + float(duration_s))
            dev.clear_output()

    def reconnect(self, resource: str) -> None:
        f = self._lib.device(resource).faults
        f.offline, f.offline_until = False, None

    def garble(self, resource: str, count: int = 1) -> None:
        """Corrupt the next ``count`` replies (first half replaced by printable junk)."""
        self._lib.device(resource).faults.garble_count = int(count)

    def power_cycle(self, resource: str) -> None:
        """The instrument resets itself: power-on defaults, PON bit (128) set in ``*ESR?``."""
        dev = self._lib.device(resource)
        with dev.lock:
            dev.reset_to_defaults()
            if dev.model is not None and hasattr(dev.model, "on_power_cycle"):
                dev.model.on_power_cycle()
            for register in dev._status_registers.values():
                if "power_on" in register._error_map:
                    register.set("power_on")

    def reboot(self, resource: str, down_s: float) -> None:
        """The instrument restarts: its connections drop (on a served lab the sockets are
        reset), it is unreachable for ``down_s`` of lab time, then answers again with its
        power-on defaults and the PON bit set, as after :meth:`power_cycle`."""
        if not down_s >= 0:
            raise ValueError(f"reboot: down_s={down_s!r} must be a number >= 0")
        self.disconnect(resource, duration_s=down_s)
        self.power_cycle(resource)

    def excursion(self, node: str, power_w: float, duration_s: float,
                  start_in_s: float = 0.0) -> None:
        """A heat pulse of ``power_w`` on ``node``'s mixing chamber (fridge temperature excursion)."""
        lab = self._lib.lab
        with self._lib.lock:
            lab.sync()
            fridge = lab.nodes[node].fridge
            fridge.add_pulse(float(power_w), float(duration_s), fridge.t + float(start_in_s))

    def stuck_port(self, resource: str, port: int) -> None:
        """An optical switch's port sticks: its mirror stops moving and no light passes a
        patch through it, while the switch still reports the patch as asked."""
        self._lib.device(resource).model.fabric.stick(int(port))

    def clear(self, resource: str | None = None) -> None:
        """Remove delays, garbling and disconnects (one resource or all)."""
        names = [resource] if resource else list(self._lib._resources)
        for name in names:
            self._lib.device(name).faults.clear()
