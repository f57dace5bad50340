"""Pump laser behaviour (Keysight N7776C / N7778C): the node's transducer pump, sweeps with lambda
logging, power units, the product's tuning times on the lab clock, the fridge interlock.

The AOM that pulses the pump is a separate instrument (:mod:`.aom_gate`)."""

from __future__ import annotations

import math
import re

import numpy as np

from qnetlab.sim_instruments.physics import constants as k_
from qnetlab.sim_instruments.physics.transducer import w_to_dbm
from qnetlab.sim_instruments.protocol import InstrumentRefusal, ieee_block

from .base import DeviceModel

MAX_LOG_POINTS = 500_000  # N777xC / TSL logging limit
#: Wavelength range per product (N7778C: option 116), metres.
PRODUCTS = {"N7776C": (1.48e-6, 1.62e-6), "N7778C": (1.49e-6, 1.64e-6)}
_POWER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*\Z")
_WATT_PREFIX = {"": 1.0, "M": 1e-3, "U": 1e-6, "N": 1e-9, "P": 1e-12}
_SHORT = {"STEPPED": "STEP", "MANUAL": "MAN", "CONTINUOUS": "CONT", "ONEWAY": "ONEW",
          "TWOWAY": "TWOW", "DISABLED": "DIS", "STFINISHED": "STF", "SWFINISHED": "SWF",
          "SWSTARTED": "SWST", "IGNORE": "IGN", "NEXTSTEP": "NEXT", "SWSTART": "SWS"}


def parse_power(text: str, unit_w: bool) -> float:
    """A ``:POWer`` parameter as sent (``5``, ``1.5 mW``, ``3DBM``) -> dBm; a bare number is in
    the present ``:POWer:UNIT`` (W when ``unit_w``)."""
    m = _POWER.match(text)
    if not m:
        raise InstrumentRefusal("data_type_error", f"power {text!r} is not a number")
    number, suffix = float(m[1]), m[2].upper()
    if suffix in ("DBM", "") and (suffix or not unit_w):
        return number
    prefix = suffix[:-1] if suffix.endswith("W") else None
    if suffix and (prefix is None or prefix not in _WATT_PREFIX):
        raise InstrumentRefusal("invalid_suffix", f"suffix {m[2]!r} (DBM or W with a prefix)")
    watts = number * _WATT_PREFIX[prefix or ""]
    if watts <= 0:
        raise InstrumentRefusal("data_out_of_range", f"{text.strip()} is not a positive power")
    return 10 * math.log10(watts / 1e-3)


class PumpLaserModel(DeviceModel):
    """Keysight N7776C (or the ``x-bind`` ``model``, e.g. N7778C) pumping one node."""

    VENDOR = "Keysight Technologies"
    MODEL = "N7776C"
    FIRMWARE = "V2.022"

    def setup(self) -> None:
        self.node = self.lab.nodes[self.binding["node"]]
        self.MODEL = str(self.binding.get("model", self.MODEL)).upper()
        if self.MODEL not in PRODUCTS:
            raise ValueError(f"x-bind model={self.MODEL!r}: not a simulated product; "
                             f"allowed: {', '.join(PRODUCTS)}")
        settling = self.device.raw_dict.get("x-settling") or {}
        self.wavelength_settle_s = float(settling.get("wavelength_set_s", 0.0))
        self.step_settle_s = float(settling.get("sweep_step_s", 0.0))
        self.on_reset()

    def serial(self) -> str:
        return f"DE5{sum(map(ord, self.node.name)) % 10**7:07d}"  # stable per node

    def on_reset(self) -> None:
        self.sweep_end: float | None = None
        self.paused_at: float | None = None
        self.log_wavelengths = np.zeros(0)
        self.manual_index = 0

    def apply(self) -> None:
        self.lab.sync()
        pump = self.node.pump
        pump.wavelength_m = self._effective_wavelength()
        pump.power_dbm = float(self.stored("power"))
        self._interlock_cut()
        pump.output_on = bool(self.stored("output"))

    def _interlock_cut(self) -> None:
        """The fridge's interlock line is wired to the laser's remote interlock input: a trip
        switches the laser off, and it stays off until someone switches it on again."""
        pump = self.node.pump
        if pump.interlock_cut:
            self.device.store("output", 0)
            pump.interlock_cut = False

    def _effective_wavelength(self, base: float | None = None, fine_pm: float | None = None
                              ) -> float:
        base = float(self.stored("wavelength")) if base is None else base
        fine = float(self.stored("fine_tuning")) if fine_pm is None else fine_pm
        return base + fine * 1e-12

    def _change(self, name: str, value: object) -> None:
        """Store a new value and push the new state into the world (after syncing physics)."""
        self.lab.sync()
        self.device.store(name, value)
        self.apply()

    # --- x-set ---------------------------------------------------------------------------
    def _tune(self, wavelength: float) -> None:
        """Tune to ``wavelength``: refused outside the product's range; the next command is
        taken once the tuning has settled (lab time)."""
        low, high = PRODUCTS[self.MODEL]
        tol = 1e-16  # below the 0.1 pm resolution: c / f rounding at the range's ends
        if not low - tol <= wavelength <= high + tol:
            raise InstrumentRefusal("data_out_of_range", f"wavelength {wavelength:.6e} m outside "
                                    f"the {self.MODEL}'s {low:.3e}..{high:.3e} m")
        self._change("wavelength", min(max(wavelength, low), high))
        self.lab.clock.advance(self.wavelength_settle_s)

    def set_wavelength(self, value: float) -> float:
        self._tune(value)
        return value

    def set_frequency(self, value: float) -> float:
        self._tune(k_.C_LIGHT / value)
        return value

    def set_fine(self, value: float) -> float:
        self._change("fine_tuning", value)
        return value

    def _unit_w(self) -> bool:
        return int(self.stored("power_unit")) == 1

    def set_power(self, text: str) -> None:
        """``:POWer <value>[unit]`` (x-call: the suffix as sent); MIN / MAX / DEF allowed."""
        word = text.strip().upper()
        limits = {"MIN": -10.0, "MAX": 13.0, "DEF": 0.0}
        dbm = limits[word] if word in limits else parse_power(text, self._unit_w())
        if not -10.0 <= dbm <= 13.0:
            raise InstrumentRefusal("data_out_of_range",
                                    f"power {dbm:.3f} dBm outside [-10.0, 13.0] dBm")
        self._change("power", dbm)

    def power_reading(self) -> float:
        """The power setpoint in the present unit (W or dBm)."""
        dbm = float(self.stored("power"))
        return 1e-3 * 10 ** (dbm / 10) if self._unit_w() else dbm

    def set_power_unit(self, value: str) -> int:
        return 1 if value in ("W", "1") else 0

    def set_lock(self, text: str) -> None:
        state, _, password = text.partition(",")
        if state.strip().upper() not in ("0", "1", "ON", "OFF"):
            raise InstrumentRefusal("data_type_error", f":LOCK {text!r}: needs 0|1,<password>")
        if password.strip() != "1234":
            raise InstrumentRefusal("execution_error", "wrong lock password")
        self.device.store("lock", "1" if state.strip().upper() in ("1", "ON") else "0")

    def _short(self, value: str) -> str:
        return _SHORT.get(value, value)

    def set_sweep_mode(self, value: str) -> str:
        return self._short(value)

    def set_sweep_repeat(self, value: str) -> str:
        return self._short(value)

    def set_trigger_output(self, value: str) -> str:
        return self._short(value)

    def set_trigger_input(self, value: str) -> str:
        return self._short(value)

    def set_output(self, value: int) -> int:
        self.lab.sync()
        if int(value) and not self.node.pump.interlock_ok:
            raise InstrumentRefusal("execution_error", "laser cannot be switched on: remote "
                                    "interlock open")
        self._change("output", value)
        return value

    # --- x-get ---------------------------------------------------------------------------
    def frequency(self) -> float:
        return k_.C_LIGHT / float(self.stored("wavelength"))

    def power_actual(self) -> float:
        """Emitted power in dBm (-99 when dark), whatever :POWer:UNIT says."""
        self.lab.sync()
        return float(self.stored("power")) if self.node.pump.emitting else -99.0

    def output_state(self) -> int:
        """``:POWer:STATe?``: 0 once the interlock has switched the laser off."""
        self.lab.sync()
        self._interlock_cut()
        return int(self.stored("output"))

    def status_operation(self) -> int:
        self.lab.sync()
        pump = self.node.pump
        return (pump.output_on << 0) | (pump.emitting << 4)

    # --- sweeps --------------------------------------------------------------------------
    def _sweep_grid(self) -> np.ndarray:
        start, stop = float(self.stored("sweep_start")), float(self.stored("sweep_stop"))
        step = float(self.stored("sweep_step"))
        n = round((stop - start) / step) + 1
        return start + step * np.arange(n)

    def sweep_check(self) -> str:
        start, stop = float(self.stored("sweep_start")), float(self.stored("sweep_stop"))
        step = float(self.stored("sweep_step"))
        if stop <= start:
            return "368,End wavelength must be greater than start wavelength"
        if step <= 0 or (stop - start) / step < 1:
            return "372,Step size too small or too large for the sweep range"
        if (stop - start) / step + 1 > MAX_LOG_POINTS:
            return f"373,Number of triggers exceeds allowed limit (max {MAX_LOG_POINTS})"
        if int(self.stored("sweep_log")):
            if int(self.stored("modulation")):
                return "374,Lambda logging needs modulation off"
            if str(self.stored("trigger_output")) != "STF":
                return "375,Lambda logging only works with the STFinished output trigger"
            if str(self.stored("sweep_mode")) != "CONT":
                return "376,Lambda logging can only be done in continuous sweep mode"
        return "0,OK"

    def _sweep_duration(self, grid: np.ndarray) -> float:
        """Lab time of one start: CONT costs span / speed, STEP dwell + settling per step,
        per cycle (two-way cycles sweep back too)."""
        cycles = max(int(self.stored("sweep_cycles")), 1)
        if str(self.stored("sweep_repeat")) == "TWOW":
            cycles *= 2
        if str(self.stored("sweep_mode")) == "CONT":
            once = (grid[-1] - grid[0]) / float(self.stored("sweep_speed"))
        else:
            once = grid.size * (float(self.stored("sweep_dwell")) + self.step_settle_s)
        return cycles * once

    def _manual_step(self, delta: int) -> None:
        if str(self.stored("sweep_mode")) != "MAN":
            raise InstrumentRefusal("settings_conflict", "STEP:NEXT/PREV need sweep mode MAN")
        grid = self._sweep_grid()
        self.manual_index = min(max(self.manual_index + delta, 0), grid.size - 1)
        self._change("wavelength", float(grid[self.manual_index]))
        self.lab.clock.advance(self.step_settle_s)

    def step_next(self) -> None:
        self._manual_step(+1)

    def step_previous(self) -> None:
        self._manual_step(-1)

    def _sweeping(self) -> bool:
        """A sweep has started and not ended: running, or paused (a paused sweep's end moves
        on by the time it is held)."""
        if self.sweep_end is None:
            return False
        return self.paused_at is not None or self.lab.clock.now() < self.sweep_end

    def sweep_state(self) -> str:
        if self.paused_at is not None:
            return "2"
        return "1" if self._sweeping() else "0"

    def set_sweep_state(self, value: str) -> str:
        now = self.lab.clock.now()
        if value in ("STOP", "0"):
            if self._sweeping():
                self.sweep_end, self.paused_at = now, None
            return "0"
        if value in ("PAUS", "PAUSE", "2"):
            if not self._sweeping() or self.paused_at is not None:
                raise InstrumentRefusal("settings_conflict", "no running sweep to pause")
            self.paused_at = now
            return "2"
        if value in ("CONT", "CONTINUE", "3"):
            if self.paused_at is None:
                raise InstrumentRefusal("settings_conflict", "no paused sweep to continue")
            assert self.sweep_end is not None
            self.sweep_end += now - self.paused_at
            self.paused_at = None
            return "1"
        check = self.sweep_check()
        if not check.startswith("0,"):
            raise InstrumentRefusal("execution_error", f"sweep not started: {check}")
        if self._sweeping():
            raise InstrumentRefusal("settings_conflict", "a sweep is already running")
        grid = self._sweep_grid()
        t0 = self.now()
        # the laser first tunes to the start wavelength, then sweeps
        self.sweep_end = t0 + self.wavelength_settle_s + self._sweep_duration(grid)
        fine = float(self.stored("fine_tuning")) * 1e-12
        self.log_wavelengths = grid + fine if int(self.stored("sweep_log")) else np.zeros(0)
        qnu_pd_log(self.lab, self.node, self.log_wavelengths, t0)
        return "1"

    def _require_log(self) -> None:
        if self._sweeping():
            raise InstrumentRefusal("execution_error", "log not available while the sweep runs")

    def log_points(self) -> str:
        self._require_log()
        return str(self.log_wavelengths.size)

    def log_data(self) -> bytes:
        self._require_log()
        return ieee_block(self.log_wavelengths, "<f8")



def qnu_pd_log(lab, node, wavelengths: np.ndarray, t: float) -> None:
    """The QNU photodiode is triggered by the laser's step trigger: log reflection per point."""
    rng = lab.rng(node.name, "pd", f"{t:.9f}")
    xd = node.transducer(t)
    pump = node.pump
    if wavelengths.size == 0:
        node.pd_log = np.zeros(0)
        return
    power = xd.pump_at_device_w(pump.average_w()) if pump.emitting else 0.0
    volts = k_.PD_RESPONSIVITY_V_PER_W * power * xd.reflection(wavelengths)
    node.pd_log = volts + rng.normal(0.0, k_.PD_NOISE_V, size=wavelengths.size)


def current_reflection_power(node, t: float) -> float:
    """Power reaching the reflection photodiode right now (W)."""
    pump = node.pump
    if not pump.emitting:
        return 0.0
    xd = node.transducer(t)
    return xd.pump_at_device_w(pump.average_w()) * float(xd.reflection(pump.wavelength_m))


__all__ = ["PumpLaserModel", "current_reflection_power", "qnu_pd_log", "w_to_dbm"]
