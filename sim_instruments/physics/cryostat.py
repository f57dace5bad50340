"""Dilution refrigerator thermal model: stages, mixing-chamber heat balance, heaters, interlock.

Mixing chamber (MXC): ``C dT/dt = P_load - k (T^2 - T_base^2)`` (docs/physics.md §4.2-4.3).
For a constant load this Riccati equation has a closed-form solution, so each integration step
is exact and stable for any step length; steps are only needed where the load changes
(PID heater, heat pulses, a pulse tube that stops). The heat capacity is fixed so that the
response time at 10 mK is ``MXC_TAU_S``: ``tau(T) = C / (2 k T)``.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

from . import constants as k_


@dataclass
class HeatPulse:
    """Extra heat on the MXC between ``start`` and ``stop`` (lab seconds), e.g. an excursion."""

    start: float
    stop: float
    power_w: float


@dataclass
class Heater:
    """A Lake Shore 372 style heater output driving the MXC (output 0)."""

    mode: int = 0  # 0 off, 2 open loop, 3 zone, 4 still, 5 closed loop, 6 warm-up
    input_channel: int = 6
    range_index: int = 0  # 0 off .. 8 (100 mA)
    resistance_ohm: float = k_.HEATER_RESISTANCE_OHM
    manual_percent: float = 0.0
    setpoint_k: float = 0.0
    p: float = 10.0
    i: float = 20.0
    d: float = 0.0
    ramp_enabled: bool = False
    ramp_k_per_min: float = 0.0
    # PID state
    ramp_setpoint_k: float | None = None
    integral: float = 0.0
    last_error: float | None = None
    output_percent: float = 0.0

    def full_scale_w(self) -> float:
        current = k_.SAMPLE_HEATER_RANGES_A[self.range_index]
        return current * current * self.resistance_ohm

    def closed_loop(self) -> bool:
        return self.mode in (3, 5) and self.range_index > 0

    def power_w(self) -> float:
        """Heater power from the output in % of full-scale *current* (P = I^2 R)."""
        if self.range_index == 0 or self.mode == 0:
            return 0.0
        frac = self.output_percent / 100.0
        return frac * frac * self.full_scale_w()

    def effective_setpoint(self) -> float:
        return self.setpoint_k if self.ramp_setpoint_k is None else self.ramp_setpoint_k

    def ramping(self) -> bool:
        return self.ramp_setpoint_k is not None and self.ramp_setpoint_k != self.setpoint_k

    def update(self, temperature_k: float, dt: float) -> None:
        """Advance ramp and PID by ``dt``; output = P (e + (1/I) int e dt + D de/dt), e in K, %."""
        if self.ramp_enabled and self.ramp_k_per_min > 0:
            if self.ramp_setpoint_k is None:
                self.ramp_setpoint_k = temperature_k
            step = self.ramp_k_per_min / 60.0 * dt
            diff = self.setpoint_k - self.ramp_setpoint_k
            self.ramp_setpoint_k += max(-step, min(step, diff))
        else:
            self.ramp_setpoint_k = None
        if self.mode == 2:
            self.output_percent = self.manual_percent
            return
        if not self.closed_loop():
            self.output_percent = 0.0
            self.integral = 0.0
            return
        error = self.effective_setpoint() - temperature_k
        if self.i > 0:
            self.integral += error * dt / self.i
        derivative = 0.0 if self.last_error is None or dt <= 0 else (error - self.last_error) / dt
        self.last_error = error
        raw = 100.0 * self.p * (error + self.integral + self.d * derivative) + self.manual_percent
        out = min(100.0, max(0.0, raw))
        if raw != out and self.i > 0:  # anti-windup: undo the integration that pushed past limits
            self.integral -= error * dt / self.i
        self.output_percent = out


def riccati_step(t0_k: float, load_w: float, k: float, base_k: float, c: float, dt: float) -> float:
    """Exact solution of ``C dT/dt = P - k (T^2 - Tb^2)`` after ``dt`` for constant ``P``."""
    a2 = base_k * base_k + max(load_w, 0.0) / k
    a = math.sqrt(a2)
    rate = a * k * dt / c
    if abs(t0_k - a) < 1e-15:
        return a
    if t0_k < a:
        return a * math.tanh(rate + math.atanh(t0_k / a))
    # above equilibrium: T = a coth(rate + acoth(T0/a))
    x = rate + 0.5 * math.log((t0_k + a) / (t0_k - a))
    return a / math.tanh(x) if x < 350 else a


@dataclass
class DilutionFridge:
    """The thermal state of one node's cryostat, advanced lazily to the lab time asked for."""

    base_k: float = k_.MXC_BASE_K
    cooling_k: float = k_.MXC_COOLING_K_W_PER_K2
    tau_s: float = k_.MXC_TAU_S
    interlock_max_k: float = k_.INTERLOCK_MXC_MAX_K
    interlock_rate_k_per_s: float = k_.INTERLOCK_RATE_MAX_K_PER_S
    t: float = 0.0
    mxc_k: float = k_.MXC_BASE_K
    stage_k: dict[str, float] = field(default_factory=lambda: dict(k_.STAGE_NOMINAL_K))
    pulse_tube_on: bool = True
    still_percent: float = 30.0
    heater: Heater = field(default_factory=Heater)
    pump_absorbed_w: float = 0.0
    pulses: list[HeatPulse] = field(default_factory=list)
    interlock: str = "OK"  # OK, TRIP_TEMP, TRIP_RATE, TRIP_PRES
    ovc_mbar: float = k_.OVC_PRESSURE_MBAR
    last_rate_k_per_s: float = 0.0
    history: deque = field(default_factory=lambda: deque([(0.0, k_.MXC_BASE_K)], maxlen=4096))

    def __post_init__(self) -> None:
        self.heat_capacity = 2.0 * self.cooling_k * k_.MXC_TAU_REF_K * self.tau_s

    def mxc_at(self, t: float) -> float:
        """MXC temperature at a past time ``t`` (interpolated; needs ``advance(t)`` first)."""
        if t >= self.t:
            return self.mxc_k
        times = [h[0] for h in self.history]
        i = max(1, min(len(times) - 1, bisect.bisect_right(times, t)))
        (t0, v0), (t1, v1) = self.history[i - 1], self.history[i]
        if t1 <= t0 or t <= t0:
            return v0
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    # --- loads -----------------------------------------------------------------------------
    def circulation_factor(self) -> float:
        """Still heating drives 3He circulation: cooling power scales with it up to ~30 %."""
        return min(1.0, 0.3 + 2.5 * self.still_percent / 100.0)

    def upper_stage_leak_w(self) -> float:
        """Radiative/conductive load from a warming 4 K stage (negligible when cold)."""
        return 1e-6 * ((self.stage_k["4K"] / k_.STAGE_NOMINAL_K["4K"]) ** 4 - 1.0)

    def load_w(self, t: float) -> float:
        pulse = sum(p.power_w for p in self.pulses if p.start <= t < p.stop)
        # the pump laser's interlock input is wired to this controller: a trip cuts the pump
        pump = self.pump_absorbed_w if self.interlock == "OK" else 0.0
        return pump + self.heater.power_w() + pulse + self.upper_stage_leak_w()

    def equilibrium_k(self, extra_w: float = 0.0) -> float:
        """Steady MXC temperature under the present load plus ``extra_w``: sqrt(Tb^2 + P/k)."""
        k = self.cooling_k * self.circulation_factor()
        return math.sqrt(self.base_k**2 + max(self.load_w(self.t) + extra_w, 0.0) / k)

    def tau_at(self, temperature_k: float) -> float:
        return self.heat_capacity / (2 * self.cooling_k * self.circulation_factor() * temperature_k)

    # --- time evolution --------------------------------------------------------------------
    def advance(self, t: float) -> None:
        """Integrate from the last evaluated time up to ``t`` (lab seconds)."""
        while self.t < t - 1e-12:
            dt = min(t - self.t, 0.2 * self.tau_at(self.mxc_k))
            if self.heater.closed_loop() or self.heater.ramping():
                dt = min(dt, 1.0)
            if not self.pulse_tube_on or self.stage_k["4K"] > k_.STAGE_NOMINAL_K["4K"] * 1.01:
                dt = min(dt, 60.0)
            for p in self.pulses:  # land exactly on pulse edges
                for edge in (p.start, p.stop):
                    if self.t < edge < self.t + dt:
                        dt = edge - self.t
            self._step(max(dt, 1e-9))
        self.pulses = [p for p in self.pulses if p.stop > self.t]

    def _step(self, dt: float) -> None:
        self.heater.update(self.mxc_k, dt)
        k = self.cooling_k * self.circulation_factor()
        before = self.mxc_k
        self.mxc_k = riccati_step(before, self.load_w(self.t), k, self.base_k, self.heat_capacity, dt)
        self.last_rate_k_per_s = (self.mxc_k - before) / dt
        self._step_upper_stages(dt)
        self.t += dt
        self.history.append((self.t, self.mxc_k))
        self._check_interlock()

    def _step_upper_stages(self, dt: float) -> None:
        for name, nominal in k_.STAGE_NOMINAL_K.items():
            target = nominal if self.pulse_tube_on else 300.0
            tau = 3600.0 if self.pulse_tube_on else k_.PULSE_TUBE_WARMUP_TAU_S
            if name == "still":
                target = nominal * (0.75 + 0.5 * math.sqrt(self.still_percent / 100.0))
                tau = 120.0
            if name == "cold_plate":
                target = max(target, 0.5 * self.mxc_k + 0.09)
            current = self.stage_k[name]
            self.stage_k[name] = target + (current - target) * math.exp(-dt / tau)
        if not self.pulse_tube_on:
            self.ovc_mbar = min(1e-3, self.ovc_mbar * math.exp(dt / 7200.0))

    def _check_interlock(self) -> None:
        if self.interlock != "OK":
            return
        if self.mxc_k > self.interlock_max_k:
            self.interlock = "TRIP_TEMP"
        elif self.last_rate_k_per_s > self.interlock_rate_k_per_s:
            self.interlock = "TRIP_RATE"
        elif self.ovc_mbar > 1e-4:
            self.interlock = "TRIP_PRES"

    def reset_interlock(self) -> None:
        """Clear a latched trip; refused (ValueError) while the condition persists."""
        if self.mxc_k > self.interlock_max_k:
            raise ValueError(
                f"interlock reset refused: MXC {self.mxc_k * 1e3:.1f} mK > "
                f"{self.interlock_max_k * 1e3:.1f} mK"
            )
        if self.ovc_mbar > 1e-4:
            raise ValueError(f"interlock reset refused: OVC {self.ovc_mbar:.1e} mbar > 1e-4 mbar")
        self.interlock = "OK"

    def add_pulse(self, power_w: float, duration_s: float, start: float | None = None) -> None:
        s = self.t if start is None else start
        self.pulses.append(HeatPulse(s, s + duration_s, power_w))

    def temperature(self, stage: str) -> float:
        if stage == "mxc":
            return self.mxc_k
        return self.stage_k[stage]


def ruox_resistance(temperature_k: float, r0: float = 1500.0, t0: float = 0.01) -> float:
    """RuOx-like sensor resistance R = R0 exp(sqrt(T0 / T)) in ohms (0 K -> open)."""
    if temperature_k <= 0:
        return float("inf")
    return r0 * math.exp(math.sqrt(t0 / temperature_k))
