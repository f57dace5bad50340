"""Bringing a node up: cryostat ready, pump cavity, microwave mode, qubit swap (graph order).

1. ``cryostat_ready`` (node): mixing chamber below threshold and stable;
2. ``pump_cavity`` (node): laser sweep across the optical cavity, Lorentzian fit, pump set one
   qubit frequency red of the resonance;
3. ``mw_mode`` (node): bias sweep, tuning-curve fit, mode set to the qubit frequency;
4. ``qubit_swap`` (node): swap-amplitude scan, Rabi fit.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from qnetlab.sequences.fitting import (
    FitError,
    fit_lorentzian_dip,
    fit_rabi,
    fit_tuning_curve,
)
from qnetlab.sequences.pumps import pumps_emitting

from .engine import (
    CalContext,
    Calibration,
    CalibrationFailed,
    Check,
    Outcome,
    Quantity,
    Update,
)
from .helpers import C_LIGHT, fit_figure, node_instruments
from .setters import set_bias, set_pump_wavelength, set_swap_amplitude


class CryostatReady(Calibration):
    name = "cryostat_ready"
    scope = "node"
    timeout_s = 7200.0
    threshold_k: float = 0.020
    band_k: float = 0.0005
    hold_s: float = 300.0
    settle_timeout_s: float = 3 * 3600.0
    quantities: ClassVar[dict[str, Quantity]] = {"mxc_temperature_k": Quantity("K")}

    def check_data(self, ctx: CalContext, target: str) -> Check:
        inst = node_instruments(ctx, target)
        fridge, gas = inst["fridge"], inst["gas"]
        run = ctx.new_run(self, target, "check")
        run.register("lab_time", unit="s")
        run.register("mxc_temperature", unit="K", setpoints=("lab_time",))
        with run:
            readings = []
            for _ in range(2):
                readings.append(fridge.mxc.temperature())
                run.add_point(lab_time=ctx.clock.now(), mxc_temperature=readings[-1])
                ctx.clock.sleep(60)
        interlock = gas.interlock_state()
        if interlock != "OK" or min(readings) <= 0:
            return Check(Outcome.BAD_DATA, f"interlock {interlock}, "
                         f"reading {readings[-1]:.4g} K")
        drift = abs(readings[1] - readings[0])
        if readings[-1] < self.threshold_k and drift < self.band_k:
            return Check(Outcome.IN_SPEC, f"MXC {readings[-1] * 1e3:.2f} mK")
        return Check(Outcome.OUT_OF_SPEC, f"MXC {readings[-1] * 1e3:.2f} mK, drift "
                     f"{drift * 1e3:.2f} mK/min")

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        fridge = node_instruments(ctx, target)["fridge"]
        run = ctx.new_run(self, target, "calibrate")
        run.register("mxc_temperature", unit="K")
        with run:
            try:
                value = fridge.wait_until_stable("mxc", self.band_k, self.hold_s,
                                                 timeout_s=self.settle_timeout_s, poll_s=30)
            except TimeoutError as exc:
                raise CalibrationFailed(str(exc)) from None
            run.add_point(mxc_temperature=value)
        if value >= self.threshold_k:
            raise CalibrationFailed(f"MXC stable at {value * 1e3:.2f} mK, above the "
                                    f"{self.threshold_k * 1e3:.1f} mK threshold")
        return [Update("mxc_temperature_k", value, self.band_k)]


class PumpCavity(Calibration):
    name = "pump_cavity"
    scope = "node"
    depends_on = ("cryostat_ready",)
    timeout_s = 4 * 3600.0
    centre_nm: float = 1550.12
    span_nm: float = 0.2
    step_pm: float = 0.2
    probe_power_dbm: float = 0.0
    check_span_pm: float = 25.0
    in_spec_pm: float = 1.0
    out_of_spec_pm: float = 15.0
    quantities: ClassVar[dict[str, Quantity]] = {
        "resonance_nm": Quantity("nm", max_jump=0.03),
        "linewidth_pm": Quantity("pm"),
        "pump_wavelength_nm": Quantity("nm", apply=set_pump_wavelength),
    }

    def _sweep(self, ctx: CalContext, target: str, centre: float, half_span_nm: float,
               step_pm: float, kind: str) -> tuple[Any, np.ndarray, np.ndarray]:
        inst = node_instruments(ctx, target)
        pump, qnu = inst["pump"], inst["qnu"]
        run = ctx.new_run(self, target, kind)
        run.register("wavelength", unit="nm", array=True)
        run.register("reflection", unit="V", setpoints=("wavelength",), array=True)
        with run, pump.power.set_to(self.probe_power_dbm), \
                inst["aom"].gate_mode.set_to("cw"), pumps_emitting(pump, inst["aom"]):
            pump.sweep.start(centre - half_span_nm)
            pump.sweep.stop(centre + half_span_nm)
            pump.sweep.step(step_pm)
            pump.sweep.speed(1.0)
            wavelengths = pump.sweep.run()
            reflection = qnu.transducer.pd_log()
            run.add_point(wavelength=wavelengths, reflection=reflection)
        return run, wavelengths, reflection

    def check_data(self, ctx: CalContext, target: str) -> Check:
        live = ctx.live("resonance_nm", target)
        if live is None:
            return Check(Outcome.OUT_OF_SPEC, "never calibrated")
        _, wl, refl = self._sweep(ctx, target, live, self.check_span_pm * 1e-3, 0.5, "check")
        try:
            f = fit_lorentzian_dip(wl, refl)
        except FitError as exc:
            return Check(Outcome.BAD_DATA, str(exc))
        if f.r_squared < self.min_fit_quality or f["depth"] < 0.3:
            return Check(Outcome.BAD_DATA, f"no clear dip (R2 {f.r_squared:.2f}, depth "
                         f"{f['depth']:.2f})")
        shift = (f["x0"] - live) * 1e3
        outcome = (Outcome.IN_SPEC if abs(shift) < self.in_spec_pm else
                   Outcome.OUT_OF_SPEC if abs(shift) < self.out_of_spec_pm else Outcome.BAD_DATA)
        return Check(outcome, f"resonance moved {shift:+.2f} pm")

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        centre = ctx.live("resonance_nm", target) or self.centre_nm
        run, wl, refl = self._sweep(ctx, target, centre, self.span_nm, self.step_pm, "calibrate")
        try:
            f = fit_lorentzian_dip(wl, refl)
        except FitError as exc:
            raise CalibrationFailed(str(exc)) from None
        if f.r_squared < self.min_fit_quality or f["depth"] < 0.3:
            raise CalibrationFailed(f"no cavity dip in {centre:.3f} +- {self.span_nm} nm "
                                    f"(R2 {f.r_squared:.2f}, depth {f['depth']:.2f})")
        qubit_hz = node_instruments(ctx, target)["qnu"].qubit.frequency()
        pump_nm = C_LIGHT / (C_LIGHT / (f["x0"] * 1e-9) - qubit_hz) * 1e9
        fig, (ax,) = fit_figure(f"pump-cavity resonance, {target}")
        ax.plot(wl, refl, ".", ms=2, label="photodiode")
        ax.plot(wl, f.curve(wl), "-", label=f"Lorentzian fit, R$^2$={f.r_squared:.4f}")
        ax.axvline(f["x0"], color="k", lw=0.8, label=f"resonance {f['x0']:.5f} nm")
        ax.set(xlabel="wavelength (nm)", ylabel="reflection (V)")
        ax.ticklabel_format(axis="x", useOffset=False)
        ax.legend(fontsize=8)
        ctx.save_figure(run, fig)
        return [
            Update("resonance_nm", f["x0"], f.errors["x0"], f.r_squared),
            Update("linewidth_pm", abs(f["fwhm"]) * 1e3, f.errors["fwhm"] * 1e3, f.r_squared),
            Update("pump_wavelength_nm", pump_nm, f.errors["x0"], f.r_squared),
        ]


class MwMode(Calibration):
    name = "mw_mode"
    scope = "node"
    depends_on = ("cryostat_ready",)
    timeout_s = 8 * 3600.0
    bias_span_ma: tuple[float, float] = (-4.0, 4.0)
    points: int = 41
    in_spec_hz: float = 200e3
    out_of_spec_hz: float = 100e6
    quantities: ClassVar[dict[str, Quantity]] = {
        "bias_ma": Quantity("mA", max_jump=0.5, apply=set_bias),
        "bias_offset_ma": Quantity("mA"),
        "mode_fmax_hz": Quantity("Hz"),
    }

    def _mean_frequency(self, qnu: Any, n: int = 3) -> float:
        return float(np.mean([qnu.transducer.mw_frequency() for _ in range(n)]))

    def check_data(self, ctx: CalContext, target: str) -> Check:
        if ctx.live("bias_ma", target) is None:
            return Check(Outcome.OUT_OF_SPEC, "never calibrated")
        qnu = node_instruments(ctx, target)["qnu"]
        run = ctx.new_run(self, target, "check")
        run.register("mw_frequency", unit="Hz")
        with run:
            f = self._mean_frequency(qnu)
            run.add_point(mw_frequency=f)
        delta = f - qnu.qubit.frequency()
        outcome = (Outcome.IN_SPEC if abs(delta) < self.in_spec_hz else
                   Outcome.OUT_OF_SPEC if abs(delta) < self.out_of_spec_hz else Outcome.BAD_DATA)
        return Check(outcome, f"mode - qubit = {delta / 1e3:+.1f} kHz")

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        qnu = node_instruments(ctx, target)["qnu"]
        f_q = qnu.qubit.frequency()
        bias = np.linspace(*self.bias_span_ma, self.points)
        run = ctx.new_run(self, target, "calibrate")
        run.register(qnu.transducer.bias)
        run.register(qnu.transducer.mw_frequency, setpoints=(qnu.transducer.bias,))
        freq = np.empty_like(bias)
        with run:
            for i, b in enumerate(bias):
                qnu.transducer.bias(b)
                freq[i] = qnu.transducer.mw_frequency()
                run.add_point((qnu.transducer.bias, b), (qnu.transducer.mw_frequency, freq[i]))
            try:
                f = fit_tuning_curve(bias, freq)
            except FitError as exc:
                raise CalibrationFailed(str(exc)) from None
            if f.r_squared < 0.99 or f["f_max"] < f_q:
                raise CalibrationFailed(f"tuning curve does not reach the qubit (f_max "
                                        f"{f['f_max'] / 1e9:.4f} GHz, R2 {f.r_squared:.3f})")
            x = math.acos((f_q / f["f_max"]) ** 2) * f["period"] / math.pi
            previous = ctx.live("bias_ma", target)
            options = [f["offset"] + x, f["offset"] - x]
            choice = min(options, key=lambda b: abs(b - (previous if previous is not None
                                                         else f["offset"] + x)))
            choice = self._refine(qnu, choice, f_q, f, run)
        fig, (ax,) = fit_figure(f"microwave-mode tuning, {target}")
        fine = np.linspace(bias[0], bias[-1], 400)
        ax.plot(bias, freq / 1e9, ".", label="measured")
        ax.plot(fine, f.curve(fine) / 1e9, "-", label=f"fit, R$^2$={f.r_squared:.5f}")
        ax.axhline(f_q / 1e9, color="k", lw=0.8, label="qubit")
        ax.axvline(choice, color="r", lw=0.8, label=f"bias {choice:.4f} mA")
        ax.set(xlabel="bias (mA)", ylabel="mode frequency (GHz)")
        ax.legend(fontsize=8)
        ctx.save_figure(run, fig)
        return [Update("bias_ma", choice, f.errors["offset"], f.r_squared),
                Update("bias_offset_ma", f["offset"], f.errors["offset"], f.r_squared),
                Update("mode_fmax_hz", f["f_max"], f.errors["f_max"], f.r_squared)]

    def _refine(self, qnu: Any, bias: float, f_q: float, f: Any, run: Any) -> float:
        """Newton steps on the measured frequency, with the fitted slope."""
        for _ in range(4):
            qnu.transducer.bias(bias)
            measured = self._mean_frequency(qnu)
            run.add_point((qnu.transducer.bias, bias), (qnu.transducer.mw_frequency, measured))
            if abs(measured - f_q) < self.in_spec_hz / 4:
                break
            h = 1e-4
            slope = (f.curve(np.array([bias + h])) - f.curve(np.array([bias - h])))[0] / (2 * h)
            bias -= (measured - f_q) / slope
        return float(bias)


class QubitSwap(Calibration):
    name = "qubit_swap"
    scope = "node"
    depends_on = ("mw_mode",)
    timeout_s = 24 * 3600.0
    points: int = 24
    shots: int = 500
    in_spec: float = 0.95
    out_of_spec: float = 0.5
    quantities: ClassVar[dict[str, Quantity]] = {
        "swap_amplitude": Quantity("", max_jump=0.2, apply=set_swap_amplitude),
        "swap_contrast": Quantity(""),
    }

    def check_data(self, ctx: CalContext, target: str) -> Check:
        if ctx.live("swap_amplitude", target) is None:
            return Check(Outcome.OUT_OF_SPEC, "never calibrated")
        qnu = node_instruments(ctx, target)["qnu"]
        run = ctx.new_run(self, target, "check")
        run.register(qnu.qubit.swap_efficiency)
        with run, qnu.qubit.swap_shots.set_to(2000):
            eff = qnu.qubit.swap_efficiency()
            run.add_point((qnu.qubit.swap_efficiency, eff))
        outcome = (Outcome.IN_SPEC if eff > self.in_spec else
                   Outcome.OUT_OF_SPEC if eff > self.out_of_spec else Outcome.BAD_DATA)
        return Check(outcome, f"swap efficiency {eff:.3f}")

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        qnu = node_instruments(ctx, target)["qnu"]
        amplitudes = np.linspace(1 / self.points, 1.0, self.points)
        swapped = np.empty_like(amplitudes)
        run = ctx.new_run(self, target, "calibrate")
        run.register(qnu.qubit.swap_amplitude)
        run.register(qnu.qubit.swap_efficiency, setpoints=(qnu.qubit.swap_amplitude,))
        with run, qnu.qubit.swap_shots.set_to(self.shots):
            for i, a in enumerate(amplitudes):
                qnu.qubit.swap_amplitude(a)
                swapped[i] = qnu.qubit.swap_efficiency()
                run.add_point((qnu.qubit.swap_amplitude, a), (qnu.qubit.swap_efficiency,
                                                              swapped[i]))
        try:
            f = fit_rabi(amplitudes, swapped)
        except FitError as exc:
            raise CalibrationFailed(str(exc)) from None
        if f.r_squared < self.min_fit_quality or not 0 < f["x_opt"] <= 1.0:
            raise CalibrationFailed(f"no full swap within amplitude 1 (A_opt {f['x_opt']:.3f}, "
                                    f"R2 {f.r_squared:.2f})")
        fig, (ax,) = fit_figure(f"qubit swap, {target}")
        fine = np.linspace(0, 1, 300)
        ax.plot(amplitudes, swapped, ".", label="measured")
        ax.plot(fine, f.curve(fine), "-", label=f"fit, A$_{{opt}}$={f['x_opt']:.4f}")
        ax.set(xlabel="swap amplitude", ylabel="swapped fraction")
        ax.legend(fontsize=8)
        ctx.save_figure(run, fig)
        return [Update("swap_amplitude", f["x_opt"], f.errors["x_opt"], f.r_squared),
                Update("swap_contrast", f["contrast"], f.errors["contrast"], f.r_squared)]
