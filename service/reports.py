"""Report jobs: the HTML report of a run, or the calibration dashboard (no instrument touched).

Reports are written under ``<data>/reports/`` by :mod:`qnetlab.report`, the same pages
``qnetlab report`` writes; the service serves them back by file name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

REPORT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}\.html$")


def make_report(data_dir: Path, run: str | None = None, dashboard: bool = False,
                station: str = "sim_link") -> dict[str, Any]:
    """Write one report; returns its file name (served at ``/api/reports/<name>``)."""
    from qnetlab import report as reports

    if dashboard:
        from qnetlab import stations
        from qnetlab.sequences.calibration import (
            CalibrationGraph,
            CalibrationStore,
            default_calibrations,
        )

        store = CalibrationStore(data_dir)
        try:
            topo = stations.read_topology(stations.station_file(station))
            graph = CalibrationGraph(default_calibrations(), topo)
            path = reports.dashboard(store, graph, store.latest_time(),
                                     data_dir / "reports" / "dashboard.html")
        finally:
            store.close()
    elif run is not None:
        from qnetlab.runread import load_run

        ref: Any = int(run) if run.isdigit() else run
        path = reports.run_report(load_run(ref, data_dir), data_dir)
    else:
        raise ValueError("a report needs run (id or GUID) or dashboard: true")
    return {"name": path.name, "url": f"/api/reports/{path.name}"}


def report_file(data_dir: Path, name: str) -> Path | None:
    """The written report ``name``, if it is one (no path outside ``<data>/reports``)."""
    if not REPORT_NAME.match(name):
        return None
    path = data_dir / "reports" / name
    return path if path.is_file() else None
