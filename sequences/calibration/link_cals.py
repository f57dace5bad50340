"""The calibrations of a heralding station and a link:

6. ``detector_timing`` (station): arrival-time histograms, detector delays, herald window;
7. ``link_phase`` (link): interference fringe, phase setpoint, visibility.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from qnetlab.sequences.entanglement.frames import bell_sign
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
from .fitting import (
    FitError,
    fit_fringe,
    fit_gaussian_peak,
)
from .helpers import fit_figure
from .setters import set_delay, set_phase, set_window


class DetectorTiming(Calibration):
    name = "detector_timing"
    scope = "herald"
    depends_on = ("pump_operating_point",)
    timeout_s = 24 * 3600.0
    record_s: float = 60.0
    check_record_s: float = 20.0
    bin_ps: int = 1000
    window_sigmas: float = 3.0
    in_spec_ps: float = 2000.0
    out_of_spec_ps: float = 30000.0
    quantities: ClassVar[dict[str, Quantity]] = {
        "det1_delay_ps": Quantity("ps", apply=set_delay("det1")),
        "det2_delay_ps": Quantity("ps", apply=set_delay("det2")),
        "herald_window_ps": Quantity("ps", apply=set_window),
        "arrival_sigma_ps": Quantity("ps"),
    }

    def _histograms(self, ctx: CalContext, target: str, seconds: float, kind: str
                    ) -> tuple[Any, np.ndarray, list[np.ndarray]]:
        herald = ctx.bundle.instrument(ctx.topology.heralds[target].qnu)
        ends = sorted({n for lk in ctx.topology.links.values() if lk.herald == target
                       for n in lk.nodes})
        pumps = [ctx.bundle.node(n)["pump"] for n in ends]
        tagger = herald.tagger
        run = ctx.new_run(self, target, kind)
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
        run, delays, hists = self._histograms(ctx, target, self.record_s, "calibrate")
        try:
            fits = [self._fit(delays, h) for h in hists]
        except FitError as exc:
            raise CalibrationFailed(str(exc)) from None
        sigma = float(np.mean([abs(f["sigma"]) for f in fits]))
        window = float(np.clip(2 * self.window_sigmas * sigma, 2e4, 2e6))
        fig, axes = fit_figure(f"detector timing, {target}", rows=2)
        for d, (ax, h, f) in enumerate(zip(axes, hists, fits, strict=True), start=1):
            near = np.abs(delays - f["x0"]) < 6 * sigma
            ax.plot(delays[near] / 1e3, h[near], ".", ms=3, label=f"det{d}")
            ax.plot(delays[near] / 1e3, f.curve(delays[near]), "-",
                    label=f"fit: {f['x0'] / 1e3:.2f} ns")
            ax.axvspan((f["x0"] - window / 2) / 1e3, (f["x0"] + window / 2) / 1e3, alpha=0.15,
                       label="herald window")
            ax.set(ylabel="counts")
            ax.legend(fontsize=8)
        axes[-1].set(xlabel="delay after sync (ns)")
        ctx.save_figure(run, fig)
        return [Update("det1_delay_ps", fits[0]["x0"], fits[0].errors["x0"], fits[0].r_squared),
                Update("det2_delay_ps", fits[1]["x0"], fits[1].errors["x0"], fits[1].r_squared),
                Update("herald_window_ps", window), Update("arrival_sigma_ps", sigma)]


class LinkPhase(Calibration):
    name = "link_phase"
    scope = "link"
    depends_on = ("pump_operating_point", "detector_timing")
    timeout_s = 3600.0
    points: int = 12
    pairs_per_point: int = 200
    check_pairs: int = 400
    quantities: ClassVar[dict[str, Quantity]] = {
        "phase_rad": Quantity("rad", apply=set_phase),
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
        fig, (ax,) = fit_figure(f"link phase, {target}")
        fine = np.linspace(0, 2 * math.pi, 200)
        ax.plot(phases, corr, "o", label="<XX> (Pauli-frame corrected)")
        ax.plot(fine, f.curve(fine), "-", label=f"fringe, V={f['visibility']:.3f}")
        ax.axvline(phase0, color="r", lw=0.8, label=f"phase {phase0:.3f} rad")
        ax.set(xlabel="phase setpoint (rad)", ylabel="correlation")
        ax.legend(fontsize=8)
        ctx.save_figure(run, fig)
        return [Update("phase_rad", phase0, f.errors["phase0"], f.r_squared),
                Update("visibility", f["visibility"], f.errors["visibility"], f.r_squared)]
