"""Time-tag analysis: heralds from raw streams, arrival histograms, coincidences (vectorised).

Tags are int64 picoseconds with a channel byte, time-ordered as a tagger delivers them. Every
operation is a few passes of numpy over the arrays (no Python loop over events), so analysis
keeps up with a fast tagger (see the ``analysis.herald_extract_mtags_per_s`` benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Heralds:
    sync_index: np.ndarray  # index of the (first-round) sync of the heralding attempt
    sync_time_ps: np.ndarray
    pattern: np.ndarray  # 1/2 single-click; 11/12/21/22 two rounds


def extract_heralds(times: np.ndarray, channels: np.ndarray, delays_ps: dict[int, float],
                    window_ps: float, rounds: int = 1, sync_channel: int = 0) -> Heralds:
    """Heralds: attempts whose every round has exactly one detector click inside that
    detector's window (centred ``delays_ps[channel]`` after the round's sync)."""
    times = np.asarray(times, dtype=np.int64)
    channels = np.asarray(channels)
    is_sync = channels == sync_channel
    sync_times = times[is_sync]
    n_sync = sync_times.size
    previous = np.cumsum(is_sync) - 1  # index of the latest sync at or before each tag
    click_pos = np.flatnonzero(~is_sync)
    click_ch = channels[click_pos]
    prev = previous[click_pos]
    centre = np.full(click_ch.size, np.nan)
    for ch, delay in delays_ps.items():
        centre[click_ch == ch] = delay
    t = times[click_pos]
    # a click belongs to the sync whose window holds it: usually the one before it, but a
    # broad wavepacket can arrive just before its own sync (then it is the next one)
    half = window_ps / 2
    dt_prev = t - sync_times[np.clip(prev, 0, None)]
    nxt = np.clip(prev + 1, 0, max(n_sync - 1, 0))
    dt_next = t - sync_times[nxt] if n_sync else dt_prev
    in_prev = (prev >= 0) & (np.abs(dt_prev - centre) <= half)
    in_next = (prev + 1 < n_sync) & (np.abs(dt_next - centre) <= half)
    inside = in_prev | in_next
    sync_idx = np.where(in_prev, prev, nxt)[inside]
    ch = click_ch[inside].astype(np.int64)
    per_sync = np.bincount(sync_idx, minlength=n_sync)
    which = np.zeros(n_sync, dtype=np.int64)
    which[sync_idx] = ch  # the click channel where a sync has exactly one click
    one = per_sync == 1
    if rounds == 1:
        idx = np.flatnonzero(one)
        return Heralds(idx, sync_times[idx], which[idx].astype(np.int16))
    n_attempts = n_sync // rounds
    ok = one[: n_attempts * rounds].reshape(n_attempts, rounds).all(axis=1)
    chans = which[: n_attempts * rounds].reshape(n_attempts, rounds)
    attempt = np.flatnonzero(ok)
    pattern = np.zeros(attempt.size, dtype=np.int64)
    for r in range(rounds):
        pattern = pattern * 10 + chans[attempt, r]
    first = attempt * rounds
    return Heralds(first, sync_times[first], pattern.astype(np.int16))


def arrival_histogram(times: np.ndarray, channels: np.ndarray, channel: int, bin_ps: int,
                      n_bins: int, sync_channel: int = 0) -> np.ndarray:
    """Counts of ``channel`` clicks against their delay after the latest sync."""
    is_sync = channels == sync_channel
    sync_times = times[is_sync]
    previous = np.cumsum(is_sync) - 1
    pos = np.flatnonzero((channels == channel) & (previous >= 0))
    bins = (times[pos] - sync_times[previous[pos]]) // bin_ps
    bins = bins[(bins >= 0) & (bins < n_bins)]
    return np.bincount(bins, minlength=n_bins)


def coincidences(times: np.ndarray, channels: np.ndarray, ch_a: int, ch_b: int,
                 window_ps: int) -> int:
    """Pairs of an ``ch_a`` and a ``ch_b`` tag within ``window_ps`` of each other."""
    a, b = times[channels == ch_a], times[channels == ch_b]
    lo = np.searchsorted(b, a - window_ps, side="left")
    hi = np.searchsorted(b, a + window_ps, side="right")
    return int(np.sum(hi - lo))
