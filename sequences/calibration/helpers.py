"""What the testbed's calibrations share: the speed of light, a node's instruments and the
figure a fit is drawn on (a plain matplotlib ``Figure``: no backend is chosen or needed)."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from .engine import CalContext

C_LIGHT = 299_792_458.0


def node_instruments(ctx: CalContext, target: str) -> dict[str, Any]:
    """The instruments of network node ``target`` by role (qnu, pump, fridge, gas, ...)."""
    return ctx.bundle.node(target)


def fit_figure(title: str, rows: int = 1) -> tuple[Any, Any]:
    """A figure of ``rows`` stacked axes titled ``title``; returns (figure, axes)."""
    fig = Figure(figsize=(6.4, 3.2 * rows))  # outside pyplot: no backend needed or forced
    axes = fig.subplots(rows, 1, squeeze=False)
    fig.suptitle(title)
    return fig, axes[:, 0]

