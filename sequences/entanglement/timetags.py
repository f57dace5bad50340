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
    detector's window (centred ``delays_ps[channel]`` after the round's sync).

    Only two passes touch every tag (finding the clicks); the rest works on the clicks alone,
    which a heralding stream has far fewer of than syncs."""
    times = np.asarray(times, dtype=np.int64)
    channels = np.asarray(channels)
    click_pos = np.flatnonzero(channels != sync_channel)
    n_sync = times.size - click_pos.size
    sync_idx, sync_pos, ch = _clicks_in_windows(times, channels, click_pos, delays_ps,
                                                window_ps)
    idx, pos, ch = _single_click_syncs(sync_idx, sync_pos, ch)
    if rounds == 1:
        return Heralds(idx, times[pos], ch.astype(np.int16))
    return _multi_round(idx, times[pos], ch, rounds, n_sync // rounds)


def _neighbour_syncs(click_pos: np.ndarray, n_tags: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each click (positions ``click_pos``, ascending, of ``n_tags`` tags): the position
    of the sync just before it (-1: none), of the sync just after it (``n_tags``: none), and
    the index of the sync before it among all syncs (-1: none). Consecutive clicks share
    their neighbours: the tags between two clicks' runs are all syncs."""
    k = np.arange(click_pos.size)
    breaks = np.diff(click_pos) != 1
    run_first = np.maximum.accumulate(np.where(np.concatenate(([True], breaks)), k, 0))
    ends = np.where(np.concatenate((breaks, [True])), k, click_pos.size)
    run_last = np.minimum.accumulate(ends[::-1])[::-1]
    return click_pos[run_first] - 1, click_pos[run_last] + 1, click_pos - k - 1


def _clicks_in_windows(times: np.ndarray, channels: np.ndarray, click_pos: np.ndarray,
                       delays_ps: dict[int, float], window_ps: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clicks inside their detector's window, each with its sync's index and position,
    ordered by sync. A click belongs to the sync whose window holds it: usually the one before
    it, but a broad wavepacket can arrive just before its own sync (then it is the next one)."""
    prev_pos, next_pos, prev_idx = _neighbour_syncs(click_pos, times.size)
    click_ch = channels[click_pos]
    centre = _window_centres(click_ch, delays_ps)
    t = times[click_pos]
    half = window_ps / 2
    has_prev = prev_pos >= 0
    in_prev = has_prev & (np.abs(t - times[np.where(has_prev, prev_pos, 0)] - centre) <= half)
    in_next = np.zeros_like(in_prev)
    rest = np.flatnonzero(~in_prev & (next_pos < times.size))  # the next sync only for these
    in_next[rest] = np.abs(t[rest] - times[next_pos[rest]] - centre[rest]) <= half
    inside = in_prev | in_next
    sync_idx = np.where(in_prev, prev_idx, prev_idx + 1)[inside]
    sync_pos = np.where(in_prev, prev_pos, next_pos)[inside]
    ch = click_ch[inside].astype(np.int64)
    if sync_idx.size > 1 and np.any(sync_idx[1:] < sync_idx[:-1]):
        order = np.argsort(sync_idx, kind="stable")
        sync_idx, sync_pos, ch = sync_idx[order], sync_pos[order], ch[order]
    return sync_idx, sync_pos, ch


def _window_centres(click_ch: np.ndarray, delays_ps: dict[int, float]) -> np.ndarray:
    """Each click's window centre after its sync (NaN for a channel without a delay: such a
    click is never inside a window); a table lookup when channels are small integers."""
    known = [ch for ch in delays_ps if 0 <= ch < 256]
    if len(known) == len(delays_ps) and click_ch.dtype == np.uint8:
        table = np.full(256, np.nan)
        table[known] = [delays_ps[ch] for ch in known]
        return table[click_ch]
    centre = np.full(click_ch.size, np.nan)
    for ch, delay in delays_ps.items():
        centre[click_ch == ch] = delay
    return centre


def _single_click_syncs(sync_idx: np.ndarray, sync_pos: np.ndarray, ch: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The syncs (index, position, click channel) that hold exactly one click, ascending;
    the inputs are one entry per click, ordered by sync."""
    if not sync_idx.size:
        return sync_idx, sync_pos, ch
    starts = np.flatnonzero(np.concatenate(([True], sync_idx[1:] != sync_idx[:-1])))
    counts = np.diff(np.append(starts, sync_idx.size))
    single = starts[counts == 1]
    return sync_idx[single], sync_pos[single], ch[single]


def _multi_round(idx: np.ndarray, sync_time: np.ndarray, ch: np.ndarray, rounds: int,
                 n_attempts: int) -> Heralds:
    """Heralds of ``rounds``-round attempts (syncs ``a * rounds .. a * rounds + rounds - 1``)
    from the single-click syncs (ascending ``idx``): attempts all of whose rounds are among
    them; the pattern is the rounds' channels as decimal digits."""
    keep = idx < n_attempts * rounds
    idx, sync_time, ch = idx[keep], sync_time[keep], ch[keep]
    attempt = idx // rounds
    if not attempt.size:
        return Heralds(idx, sync_time, ch.astype(np.int16))
    starts = np.flatnonzero(np.concatenate(([True], attempt[1:] != attempt[:-1])))
    counts = np.diff(np.append(starts, attempt.size))
    first = starts[counts == rounds]  # unique ascending syncs: all rounds are present
    pattern = np.zeros(first.size, dtype=np.int64)
    for r in range(rounds):
        pattern = pattern * 10 + ch[first + r]
    return Heralds(idx[first], sync_time[first], pattern.astype(np.int16))


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
