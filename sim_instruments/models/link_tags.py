"""Time tags of a running request at its heralding station: syncs, heralding clicks inside the
window, dark clicks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .link_requests import LinkRequest

def request_tags(req: LinkRequest, station, t0: float, duration: float, rng, sigma_ps: float,
                 dead_time_ps: int) -> tuple[np.ndarray, np.ndarray]:
    """The station's tag stream while ``req`` runs: a sync per attempt (two for Barrett-Kok),
    one click per herald inside its detector's window, and dark clicks that herald nothing.
    The tagger arms on an attempt boundary."""
    assert req.records is not None and req.setup is not None
    period = req.attempt_period_s
    t_end = min(t0 + duration, req.end_time())
    k_lo = max(1, int(np.ceil((t0 - req.t_start) / period)))
    k_hi = int(np.floor((t_end - req.t_start) / period))
    rounds = 2 if req.setup.protocol == "TWOP" else 1
    k = np.arange(k_lo, k_hi + 1, dtype=np.int64)
    starts = req.t_start + k * period
    syncs = np.concatenate([np.round((starts + r * period / rounds) * 1e12).astype(np.int64)
                            for r in range(rounds)])
    syncs.sort()
    attempt = req.attempts_before if req.attempts_before is not None else np.cumsum(
        req.records.attempts)
    keep = (attempt >= k_lo) & (attempt <= k_hi)
    patterns = req.records.pattern[keep]
    herald_start = req.t_start + attempt[keep] * period
    window = station.herald_window_ps
    centres = [ch.delay_set_ps for ch in station.channels]
    arrival = [a(t0) for a in station.arrival_ps]
    times, chans = [syncs], [np.zeros(syncs.size, np.uint8)]
    for r in range(rounds):
        det = patterns if rounds == 1 else (patterns // 10 if r == 0 else patterns % 10)
        base = np.round((herald_start + r * period / rounds) * 1e12).astype(np.int64)
        for ch in (1, 2):
            sel = det == ch
            offsets = _in_window(rng, arrival[ch - 1], sigma_ps, centres[ch - 1], window,
                                 int(sel.sum()))
            times.append(base[sel] + offsets)
            chans.append(np.full(int(sel.sum()), ch, np.uint8))
    for ch, detector in enumerate(station.channels, start=1):
        n_dark = rng.poisson(detector.dark_hz() * (t_end - t0)) if t_end > t0 else 0
        dark = np.round((t0 + rng.random(n_dark) * max(t_end - t0, 0)) * 1e12).astype(np.int64)
        idx = np.searchsorted(syncs, dark, side="right") - 1
        dt = dark - syncs[np.clip(idx, 0, None)]
        inside = (idx >= 0) & (np.abs(dt - centres[ch - 1]) <= window / 2)
        times.append(dark[~inside])
        chans.append(np.full(int((~inside).sum()), ch, np.uint8))
    all_t, all_c = np.concatenate(times), np.concatenate(chans)
    order = np.argsort(all_t, kind="stable")
    return all_t[order], all_c[order]


def _in_window(rng, mean: float, sigma: float, centre: float, window: float, n: int
               ) -> np.ndarray:
    """Arrival offsets of heralding clicks: Gaussian about the true arrival, inside the window."""
    lo, hi = centre - window / 2, centre + window / 2
    out = rng.normal(mean, sigma, size=n)
    for _ in range(50):
        bad = (out < lo) | (out > hi)
        if not bad.any():
            break
        out[bad] = rng.normal(mean, sigma, size=int(bad.sum()))
    return np.round(np.clip(out, lo, hi)).astype(np.int64)
