"""Exceptions raised by qnetlab drivers and sequences."""

from __future__ import annotations


class QnetlabError(Exception):
    """Base of qnetlab's own errors."""


class InstrumentError(QnetlabError):
    """The instrument reported an error (SCPI error queue, status bits) for a command.

    ``instrument`` is the QCoDeS name, ``command`` what was sent, ``messages`` the instrument's
    own error texts, verbatim.
    """

    def __init__(self, instrument: str, command: str, messages: list[str]) -> None:
        self.instrument = instrument
        self.command = command
        self.messages = list(messages)
        super().__init__(f"{instrument}: {command!r} -> {'; '.join(self.messages)}")


class InstrumentTimeout(QnetlabError, TimeoutError):
    """No reply within the VISA timeout."""

    def __init__(self, instrument: str, command: str, timeout_s: float | None) -> None:
        self.instrument = instrument
        self.command = command
        self.timeout_s = timeout_s
        super().__init__(f"{instrument}: no reply to {command!r} within {timeout_s} s (VISA timeout)")


class InstrumentConnectionError(QnetlabError, ConnectionError):
    """The VISA session to the instrument is lost (disconnect, power loss)."""

    def __init__(self, instrument: str, command: str, detail: str) -> None:
        self.instrument = instrument
        self.command = command
        super().__init__(f"{instrument}: connection lost while sending {command!r}: {detail}")


class SafetyLimitError(QnetlabError, ValueError):
    """A value beyond a hard safety limit that no station file or sequence can widen."""


class RecoveryFailed(QnetlabError):
    """Retries, reconnects and resets did not bring the instrument back."""

    run_status = "failed"

    def __init__(self, instrument: str, command: str, attempts: int, cause: BaseException) -> None:
        self.instrument = instrument
        self.command = command
        self.cause = cause
        super().__init__(f"{instrument}: {command!r} still failing after {attempts} recovery "
                         f"attempts: {cause}")
