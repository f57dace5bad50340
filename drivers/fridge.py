"""The node's Lake Shore Model 372: fridge thermometry and heaters, on QCoDeS's own driver.

:class:`QnetlabLakeshore372` is QCoDeS's ``LakeshoreModel372`` (its channels ``ch01``..``ch16``,
its ``sample_heater`` / ``warmup_heater`` / ``analog_heater`` outputs and their groups, unchanged)
with qnetlab's driver base mixed in: ``*ESR?`` error checks after every write, recovery from
timeouts, disconnects and power-on resets (heating is never re-applied), waits on the lab clock,
:meth:`~QnetlabLakeshore372.safe_state`, and hard safety limits on the sample heater's setpoint and
current range that a station file's ``limits:`` cannot widen. Gas handling, the pulse tube, the
pressures and the interlock are the Oxford Triton's (:mod:`qnetlab.drivers.triton`).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import qcodes.validators as vals
from qcodes.instrument_drivers.Lakeshore import LakeshoreModel372
from qcodes.instrument_drivers.Lakeshore.Lakeshore_model_372 import (
    LakeshoreModel372Channel,
    LakeshoreModel372Output,
)
from qcodes.parameters import Parameter

from qnetlab.errors import SafetyLimitError

from .base import HardLimitParameter, QnetlabVisaInstrument, StandardEventStatus

if TYPE_CHECKING:
    from typing import Unpack

    from qcodes.instrument import VisaInstrumentKWArgs


class HardCappedRange(Parameter):
    """A heater range parameter whose allowed ranges are fixed at construction.

    ``val_mapping`` holds only the allowed ranges, and :meth:`validate` checks them again
    whatever validator a station file's ``limits:`` puts in place: the cap cannot be widened."""

    def __init__(self, name: str, *, allowed: Iterable[str], **kwargs: Any) -> None:
        self.hard_allowed = tuple(allowed)
        super().__init__(name, **kwargs)

    def validate(self, value: Any) -> None:
        super().validate(value)
        if value not in self.hard_allowed:
            raise SafetyLimitError(f"{value!r} is above the hard safety cap (allowed: "
                                   f"{list(self.hard_allowed)}); Parameter: {self.full_name}")


class QnetlabLakeshore372(QnetlabVisaInstrument, LakeshoreModel372):
    """Lake Shore Model 372 of a fridge: QCoDeS's driver plus qnetlab's safety and waits.

    Args:
        name: instrument name.
        address: VISA resource (the 372's Ethernet port is ``TCPIP::host::7777::SOCKET``).
        stages: stage name -> input channel; default Bluefors-like wiring. Each stage is an
            attribute naming its QCoDeS channel (``fridge.mxc is fridge.ch06``).
        still_idle_percent: still heater setting :meth:`safe_state` restores (default: as found).
        **kwargs: see :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`.
    """

    default_terminator = "\r\n"
    error_reporting = StandardEventStatus()
    DEFAULT_STAGES: ClassVar[dict[str, int]] = {
        "flange_50k": 1, "flange_4k": 2, "still": 5, "mxc": 6, "cold_plate": 7}
    #: Largest sample-heater range allowed: 3.16 mA into 120 ohm is 1.2 mW, above any MXC budget.
    SAFE_MAX_RANGE: ClassVar[str] = "3.16mA"
    #: Highest sample-heater setpoint accepted: the transducer and qubit must stay cold.
    SAFE_MAX_SETPOINT_K: ClassVar[float] = 0.5
    #: Lake Shore needs this long before a new setpoint reads back (QCoDeS's post_delay), waited
    #: on the lab clock instead of in wall time.
    SETPOINT_SETTLE_S: ClassVar[float] = 0.5
    #: The sample heater's output number on the wire (the 372's output 0).
    SAMPLE_HEATER: ClassVar[int] = 0
    #: Heater commands (ranges, heater output modes, manual output, still): never replayed after
    #: a reset, so heating returns only through an explicit call.
    EMITS_OR_HEATS = ("RANGE ", "OUTMODE 0,", "OUTMODE 1,", "MOUT ", "STILL ")

    def __init__(self, name: str, address: str, *, stages: dict[str, int] | None = None,
                 still_idle_percent: float | None = None,
                 **kwargs: Unpack[VisaInstrumentKWArgs]) -> None:
        super().__init__(name, address, **kwargs)
        #: stage name -> the QCoDeS input channel that reads it
        self.stages: dict[str, LakeshoreModel372Channel] = {}
        for stage, channel in (stages or self.DEFAULT_STAGES).items():
            self.stages[stage] = self.submodules[f"ch{int(channel):02d}"]  # type: ignore[assignment]
            setattr(self, stage, self.stages[stage])
        self._guard_sample_heater(self.sample_heater)
        for output in (self.sample_heater, self.warmup_heater, self.analog_heater):
            # QCoDeS's version (and its blocking_t) sleeps in wall time; this one waits on the
            # lab clock (virtual in simulation)
            output.wait_until_set_point_reached = partial(  # type: ignore[method-assign]
                self._wait_until_set_point_reached, output)
        self.mxc_heater: LakeshoreModel372Output = self.sample_heater
        """The mixing-chamber heater (the 372's sample heater, output 0)."""
        self.still_heater: Parameter = self.add_parameter(
            "still_heater", label="Still heater", unit="%", get_cmd="STILL?",
            set_cmd="STILL {:.3f}", get_parser=float, vals=vals.Numbers(0, 100),
            docstring="Still heater output (the 372's STILL command; drives 3He circulation).")
        """Still heater output (the 372's STILL command; drives 3He circulation)."""
        #: The still heater's idle setting, restored by :meth:`safe_state` (default: as found
        #: when the station was loaded; a station file may give ``still_idle_percent``).
        self.still_idle_percent = (self.still_heater() if still_idle_percent is None
                                   else float(still_idle_percent))
        self._finish_init()

    def connect_message(self, *args: Any, **kwargs: Any) -> None:
        """Deferred: QCoDeS's base prints it before qnetlab's I/O is set up; printed by
        ``_finish_init`` instead (when ``print_connect_message``)."""
        if getattr(self, "_print_connect", None) is None:
            return
        super().connect_message(*args, **kwargs)

    def _guard_sample_heater(self, heater: LakeshoreModel372Output) -> None:
        """Replace the sample heater's range and setpoint with hard-limited versions of the same
        commands, and add the 372's manual output (``MOUT``), which QCoDeS does not declare."""
        ranges = heater.RANGES
        allowed = [k for k, v in ranges.items() if v <= ranges[self.SAFE_MAX_RANGE]]
        index = self.SAMPLE_HEATER
        heater.remove_parameter("output_range")
        heater.output_range = heater.add_parameter(  # type: ignore[misc]
            "output_range", label="Heater range", parameter_class=HardCappedRange,
            allowed=allowed, val_mapping={k: ranges[k] for k in allowed},
            set_cmd=f"RANGE {index}, {{}}", get_cmd=f"RANGE? {index}",
            docstring=f"Current range, hard-capped at {self.SAFE_MAX_RANGE}.")
        heater.remove_parameter("setpoint")
        heater.setpoint = heater.add_parameter(  # type: ignore[misc]
            "setpoint", label="Setpoint", unit="K", parameter_class=HardLimitParameter,
            hard_min=0.0, hard_max=self.SAFE_MAX_SETPOINT_K, get_cmd=f"SETP? {index}",
            set_cmd=self._set_setpoint, get_parser=float,
            vals=vals.Numbers(0, self.SAFE_MAX_SETPOINT_K),
            docstring=f"PID setpoint, hard-limited to [0, {self.SAFE_MAX_SETPOINT_K}] K.")
        heater.manual_output = heater.add_parameter(  # type: ignore[attr-defined]
            "manual_output", label="Manual output", unit="%", get_cmd=f"MOUT? {index}",
            set_cmd=f"MOUT {index},{{:.4f}}", get_parser=float, vals=vals.Numbers(0, 100),
            docstring="Heater output in open-loop mode (the 372's MOUT).")

    def _wait_until_set_point_reached(self, output: LakeshoreModel372Output,
                                      wait_cycle_time: float | None = None,
                                      wait_tolerance: float | None = None,
                                      wait_equilibration_time: float | None = None) -> None:
        """QCoDeS's ``wait_until_set_point_reached`` (same arguments and defaults from the
        output's ``wait_*`` parameters), polling on the lab clock: returns once the control
        input has stayed within ``|T - setpoint| / T < tolerance`` for the equilibration time."""
        cycle = wait_cycle_time or output.wait_cycle_time.get_latest()
        tolerance = wait_tolerance or output.wait_tolerance.get_latest()
        hold = wait_equilibration_time or output.wait_equilibration_time.get_latest()
        name = self.input_channel_parameter_values_to_channel_name_on_instrument[
            output.input_channel()]
        channel = self.submodules[name]
        clock, held_since = self.clock, None
        while True:
            reading, now = channel.temperature(), clock.now()
            if reading > 0 and abs(reading - output.setpoint()) / reading < tolerance:
                held_since = now if held_since is None else held_since
                if now - held_since >= hold:
                    return
            else:
                held_since = None
            clock.sleep(cycle)

    def _set_setpoint(self, value: float) -> None:
        self.write(f"SETP {self.SAMPLE_HEATER}, {value:.6g}")
        self.clock.sleep(self.SETPOINT_SETTLE_S)

    def heaters_off(self) -> None:
        """The sample heater's range and mode off."""
        self.sample_heater.output_range("off")
        self.sample_heater.mode("off")

    def safe_state(self) -> None:
        """Heaters back to idle: the MXC heater off, the still heater at its idle setting."""
        self.heaters_off()
        if self.still_heater() != self.still_idle_percent:
            self.still_heater(self.still_idle_percent)

    def safety_readback(self) -> str:
        heater = self.sample_heater
        return (f"MXC heater {heater.output_range()} ({heater.mode()}), still heater "
                f"{self.still_heater():g} % (idle {self.still_idle_percent:g} %)")

    def wait_until_stable(self, stage: str, band_k: float, hold_s: float,
                          timeout_s: float = 3600.0, poll_s: float = 10.0,
                          target_k: float | None = None) -> float:
        """Wait on the lab clock until ``stage`` stays within ``band_k`` for ``hold_s``.

        With ``target_k`` the band is around it, else around the reading where the hold began.
        Returns the last reading; raises ``TimeoutError`` (with the last reading) after
        ``timeout_s``."""
        if band_k <= 0 or hold_s < 0 or poll_s <= 0:
            raise ValueError(f"band_k={band_k} must be > 0, hold_s={hold_s} >= 0, "
                             f"poll_s={poll_s} > 0")
        if stage not in self.stages:
            raise ValueError(f"stage={stage!r}: not a stage of {self.name} (stages: "
                             f"{sorted(self.stages)})")
        channel = self.stages[stage]
        clock = self.clock
        start = clock.now()
        held_since, centre = None, target_k
        while True:
            now, value = clock.now(), channel.temperature()
            ref = value if centre is None else centre
            if abs(value - ref) <= band_k:
                if held_since is None:
                    held_since, centre = now, ref if target_k is None else target_k
                elif now - held_since >= hold_s:
                    return value
            else:
                held_since, centre = None, target_k
            if now - start >= timeout_s:
                raise TimeoutError(f"{self.name}.{stage}: not stable within +-{band_k} K for "
                                   f"{hold_s} s after {timeout_s} s (last {value:.6g} K)")
            clock.sleep(poll_s)
