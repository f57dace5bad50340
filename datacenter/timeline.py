"""The scheduler's work drawn: one row per heralding station, a bar per request served (the
dark part is the switch reconfiguring), a cross where a dead patch was detected."""

from __future__ import annotations

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .network import DecisionLog


def timeline(log: DecisionLog, stations: list[str], title: str = "",
             window: tuple[float, float] | None = None, ax: Axes | None = None) -> Figure:
    """A plain matplotlib Figure (no pyplot): what each station served, and when (lab seconds
    ``window``, default all); on ``ax`` if given (its figure is returned)."""
    if ax is None:
        fig = Figure(figsize=(9, 1.0 + 0.5 * len(stations)))
        ax = fig.add_subplot()
    fig = ax.figure
    row = {s: i for i, s in enumerate(stations)}
    cmap = matplotlib.colormaps["viridis"]
    top = max([s.priority for s in log.services] + [1])
    for s in log.services:
        y = row[s.station]
        colour = cmap(s.priority / top)
        if s.t_lit > s.t_start:
            ax.broken_barh([(s.t_start, s.t_lit - s.t_start)], (y - 0.35, 0.7), color="0.2")
        ax.broken_barh([(s.t_lit, max(s.t_end - s.t_lit, 1e-6))], (y - 0.35, 0.7),
                       color=colour, edgecolor="k", linewidth=0.2)
    for t, station, _ in log.faults:
        ax.plot([t], [row[station]], "rx", markersize=8)
    if window is not None:
        ax.set_xlim(*window)
    ax.set_yticks(range(len(stations)), stations)
    ax.set_xlabel("lab time (s)")
    ax.set_ylabel("heralding station")
    ax.set_title(title or "switch schedule: requests served (colour: priority), "
                 "reconfiguration dark, faults x")
    fig.tight_layout()
    return fig  # type: ignore[return-value]
