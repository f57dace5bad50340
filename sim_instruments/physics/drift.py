"""Slow random drift of hidden device parameters in lab time.

A :class:`DriftingValue` is ``base + W(t)`` where ``W`` is a Brownian path with a given rms
excursion per square-root hour, sampled on a fixed grid and linearly interpolated. The path is
generated lazily from its own seeded stream, so the value at a time does not depend on how
often or in which order it was asked for: calibrations see reproducible drift.
"""

from __future__ import annotations

import math

import numpy as np


class DriftingValue:
    def __init__(
        self, base: float, sigma_per_sqrt_hour: float, seed: int | list[int], grid_s: float = 60.0
    ) -> None:
        self.base = float(base)
        self.sigma = float(sigma_per_sqrt_hour)
        self.grid_s = grid_s
        self._rng = np.random.default_rng(seed)
        self._path = np.zeros(1)
        self.offset = 0.0  # explicit step changes (fault injection, tests)

    def _extend(self, n: int) -> None:
        step_sigma = self.sigma * math.sqrt(self.grid_s / 3600.0)
        steps = self._rng.normal(0.0, step_sigma, size=n - self._path.size + 1024)
        self._path = np.concatenate([self._path, self._path[-1] + np.cumsum(steps)])

    def __call__(self, t: float) -> float:
        if self.sigma == 0 or t <= 0:
            return self.base + self.offset
        x = t / self.grid_s
        i = int(x)
        if i + 1 >= self._path.size:
            self._extend(i + 2)
        frac = x - i
        return self.base + self.offset + (1 - frac) * self._path[i] + frac * self._path[i + 1]
