"""AOM pulse gate: a Keysight 33522B waveform generator whose channel 1 gates the pump AOM's RF
driver (output off: the AOM stays closed and no pump light reaches the transducer).

:class:`QnetlabAomGate` is QCoDeS's own ``Keysight33522B`` (every command as QCoDeS sends it)
with qnetlab's driver behaviour mixed in from :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`
(error queue read after every write, recovery, lab-clock waits, settings replayed after a reset
except the gate's output), hard safety limits on the gate channel's pulse width and pulse rate,
and a safe state (gate output off).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import qcodes.validators as vals
from qcodes.instrument_drivers.Keysight import Keysight33522B
from qcodes.parameters import Parameter

from .base import HardLimitParameter, QnetlabVisaInstrument, ScpiErrorQueue

if TYPE_CHECKING:
    from qcodes.instrument_drivers.Keysight.KeysightAgilent_33XXX import (
        Keysight33xxxOutputChannel,
    )

#: gate_mode -> (function, burst state, trigger source) of the gate channel
_MODES = {"cw": ("DC", "OFF", "IMM"), "pulsed": ("PULS", "OFF", "IMM"),
          "triggered": ("PULS", "ON", "EXT")}


class _NameCheck(logging.Filter):
    """Drops QCoDeS's "class name does not match the detected model" notice: this class
    is a 33522B driver by inheritance, not by name."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "does not match the detected model" not in record.getMessage()


class QnetlabAomGate(Keysight33522B, QnetlabVisaInstrument):
    """Keysight 33522B gating the pump AOM on channel 1 (``ch1``; ``ch2`` is free).

    Args:
        name: instrument name.
        address: VISA resource.
        print_connect_message: print the "Connected to" line.
        **kwargs: see :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`.
    """

    error_reporting = ScpiErrorQueue("SYSTem:ERRor?")
    #: The gate channel's output lets pump light through: never replayed after a reset.
    EMITS_OR_HEATS = ("OUTPut1 ",)
    #: Hard limits on the gate channel: pulses longer than 1 ms or faster than 1 MHz would
    #: heat the mixing chamber beyond what the interlock can catch in time.
    PULSE_WIDTH_LIMITS_S: ClassVar[tuple[float, float]] = (20e-9, 1e-3)
    PULSE_RATE_LIMITS_HZ: ClassVar[tuple[float, float]] = (1.0, 1e6)

    def __init__(self, name: str, address: str, *, print_connect_message: bool = True,
                 **kwargs: Any) -> None:
        qcodes_log = logging.getLogger(Keysight33522B.__mro__[2].__module__)
        quiet = _NameCheck()
        qcodes_log.addFilter(quiet)
        try:
            super().__init__(name, address, silent=True,
                             print_connect_message=print_connect_message, **kwargs)
        finally:
            qcodes_log.removeFilter(quiet)
        self.gate: Keysight33xxxOutputChannel = self.ch1
        """The channel wired to the AOM RF driver's gate input."""
        self._harden(self.ch1)
        self.gate_mode: Parameter = self.add_parameter(
            "gate_mode", label="AOM gate mode", get_cmd=self._get_mode, set_cmd=self._set_mode,
            vals=vals.Enum(*_MODES),
            docstring="cw (gate held open), pulsed (pulse train at 1 / period) or triggered "
                      "(one pulse per QNU attempt on the EXT trigger).")
        """cw (gate held open), pulsed (pulse train at 1 / period) or triggered."""
        self.pulse_width: Parameter = self.ch1.pulse_width
        """Pump pulse width (hard-limited)."""
        self.period: Parameter = self.add_parameter(
            "period", label="Pulse period", unit="s", get_cmd=lambda: 1 / self.ch1.frequency(),
            set_cmd=lambda p: self.ch1.frequency(1 / p),
            vals=vals.Numbers(1 / self.PULSE_RATE_LIMITS_HZ[1], 1 / self.PULSE_RATE_LIMITS_HZ[0]),
            docstring="Pulse period with the internal trigger (1 / the channel's frequency).")
        """Pulse period with the internal trigger (1 / the channel's frequency)."""
        self._finish_init()

    def _harden(self, ch: Keysight33xxxOutputChannel) -> None:
        """Swap the gate channel's pulse width and frequency for hard-limited parameters
        (the commands QCoDeS's channel 1 sends; a station file's ``limits:`` can only narrow
        them)."""
        (wmin, wmax), (fmin, fmax) = self.PULSE_WIDTH_LIMITS_S, self.PULSE_RATE_LIMITS_HZ
        for name, head, unit, low, high in (
                ("pulse_width", "SOURce1:FUNCtion:PULSE:WIDTh", "s", wmin, wmax),
                ("frequency", "SOURce1:FREQuency", "Hz", fmin, fmax)):
            old = ch.parameters[name]
            ch.remove_parameter(name)
            new = ch.add_parameter(
                name, parameter_class=HardLimitParameter, hard_min=low, hard_max=high,
                label=old.label, unit=unit, get_cmd=f"{head}?", set_cmd=f"{head} {{}}",
                get_parser=float, vals=vals.Numbers(low, high),
                docstring=f"{old.label} (hard-limited to {low:g}..{high:g} {unit}).")
            setattr(ch, name, new)

    # --- gate -------------------------------------------------------------------------------
    def _set_mode(self, mode: str) -> None:
        function, burst, trigger = _MODES[mode]
        ch = self.ch1
        ch.function_type(function)
        if burst == "ON":
            ch.burst_mode("N Cycle")
            ch.burst_ncycles(1)
        ch.trigger_source(trigger)
        ch.burst_state(burst)

    def _get_mode(self) -> str:
        ch = self.ch1
        if ch.function_type() == "DC":
            return "cw"
        return "triggered" if ch.burst_state() == "ON" else "pulsed"

    def open_gate(self) -> None:
        """Let pump light through (channel 1 output on), in the present gate mode."""
        self.ch1.output("ON")

    def close_gate(self) -> None:
        """Keep the AOM closed: no pump light reaches the transducer."""
        self.ch1.output("OFF")

    @property
    def duty_cycle(self) -> float:
        """Average over peak pump power with the internal trigger (1 for cw, 0 when closed)."""
        if self.ch1.output() == "OFF":
            return 0.0
        if self.gate_mode() == "cw":
            return 1.0
        return min(1.0, self.pulse_width() * self.ch1.frequency())

    # --- safety -------------------------------------------------------------------------------
    def safe_state(self) -> None:
        """Gate output off: the AOM blocks the pump whatever the laser does."""
        self.close_gate()

    def safety_readback(self) -> str:
        return f"gate {self.ch1.output().lower()}, {self.gate_mode()}"

    def after_reset(self) -> None:
        """Whatever the power-on defaults, the gate stays closed after a reset."""
        self.close_gate()
