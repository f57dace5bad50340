"""Recovery from I/O failures: bounded retries on the lab clock, reconnects, power-on resets.

A timeout drops the late reply (device clear) and retries; a lost session opens a new one to
the same address; after a power-on reset every remembered setting is put back except those that
emit or heat. Each recovery is reported to the instrument's own ``on_recovery`` hooks (no
module-global listeners), which whoever runs a sequence fills for as long as it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyvisa

from qnetlab.errors import InstrumentConnectionError, InstrumentTimeout, RecoveryFailed

from .reporting import StandardEventStatus

if TYPE_CHECKING:
    from .base import QnetlabVisaInstrument

RecoveryListener = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RecoveryPolicy:
    """Bounded retries with backoff on the lab clock (timeouts, disconnects, garbled replies)."""

    attempts: int = 3
    backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0)

    def wait(self, attempt: int) -> float:
        return self.backoff_s[min(attempt, len(self.backoff_s) - 1)]


class Recovery:
    """Mixin of :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`: retries, reconnects and
    the replay of settings after a reset, each reported to :attr:`on_recovery`."""

    recovery: RecoveryPolicy | None
    on_recovery: list[RecoveryListener]
    power_on_seen: bool

    def _recovered(self: QnetlabVisaInstrument, kind: str, detail: str) -> None:
        event = {"instrument": self.name, "kind": f"recovery: {kind}", "detail": detail,
                 "lab_time": self.clock.now()}
        self.visa_log.warning(f"{kind}: {detail}")
        for listener in list(self.on_recovery):
            listener(event)

    def _with_recovery(self: QnetlabVisaInstrument, cmd: str, action: Callable[[], Any]) -> Any:
        """``action()``, retried under :attr:`recovery` after timeouts and lost sessions."""
        policy = self.recovery
        if policy is None:
            return action()
        failure: Exception | None = None
        for attempt in range(policy.attempts + 1):
            try:
                result = action()
            except (InstrumentTimeout, InstrumentConnectionError) as exc:
                failure = exc
            else:
                if failure is not None:
                    self._recovered(type(failure).__name__, f"{cmd!r} succeeded on attempt "
                                    f"{attempt + 1} after: {failure}")
                return result
            if attempt == policy.attempts:
                break
            self.clock.sleep(policy.wait(attempt))
            failure = self._prepare_retry(cmd, failure)
        raise RecoveryFailed(self.name, cmd, policy.attempts, failure)  # type: ignore[arg-type]

    def _prepare_retry(self: QnetlabVisaInstrument, cmd: str, failure: Exception) -> Exception:
        """Reconnect after a lost session, else drop the late reply so the next one is in
        step; returns the failure to report if this fails too."""
        try:
            if isinstance(failure, InstrumentConnectionError):
                self._reconnect()
            else:
                self.device_clear()
        except (pyvisa.Error, InstrumentConnectionError) as exc:
            return InstrumentConnectionError(self.name, cmd, str(exc))
        return failure

    def _reconnect(self: QnetlabVisaInstrument) -> None:
        """Open a new VISA session to the same address (after a disconnect)."""
        old = self.visa_handle
        read_t, write_t, timeout = old.read_termination, old.write_termination, old.timeout
        address = self.address
        rm = pyvisa.ResourceManager(self._visalib_spec) if self._visalib_spec else \
            pyvisa.ResourceManager()
        new = rm.open_resource(address)  # raises while the instrument is still away
        try:
            old.close()
        except pyvisa.Error:
            pass
        self._visa_handle = new  # type: ignore[assignment]
        self._visa_handle.read_termination = read_t
        self._visa_handle.write_termination = write_t
        self._visa_handle.timeout = timeout
        self._setup_lean_io()
        self._recovered("reconnected", f"new session to {address}")
        self.check_reset()

    def check_reset(self: QnetlabVisaInstrument) -> bool:
        """Detect a power-on reset (``*ESR?`` bit 7); if so, put every setting back except
        those that emit or heat (see :attr:`EMITS_OR_HEATS`), then :meth:`after_reset`."""
        policy, self.recovery = self.recovery, None
        try:
            with self.exchange():
                reset = self._replay_after_reset()
        finally:
            self.recovery = policy
        if reset:
            self.after_reset()
            heads = ", ".join(h.strip() for h in self.EMITS_OR_HEATS)
            held = f"; emission and heating left off ({heads} not re-applied)" if heads else ""
            self._recovered("reset", f"instrument reset itself; {len(self._settings)} settings "
                            f"re-applied{held}")
        return reset

    def _replay_after_reset(self: QnetlabVisaInstrument) -> bool:
        if isinstance(self.error_reporting, StandardEventStatus):
            self.error_reporting.drain(self)
            reset = self.power_on_seen
        else:
            reset = bool(int(self._query_once("*ESR?")) & StandardEventStatus.POWER_ON)
        self.power_on_seen = False
        if reset:
            for cmd in list(self._settings.values()):
                self._send(cmd)
            self.raise_on_errors("settings re-applied after a reset")
        return reset
