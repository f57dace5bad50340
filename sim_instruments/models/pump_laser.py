"""Pump laser behaviour: drives the node's transducer pump, sweeps, AOM pulsing, interlock."""

from __future__ import annotations

import numpy as np

from qnetlab.sim_instruments.physics import constants as k_
from qnetlab.sim_instruments.physics.transducer import w_to_dbm
from qnetlab.sim_instruments.protocol import InstrumentRefusal, ieee_block

from .base import DeviceModel

MAX_LOG_POINTS = 500_000  # N777xC / TSL logging limit


class PumpLaserModel(DeviceModel):
    MODEL = "PUMP-TLS-1550"

    def setup(self) -> None:
        self.node = self.lab.nodes[self.binding["node"]]
        self.on_reset()

    def on_reset(self) -> None:
        self.sweep_end: float | None = None
        self.log_wavelengths = np.zeros(0)
        self.log_power = np.zeros(0)

    def apply(self) -> None:
        self.lab.sync()
        pump = self.node.pump
        pump.wavelength_m = self._effective_wavelength()
        pump.power_dbm = float(self.stored("power"))
        pump.output_on = bool(self.stored("output"))
        pump.shutter_open = int(self.stored("shutter")) == 0
        aom = self.node.aom
        aom.mode = str(self.stored("aom_mode"))
        aom.width_s = float(self.stored("aom_width"))
        aom.period_s = float(self.stored("aom_period"))
        aom.trigger = str(self.stored("aom_trigger"))
        self.lab.refresh_pulsing(self.node)

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
    def set_wavelength(self, value: float) -> float:
        self._change("wavelength", value)
        return value

    def set_frequency(self, value: float) -> float:
        self._change("wavelength", k_.C_LIGHT / value)
        return value

    def set_fine(self, value: float) -> float:
        self._change("fine_tuning", value)
        return value

    def set_power(self, value: float) -> float:
        self._change("power", value)
        return value

    def set_output(self, value: int) -> int:
        self._change("output", value)
        return value

    def set_shutter(self, value: int) -> int:
        self._change("shutter", value)
        return value

    def set_aom_mode(self, value: str) -> str:
        self._change("aom_mode", value)
        return value

    def set_aom_width(self, value: float) -> float:
        self._change("aom_width", value)
        return value

    def set_aom_period(self, value: float) -> float:
        self._change("aom_period", value)
        return value

    def set_aom_trigger(self, value: str) -> str:
        self._change("aom_trigger", value)
        return value

    # --- x-get ---------------------------------------------------------------------------
    def frequency(self) -> float:
        return k_.C_LIGHT / float(self.stored("wavelength"))

    def power_actual(self) -> float:
        self.lab.sync()
        return float(self.stored("power")) if self.node.pump.emitting else -99.0

    def interlock(self) -> int:
        self.lab.sync()
        return 0 if self.node.fridge.interlock == "OK" else 1

    def status_operation(self) -> int:
        self.lab.sync()
        pump = self.node.pump
        bits = (pump.output_on << 0) | (pump.shutter_open << 4)
        bits |= self._sweeping() << 5
        bits |= (self.node.aom.mode != "CW") << 6
        bits |= (not pump.interlock_ok) << 9
        return bits

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
            return f"374,Too many logging points (max {MAX_LOG_POINTS})"
        return "0,OK"

    def _sweeping(self) -> bool:
        return self.sweep_end is not None and self.lab.clock.now() < self.sweep_end

    def sweep_state(self) -> str:
        return "1" if self._sweeping() else "0"

    def set_sweep_state(self, value: str) -> str:
        if value in ("STOP", "0"):
            if self._sweeping():
                self.sweep_end = self.lab.clock.now()
            return "0"
        check = self.sweep_check()
        if not check.startswith("0,"):
            raise InstrumentRefusal("execution_error", f"sweep not started: {check}")
        if self._sweeping():
            raise InstrumentRefusal("settings_conflict", "a sweep is already running")
        grid = self._sweep_grid()
        t0 = self.now()
        if str(self.stored("sweep_mode")) == "CONT":
            duration = (grid[-1] - grid[0]) / float(self.stored("sweep_speed"))
        else:
            duration = grid.size * max(float(self.stored("sweep_dwell")), 1e-4)
        self.sweep_end = t0 + duration
        fine = float(self.stored("fine_tuning")) * 1e-12
        self.log_wavelengths = grid + fine if int(self.stored("sweep_log")) else np.zeros(0)
        # the laser's own power monitor: the setpoint with a slow gain ripple across the band
        ripple = 1 + 2e-3 * np.sin(2 * np.pi * (self.log_wavelengths - 1.5e-6) / 3e-9)
        self.log_power = (self.node.pump.peak_w() * ripple if self.node.pump.emitting
                          else np.zeros(self.log_wavelengths.size))
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

    def power_log_data(self) -> bytes:
        self._require_log()
        return ieee_block(self.log_power, "<f8")


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
