"""Transducer pump laser: a tunable C-band laser on the Keysight N777xC command tree with an AOM.

Wavelength and frequency are two views of one setting; power can be set in dBm or mW. The
maximum output power is a hard safety limit (transducer damage, mixing-chamber heating) that a
station file cannot widen: see :class:`~qnetlab.drivers.base.HardLimitParameter`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import qcodes.validators as vals
from qcodes.parameters import Parameter, ParameterWithSetpoints, create_on_off_val_mapping

from .base import HardLimitParameter, QnetlabModule, QnetlabVisaInstrument, ScpiErrorQueue

if TYPE_CHECKING:
    from typing import Unpack

    from qcodes.instrument import VisaInstrumentKWArgs

C_LIGHT = 299_792_458.0


def dbm_to_mw(dbm: float) -> float:
    return 10 ** (dbm / 10)


def mw_to_dbm(mw: float) -> float:
    return 10 * math.log10(mw) if mw > 0 else -math.inf


class PumpLaserSweep(QnetlabModule):
    """Hardware wavelength sweep with lambda logging; traces come back as numpy arrays."""

    def __init__(self, parent: QnetlabPumpLaser, name: str) -> None:
        super().__init__(parent, name)
        self.start: Parameter = self.add_parameter(
            "start", label="Sweep start", unit="nm", get_cmd=":SOUR0:WAV:SWE:STAR?",
            set_cmd=":SOUR0:WAV:SWE:STAR {:.9e}", get_parser=float, scale=1e-9,
            vals=vals.Numbers(1500, 1630), docstring="First wavelength of the sweep.")
        """First wavelength of the sweep."""
        self.stop: Parameter = self.add_parameter(
            "stop", label="Sweep stop", unit="nm", get_cmd=":SOUR0:WAV:SWE:STOP?",
            set_cmd=":SOUR0:WAV:SWE:STOP {:.9e}", get_parser=float, scale=1e-9,
            vals=vals.Numbers(1500, 1630), docstring="Last wavelength of the sweep (> start).")
        """Last wavelength of the sweep (> start)."""
        self.step: Parameter = self.add_parameter(
            "step", label="Sweep step", unit="pm", get_cmd=":SOUR0:WAV:SWE:STEP?",
            set_cmd=":SOUR0:WAV:SWE:STEP {:.6e}", get_parser=float, scale=1e-12,
            vals=vals.Numbers(0.1, 1e4), docstring="Logging step (0.1 pm resolution).")
        """Logging step (0.1 pm resolution)."""
        self.speed: Parameter = self.add_parameter(
            "speed", label="Sweep speed", unit="nm/s", get_cmd=":SOUR0:WAV:SWE:SPE?",
            set_cmd=":SOUR0:WAV:SWE:SPE {:.6e}", get_parser=float, scale=1e-9,
            vals=vals.Numbers(0.5, 200), docstring="Continuous sweep speed.")
        """Continuous sweep speed."""
        self.mode: Parameter = self.add_parameter(
            "mode", label="Sweep mode", get_cmd=":SOUR0:WAV:SWE:MODE?",
            set_cmd=":SOUR0:WAV:SWE:MODE {}", val_mapping={"stepped": "STEP", "continuous": "CONT"},
            docstring="Stepped (dwell per point) or continuous sweep.")
        """Stepped (dwell per point) or continuous sweep."""
        self.dwell: Parameter = self.add_parameter(
            "dwell", label="Dwell", unit="s", get_cmd=":SOUR0:WAV:SWE:DWEL?",
            set_cmd=":SOUR0:WAV:SWE:DWEL {:.6e}", get_parser=float, vals=vals.Numbers(0, 10),
            docstring="Dwell per point in stepped mode.")
        """Dwell per point in stepped mode."""
        self.logging: Parameter = self.add_parameter(
            "logging", label="Lambda logging", get_cmd=":SOUR0:WAV:SWE:LLOG?",
            set_cmd=":SOUR0:WAV:SWE:LLOG {}", val_mapping=create_on_off_val_mapping("1", "0"),
            docstring="Log wavelength and power at every point (also triggers the QNU log).")
        """Log wavelength and power at every point (also triggers the QNU log)."""
        self.running: Parameter = self.add_parameter(
            "running", label="Sweep running", get_cmd=":SOUR0:WAV:SWE?",
            val_mapping=create_on_off_val_mapping("1", "0"), snapshot_get=False,
            docstring="True while a sweep runs.")
        """True while a sweep runs."""
        self.n_points: Parameter = self.add_parameter(
            "n_points", label="Points", get_cmd=self._n_points, vals=vals.Ints(1),
            snapshot_get=False, docstring="Points the sweep will log (from start, stop, step).")
        """Points the sweep will log (from start, stop, step)."""
        self.wavelength_axis: Parameter = self.add_parameter(
            "wavelength_axis", label="Wavelength", unit="nm", get_cmd=self._axis,
            vals=vals.Arrays(shape=(self.n_points.get_latest,)), snapshot_value=False,
            docstring="Nominal wavelengths of the sweep points.")
        """Nominal wavelengths of the sweep points."""
        self.wavelength_log: ParameterWithSetpoints = self.add_parameter(
            "wavelength_log", label="Logged wavelength", unit="nm",
            parameter_class=ParameterWithSetpoints, get_cmd=self._wavelength_log,
            setpoints=(self.wavelength_axis,), vals=vals.Arrays(shape=(self.n_points.get_latest,)),
            snapshot_value=False, docstring="Wavelength the laser logged at each point.")
        """Wavelength the laser logged at each point."""
        self.power_log: ParameterWithSetpoints = self.add_parameter(
            "power_log", label="Logged power", unit="W", parameter_class=ParameterWithSetpoints,
            get_cmd=self._power_log, setpoints=(self.wavelength_axis,),
            vals=vals.Arrays(shape=(self.n_points.get_latest,)), snapshot_value=False,
            docstring="Output power monitor at each point.")
        """Output power monitor at each point."""

    def _n_points(self) -> int:
        return round((self.stop() - self.start()) / (self.step() * 1e-3)) + 1

    def _axis(self) -> np.ndarray:
        n = self.n_points()
        return self.start() + self.step() * 1e-3 * np.arange(n)

    def _block(self, cmd: str) -> np.ndarray:
        root: QnetlabPumpLaser = self.root_instrument  # type: ignore[assignment]
        return np.frombuffer(root._query_binary(cmd), dtype="<f8")

    def _wavelength_log(self) -> np.ndarray:
        return self._block(":SOUR0:READ:DATA? LLOG") * 1e9

    def _power_log(self) -> np.ndarray:
        return self._block(":SOUR0:READ:DATA? PLOG")

    def check(self) -> tuple[int, str]:
        """The laser's own consistency check: ``(0, "OK")`` or a code and reason."""
        code, _, text = self.ask(":SOUR0:WAV:SWE:CHEC?").partition(",")
        return int(code), text

    def start_sweep(self) -> None:
        """Start one sweep; refuses (ValueError) an inconsistent configuration."""
        code, text = self.check()
        if code != 0:
            raise ValueError(f"{self.full_name}: sweep configuration refused: {code} {text}")
        self.write(":SOUR0:WAV:SWE STAR")

    def abort(self) -> None:
        self.write(":SOUR0:WAV:SWE STOP")

    def run(self, timeout_s: float = 600.0, poll_s: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """Start a sweep, wait on the lab clock until it ends, return (wavelengths nm, power W)."""
        self.n_points()  # the axis shape follows the present settings
        self.start_sweep()
        root: QnetlabPumpLaser = self.root_instrument  # type: ignore[assignment]
        root.wait_for(lambda: not self.running(), timeout_s, poll_s, "end of sweep")
        return self.wavelength_log(), self.power_log()


class PumpLaserAom(QnetlabModule):
    """Acousto-optic modulator gating the pump: CW, pulse train, or one pulse per trigger."""

    def __init__(self, parent: QnetlabPumpLaser, name: str) -> None:
        super().__init__(parent, name)
        self.mode: Parameter = self.add_parameter(
            "mode", label="AOM mode", get_cmd=":AOM:MODE?", set_cmd=":AOM:MODE {}",
            val_mapping={"cw": "CW", "pulsed": "PULS", "burst": "BURS"},
            docstring="cw, pulsed (pulse train) or burst (pulses per trigger).")
        """cw, pulsed (pulse train) or burst (pulses per trigger)."""
        self.pulse_width: Parameter = self.add_parameter(
            "pulse_width", label="Pulse width", unit="s", get_cmd=":AOM:PULS:WIDT?",
            set_cmd=":AOM:PULS:WIDT {:.6e}", get_parser=float, vals=vals.Numbers(20e-9, 1e-3),
            docstring="Pump pulse width.")
        """Pump pulse width."""
        self.period: Parameter = self.add_parameter(
            "period", label="Pulse period", unit="s", get_cmd=":AOM:PULS:PER?",
            set_cmd=":AOM:PULS:PER {:.6e}", get_parser=float, vals=vals.Numbers(1e-6, 1.0),
            docstring="Pulse period with the internal trigger.")
        """Pulse period with the internal trigger."""
        self.burst_cycles: Parameter = self.add_parameter(
            "burst_cycles", label="Burst cycles", get_cmd=":AOM:BURS:NCYC?",
            set_cmd=":AOM:BURS:NCYC {}", get_parser=int, vals=vals.Ints(1, 65535),
            docstring="Pulses per trigger in burst mode.")
        """Pulses per trigger in burst mode."""
        self.trigger: Parameter = self.add_parameter(
            "trigger", label="Trigger source", get_cmd=":AOM:TRIG:SOUR?",
            set_cmd=":AOM:TRIG:SOUR {}",
            val_mapping={"internal": "IMM", "external": "EXT", "bus": "BUS"},
            docstring="internal (period), external (one pulse per QNU attempt) or bus.")
        """internal (period), external (one pulse per QNU attempt) or bus."""

    @property
    def duty_cycle(self) -> float:
        """Average over peak power with the internal trigger (1 for CW)."""
        if self.mode() == "cw":
            return 1.0
        return min(1.0, self.pulse_width() / self.period())


class QnetlabPumpLaser(QnetlabVisaInstrument):
    """Transducer pump laser (Keysight N777xC SCPI tree, source 0) with an AOM pulse gate.

    Args:
        name: instrument name.
        address: VISA resource.
        max_power_dbm: narrow the power limit below :attr:`SAFE_MAX_POWER_DBM` (never above).
        **kwargs: see :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`.
    """

    default_terminator = "\n"
    error_reporting = ScpiErrorQueue(":SYST:ERR?")
    ACTIONS = (":SOUR0:WAV:SWE ",)
    #: Laser output and shutter: never replayed after a reset (light returns only on request).
    EMITS_OR_HEATS = (":SOUR0:POW:STAT ", ":SOUR0:POW:SHUT ")
    #: Hard ceiling on output power: a transducer and a 14 uW mixing chamber will not take more.
    SAFE_MAX_POWER_DBM: ClassVar[float] = 10.0
    MIN_POWER_DBM: ClassVar[float] = -10.0

    def __init__(self, name: str, address: str, *, max_power_dbm: float | None = None,
                 **kwargs: Unpack[VisaInstrumentKWArgs]) -> None:
        super().__init__(name, address, **kwargs)
        limit = self.SAFE_MAX_POWER_DBM if max_power_dbm is None else max_power_dbm
        if limit > self.SAFE_MAX_POWER_DBM:
            raise ValueError(f"max_power_dbm={limit} exceeds the hard safety limit "
                             f"{self.SAFE_MAX_POWER_DBM} dBm")
        self.max_power_dbm = limit

        self.wavelength: Parameter = self.add_parameter(
            "wavelength", label="Wavelength", unit="nm", get_cmd=":SOUR0:WAV?",
            set_cmd=":SOUR0:WAV {:.12e}", get_parser=float, scale=1e-9,
            vals=vals.Numbers(1500, 1630), docstring="Output wavelength (before fine tuning).")
        """Output wavelength (before fine tuning)."""
        self.frequency: Parameter = self.add_parameter(
            "frequency", label="Optical frequency", unit="Hz", get_cmd=":SOUR0:FREQ?",
            set_cmd=":SOUR0:FREQ {:.12e}", get_parser=float,
            vals=vals.Numbers(C_LIGHT / 1630e-9, C_LIGHT / 1500e-9),
            docstring="Optical frequency, c / wavelength; setting it sets the wavelength.")
        """Optical frequency, c / wavelength; setting it sets the wavelength."""
        self.fine_tuning: Parameter = self.add_parameter(
            "fine_tuning", label="Fine tuning", unit="pm", get_cmd=":SOUR0:WAV:FINE?",
            set_cmd=":SOUR0:WAV:FINE {:.4f}", get_parser=float, vals=vals.Numbers(-50, 50),
            docstring="Mode-hop-free offset added to the wavelength.")
        """Mode-hop-free offset added to the wavelength."""
        self.power: HardLimitParameter = self.add_parameter(
            "power", label="Power", unit="dBm", parameter_class=HardLimitParameter,
            hard_min=self.MIN_POWER_DBM, hard_max=self.max_power_dbm, get_cmd=":SOUR0:POW?",
            set_cmd=":SOUR0:POW {:.4f}", get_parser=float,
            vals=vals.Numbers(self.MIN_POWER_DBM, self.max_power_dbm),
            docstring="Output power setpoint (hard-limited).")
        """Output power setpoint (hard-limited)."""
        self.power_mw: HardLimitParameter = self.add_parameter(
            "power_mw", label="Power", unit="mW", parameter_class=HardLimitParameter,
            hard_min=dbm_to_mw(self.MIN_POWER_DBM), hard_max=dbm_to_mw(self.max_power_dbm),
            get_cmd=":SOUR0:POW?", set_cmd=":SOUR0:POW {:.4f}",
            get_parser=lambda v: dbm_to_mw(float(v)), set_parser=mw_to_dbm,
            vals=vals.Numbers(dbm_to_mw(self.MIN_POWER_DBM), dbm_to_mw(self.max_power_dbm)),
            docstring="The same power setpoint in mW (hard-limited).")
        """The same power setpoint in mW (hard-limited)."""
        self.power_actual: Parameter = self.add_parameter(
            "power_actual", label="Emitted power", unit="dBm", get_cmd=":SOUR0:POW:ACT?",
            get_parser=float, docstring="Power actually emitted (-99 when off or interlocked).")
        """Power actually emitted (-99 when off or interlocked)."""
        self.output: Parameter = self.add_parameter(
            "output", label="Laser output", get_cmd=":SOUR0:POW:STAT?",
            set_cmd=":SOUR0:POW:STAT {}", val_mapping=create_on_off_val_mapping("1", "0"),
            docstring="Laser diode on or off.")
        """Laser diode on or off."""
        self.shutter: Parameter = self.add_parameter(
            "shutter", label="Shutter", get_cmd=":SOUR0:POW:SHUT?", set_cmd=":SOUR0:POW:SHUT {}",
            val_mapping={"open": "0", "closed": "1"}, docstring="Internal shutter.")
        """Internal shutter."""
        self.interlocked: Parameter = self.add_parameter(
            "interlocked", label="Interlock tripped", get_cmd=":SYST:INTL?",
            val_mapping=create_on_off_val_mapping("1", "0"),
            docstring="True while the fridge controller's interlock line holds the laser off.")
        """True while the fridge controller's interlock line holds the laser off."""
        self.status_bits: Parameter = self.add_parameter(
            "status_bits", label="Operation status", get_cmd=":STAT:OPER:COND?", get_parser=int,
            docstring="Bits: 0 laser on, 4 shutter open, 5 sweeping, 6 AOM pulsing, 9 interlocked.")
        """Bits: 0 laser on, 4 shutter open, 5 sweeping, 6 AOM pulsing, 9 interlocked."""
        self.sweep: PumpLaserSweep = self.add_submodule("sweep", PumpLaserSweep(self, "sweep"))
        """Hardware wavelength sweep."""
        self.aom: PumpLaserAom = self.add_submodule("aom", PumpLaserAom(self, "aom"))
        """Pump pulse gate."""
        self._finish_init()

    def emitting(self) -> bool:
        """True when light leaves the laser (on, shutter open, not interlocked)."""
        return self.power_actual() > -98

    def safe_off(self) -> None:
        """Close the shutter and switch the output off (safe state for the fridge)."""
        self.shutter("closed")
        self.output("off")

    def safe_state(self) -> None:
        """Shutter closed, output off, AOM gating off (bus trigger: no pulse without an
        explicit trigger), so no light leaves even if the output is switched on by hand."""
        self.safe_off()
        self.aom.trigger("bus")

    def safety_readback(self) -> str:
        return (f"output {'on' if self.output() else 'off'}, shutter {self.shutter()}, "
                f"AOM trigger {self.aom.trigger()}, {self.power_actual():.0f} dBm emitted")

    def after_reset(self) -> None:
        """Whatever the power-on defaults, the laser stays dark after a reset."""
        self.safe_off()
