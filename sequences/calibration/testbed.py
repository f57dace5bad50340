"""The calibrations of the QNU testbed, in graph order:

1. ``cryostat_ready`` (node): mixing chamber below threshold and stable;
2. ``pump_cavity`` (node): laser sweep across the optical cavity, Lorentzian fit, pump set one
   qubit frequency red of the resonance;
3. ``mw_mode`` (node): bias sweep, tuning-curve fit, mode set to the qubit frequency;
4. ``qubit_swap`` (node): swap-amplitude scan, Rabi fit;
5. ``pump_operating_point`` (node): pump power x pulse width against efficiency, added noise and
   mixing-chamber heating; the point with the highest herald rate at the target fidelity inside
   the thermal budget;
6. ``detector_timing`` (station): arrival-time histograms, detector delays, herald window;
7. ``link_phase`` (link): interference fringe, phase setpoint, visibility.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from qnetlab.sequences.entanglement.frames import bell_sign
from qnetlab.sequences.pumps import pumps_emitting
from qnetlab.stations import StationBundle

from .engine import (
    CalContext,
    Calibration,
    CalibrationFailed,
    Check,
    Outcome,
    Quantity,
    Update,
)
from .fitting import (
    FitError,
    fit_fringe,
    fit_gaussian_peak,
    fit_lorentzian_dip,
    fit_rabi,
    fit_tuning_curve,
)
from .fom import JITTER_SIGMA_S, LinkBudget, best_alpha, fit_cooperativity

C_LIGHT = 299_792_458.0


def _node(ctx: CalContext, target: str) -> dict[str, Any]:
    return ctx.bundle.node(target)


def _figure(title: str, rows: int = 1) -> tuple[Any, Any]:
    fig, axes = plt.subplots(rows, 1, figsize=(6.4, 3.2 * rows), squeeze=False)
    fig.suptitle(title)
    return fig, axes[:, 0]


# --- 1. cryostat ready --------------------------------------------------------------------------

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
        fridge = _node(ctx, target)["fridge"]
        run = ctx.new_run(self, target, "check")
        run.register("lab_time", unit="s")
        run.register("mxc_temperature", unit="K", setpoints=("lab_time",))
        with run:
            readings = []
            for _ in range(2):
                readings.append(fridge.mxc.temperature())
                run.add_point(lab_time=ctx.clock.now(), mxc_temperature=readings[-1])
                ctx.clock.sleep(60)
        if fridge.interlock_state() != "OK" or min(readings) <= 0:
            return Check(Outcome.BAD_DATA, f"interlock {fridge.interlock_state()}, "
                         f"reading {readings[-1]:.4g} K")
        drift = abs(readings[1] - readings[0])
        if readings[-1] < self.threshold_k and drift < self.band_k:
            return Check(Outcome.IN_SPEC, f"MXC {readings[-1] * 1e3:.2f} mK")
        return Check(Outcome.OUT_OF_SPEC, f"MXC {readings[-1] * 1e3:.2f} mK, drift "
                     f"{drift * 1e3:.2f} mK/min")

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        fridge = _node(ctx, target)["fridge"]
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


# --- 2. pump-cavity resonance ---------------------------------------------------------------------

def _set_pump_wavelength(bundle: StationBundle, target: str, value: float) -> None:
    bundle.node(target)["pump"].wavelength(value)


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
        "pump_wavelength_nm": Quantity("nm", apply=_set_pump_wavelength),
    }

    def _sweep(self, ctx: CalContext, target: str, centre: float, half_span_nm: float,
               step_pm: float, kind: str) -> tuple[Any, np.ndarray, np.ndarray]:
        inst = _node(ctx, target)
        pump, qnu = inst["pump"], inst["qnu"]
        run = ctx.new_run(self, target, kind)
        run.register("wavelength", unit="nm", array=True)
        run.register("reflection", unit="V", setpoints=("wavelength",), array=True)
        with run, pump.power.set_to(self.probe_power_dbm), pump.aom.mode.set_to("cw"), \
                pumps_emitting(pump):
            pump.sweep.start(centre - half_span_nm)
            pump.sweep.stop(centre + half_span_nm)
            pump.sweep.step(step_pm)
            pump.sweep.speed(1.0)
            wavelengths, _ = pump.sweep.run()
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
        qubit_hz = _node(ctx, target)["qnu"].qubit.frequency()
        pump_nm = C_LIGHT / (C_LIGHT / (f["x0"] * 1e-9) - qubit_hz) * 1e9
        fig, (ax,) = _figure(f"pump-cavity resonance, {target}")
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


# --- 3. microwave-mode match ----------------------------------------------------------------------

def _set_bias(bundle: StationBundle, target: str, value: float) -> None:
    bundle.node(target)["qnu"].transducer.bias(value)


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
        "bias_ma": Quantity("mA", max_jump=0.5, apply=_set_bias),
        "bias_offset_ma": Quantity("mA"),
        "mode_fmax_hz": Quantity("Hz"),
    }

    def _mean_frequency(self, qnu: Any, n: int = 3) -> float:
        return float(np.mean([qnu.transducer.mw_frequency() for _ in range(n)]))

    def check_data(self, ctx: CalContext, target: str) -> Check:
        if ctx.live("bias_ma", target) is None:
            return Check(Outcome.OUT_OF_SPEC, "never calibrated")
        qnu = _node(ctx, target)["qnu"]
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
        qnu = _node(ctx, target)["qnu"]
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
        fig, (ax,) = _figure(f"microwave-mode tuning, {target}")
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


# --- 4. qubit swap --------------------------------------------------------------------------------

def _set_swap_amplitude(bundle: StationBundle, target: str, value: float) -> None:
    bundle.node(target)["qnu"].qubit.swap_amplitude(value)


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
        "swap_amplitude": Quantity("", max_jump=0.2, apply=_set_swap_amplitude),
        "swap_contrast": Quantity(""),
    }

    def check_data(self, ctx: CalContext, target: str) -> Check:
        if ctx.live("swap_amplitude", target) is None:
            return Check(Outcome.OUT_OF_SPEC, "never calibrated")
        qnu = _node(ctx, target)["qnu"]
        run = ctx.new_run(self, target, "check")
        run.register(qnu.qubit.swap_efficiency)
        with run, qnu.qubit.swap_shots.set_to(2000):
            eff = qnu.qubit.swap_efficiency()
            run.add_point((qnu.qubit.swap_efficiency, eff))
        outcome = (Outcome.IN_SPEC if eff > self.in_spec else
                   Outcome.OUT_OF_SPEC if eff > self.out_of_spec else Outcome.BAD_DATA)
        return Check(outcome, f"swap efficiency {eff:.3f}")

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        qnu = _node(ctx, target)["qnu"]
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
        fig, (ax,) = _figure(f"qubit swap, {target}")
        fine = np.linspace(0, 1, 300)
        ax.plot(amplitudes, swapped, ".", label="measured")
        ax.plot(fine, f.curve(fine), "-", label=f"fit, A$_{{opt}}$={f['x_opt']:.4f}")
        ax.set(xlabel="swap amplitude", ylabel="swapped fraction")
        ax.legend(fontsize=8)
        ctx.save_figure(run, fig)
        return [Update("swap_amplitude", f["x_opt"], f.errors["x_opt"], f.r_squared),
                Update("swap_contrast", f["contrast"], f.errors["contrast"], f.r_squared)]


# --- 5. pump operating point ----------------------------------------------------------------------

def _set_pump_power(bundle: StationBundle, target: str, value: float) -> None:
    bundle.node(target)["pump"].power(value)


def _set_pulse_width(bundle: StationBundle, target: str, value: float) -> None:
    aom = bundle.node(target)["pump"].aom
    if value <= 0:
        aom.mode("cw")
        return
    aom.pulse_width(value)
    aom.trigger("external")
    aom.mode("pulsed")


def _set_alpha(bundle: StationBundle, target: str, value: float) -> None:
    bundle.node(target)["qnu"].qubit.alpha(value)


class PumpOperatingPoint(Calibration):
    name = "pump_operating_point"
    scope = "node"
    depends_on = ("pump_cavity", "mw_mode", "qubit_swap")
    timeout_s = 24 * 3600.0
    powers_dbm: tuple[float, ...] = (-4.0, -1.0, 2.0, 5.0, 8.0)
    widths_s: tuple[float, ...] = (20e-9, 50e-9, 100e-9, 200e-9, 0.0)  # 0 = CW
    heat_settle_s: float = 1500.0  # five mixing-chamber time constants
    measure_time_s: float = 0.5
    repeats: int = 16  # fresh readings at the chosen point (unbiased efficiency and noise)
    target_fidelity: float = 0.7
    thermal_budget_k: float = 0.012
    budget: LinkBudget = LinkBudget()
    quantities: ClassVar[dict[str, Quantity]] = {
        "pump_power_dbm": Quantity("dBm", apply=_set_pump_power),
        "pump_pulse_width_s": Quantity("s", apply=_set_pulse_width),
        "alpha": Quantity("", apply=_set_alpha),
        "efficiency": Quantity(""),
        "added_noise": Quantity("photons"),
        "cooperativity_per_mw": Quantity("1/mW"),
        "expected_fidelity": Quantity(""),
        "expected_rate_hz": Quantity("Hz"),
    }

    def _link_terms(self, ctx: CalContext, target: str) -> tuple[float, float, float]:
        """(fiber km, attempt rate Hz, coherence) for this node's (first) link."""
        links = ctx.topology.links_of(target)
        fiber = max(links[0].fiber_km) if links else 0.0
        qnu = _node(ctx, target)["qnu"]
        period = max(1 / qnu.engine.attempt_rate(),
                     2 * fiber * self.budget.fiber_delay_s_per_km + qnu.qubit.swap_duration())
        return fiber, 1 / period, self.budget.coherence(fiber, qnu.qubit.t2())

    def _measure(self, inst: dict[str, Any]) -> tuple[float, float]:
        qnu = inst["qnu"]
        with qnu.transducer.measure_time.set_to(self.measure_time_s):
            return qnu.transducer.efficiency(), qnu.transducer.added_noise()

    def _heating(self, ctx: CalContext, inst: dict[str, Any], power_dbm: float
                 ) -> tuple[float, float]:
        """(base temperature K, heating coefficient K^2/W of average laser power).

        The mixing chamber settles at ``T^2 = T0^2 + a P_avg`` (docs/physics.md); one settled
        CW reference measurement gives ``a`` for every point of the scan."""
        fridge, pump = inst["fridge"], inst["pump"]
        pump.shutter("closed")
        ctx.clock.sleep(self.heat_settle_s)
        base = fridge.mxc.temperature()
        pump.power(power_dbm)
        _set_pulse_width(ctx.bundle, inst["name"], 0.0)
        pump.shutter("open")
        ctx.clock.sleep(self.heat_settle_s)
        hot = fridge.mxc.temperature()
        return base, max(hot**2 - base**2, 0.0) / (10 ** (power_dbm / 10) * 1e-3)

    def check_data(self, ctx: CalContext, target: str) -> Check:
        eff_live, noise_live = ctx.live("efficiency", target), ctx.live("added_noise", target)
        if eff_live is None or noise_live is None:
            return Check(Outcome.OUT_OF_SPEC, "never calibrated")
        inst = _node(ctx, target)
        run = ctx.new_run(self, target, "check")
        run.register("efficiency")
        run.register("added_noise", unit="photons")
        with run, pumps_emitting(inst["pump"]):
            eff, noise = self._measure(inst)
            run.add_point(efficiency=eff, added_noise=noise)
        ratio = eff / eff_live if eff_live > 0 else 0.0
        detail = f"efficiency {eff:.4f} ({ratio:.2f} x calibrated), noise {noise:.4f}"
        if ratio > 0.85 and noise < 1.3 * noise_live + 1e-3:
            return Check(Outcome.IN_SPEC, detail)
        return Check(Outcome.OUT_OF_SPEC if ratio > 0.5 else Outcome.BAD_DATA, detail)

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        inst = _node(ctx, target)
        pump = inst["pump"]
        fiber, rate_hz, coherence = self._link_terms(ctx, target)
        eta_chain = self.budget.chain(fiber)
        swap = ctx.live("swap_contrast", target) or 1.0
        p_min, p_max = pump.power.vals._min_value, pump.power.vals._max_value
        powers = [p for p in self.powers_dbm if p_min <= p <= p_max]
        grid = sorted(((p, w) for p in powers for w in self.widths_s),
                      key=lambda pw: 10 ** (pw[0] / 10) * (pw[1] * rate_hz if pw[1] else 1.0))
        rows = []
        run = ctx.new_run(self, target, "calibrate")
        for name, unit in (("power", "dBm"), ("width", "s")):
            run.register(name, unit=unit)
        for name, unit in (("efficiency", ""), ("added_noise", "photons"),
                           ("mxc_temperature_settled", "K"), ("rate_at_target", "Hz"),
                           ("alpha", "")):
            run.register(name, unit=unit, setpoints=("power", "width"))
        with run, pumps_emitting(pump):
            base_k, heating = self._heating(ctx, {**inst, "name": target}, max(powers))
            for power, width in grid:
                pump.power(power)
                _set_pulse_width(ctx.bundle, target, width)
                eff, noise = self._measure(inst)
                duty = width * rate_hz if width > 0 else 1.0
                t_mxc = math.sqrt(base_k**2 + heating * 10 ** (power / 10) * 1e-3 * duty)
                best = best_alpha(eff * swap * eta_chain, noise, coherence,
                                  self.budget.dark_click, self.target_fidelity)
                alpha, p, fid = best if best else (math.nan, 0.0, math.nan)
                rate = p * rate_hz if t_mxc <= self.thermal_budget_k else 0.0
                rows.append((power, width, eff, noise, t_mxc, alpha, p * rate_hz, fid, rate))
                run.add_point(power=power, width=width, efficiency=eff, added_noise=noise,
                              mxc_temperature_settled=t_mxc, rate_at_target=rate, alpha=alpha)
            table = np.array(rows, dtype=float)
            if not np.any(table[:, 8] > 0):
                raise CalibrationFailed(f"no operating point reaches F={self.target_fidelity} "
                                        f"inside {self.thermal_budget_k * 1e3:.0f} mK")
            i = int(np.argmax(table[:, 8]))
            power, width, _, _, _, alpha, _, fid, rate = table[i]
            eff, noise = self._remeasure(ctx, inst, target, power, width)
        try:
            coop = fit_cooperativity(table[:, 0], table[:, 2])
        except FitError as exc:
            raise CalibrationFailed(str(exc)) from None
        self._plot(ctx, run, target, table, i)
        return [Update("pump_power_dbm", power), Update("pump_pulse_width_s", width),
                Update("alpha", alpha), Update("efficiency", *eff), Update("added_noise", *noise),
                Update("cooperativity_per_mw", coop["c_per_mw"], coop.errors["c_per_mw"],
                       coop.r_squared),
                Update("expected_fidelity", fid), Update("expected_rate_hz", rate)]

    def _remeasure(self, ctx: CalContext, inst: dict[str, Any], target: str, power: float,
                   width: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """Efficiency and added noise at the chosen point from fresh readings: (mean, standard
        error) each. The scan's reading at the point that won is biased high (the point won
        partly because its reading was high); readings taken after the choice are not."""
        inst["pump"].power(power)
        _set_pulse_width(ctx.bundle, target, width)
        readings = np.array([self._measure(inst) for _ in range(self.repeats)])
        mean = readings.mean(axis=0)
        sem = readings.std(axis=0, ddof=1) / math.sqrt(self.repeats)
        return (float(mean[0]), float(sem[0])), (float(mean[1]), float(sem[1]))

    def _plot(self, ctx: CalContext, run: Any, target: str, table: np.ndarray, best: int) -> None:
        fig, axes = _figure(f"pump operating point, {target}", rows=3)
        for width in np.unique(table[:, 1]):
            sel = table[:, 1] == width
            label = "CW" if width == 0 else f"{width * 1e9:.0f} ns"
            axes[0].plot(table[sel, 0], table[sel, 6], "o-", label=label)
            hot = sel & (table[:, 4] > self.thermal_budget_k)
            axes[0].plot(table[hot, 0], table[hot, 6], "kx", ms=9)
            axes[1].plot(table[sel, 0], table[sel, 2], "o-", label=label)
            axes[2].plot(table[sel, 0], table[sel, 3], "o-", label=label)
        axes[0].plot(table[best, 0], table[best, 6], "r*", ms=16, label="chosen")
        axes[0].set(ylabel=f"rate at F={self.target_fidelity} (Hz)",
                    title="x: over the thermal budget")
        axes[1].set(ylabel="efficiency")
        axes[2].set(ylabel="added noise", xlabel="pump power (dBm)", yscale="log")
        axes[0].legend(fontsize=7, ncol=3)
        fig.tight_layout()
        ctx.save_figure(run, fig)


# --- 6. detector timing -------------------------------------------------------------------------

def _set_delay(channel: str) -> Any:
    def setter(bundle: StationBundle, target: str, value: float) -> None:
        herald = bundle.instrument(bundle.topology.stations[target].qnu)
        getattr(herald.tagger, channel).delay(round(value))
    return setter


def _set_window(bundle: StationBundle, target: str, value: float) -> None:
    bundle.instrument(bundle.topology.stations[target].qnu).engine.herald_window(value)


class DetectorTiming(Calibration):
    name = "detector_timing"
    scope = "station"
    depends_on = ("pump_operating_point",)
    timeout_s = 24 * 3600.0
    record_s: float = 120.0
    check_record_s: float = 20.0
    bin_ps: int = 1000
    window_sigmas: float = 3.0
    in_spec_ps: float = 2000.0
    out_of_spec_ps: float = 30000.0
    quantities: ClassVar[dict[str, Quantity]] = {
        "det1_delay_ps": Quantity("ps", apply=_set_delay("det1")),
        "det2_delay_ps": Quantity("ps", apply=_set_delay("det2")),
        "herald_window_ps": Quantity("ps", apply=_set_window),
        "arrival_sigma_ps": Quantity("ps"),
        "photon_linewidth_hz": Quantity("Hz"),
        "dark_click_probability": Quantity(""),
        "detector_efficiency": Quantity(""),
    }
    dark_seconds: int = 60  # per detector, pumps dark
    efficiency_readings: int = 8  # transducer readings per node for the detector efficiency
    efficiency_read_s: float = 20.0

    def _ends(self, ctx: CalContext, target: str) -> list[str]:
        return sorted({n for lk in ctx.topology.links.values() if lk.station == target
                       for n in lk.nodes})

    def _histograms(self, ctx: CalContext, target: str, seconds: float, kind: str,
                    ends: list[str] | None = None) -> tuple[Any, np.ndarray, list[np.ndarray]]:
        """Arrival histograms of both detectors with the pumps of ``ends`` (default: every
        node of the station's links) emitting."""
        herald = ctx.bundle.instrument(ctx.topology.stations[target].qnu)
        pumps = [ctx.bundle.node(n)["pump"] for n in (ends or self._ends(ctx, target))]
        tagger = herald.tagger
        run = ctx.new_run(self, target, kind if ends is None else f"{kind}_{'_'.join(ends)}")
        run.register("delay", unit="ps", array=True)
        for d in (1, 2):
            run.register(f"counts_det{d}", setpoints=("delay",), array=True)
        with run, pumps_emitting(*pumps):
            # histogram a whole sync period: photons that arrive "before" their sync (broad
            # wavepackets) wrap to the end instead of being cut off
            period_ps = 1e12 / tagger.sync.count_rate()
            tagger.bin_width(self.bin_ps)
            tagger.n_bins(min(65536, math.ceil(period_ps / self.bin_ps)))
            tagger.hist_start_channel(0)
            tagger.record(seconds)
            hists = []
            for d in (1, 2):
                tagger.hist_stop_channel(d)
                hists.append(tagger.histogram().astype(float))
            delays = tagger.time_bins() + self.bin_ps / 2
            run.add_point(delay=delays, counts_det1=hists[0], counts_det2=hists[1])
        return run, delays, hists

    def _fit(self, delays: np.ndarray, counts: np.ndarray) -> Any:
        """Gaussian fit of the arrival peak, centred first (the histogram is periodic)."""
        n = counts.size
        smooth = np.convolve(np.r_[counts[-50:], counts, counts[:50]], np.ones(51) / 51,
                             "same")[50:-50]
        shift = n // 2 - int(np.argmax(smooth))
        rolled = np.roll(counts, shift)
        window = slice(max(0, n // 2 - 500), min(n, n // 2 + 500))
        f = fit_gaussian_peak(delays[window], rolled[window])
        noise = math.sqrt(max(f["background"], 1.0))
        if f["amplitude"] < 5 * noise:
            raise FitError(f"no arrival peak above the background ({f['amplitude']:.1f} counts "
                           f"over {f['background']:.1f})")
        period = n * self.bin_ps
        x0 = (f["x0"] - shift * self.bin_ps) % period
        f.params["x0"] = x0 - period if x0 > period / 2 else x0
        return f

    def check_data(self, ctx: CalContext, target: str) -> Check:
        live = [ctx.live(f"det{d}_delay_ps", target) for d in (1, 2)]
        if None in live:
            return Check(Outcome.OUT_OF_SPEC, "never calibrated")
        _, delays, hists = self._histograms(ctx, target, self.check_record_s, "check")
        try:
            shifts = [self._fit(delays, h)["x0"] - v for h, v in zip(hists, live, strict=True)]
        except FitError as exc:
            return Check(Outcome.BAD_DATA, str(exc))
        worst = max(abs(s) for s in shifts)
        outcome = (Outcome.IN_SPEC if worst < self.in_spec_ps else
                   Outcome.OUT_OF_SPEC if worst < self.out_of_spec_ps else Outcome.BAD_DATA)
        return Check(outcome, "delays moved " + ", ".join(f"{s / 1e3:+.2f} ns" for s in shifts))

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        """Each node's photons alone (its pump only), so the window is chosen for the wider of
        the two photons; delays from both; the dark clicks with every pump dark (counted first,
        so that the calibration's last run is one with a figure)."""
        dark_hz = self._dark_rate(ctx, target)
        per_node = {}
        for node in self._ends(ctx, target):
            run, delays, hists = self._histograms(ctx, target, self.record_s, "calibrate",
                                                  [node])
            try:
                per_node[node] = (run, hists, [self._fit(delays, h) for h in hists])
            except FitError as exc:
                raise CalibrationFailed(f"{node}: {exc}") from None
        sigmas = {n: float(np.mean([abs(f["sigma"]) for f in fits]))
                  for n, (_, _, fits) in per_node.items()}
        sigma = max(sigmas.values())
        window = float(np.clip(2 * self.window_sigmas * sigma, 2e4, 2e6))
        delays_fit = [_weighted_mean([fits[d] for _, _, fits in per_node.values()])
                      for d in (0, 1)]
        linewidth = self._linewidth(ctx, sigmas)
        detector = _weighted(
            [self._detection(ctx, target, n, fits) for n, (_, _, fits) in per_node.items()])
        dark = tuple(r * window * 1e-12 for r in dark_hz)
        for node, (run, hists, fits) in per_node.items():
            self._plot(ctx, run, f"{target}, {node} alone", delays, hists, fits, window)
        return [Update("det1_delay_ps", *delays_fit[0]), Update("det2_delay_ps", *delays_fit[1]),
                Update("herald_window_ps", window), Update("arrival_sigma_ps", sigma),
                Update("photon_linewidth_hz", *linewidth), Update("dark_click_probability", *dark),
                Update("detector_efficiency", *detector)]

    def _detection(self, ctx: CalContext, target: str, node: str, fits: list[Any]
                   ) -> tuple[float, float]:
        """Detector efficiency (mean of both, referred to the budget's collection) from one
        node's arrival peaks: clicks per sync over the photons the calibrated node sends
        (signal ``alpha`` or 1/2 per attempt, plus added noise) through its fiber."""
        herald = ctx.bundle.instrument(ctx.topology.stations[target].qnu)
        link = next(lk for lk in ctx.topology.links.values()
                    if lk.station == target and node in lk.nodes)
        peer = link.nodes[1 - link.nodes.index(node)]
        qnu, budget = ctx.bundle.node(node)["qnu"], PumpOperatingPoint.budget
        syncs = self.record_s * herald.tagger.sync.count_rate()
        clicks = sum(abs(f["amplitude"] * f["sigma"]) * math.sqrt(2 * math.pi) / self.bin_ps
                     for f in fits)
        eff, eff_err = self._transducer_efficiency(ctx, node)
        if eff <= 0 or syncs <= 0:
            raise CalibrationFailed(f"{node}: no converted photons (efficiency {eff:.3g})")
        share = qnu.qubit.alpha() if qnu.engine.protocol() == "single_click" else 0.5
        photons = eff * budget.collection * 10 ** (
            -budget.fiber_loss_db_per_km * qnu.link_to(peer).fiber_length() / 10) * (
            share * (ctx.live("swap_contrast", node) or 1.0)
            + (ctx.live("added_noise", node) or 0.0))
        value = clicks / syncs / photons
        rel = math.hypot(1 / math.sqrt(max(clicks, 1.0)), eff_err / eff)
        return value, value * rel

    def _transducer_efficiency(self, ctx: CalContext, node: str) -> tuple[float, float]:
        """The node's conversion efficiency now, at its pump setting: (mean, standard error) of
        ``efficiency_readings`` long readings (the histogram's photons came through it)."""
        inst = ctx.bundle.node(node)
        with pumps_emitting(inst["pump"]), \
                inst["qnu"].transducer.measure_time.set_to(self.efficiency_read_s):
            r = np.array([inst["qnu"].transducer.efficiency()
                          for _ in range(self.efficiency_readings)])
        return float(r.mean()), float(r.std(ddof=1) / math.sqrt(r.size))

    def _linewidth(self, ctx: CalContext, sigmas: dict[str, float]) -> tuple[float, float]:
        """The converted mode's linewidth ``kappa_e = 1 / (2 pi sigma (1 + C))`` from each
        node's photon width and its cooperativity at its pump power: (mean, spread)."""
        values = []
        for node, sigma_ps in sigmas.items():
            c_per_mw = ctx.live("cooperativity_per_mw", node)
            if c_per_mw is None:
                raise CalibrationFailed(f"{node}: no calibrated cooperativity_per_mw")
            c = c_per_mw * 10 ** (ctx.bundle.node(node)["pump"].power() / 10)
            photon = math.sqrt(max((sigma_ps * 1e-12) ** 2 - JITTER_SIGMA_S**2, 0.0))
            values.append(1 / (2 * math.pi * photon * (1 + c)))
        spread = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 \
            else None
        return float(np.mean(values)), spread

    def _dark_rate(self, ctx: CalContext, target: str) -> tuple[float, float]:
        """Dark-count rate of both detectors together, counted with every pump dark: (Hz,
        Poisson standard error); times the herald window it is the dark-click probability."""
        herald = ctx.bundle.instrument(ctx.topology.stations[target].qnu)
        run = ctx.new_run(self, target, "dark_counts")
        run.register("dark_rate_det1", unit="Hz")
        run.register("dark_rate_det2", unit="Hz")
        counts = np.zeros(2)
        with run:
            for _ in range(self.dark_seconds):
                rates = [herald.det1.count_rate(), herald.det2.count_rate()]
                run.add_point(dark_rate_det1=rates[0], dark_rate_det2=rates[1])
                counts += rates
        return (counts.sum() / self.dark_seconds,
                math.sqrt(max(counts.sum(), 1.0)) / self.dark_seconds)

    def _plot(self, ctx: CalContext, run: Any, title: str, delays: np.ndarray,
              hists: list[np.ndarray], fits: list[Any], window: float) -> None:
        fig, axes = _figure(f"detector timing, {title}", rows=2)
        for d, (ax, h, f) in enumerate(zip(axes, hists, fits, strict=True), start=1):
            near = np.abs(delays - f["x0"]) < 6 * abs(f["sigma"])
            ax.plot(delays[near] / 1e3, h[near], ".", ms=3, label=f"det{d}")
            ax.plot(delays[near] / 1e3, f.curve(delays[near]), "-",
                    label=f"fit: {f['x0'] / 1e3:.2f} ns")
            ax.axvspan((f["x0"] - window / 2) / 1e3, (f["x0"] + window / 2) / 1e3, alpha=0.15,
                       label="herald window")
            ax.set(ylabel="counts")
            ax.legend(fontsize=8)
        axes[-1].set(xlabel="delay after sync (ns)")
        ctx.save_figure(run, fig)


def _weighted(values: list[tuple[float, float]]) -> tuple[float, float]:
    """Inverse-variance mean of ``(value, error)`` pairs: (value, error)."""
    w = np.array([1 / max(e, 1e-12) ** 2 for _, e in values])
    v = np.array([x for x, _ in values])
    return float(np.sum(w * v) / w.sum()), float(1 / math.sqrt(w.sum()))


def _weighted_mean(fits: list[Any]) -> tuple[float, float, float]:
    """Inverse-variance mean of the fits' ``x0``: (value, error, worst R^2)."""
    err = np.array([max(f.errors["x0"], 1e-9) for f in fits])
    w = 1 / err**2
    x0 = np.array([f["x0"] for f in fits])
    return (float(np.sum(w * x0) / w.sum()), float(1 / math.sqrt(w.sum())),
            min(f.r_squared for f in fits))


# --- 7. link phase --------------------------------------------------------------------------------

def _set_phase(bundle: StationBundle, target: str, value: float) -> None:
    a, b = bundle.topology.links[target].nodes
    bundle.node(a)["qnu"].link_to(b).phase(value % (2 * math.pi))


class LinkPhase(Calibration):
    name = "link_phase"
    scope = "link"
    depends_on = ("pump_operating_point", "detector_timing")
    timeout_s = 3600.0
    points: int = 12
    pairs_per_point: int = 200
    check_pairs: int = 400
    quantities: ClassVar[dict[str, Quantity]] = {
        "phase_rad": Quantity("rad", apply=_set_phase),
        "visibility": Quantity(""),
    }

    def _correlation(self, ctx: CalContext, link: str, phase: float, pairs: int) -> float:
        """Pauli-frame corrected <XX> of ``pairs`` heralded pairs at link phase ``phase``."""
        a, b = ctx.topology.links[link].nodes
        qa, qb = ctx.bundle.node(a)["qnu"], ctx.bundle.node(b)["qnu"]
        channel = qa.link_to(b)
        channel.phase(phase % (2 * math.pi))
        request = channel.create(pairs, max_time_s=3600, bases_here=("X",), bases_peer=("X",))
        status = channel.wait(request, timeout_s=3700, poll_s=5)
        if status.delivered == 0:
            raise CalibrationFailed(f"no heralds on {link} ({status.state})")
        ra, rb = channel.results(request), qb.link_to(a).results(request)
        return float(np.mean(bell_sign(ra.pattern) * ra.outcome * rb.outcome))

    def _pumps(self, ctx: CalContext, link: str) -> list[Any]:
        return [ctx.bundle.node(n)["pump"] for n in ctx.topology.links[link].nodes]

    def check_data(self, ctx: CalContext, target: str) -> Check:
        phase, vis = ctx.live("phase_rad", target), ctx.live("visibility", target)
        if phase is None or vis is None:
            return Check(Outcome.OUT_OF_SPEC, "never calibrated")
        run = ctx.new_run(self, target, "check")
        run.register("correlation")
        with run, pumps_emitting(*self._pumps(ctx, target)):
            e = self._correlation(ctx, target, phase, self.check_pairs)
            run.add_point(correlation=e)
        detail = f"<XX> {e:.3f} against visibility {vis:.3f}"
        if e >= 0.8 * vis:
            return Check(Outcome.IN_SPEC, detail)
        return Check(Outcome.OUT_OF_SPEC if e >= 0.2 * vis else Outcome.BAD_DATA, detail)

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        phases = np.linspace(0, 2 * math.pi, self.points, endpoint=False)
        run = ctx.new_run(self, target, "calibrate")
        run.register("phase", unit="rad")
        run.register("correlation", setpoints=("phase",))
        corr = np.empty_like(phases)
        with run, pumps_emitting(*self._pumps(ctx, target)):
            for i, phase in enumerate(phases):
                corr[i] = self._correlation(ctx, target, phase, self.pairs_per_point)
                run.add_point(phase=phase, correlation=corr[i])
        try:
            f = fit_fringe(phases, corr)
        except FitError as exc:
            raise CalibrationFailed(str(exc)) from None
        if f["visibility"] < 0.1 or f.r_squared < 0.5:
            raise CalibrationFailed(f"no interference fringe (visibility {f['visibility']:.3f}, "
                                    f"R2 {f.r_squared:.2f})")
        phase0 = f["phase0"] % (2 * math.pi)
        fig, (ax,) = _figure(f"link phase, {target}")
        fine = np.linspace(0, 2 * math.pi, 200)
        ax.plot(phases, corr, "o", label="<XX> (Pauli-frame corrected)")
        ax.plot(fine, f.curve(fine), "-", label=f"fringe, V={f['visibility']:.3f}")
        ax.axvline(phase0, color="r", lw=0.8, label=f"phase {phase0:.3f} rad")
        ax.set(xlabel="phase setpoint (rad)", ylabel="correlation")
        ax.legend(fontsize=8)
        ctx.save_figure(run, fig)
        return [Update("phase_rad", phase0, f.errors["phase0"], f.r_squared),
                Update("visibility", f["visibility"], f.errors["visibility"], f.r_squared)]


def default_calibrations(**timeouts: float) -> list[Calibration]:
    """The testbed's calibrations (the seven above and the link check), optionally with
    timeouts overridden by name."""
    from qnetlab.sequences.entanglement.linkcheck import LinkCheck

    classes = (CryostatReady, PumpCavity, MwMode, QubitSwap, PumpOperatingPoint,
               DetectorTiming, LinkPhase, LinkCheck)
    return [cls(timeout_s=timeouts.get(cls.name)) for cls in classes]
