"""How a driver learns that the instrument refused something: error reporting and reply checks.

- :class:`ScpiErrorQueue` (SCPI ``SYSTem:ERRor?``) and :class:`StandardEventStatus` (IEEE-488.2
  ``*ESR?``, e.g. Lake Shore) read an instrument's pending errors, verbatim.
- :class:`GuardedParsers` makes a reply that does not parse ask the instrument why (its error
  reporting), so a refused query surfaces the instrument's reason instead of a ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from qnetlab.errors import InstrumentError

if TYPE_CHECKING:
    from .base import QnetlabVisaInstrument


class ErrorReporting(Protocol):
    """How an instrument reports errors: ``drain`` returns its pending messages, verbatim."""

    def drain(self, instrument: QnetlabVisaInstrument) -> list[str]: ...


class ScpiErrorQueue:
    """SCPI ``SYSTem:ERRor?`` queue: read until the ``0,...`` (no error) entry."""

    def __init__(self, query: str = "SYST:ERR?", max_entries: int = 32) -> None:
        self.query = query
        self.max_entries = max_entries

    def drain(self, instrument: QnetlabVisaInstrument) -> list[str]:
        messages = []
        for _ in range(self.max_entries):
            reply = instrument._query(self.query)
            try:
                code = int(reply.split(",", 1)[0])
            except ValueError:
                messages.append(f"unreadable error queue reply {reply!r}")
                break
            if code == 0:
                break
            messages.append(reply)
        return messages


class StandardEventStatus:
    """IEEE-488.2 ``*ESR?`` (Lake Shore): reading clears it; bits 2, 4, 5 are errors."""

    BITS: ClassVar[dict[int, str]] = {4: "query error", 16: "execution error", 32: "command error"}
    POWER_ON = 128

    def drain(self, instrument: QnetlabVisaInstrument) -> list[str]:
        reply = instrument._query("*ESR?")
        try:
            esr = int(reply)
        except ValueError:
            return [f"unreadable *ESR? reply {reply!r}"]
        if esr & self.POWER_ON:
            instrument.power_on_seen = True
        names = [name for bit, name in self.BITS.items() if esr & bit]
        return [f"*ESR? = {esr} ({', '.join(names)})"] if names else []


class GuardedParsers:
    """Mixin: a reply that fails to parse makes the instrument's error reporting speak."""

    def add_parameter(self, name: str, parameter_class: type | None = None, **kwargs: Any) -> Any:
        parser = kwargs.get("get_parser")
        cmd = kwargs.get("get_cmd")
        if parser is not None and isinstance(cmd, str):
            kwargs["get_parser"] = self._guard(parser, cmd)
        if parameter_class is None:
            return super().add_parameter(name, **kwargs)  # type: ignore[misc]
        return super().add_parameter(name, parameter_class=parameter_class, **kwargs)  # type: ignore[misc]

    def _guard(self, parser: Callable[[str], Any], cmd: str) -> Callable[[str], Any]:
        def guarded(raw: str) -> Any:
            try:
                return parser(raw)
            except (ValueError, TypeError, KeyError) as exc:
                root: QnetlabVisaInstrument = self.root_instrument  # type: ignore[attr-defined]
                messages = root.error_reporting.drain(root)
                if messages:
                    raise InstrumentError(root.name, cmd, messages) from exc
                if root.recovery is None:
                    raise
                again = root._query(cmd)  # a garbled reply: ask once more
                value = parser(again)
                root._recovered("garbled_reply", f"unreadable reply {raw[:40]!r} to {cmd!r}; "
                                f"asked again")
                return value

        return guarded
