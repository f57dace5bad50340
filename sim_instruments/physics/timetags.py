"""Raw time-tag streams as a time tagger records them: int64 picoseconds plus a channel byte.

Channel 0 carries the sync (one tag per entanglement attempt); detector channels carry photon
clicks (signal at a fixed arrival delay after their sync with Gaussian jitter) and dark counts
(Poisson, uniform in time). Detector dead time removes clicks closer than ``dead_time_ps`` to the
previous click on the same channel. Everything is vectorised: cost grows with the number of tags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SYNC_CHANNEL = 0


@dataclass
class ChannelSpec:
    """A detector channel: click probability per sync, arrival delay, jitter, dark rate.

    ``widths`` optionally mixes several arrival widths: ``(share, sigma_ps)`` pairs, one per
    source of photons (each node of a link has its own photon width); each click takes one
    source's width with its share. Without it every click has ``jitter_sigma_ps``."""

    channel: int
    click_probability: float
    delay_ps: float
    jitter_sigma_ps: float
    dark_hz: float
    dead_time_ps: int = 40_000
    widths: tuple[tuple[float, float], ...] = ()

    def click_sigmas(self, rng: np.random.Generator, n: int) -> np.ndarray | float:
        """Arrival-time spread of ``n`` clicks: one width, or each click's source's width."""
        if not self.widths:
            return self.jitter_sigma_ps
        shares = np.array([w for w, _ in self.widths], float)
        sigmas = np.array([s for _, s in self.widths], float)
        if shares.sum() <= 0:
            return float(sigmas.max())
        return sigmas[rng.choice(sigmas.size, size=n, p=shares / shares.sum())]


def generate_stream(
    rng: np.random.Generator,
    duration_s: float,
    sync_rate_hz: float,
    channels: list[ChannelSpec],
    t0_ps: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(times_ps int64, channels uint8)`` sorted by time for one acquisition."""
    period_ps = 1e12 / sync_rate_hz
    n_sync = int(duration_s * sync_rate_hz)
    duration_ps = int(duration_s * 1e12)
    sync_times = t0_ps + np.round(np.arange(n_sync) * period_ps).astype(np.int64)
    times = [sync_times]
    chans = [np.full(n_sync, SYNC_CHANNEL, dtype=np.uint8)]
    for spec in channels:
        n_sig = rng.binomial(n_sync, min(max(spec.click_probability, 0.0), 1.0)) if n_sync else 0
        idx = np.sort(rng.choice(n_sync, size=n_sig, replace=False)) if n_sig else np.empty(0, int)
        sig = sync_times[idx] + np.round(
            spec.delay_ps + rng.normal(0.0, 1.0, size=n_sig) * spec.click_sigmas(rng, n_sig)
        ).astype(np.int64)
        n_dark = rng.poisson(spec.dark_hz * duration_s)
        dark = t0_ps + rng.integers(0, max(duration_ps, 1), size=n_dark, dtype=np.int64)
        clicks = np.sort(np.concatenate([sig, dark]))
        clicks = apply_dead_time(clicks, spec.dead_time_ps)
        times.append(clicks)
        chans.append(np.full(clicks.size, spec.channel, dtype=np.uint8))
    all_t = np.concatenate(times)
    all_c = np.concatenate(chans)
    order = np.argsort(all_t, kind="stable")
    return all_t[order], all_c[order]


def apply_dead_time(sorted_times: np.ndarray, dead_time_ps: int) -> np.ndarray:
    """Drop clicks within the dead time of the previous click (first-order, vectorised)."""
    if sorted_times.size < 2 or dead_time_ps <= 0:
        return sorted_times
    keep = np.ones(sorted_times.size, dtype=bool)
    keep[1:] = np.diff(sorted_times) >= dead_time_ps
    return sorted_times[keep]


def histogram(
    times_ps: np.ndarray,
    channels: np.ndarray,
    start_channel: int,
    stop_channel: int,
    bin_width_ps: int,
    n_bins: int,
) -> np.ndarray:
    """Start-stop histogram: each stop tag against the latest preceding start tag."""
    starts = times_ps[channels == start_channel]
    stops = times_ps[channels == stop_channel]
    if starts.size == 0 or stops.size == 0:
        return np.zeros(n_bins, dtype=np.int64)
    idx = np.searchsorted(starts, stops, side="right") - 1
    valid = idx >= 0
    dt = stops[valid] - starts[idx[valid]]
    bins = dt // bin_width_ps
    bins = bins[(bins >= 0) & (bins < n_bins)]
    return np.bincount(bins, minlength=n_bins).astype(np.int64)
