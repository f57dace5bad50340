"""The node's Oxford Instruments Triton: gas handling, pulse tube, turbo, pressures, interlock.

:class:`QnetlabTriton` talks to the Triton system controller's software (``READ:``/``SET:`` paths,
in-band ``STAT:...`` replies, TCP port 33576, one client at a time, slow replies) through VISA
(``TCPIP0::host::33576::SOCKET``), with the command strings and reply parsers of QCoDeS's own
``OxfordTriton``.

Why not a subclass of ``OxfordTriton``: that driver is an ``IPInstrument`` that opens its own TCP
socket and, in ``__init__``, already sends queries on it (magnet probe, channel discovery), and
its ``write``/``ask``/``_recv`` are socket methods. Mixed into a ``VisaInstrument`` both would own
the I/O, and it could not run on a VISA backend at all (the simulated lab, pyvisa-py). So this
driver is a :class:`~qnetlab.drivers.base.QnetlabVisaInstrument` that reuses OxfordTriton's
commands and calls its parse functions on the replies (:func:`oxford_parser`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import qcodes.validators as vals
from qcodes.instrument_drivers.oxford import OxfordTriton
from qcodes.parameters import Parameter, create_on_off_val_mapping

from qnetlab.errors import InstrumentError

from .base import HardLimitParameter, QnetlabVisaInstrument

if TYPE_CHECKING:
    from typing import Unpack

    from qcodes.instrument import VisaInstrumentKWArgs


class _OxfordParsers:
    """The one helper OxfordTriton's parsers call on their instance (``_get_response``)."""

    _get_response = OxfordTriton._get_response


def oxford_parser(name: str, *args: Any) -> Callable[[str], Any]:
    """OxfordTriton's own reply parser ``name`` as a plain function of the reply.

    Its parsers are methods that use nothing of the instance but ``_get_response`` (except
    ``_parse_action``, not used), so they are bound to a stand-in that has just that."""
    return partial(getattr(OxfordTriton, name), _OxfordParsers(), *args)


def _mbar(reply: str) -> float | None:
    """``STAT:DEV:P1:PRES:SIG:PRES:2.0000E-07mB`` -> 2e-07 (mbar); None for NOT_FOUND.
    (OxfordTriton's ``_parse_pres`` scales millibar by 1e3; undone here.)"""
    value = oxford_parser("_parse_pres")(reply)
    return None if value is None else value / 1e3


class InBandReplies:
    """The Triton has no error queue: each reply says VALID, INVALID, DENIED or NOT_FOUND in
    band, checked where the command is sent (:meth:`QnetlabTriton.triton_set`)."""

    def drain(self, instrument: QnetlabVisaInstrument) -> list[str]:
        return []


class QnetlabTriton(QnetlabVisaInstrument):
    """Oxford Triton system controller of a fridge (gas handling, pulse tube, interlock).

    Args:
        name: instrument name.
        address: VISA resource, ``TCPIP0::host::33576::SOCKET`` (the Triton PC's port).
        thermometers: Triton thermometer numbers to expose as ``T<n>`` (default T1..T5: PT1
            plate, PT2 plate, cold plate, still, mixing chamber).
        **kwargs: see :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`.
    """

    #: OxfordTriton writes CR LF; the Triton ends its replies with LF.
    default_terminator = "\r\n"
    READ_TERMINATION: ClassVar[str] = "\n"
    #: The Triton software can take 10 s and more to answer (OxfordTriton waits 20 s).
    default_timeout = 20.0
    error_reporting = InBandReplies()
    #: The interlock ceiling cannot be raised above this (pump off above it).
    SAFE_MAX_INTERLOCK_K: ClassVar[float] = 0.1
    DEFAULT_THERMOMETERS: ClassVar[tuple[int, ...]] = (1, 2, 3, 4, 5)
    GAUGES: ClassVar[dict[int, str]] = {1: "outer vacuum can", 2: "still line",
                                        3: "condensing line", 4: "mixture tank",
                                        5: "turbo backing"}

    def __init__(self, name: str, address: str, *, thermometers: tuple[int, ...] | None = None,
                 **kwargs: Unpack[VisaInstrumentKWArgs]) -> None:
        super().__init__(name, address, **kwargs)
        self.visa_handle.read_termination = self.READ_TERMINATION
        self._setup_lean_io()
        self._add_system()
        for n in thermometers or self.DEFAULT_THERMOMETERS:
            self.add_parameter(
                f"T{n}", label=f"T{n} temperature", unit="K",
                get_cmd=f"READ:DEV:T{n}:TEMP:SIG:TEMP", get_parser=oxford_parser("_parse_temp"),
                docstring=f"Triton thermometer T{n} (None when not fitted).")
        for gauge, what in self.GAUGES.items():
            self.add_parameter(
                f"pressure_p{gauge}", label=f"P{gauge} ({what})", unit="mbar",
                get_cmd=f"READ:DEV:P{gauge}:PRES:SIG:PRES", get_parser=_mbar,
                docstring=f"Pressure gauge P{gauge}: {what}.")
        self._add_pumps()
        self._add_interlock()
        self._finish_init()

    def _add_system(self) -> None:
        self.status: Parameter = self.add_parameter(
            "status", label="Status", get_cmd="READ:SYS:DR:STATUS",
            get_parser=oxford_parser("_parse_status"), docstring="The Triton's system status.")
        """The Triton's system status."""
        self.action: Parameter = self.add_parameter(
            "action", label="Current action", get_cmd="READ:SYS:DR:ACTN",
            get_parser=lambda reply: reply[len("STAT:SYS:DR:ACTN:"):],
            docstring="PCL, EPCL, COND, COLL or NONE (circulating or idle).")
        """PCL, EPCL, COND, COLL or NONE (circulating or idle)."""
        self.time: Parameter = self.add_parameter(
            "time", label="System time", get_cmd="READ:SYS:TIME",
            get_parser=oxford_parser("_parse_time"), docstring="The Triton PC's time of day.")
        """The Triton PC's time of day."""

    def _add_pumps(self) -> None:
        state = oxford_parser("_get_parser_state", "STATE")
        on_off = create_on_off_val_mapping("ON", "OFF")
        self.pulse_tube: Parameter = self.add_parameter(
            "pulse_tube", label="Pulse tube", get_cmd="READ:DEV:COMP:PUMP:SIG:STATE",
            get_parser=state, set_cmd=partial(self._set_pump, "COMP"), val_mapping=on_off,
            docstring="Pulse-tube compressor (COMP) on/off.")
        """Pulse-tube compressor (COMP) on/off."""
        self.turbo: Parameter = self.add_parameter(
            "turbo", label="Turbo 1", get_cmd="READ:DEV:TURB1:PUMP:SIG:STATE",
            get_parser=state, set_cmd=partial(self._set_pump, "TURB1"), val_mapping=on_off,
            docstring="Still-line turbo pump (TURB1) on/off.")
        """Still-line turbo pump (TURB1) on/off."""
        self.turbo_speed: Parameter = self.add_parameter(
            "turbo_speed", label="Turbo 1 speed", unit="Hz", get_cmd="READ:DEV:TURB1:PUMP:SIG:SPD",
            get_parser=oxford_parser("_get_parser_pump_speed"), docstring="Turbo pump speed.")
        """Turbo pump speed."""

    def _add_interlock(self) -> None:
        value = oxford_parser("_get_response_value")
        self.interlock_state: Parameter = self.add_parameter(
            "interlock_state", label="Interlock", get_cmd="READ:SYS:INTLK:STAT",
            get_parser=oxford_parser("_get_response"),
            vals=vals.Enum("OK", "TRIP_TEMP", "TRIP_RATE", "TRIP_PRES"),
            docstring="OK, TRIP_TEMP, TRIP_RATE or TRIP_PRES (latched until reset).")
        """OK, TRIP_TEMP, TRIP_RATE or TRIP_PRES (latched until reset)."""
        self.interlock_max_temperature: HardLimitParameter = self.add_parameter(
            "interlock_max_temperature", label="Interlock ceiling", unit="K",
            parameter_class=HardLimitParameter, hard_min=0.01, hard_max=self.SAFE_MAX_INTERLOCK_K,
            get_cmd="READ:SYS:INTLK:TMAX", get_parser=lambda reply: float(value(reply)),
            set_cmd=lambda v: self.triton_set(f"SET:SYS:INTLK:TMAX:{v:.4f}"),
            vals=vals.Numbers(0.01, self.SAFE_MAX_INTERLOCK_K),
            docstring="MXC temperature above which the pump laser is cut.")
        """MXC temperature above which the pump laser is cut."""

    def snapshot_base(self, update: bool | None = False,
                      params_to_skip_update: Sequence[str] | None = None) -> dict[str, Any]:
        """A snapshot reads only ``IDN`` from the Triton; every other parameter is reported as
        last read. The Triton answers each path in hundreds of ms (10 s and more when busy), so
        reading all of them would hold a station load for seconds to minutes."""
        skip = [name for name in self.parameters if name != "IDN"]
        return super().snapshot_base(update, [*skip, *(params_to_skip_update or ())])

    def get_idn(self) -> dict[str, str | None]:
        """``IDN:OXFORD INSTRUMENTS:TRITON:serial:firmware``, split as OxfordTriton splits it."""
        return OxfordTriton.get_idn(self)  # type: ignore[arg-type]

    def triton_set(self, cmd: str) -> str:
        """Send a ``SET:`` command and check its in-band reply; raises InstrumentError unless
        the Triton answers ``...:VALID``."""
        reply = self.ask(cmd)
        if not reply.endswith(":VALID"):
            raise InstrumentError(self.name, cmd, [reply])
        return reply

    def _set_pump(self, pump: str, state: str) -> None:
        self.triton_set(f"SET:DEV:{pump}:PUMP:SIG:STATE:{state}")

    def reset_interlock(self) -> None:
        """Clear a latched trip; raises InstrumentError while the condition persists."""
        self.triton_set("SET:SYS:INTLK:RST")

    def _replay_after_reset(self) -> bool:
        """The Triton software reports no power-on reset (no ``*ESR?``): nothing to replay."""
        self.power_on_seen = False
        return False
