"""Herald extraction from raw tag streams: edge cases of real acquisitions."""

from __future__ import annotations

import numpy as np

from qnetlab.sequences.entanglement.timetags import extract_heralds


def test_clicks_before_the_first_sync_give_no_heralds_not_an_error():
    """A tagger started before the sync source delivers detector clicks and no sync yet: an
    acquisition block like that holds no heralds, for single- and two-round attempts."""
    times = np.array([100, 250_000, 400_000], dtype=np.int64)
    channels = np.array([1, 2, 1], dtype=np.uint8)
    for rounds in (1, 2):
        heralds = extract_heralds(times, channels, {1: 60_000, 2: 60_000}, 40_000, rounds)
        assert heralds.sync_index.size == heralds.pattern.size == 0
