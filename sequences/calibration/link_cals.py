"""The calibrations of a heralding station and a link:

6. ``detector_timing`` (station): arrival-time histograms, detector delays, herald window;
7. ``link_phase`` (link): interference fringe, phase setpoint, visibility.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from qnetlab.sequences.entanglement.frames import bell_sign
from qnetlab.sequences.fitting import (
    FitError,
    fit_fringe,
    fit_gaussian_peak,
)
from qnetlab.sequences.fom import JITTER_SIGMA_S
from qnetlab.sequences.pumps import node_pumps, pumps_emitting
from qnetlab.stations import Topology

from .engine import (
    CalContext,
    Calibration,
    CalibrationFailed,
    Check,
    Outcome,
    Quantity,
    Update,
)
from .helpers import fit_figure
from .operating_point import PumpOperatingPoint
from .setters import set_delay, set_phase, set_window


class DetectorTiming(Calibration):
    name = "detector_timing"
    scope = "herald"
    depends_on = ("pump_operating_point",)
    timeout_s = 24 * 3600.0
    record_s: float = 120.0
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
        "photon_linewidth_hz": Quantity("Hz"),
        "dark_click_probability": Quantity(""),
        "detector_efficiency": Quantity(""),
    }
    dark_seconds: int = 60  # per detector, pumps dark
    efficiency_readings: int = 8  # transducer readings per node for the detector efficiency
    efficiency_read_s: float = 20.0
    reference_fiber_km: float = 2.0  # the fiber record_s is chosen for (2 km each side)
    max_record_factor: float = 8.0  # a long link records at most this much longer

    def targets(self, topology: Topology) -> list[str]:
        """Heralding stations some link reaches: one a switch patches nodes to (a data center)
        has no fixed pair of nodes to time its detectors with; its paths are calibrated by
        ``switch_patch_loss`` and its links by the data-center layer."""
        linked = {lk.herald for lk in topology.links.values()}
        return [h for h in topology.heralds if h in linked]

    def _record_factor(self, ctx: CalContext, target: str) -> float:
        """How much longer than ``record_s`` this station records: a long fiber brings fewer
        photons (its loss) and fewer attempts per second (each waits for the round trip), so
        the histograms are integrated longer to hold as many clicks as on the reference fiber
        (at most ``max_record_factor`` times)."""
        budget = PumpOperatingPoint.budget
        link = max((lk for lk in ctx.topology.links.values() if lk.herald == target),
                   key=lambda lk: max(lk.fiber_km))
        if max(link.fiber_km) <= self.reference_fiber_km:
            return 1.0  # the instruments are not asked: a short link records as it always did
        qnu = ctx.bundle.node(link.nodes[0])["qnu"]
        rate, swap = qnu.engine.attempt_rate(), qnu.qubit.swap_duration()

        def clicks_per_s(km: float) -> float:
            period = max(1 / rate, 2 * km * budget.fiber_delay_s_per_km + swap)
            return 10 ** (-budget.fiber_loss_db_per_km * km / 10) / period

        factor = clicks_per_s(self.reference_fiber_km) / clicks_per_s(max(link.fiber_km))
        return float(np.clip(factor, 1.0, self.max_record_factor))

    def _ends(self, ctx: CalContext, target: str) -> list[str]:
        return sorted({n for lk in ctx.topology.links.values() if lk.herald == target
                       for n in lk.nodes})

    def _histograms(self, ctx: CalContext, target: str, seconds: float, kind: str,
                    ends: list[str] | None = None) -> tuple[Any, np.ndarray, list[np.ndarray]]:
        """Arrival histograms of both detectors with the pumps of ``ends`` (default: every
        node of the station's links) emitting."""
        herald = ctx.bundle.instrument(ctx.topology.heralds[target].qnu)
        pumps = node_pumps(ctx.bundle, *(ends or self._ends(ctx, target)))
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
        seconds = self.check_record_s * self._record_factor(ctx, target)
        _, delays, hists = self._histograms(ctx, target, seconds, "check")
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
        seconds = self.record_s * self._record_factor(ctx, target)
        per_node = {}
        for node in self._ends(ctx, target):
            run, delays, hists = self._histograms(ctx, target, seconds, "calibrate", [node])
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
            [self._detection(ctx, target, n, fits, seconds)
             for n, (_, _, fits) in per_node.items()])
        dark = tuple(r * window * 1e-12 for r in dark_hz)
        for node, (run, hists, fits) in per_node.items():
            self._plot(ctx, run, f"{target}, {node} alone", delays, hists, fits, window)
        return [Update("det1_delay_ps", *delays_fit[0]), Update("det2_delay_ps", *delays_fit[1]),
                Update("herald_window_ps", window), Update("arrival_sigma_ps", sigma),
                Update("photon_linewidth_hz", *linewidth), Update("dark_click_probability", *dark),
                Update("detector_efficiency", *detector)]

    def _detection(self, ctx: CalContext, target: str, node: str, fits: list[Any],
                   seconds: float) -> tuple[float, float]:
        """Detector efficiency (mean of both, referred to the budget's collection) from one
        node's arrival peaks: clicks per sync over the photons the calibrated node sends
        (signal ``alpha`` or 1/2 per attempt, plus added noise) through its fiber."""
        herald = ctx.bundle.instrument(ctx.topology.heralds[target].qnu)
        link = next(lk for lk in ctx.topology.links.values()
                    if lk.herald == target and node in lk.nodes)
        peer = link.nodes[1 - link.nodes.index(node)]
        qnu, budget = ctx.bundle.node(node)["qnu"], PumpOperatingPoint.budget
        syncs = seconds * herald.tagger.sync.count_rate()
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
        with pumps_emitting(inst["pump"], inst["aom"]), \
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
        herald = ctx.bundle.instrument(ctx.topology.heralds[target].qnu)
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
        fig, axes = fit_figure(f"detector timing, {title}", rows=2)
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
        return node_pumps(ctx.bundle, *ctx.topology.links[link].nodes)

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
