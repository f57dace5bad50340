"""Figures saved with runs: density matrices, fidelity against alpha, rate against distance
with the PLOB bound, herald histograms.

Figures are plain :class:`matplotlib.figure.Figure` objects, outside pyplot: they need no
backend, so importing this module leaves the user's backend (``MPLBACKEND``) alone and no
figure stays registered after it is saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

LABELS = ("00", "01", "10", "11")


def save(figure: Any, hdf5_path: Path | None, suffix: str) -> Path | None:
    """Save beside a run's HDF5 file as ``<run>_<suffix>.png``; returns the path."""
    if hdf5_path is None:
        return None
    path = Path(hdf5_path).with_name(f"{Path(hdf5_path).stem}_{suffix}.png")
    figure.savefig(path, dpi=90, bbox_inches="tight")
    return path


def density_matrix(rho: np.ndarray, title: str) -> Any:
    fig = Figure(figsize=(8.4, 3.8))
    axes = fig.subplots(1, 2)
    for ax, part, name in ((axes[0], rho.real, "Re"), (axes[1], rho.imag, "Im")):
        im = ax.imshow(part, vmin=-0.5, vmax=0.5, cmap="RdBu_r")
        for (i, j), v in np.ndenumerate(part):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
        ax.set(xticks=range(4), yticks=range(4), xticklabels=LABELS, yticklabels=LABELS,
               title=f"{name} rho")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title)
    return fig


def model_overlay(x: np.ndarray, measured: np.ndarray, errors: np.ndarray, model_x: np.ndarray,
                  model_y: np.ndarray, xlabel: str, ylabel: str, title: str,
                  extra: tuple[np.ndarray, str] | None = None, log: bool = False) -> Any:
    fig = Figure(figsize=(6.4, 4))
    ax = fig.subplots()
    ax.errorbar(x, measured, yerr=errors, fmt="o", label="measured")
    ax.plot(model_x, model_y, "-", label="analytic model")
    if extra is not None:
        ax.plot(model_x, extra[0], "--", label=extra[1])
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    return fig


def herald_histogram(delays_ps: np.ndarray, counts: dict[str, np.ndarray], window: tuple[float, float]
                     | None, title: str) -> Any:
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    for name, c in counts.items():
        ax.plot(delays_ps / 1e3, c, ".", ms=3, label=name)
    if window is not None:
        ax.axvspan(window[0] / 1e3, window[1] / 1e3, alpha=0.15, label="herald window")
    ax.set(xlabel="delay after sync (ns)", ylabel="counts", title=title)
    ax.legend(fontsize=8)
    return fig


def herald_statistics(attempts: np.ndarray, pattern: np.ndarray, title: str) -> Any:
    """Attempts-to-success histogram with its geometric fit, and detector-pattern counts."""
    fig = Figure(figsize=(9, 3.6))
    axes = fig.subplots(1, 2)
    p = 1 / attempts.mean() if attempts.size else 0.0
    bins = np.linspace(0, np.percentile(attempts, 99) if attempts.size else 1, 40)
    axes[0].hist(attempts, bins=bins, label="heralds")
    if attempts.size:
        centres = (bins[1:] + bins[:-1]) / 2
        axes[0].plot(centres, attempts.size * np.diff(bins) * p * (1 - p) ** centres, "-",
                     label=f"geometric, p = {p:.2e}")
    axes[0].set(xlabel="attempts to success", ylabel="heralds")
    axes[0].legend(fontsize=8)
    labels, counts = np.unique(pattern, return_counts=True)
    axes[1].bar([str(x) for x in labels], counts)
    axes[1].set(xlabel="detector pattern", ylabel="heralds")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
