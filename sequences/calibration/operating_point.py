"""5. ``pump_operating_point`` (node): pump power x pulse width against efficiency, added noise
and mixing-chamber heating; the point with the highest herald rate at the target fidelity inside
the thermal budget (the link model of ``qnetlab.sequences.fom``).

Pulse length is a real trade-off: a pulse shorter than the converted mode's lifetime converts
only part of the photon, a longer one lets the pump's hot bath turn on (docs/physics.md). A
device that reaches the target fidelity nowhere (today's hardware) is still calibrated: the
point with the highest reachable fidelity is chosen and ``expected_fidelity`` says what it is,
so verification can report plainly that the device does not entangle.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from qnetlab.sequences.fitting import FitError
from qnetlab.sequences.fom import (
    LinkBudget,
    best_alpha,
    fit_cooperativity,
    max_fidelity_alpha,
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
from .helpers import fit_figure, node_instruments
from .setters import set_alpha, set_pulse_width, set_pump_power


class PumpOperatingPoint(Calibration):
    name = "pump_operating_point"
    scope = "node"
    depends_on = ("pump_cavity", "mw_mode", "qubit_swap")
    timeout_s = 24 * 3600.0
    powers_dbm: tuple[float, ...] = (-4.0, -1.0, 2.0, 5.0, 8.0)
    widths_s: tuple[float, ...] = (20e-9, 50e-9, 100e-9, 200e-9, 500e-9, 1e-6, 0.0)  # 0 = CW
    heat_settle_s: float = 1500.0  # five mixing-chamber time constants
    measure_time_s: float = 0.5
    repeats: int = 16  # fresh readings at the chosen point (unbiased efficiency and noise)
    target_fidelity: float = 0.7
    thermal_budget_k: float = 0.012
    fidelity_tolerance: float = 0.01  # fidelity given up for rate when the target is out of reach
    budget: LinkBudget = LinkBudget()
    quantities: ClassVar[dict[str, Quantity]] = {
        "pump_power_dbm": Quantity("dBm", apply=set_pump_power),
        "pump_pulse_width_s": Quantity("s", apply=set_pulse_width),
        "alpha": Quantity("", apply=set_alpha),
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
        qnu = node_instruments(ctx, target)["qnu"]
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
        pump.output("off")
        ctx.clock.sleep(self.heat_settle_s)
        base = fridge.mxc.temperature()
        pump.power(power_dbm)
        set_pulse_width(ctx.bundle, inst["name"], 0.0)
        pump.output("on")
        ctx.clock.sleep(self.heat_settle_s)
        hot = fridge.mxc.temperature()
        return base, max(hot**2 - base**2, 0.0) / (10 ** (power_dbm / 10) * 1e-3)

    def check_data(self, ctx: CalContext, target: str) -> Check:
        eff_live, noise_live = ctx.live("efficiency", target), ctx.live("added_noise", target)
        if eff_live is None or noise_live is None:
            return Check(Outcome.OUT_OF_SPEC, "never calibrated")
        inst = node_instruments(ctx, target)
        run = ctx.new_run(self, target, "check")
        run.register("efficiency")
        run.register("added_noise", unit="photons")
        with run, pumps_emitting(inst["pump"], inst["aom"]):
            eff, noise = self._measure(inst)
            run.add_point(efficiency=eff, added_noise=noise)
        ratio = eff / eff_live if eff_live > 0 else 0.0
        detail = f"efficiency {eff:.4f} ({ratio:.2f} x calibrated), noise {noise:.4f}"
        if ratio > 0.85 and noise < 1.3 * noise_live + 1e-3:
            return Check(Outcome.IN_SPEC, detail)
        return Check(Outcome.OUT_OF_SPEC if ratio > 0.5 else Outcome.BAD_DATA, detail)

    def calibrate(self, ctx: CalContext, target: str) -> list[Update]:
        inst = node_instruments(ctx, target)
        pump = inst["pump"]
        fiber, rate_hz, coherence = self._link_terms(ctx, target)
        eta_chain = self.budget.chain(fiber)
        swap = ctx.live("swap_contrast", target) or 1.0
        p_min, p_max = pump.power.vals._min_value, pump.power.vals._max_value
        alpha_max = float(inst["qnu"].qubit.alpha.vals._max_value)
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
        with run, pumps_emitting(pump, inst["aom"]):
            base_k, heating = self._heating(ctx, {**inst, "name": target}, max(powers))
            for power, width in grid:
                pump.power(power)
                set_pulse_width(ctx.bundle, target, width)
                eff, noise = self._measure(inst)
                duty = width * rate_hz if width > 0 else 1.0
                t_mxc = math.sqrt(base_k**2 + heating * 10 ** (power / 10) * 1e-3 * duty)
                alpha, p, fid, reached = self._point(eff * swap * eta_chain, noise, coherence,
                                                     alpha_max)
                cool = t_mxc <= self.thermal_budget_k
                rate = p * rate_hz if cool and reached else 0.0
                rows.append((power, width, eff, noise, t_mxc, alpha, p * rate_hz, fid, rate))
                run.add_point(power=power, width=width, efficiency=eff, added_noise=noise,
                              mxc_temperature_settled=t_mxc, rate_at_target=rate, alpha=alpha)
            table = np.array(rows, dtype=float)
            i = self._choose(table)
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

    def _point(self, eta: float, noise: float, coherence: float, alpha_max: float
               ) -> tuple[float, float, float, bool]:
        """(alpha, herald probability, fidelity, target reached) at one scan point: the
        highest-rate alpha reaching the target fidelity, else the highest-fidelity alpha (both
        within the QNU's alpha limit)."""
        dark = self.budget.dark_click
        best = best_alpha(eta, noise, coherence, dark, self.target_fidelity, alpha_max)
        if best is not None:
            return (*best, True)
        alpha, p, fid = max_fidelity_alpha(eta, noise, coherence, dark, alpha_max)
        return alpha, p, fid, False

    def _choose(self, table: np.ndarray) -> int:
        """Row of the chosen point: the highest rate at the target fidelity inside the thermal
        budget. If no point reaches the target: the highest rate among the points within
        ``fidelity_tolerance`` of the best fidelity reachable inside the budget (near its
        noise floor a device's fidelity hardly changes while its rate does)."""
        if np.any(table[:, 8] > 0):
            return int(np.argmax(table[:, 8]))
        cool = (table[:, 4] <= self.thermal_budget_k) & np.isfinite(table[:, 7])
        if not np.any(cool):
            raise CalibrationFailed(f"no operating point stays inside "
                                    f"{self.thermal_budget_k * 1e3:.0f} mK")
        best = np.max(table[cool, 7])
        near = cool & (table[:, 7] >= best - self.fidelity_tolerance)
        i = int(np.argmax(np.where(near, table[:, 6], -np.inf)))
        table[i, 8] = table[i, 6]  # the rate the chosen point gives, at its own fidelity
        return i

    def _remeasure(self, ctx: CalContext, inst: dict[str, Any], target: str, power: float,
                   width: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """Efficiency and added noise at the chosen point from fresh readings: (mean, standard
        error) each. The scan's reading at the point that won is biased high (the point won
        partly because its reading was high); readings taken after the choice are not."""
        inst["pump"].power(power)
        set_pulse_width(ctx.bundle, target, width)
        readings = np.array([self._measure(inst) for _ in range(self.repeats)])
        mean = readings.mean(axis=0)
        sem = readings.std(axis=0, ddof=1) / math.sqrt(self.repeats)
        return (float(mean[0]), float(sem[0])), (float(mean[1]), float(sem[1]))

    def _plot(self, ctx: CalContext, run: Any, target: str, table: np.ndarray, best: int) -> None:
        fig, axes = fit_figure(f"pump operating point, {target}", rows=3)
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
