"""Dilution-refrigerator controller: stages, heaters with PID, gas handling, pulse tube, interlock.

Thermometry and heaters speak the Lake Shore 372 command set (errors through ``*ESR?``); gas
handling, the pulse tube and the interlock use Oxford Triton style ``READ:``/``SET:`` paths. The
heater range, the mixing-chamber setpoint and the interlock ceiling have hard safety limits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import qcodes.validators as vals
from qcodes.instrument import ChannelList
from qcodes.parameters import Group, GroupParameter, Parameter, create_on_off_val_mapping

from .base import (
    HardLimitParameter,
    QnetlabChannel,
    QnetlabModule,
    QnetlabVisaInstrument,
    StandardEventStatus,
)

if TYPE_CHECKING:
    from typing import Unpack

    from qcodes.instrument import VisaInstrumentKWArgs

#: Sample-heater current ranges (Lake Shore 372 output 0), index sent on the wire.
HEATER_RANGES = {"off": 0, "31.6uA": 1, "100uA": 2, "316uA": 3, "1mA": 4, "3.16mA": 5,
                 "10mA": 6, "31.6mA": 7, "100mA": 8}
HEATER_MODES = {"off": 0, "open_loop": 2, "zone": 3, "closed_loop": 5}


def _triton_value(reply: str, unit: str = "") -> str:
    """``STAT:DEV:P1:PRES:SIG:PRES:1.2E-06mB`` -> ``1.2E-06``."""
    value = reply.rsplit(":", 1)[-1]
    return value[: -len(unit)] if unit and value.endswith(unit) else value


class FridgeStage(QnetlabChannel):
    """One thermometer channel of the bridge, named after its stage."""

    def __init__(self, parent: QnetlabFridgeController, name: str, channel: int) -> None:
        super().__init__(parent, name)
        self.channel = channel
        self.temperature: Parameter = self.add_parameter(
            "temperature", label=f"{name} temperature", unit="K", get_cmd=f"KRDG? {channel}",
            get_parser=float, docstring="Latest scanned reading (refreshed once per scan cycle).")
        """Latest scanned reading (refreshed once per scan cycle)."""
        self.resistance: Parameter = self.add_parameter(
            "resistance", label=f"{name} sensor resistance", unit="Ohm",
            get_cmd=f"SRDG? {channel}", get_parser=float, docstring="Sensor resistance.")
        """Sensor resistance."""
        self.status: Parameter = self.add_parameter(
            "status", label="Reading status", get_cmd=f"RDGST? {channel}", get_parser=int,
            docstring="Lake Shore status bits (0 = valid reading).")
        """Lake Shore status bits (0 = valid reading)."""
        self.sensor_name: Parameter = self.add_parameter(
            "sensor_name", label="Sensor name", get_cmd=f"INNAME? {channel}",
            set_cmd=f'INNAME {channel},"{{}}"', vals=vals.Strings(1, 15),
            docstring="Name stored in the bridge.")
        """Name stored in the bridge."""


class FridgeHeater(QnetlabModule):
    """The mixing-chamber heater (Lake Shore 372 sample heater, output 0) with PID and ramp."""

    #: Largest current range allowed: 3.16 mA into 120 ohm is 1.2 mW, above any MXC budget.
    SAFE_MAX_RANGE: ClassVar[str] = "3.16mA"
    #: Highest setpoint accepted: the transducer and qubit must stay cold.
    SAFE_MAX_SETPOINT_K: ClassVar[float] = 0.5

    def __init__(self, parent: QnetlabFridgeController, name: str) -> None:
        super().__init__(parent, name)
        allowed = {k: v for k, v in HEATER_RANGES.items()
                   if v <= HEATER_RANGES[self.SAFE_MAX_RANGE]}
        self.mode: GroupParameter = self.add_parameter(
            "mode", label="Heater mode", parameter_class=GroupParameter, val_mapping=HEATER_MODES,
            docstring="off, open_loop (manual output), zone, closed_loop (PID).")
        """off, open_loop (manual output), zone, closed_loop (PID)."""
        self.input_channel: GroupParameter = self.add_parameter(
            "input_channel", label="Control input", parameter_class=GroupParameter,
            get_parser=int, vals=vals.Ints(1, 16), docstring="Thermometer channel the PID uses.")
        """Thermometer channel the PID uses."""
        self._outmode_rest: GroupParameter = self.add_parameter(
            "_outmode_rest", parameter_class=GroupParameter, initial_cache_value="0,0,0,1",
            snapshot_exclude=True, docstring="powerup,polarity,filter,delay (kept as read).")
        self.output_group = Group(
            [self.mode, self.input_channel, self._outmode_rest],
            set_cmd="OUTMODE 0,{mode},{input_channel},{_outmode_rest}", get_cmd="OUTMODE? 0",
            get_parser=self._parse_outmode)
        self.P: GroupParameter = self.add_parameter(
            "P", label="P", parameter_class=GroupParameter, get_parser=float,
            vals=vals.Numbers(0, 1000), docstring="Proportional gain.")
        """Proportional gain."""
        self.I: GroupParameter = self.add_parameter(
            "I", label="I", unit="s", parameter_class=GroupParameter, get_parser=float,
            vals=vals.Numbers(0, 10000), docstring="Integral time.")
        """Integral time."""
        self.D: GroupParameter = self.add_parameter(
            "D", label="D", unit="s", parameter_class=GroupParameter, get_parser=float,
            vals=vals.Numbers(0, 2500), docstring="Derivative time.")
        """Derivative time."""
        self.pid_group = Group([self.P, self.I, self.D], set_cmd="PID 0,{P},{I},{D}",
                               get_cmd="PID? 0")
        self.range: Parameter = self.add_parameter(
            "range", label="Heater range", get_cmd="RANGE? 0", set_cmd="RANGE 0,{}",
            val_mapping=allowed, docstring="Current range (hard-capped at SAFE_MAX_RANGE).")
        """Current range (hard-capped at SAFE_MAX_RANGE)."""
        self.setpoint: HardLimitParameter = self.add_parameter(
            "setpoint", label="Setpoint", unit="K", parameter_class=HardLimitParameter,
            hard_min=0.0, hard_max=self.SAFE_MAX_SETPOINT_K, get_cmd="SETP? 0",
            set_cmd="SETP 0,{:.6g}", get_parser=float,
            vals=vals.Numbers(0, self.SAFE_MAX_SETPOINT_K), docstring="PID setpoint.")
        """PID setpoint."""
        self.ramp_enabled: GroupParameter = self.add_parameter(
            "ramp_enabled", label="Ramp enabled", parameter_class=GroupParameter,
            val_mapping=create_on_off_val_mapping("1", "0"), docstring="Ramp the setpoint.")
        """Ramp the setpoint."""
        self.ramp_rate: GroupParameter = self.add_parameter(
            "ramp_rate", label="Ramp rate", unit="K/min", parameter_class=GroupParameter,
            get_parser=float, vals=vals.Numbers(0, 100), docstring="Setpoint ramp rate.")
        """Setpoint ramp rate."""
        self.ramp_group = Group([self.ramp_enabled, self.ramp_rate],
                                set_cmd="RAMP 0,{ramp_enabled},{ramp_rate}", get_cmd="RAMP? 0")
        self.ramping: Parameter = self.add_parameter(
            "ramping", label="Ramping", get_cmd="RAMPST? 0",
            val_mapping=create_on_off_val_mapping("1", "0"), docstring="True while ramping.")
        """True while ramping."""
        self.output: Parameter = self.add_parameter(
            "output", label="Heater output", unit="%", get_cmd="HTR? 0", get_parser=float,
            docstring="Output in % of the range's full-scale current.")
        """Output in % of the range's full-scale current."""
        self.manual_output: Parameter = self.add_parameter(
            "manual_output", label="Manual output", unit="%", get_cmd="MOUT? 0",
            set_cmd="MOUT 0,{:.4f}", get_parser=float, vals=vals.Numbers(0, 100),
            docstring="Output in open-loop mode.")
        """Output in open-loop mode."""

    @staticmethod
    def _parse_outmode(reply: str) -> dict[str, str]:
        fields = [f.strip() for f in reply.split(",")]
        return {"mode": fields[0], "input_channel": fields[1],
                "_outmode_rest": ",".join(fields[2:6])}

    def off(self) -> None:
        """Heater range off and mode off."""
        self.range("off")
        self.mode("off")


class QnetlabFridgeController(QnetlabVisaInstrument):
    """Dilution-refrigerator controller (Lake Shore 372 thermometry/heaters, Triton-style system).

    Args:
        name: instrument name.
        address: VISA resource (the 372's Ethernet port is ``TCPIP::host::7777::SOCKET``).
        stages: stage name -> thermometer channel; default Bluefors-like wiring.
        **kwargs: see :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`.
    """

    default_terminator = "\r\n"
    error_reporting = StandardEventStatus()
    DEFAULT_STAGES: ClassVar[dict[str, int]] = {
        "flange_50k": 1, "flange_4k": 2, "still": 5, "mxc": 6, "cold_plate": 7}
    #: The interlock ceiling cannot be raised above this (pump off above it).
    SAFE_MAX_INTERLOCK_K: ClassVar[float] = 0.1
    pressure_p1: Parameter  #: outer vacuum can
    pressure_p2: Parameter  #: still pumping line
    pressure_p3: Parameter  #: condensing line
    pressure_p4: Parameter  #: mixture tank

    #: Heater commands (MXC heater range, output mode, manual output; still heater): never
    #: replayed after a reset, so heating returns only through an explicit call.
    EMITS_OR_HEATS = ("RANGE ", "OUTMODE 0,", "MOUT ", "STILL ")

    def __init__(self, name: str, address: str, *, stages: dict[str, int] | None = None,
                 still_idle_percent: float | None = None,
                 **kwargs: Unpack[VisaInstrumentKWArgs]) -> None:
        super().__init__(name, address, **kwargs)
        stage_list = ChannelList(self, "stages", FridgeStage, snapshotable=False)
        for stage, channel in (stages or self.DEFAULT_STAGES).items():
            ch = FridgeStage(self, stage, channel)
            stage_list.append(ch)
            self.add_submodule(stage, ch)
        self.stages = self.add_submodule("stages", stage_list.to_channel_tuple())
        """All stages (a ChannelTuple: ``fridge.stages.temperature()``)."""
        self.mxc_heater: FridgeHeater = self.add_submodule("mxc_heater",
                                                           FridgeHeater(self, "mxc_heater"))
        """Mixing-chamber heater."""
        self.still_heater: Parameter = self.add_parameter(
            "still_heater", label="Still heater", unit="%", get_cmd="STILL?",
            set_cmd="STILL {:.3f}", get_parser=float, vals=vals.Numbers(0, 100),
            docstring="Still heater output (drives the 3He circulation).")
        """Still heater output (drives the 3He circulation)."""
        #: The still heater's idle setting, restored by :meth:`safe_state` (default: as found
        #: when the station was loaded; a station file may give ``still_idle_percent``).
        self.still_idle_percent = (self.still_heater() if still_idle_percent is None
                                   else float(still_idle_percent))
        for gauge, what in ((1, "outer vacuum can"), (2, "still line"), (3, "condensing line"),
                            (4, "mixture tank")):
            setattr(self, f"pressure_p{gauge}", self.add_parameter(
                f"pressure_p{gauge}", label=f"P{gauge} ({what})", unit="mbar",
                get_cmd=f"READ:DEV:P{gauge}:PRES:SIG:PRES",
                get_parser=lambda r: float(_triton_value(r, "mB")),
                docstring=f"Pressure gauge P{gauge}: {what}."))
        self.pulse_tube: Parameter = self.add_parameter(
            "pulse_tube", label="Pulse tube", get_cmd="READ:DEV:COMP:PUMP:SIG:STATE",
            set_cmd=self._set_pulse_tube, get_parser=_triton_value,
            val_mapping=create_on_off_val_mapping("ON", "OFF"),
            docstring="Pulse-tube compressor on/off.")
        """Pulse-tube compressor on/off."""
        self.interlock_state: Parameter = self.add_parameter(
            "interlock_state", label="Interlock", get_cmd="READ:SYS:INTLK:STAT",
            get_parser=_triton_value,
            vals=vals.Enum("OK", "TRIP_TEMP", "TRIP_RATE", "TRIP_PRES"),
            docstring="OK, TRIP_TEMP, TRIP_RATE or TRIP_PRES (latched until reset).")
        """OK, TRIP_TEMP, TRIP_RATE or TRIP_PRES (latched until reset)."""
        self.interlock_max_temperature: HardLimitParameter = self.add_parameter(
            "interlock_max_temperature", label="Interlock ceiling", unit="K",
            parameter_class=HardLimitParameter, hard_min=0.01, hard_max=self.SAFE_MAX_INTERLOCK_K,
            get_cmd="READ:SYS:INTLK:TMAX", set_cmd=self._set_interlock_tmax,
            get_parser=lambda r: float(_triton_value(r, "K")),
            vals=vals.Numbers(0.01, self.SAFE_MAX_INTERLOCK_K),
            docstring="MXC temperature above which the pump laser is cut.")
        """MXC temperature above which the pump laser is cut."""
        self._finish_init()

    def _triton_set(self, cmd: str) -> None:
        reply = self.ask(cmd)
        if not reply.endswith(":VALID"):
            self.raise_on_errors(cmd)
            raise RuntimeError(f"{self.name}: {cmd!r} refused: {reply}")
        self.raise_on_errors(cmd)

    def _set_pulse_tube(self, value: str) -> None:
        self._triton_set(f"SET:DEV:COMP:PUMP:SIG:STATE:{value}")

    def _set_interlock_tmax(self, value: float) -> None:
        self._triton_set(f"SET:SYS:INTLK:TMAX:{value:.4f}")

    def safe_state(self) -> None:
        """Heaters back to idle: the MXC heater off, the still heater at its idle setting."""
        self.mxc_heater.off()
        if self.still_heater() != self.still_idle_percent:
            self.still_heater(self.still_idle_percent)

    def safety_readback(self) -> str:
        return (f"MXC heater {self.mxc_heater.range()} ({self.mxc_heater.mode()}), still "
                f"heater {self.still_heater():g} % (idle {self.still_idle_percent:g} %)")

    def reset_interlock(self) -> None:
        """Clear a latched trip; raises InstrumentError while the condition persists."""
        self._triton_set("SET:SYS:INTLK:RST")

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
        channel: FridgeStage = self.submodules[stage]  # type: ignore[assignment]
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
