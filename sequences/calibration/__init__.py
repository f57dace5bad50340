"""Automated calibration: a graph of calibrations across network nodes, run with Optimus
semantics, recorded in the run store, with versioned records in a calibration store.

``report = calibrate(bundle)`` maintains the whole graph of a station brought up with
:func:`qnetlab.stations.load` (or :func:`load_calibrated`, which also re-applies the stored
calibration to the instruments).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from qnetlab.runstore import RunStore
from qnetlab.stations import StationBundle, load

from .engine import (
    CalContext,
    Calibration,
    CalibrationFailed,
    CalibrationGraph,
    Calibrator,
    Check,
    NodeResult,
    Outcome,
    Quantity,
    Report,
    Update,
)
from .lock import CalibrationLock
from .store import CalibrationStore, Record
from .testbed import default_calibrations


def setters(bundle: StationBundle, calibrations: Iterable[Calibration] | None = None
            ) -> dict[str, Callable[[str, float], None]]:
    """``quantity -> setter(target, value)`` for every quantity that lives on an instrument."""
    out: dict[str, Callable[[str, float], None]] = {}
    for cal in calibrations or default_calibrations():
        for name, q in cal.quantities.items():
            if q.apply is not None:
                out[name] = (lambda t, v, f=q.apply: f(bundle, t, v))
    return out


def apply_calibration(bundle: StationBundle, store: CalibrationStore,
                      at: float | None = None) -> list[Record]:
    """Put the stored calibration (now, or as of lab time ``at``) on the instruments."""
    return store.apply(setters(bundle), at=at)


def load_calibrated(name_or_path: str | os.PathLike[str],
                    data_dir: str | os.PathLike[str] | None = None
                    ) -> tuple[StationBundle, CalibrationStore]:
    """Bring a station up and apply the current calibration from the data directory."""
    store = CalibrationStore(data_dir)
    bundle = load(name_or_path, after_load=lambda b: apply_calibration(b, store))
    return bundle, store


def calibrate(bundle: StationBundle, *, targets: Iterable[str] | None = None,
              force: bool = False, data_dir: str | os.PathLike[str] | None = None,
              calibrations: list[Calibration] | None = None,
              progress: Callable[[NodeResult], None] | None = None,
              store: CalibrationStore | None = None, runs: RunStore | None = None,
              workers: int | None = None) -> Report:
    """Maintain the calibration graph of ``bundle`` (all targets unless ``targets``),
    independent targets at once (``workers=1``: one step after another, in graph order)."""
    store = store or CalibrationStore(data_dir)
    runs = runs or RunStore(data_dir)
    graph = CalibrationGraph(calibrations or default_calibrations(), bundle.topology)
    calibrator = Calibrator(graph, CalContext(bundle, runs, store), progress=progress,
                            workers=workers)
    return calibrator.maintain(targets, force=force)


__all__ = [
    "CalContext",
    "Calibration",
    "CalibrationFailed",
    "CalibrationGraph",
    "CalibrationLock",
    "CalibrationStore",
    "Calibrator",
    "Check",
    "NodeResult",
    "Outcome",
    "Quantity",
    "Record",
    "Report",
    "Update",
    "apply_calibration",
    "calibrate",
    "default_calibrations",
    "load_calibrated",
    "setters",
]
