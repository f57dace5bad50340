"""Transducer pump laser: a Keysight N7776C / N7778C tunable laser source (source and trigger 0).

Wavelength and frequency are two views of one setting; power can be set in dBm or mW (sent with
a unit suffix, so the laser's own :POWer:UNIT never changes what is set). The pump pulses come
from a separate AOM gate (:class:`~qnetlab.drivers.aom_gate.QnetlabAomGate`). The
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
            vals=vals.Numbers(*parent.range_nm), docstring="First wavelength of the sweep.")
        """First wavelength of the sweep."""
        self.stop: Parameter = self.add_parameter(
            "stop", label="Sweep stop", unit="nm", get_cmd=":SOUR0:WAV:SWE:STOP?",
            set_cmd=":SOUR0:WAV:SWE:STOP {:.9e}", get_parser=float, scale=1e-9,
            vals=vals.Numbers(*parent.range_nm), docstring="Last wavelength of the sweep (> start).")
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
            set_cmd=":SOUR0:WAV:SWE:MODE {}",
            val_mapping={"stepped": "STEP", "manual": "MAN", "continuous": "CONT"},
            docstring="Stepped (dwell + settling per point), manual or continuous sweep.")
        """Stepped (dwell + settling per point), manual or continuous sweep."""
        self.cycles: Parameter = self.add_parameter(
            "cycles", label="Sweep cycles", get_cmd=":SOUR0:WAV:SWE:CYCL?",
            set_cmd=":SOUR0:WAV:SWE:CYCL {}", get_parser=int, vals=vals.Ints(0, 999),
            docstring="Sweep cycles per start (0: until stopped).")
        """Sweep cycles per start (0: until stopped)."""
        self.repeat: Parameter = self.add_parameter(
            "repeat", label="Repeat mode", get_cmd=":SOUR0:WAV:SWE:REP?",
            set_cmd=":SOUR0:WAV:SWE:REP {}", val_mapping={"one-way": "ONEW", "two-way": "TWOW"},
            docstring="One-way or two-way cycles.")
        """One-way or two-way cycles."""
        self.trigger_output: Parameter = self.add_parameter(
            "trigger_output", label="Output trigger", get_cmd=":TRIG0:OUTP?",
            set_cmd=":TRIG0:OUTP {}",
            val_mapping={"disabled": "DIS", "step finished": "STF", "sweep finished": "SWF",
                         "sweep started": "SWST"},
            docstring="Output trigger; lambda logging needs 'step finished'.")
        """Output trigger; lambda logging needs 'step finished'."""
        self.dwell: Parameter = self.add_parameter(
            "dwell", label="Dwell", unit="s", get_cmd=":SOUR0:WAV:SWE:DWEL?",
            set_cmd=":SOUR0:WAV:SWE:DWEL {:.6e}", get_parser=float, vals=vals.Numbers(0, 10),
            docstring="Dwell per point in stepped mode.")
        """Dwell per point in stepped mode."""
        self.logging: Parameter = self.add_parameter(
            "logging", label="Lambda logging", get_cmd=":SOUR0:WAV:SWE:LLOG?",
            set_cmd=":SOUR0:WAV:SWE:LLOG {}", val_mapping=create_on_off_val_mapping("1", "0"),
            docstring="Log the wavelength at every step (its trigger also clocks the QNU log).")
        """Log the wavelength at every step (its trigger also clocks the QNU log)."""
        self.state: Parameter = self.add_parameter(
            "state", label="Sweep state", get_cmd=":SOUR0:WAV:SWE?",
            val_mapping={"stopped": "0", "running": "1", "paused": "2"}, snapshot_get=False,
            docstring="stopped, running or paused.")
        """stopped, running or paused."""
        self.running: Parameter = self.add_parameter(
            "running", label="Sweep running", get_cmd=":SOUR0:WAV:SWE?",
            get_parser=lambda reply: reply.strip() != "0", snapshot_get=False,
            docstring="True while a sweep runs or is paused (it has not ended).")
        """True while a sweep runs or is paused (it has not ended)."""
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

    def check(self) -> tuple[int, str]:
        """The laser's own consistency check: ``(0, "OK")`` or a code and reason."""
        code, _, text = self.ask(":SOUR0:WAV:SWE:CHEC?").partition(",")
        return int(code), text

    def start_sweep(self) -> None:
        """Start one sweep; refuses (ValueError) an inconsistent configuration. With lambda
        logging on, the output trigger is set to 'step finished' first (the manual's
        prerequisite for a log)."""
        if self.logging():
            self.trigger_output("step finished")
        code, text = self.check()
        if code != 0:
            raise ValueError(f"{self.full_name}: sweep configuration refused: {code} {text}")
        self.write(":SOUR0:WAV:SWE:STAT STAR")

    def abort(self) -> None:
        self.write(":SOUR0:WAV:SWE:STAT STOP")

    def pause(self) -> None:
        """Hold the running sweep where it is (the laser refuses when none runs)."""
        self.write(":SOUR0:WAV:SWE:STAT PAUS")

    def resume(self) -> None:
        """Continue a paused sweep from where it was held."""
        self.write(":SOUR0:WAV:SWE:STAT CONT")

    def run(self, timeout_s: float = 600.0, poll_s: float = 0.05) -> np.ndarray:
        """Start a sweep with lambda logging, wait on the lab clock until it ends, return the
        wavelength log (nm). The N7776C logs wavelengths only; what the light did at each
        point is measured by whatever its step trigger clocks (the QNU's photodiode log)."""
        self.logging("on")
        self.n_points()  # the axis shape follows the present settings
        self.start_sweep()
        root: QnetlabPumpLaser = self.root_instrument  # type: ignore[assignment]
        root.wait_for(lambda: not self.running(), timeout_s, poll_s, "end of sweep")
        return self.wavelength_log()


class QnetlabPumpLaser(QnetlabVisaInstrument):
    """Transducer pump laser: Keysight N7776C / N7778C (source 0).

    Args:
        name: instrument name.
        address: VISA resource.
        max_power_dbm: narrow the power limit below :attr:`SAFE_MAX_POWER_DBM` (never above).
        **kwargs: see :class:`~qnetlab.drivers.base.QnetlabVisaInstrument`.
    """

    default_terminator = "\n"
    error_reporting = ScpiErrorQueue(":SYST:ERR?")
    ACTIONS = (":SOUR0:WAV:SWE:STAT ", ":SOUR0:WAV:SWE ")
    #: Laser output: never replayed after a reset (light returns only on request).
    EMITS_OR_HEATS = (":SOUR0:POW:STAT ",)
    #: Hard ceiling on output power: a transducer and a 14 uW mixing chamber will not take more.
    SAFE_MAX_POWER_DBM: ClassVar[float] = 10.0
    MIN_POWER_DBM: ClassVar[float] = -10.0
    #: Wavelength range per product, nm (N7776C; N7778C with option 116).
    WAVELENGTH_RANGE_NM: ClassVar[dict[str, tuple[float, float]]] = {
        "N7776C": (1480.0, 1620.0), "N7778C": (1490.0, 1640.0)}

    def __init__(self, name: str, address: str, *, max_power_dbm: float | None = None,
                 **kwargs: Unpack[VisaInstrumentKWArgs]) -> None:
        super().__init__(name, address, **kwargs)
        #: Tuning range of the connected product (N7778C: option 116), nm.
        self.range_nm = self.WAVELENGTH_RANGE_NM.get(str(self.IDN().get("model")), (1480, 1640))
        limit = self.SAFE_MAX_POWER_DBM if max_power_dbm is None else max_power_dbm
        if limit > self.SAFE_MAX_POWER_DBM:
            raise ValueError(f"max_power_dbm={limit} exceeds the hard safety limit "
                             f"{self.SAFE_MAX_POWER_DBM} dBm")
        self.max_power_dbm = limit
        self.write(":SOUR0:POW:UNIT DBM")  # readings in dBm, whatever the front panel left

        self.wavelength: Parameter = self.add_parameter(
            "wavelength", label="Wavelength", unit="nm", get_cmd=":SOUR0:WAV?",
            set_cmd=":SOUR0:WAV {:.12e}", get_parser=float, scale=1e-9,
            vals=vals.Numbers(*self.range_nm), docstring="Output wavelength (before fine tuning).")
        """Output wavelength (before fine tuning)."""
        self.frequency: Parameter = self.add_parameter(
            "frequency", label="Optical frequency", unit="Hz", get_cmd=":SOUR0:FREQ?",
            set_cmd=":SOUR0:FREQ {:.12e}", get_parser=float,
            vals=vals.Numbers(C_LIGHT / (self.range_nm[1] * 1e-9), C_LIGHT / (self.range_nm[0] * 1e-9)),
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
            set_cmd=":SOUR0:POW {:.4f}DBM", get_parser=float,
            vals=vals.Numbers(self.MIN_POWER_DBM, self.max_power_dbm),
            docstring="Output power setpoint (hard-limited).")
        """Output power setpoint (hard-limited)."""
        self.power_mw: HardLimitParameter = self.add_parameter(
            "power_mw", label="Power", unit="mW", parameter_class=HardLimitParameter,
            hard_min=dbm_to_mw(self.MIN_POWER_DBM), hard_max=dbm_to_mw(self.max_power_dbm),
            get_cmd=":SOUR0:POW?", set_cmd=":SOUR0:POW {:.4f}DBM",
            get_parser=lambda v: dbm_to_mw(float(v)), set_parser=mw_to_dbm,
            vals=vals.Numbers(dbm_to_mw(self.MIN_POWER_DBM), dbm_to_mw(self.max_power_dbm)),
            docstring="The same power setpoint in mW (hard-limited).")
        """The same power setpoint in mW (hard-limited)."""
        self.power_actual: Parameter = self.add_parameter(
            "power_actual", label="Emitted power", unit="dBm", get_cmd=":SOUR0:POW:ACT?",
            get_parser=float, docstring="Power actually emitted (-99 when off).")
        """Power actually emitted (-99 when off)."""
        self.output: Parameter = self.add_parameter(
            "output", label="Laser output", get_cmd=":SOUR0:POW:STAT?",
            set_cmd=":SOUR0:POW:STAT {}", val_mapping=create_on_off_val_mapping("1", "0"),
            docstring="Laser diode on or off. The fridge's interlock line, wired to the laser's "
                      "remote interlock input, switches it off; it stays off until set on again.")
        """Laser diode on or off. The fridge's interlock line, wired to the laser's remote
        interlock input, switches it off; it stays off until set on again."""
        self.status_bits: Parameter = self.add_parameter(
            "status_bits", label="Operation status", get_cmd=":STAT:OPER:COND?", get_parser=int,
            docstring="Operation condition register: bit 0 laser on, bit 4 shutter opened.")
        """Operation condition register: bit 0 laser on, bit 4 shutter opened."""
        self.sweep: PumpLaserSweep = self.add_submodule("sweep", PumpLaserSweep(self, "sweep"))
        """Hardware wavelength sweep."""
        self._finish_init()

    def emitting(self) -> bool:
        """True when light leaves the laser (output on, not cut by the interlock)."""
        return self.power_actual() > -98

    def safe_off(self) -> None:
        """Switch the output off (safe state for the fridge)."""
        self.output("off")

    def safe_state(self) -> None:
        """Output off (the node's AOM gate closes separately)."""
        self.safe_off()

    def safety_readback(self) -> str:
        return f"output {'on' if self.output() else 'off'}, {self.power_actual():.0f} dBm emitted"

    def after_reset(self) -> None:
        """Whatever the power-on defaults, the laser stays dark after a reset."""
        self.safe_off()
