"""Reading runs back: one call, by QCoDeS run id, GUID or HDF5 path."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - registers the Blosc filter the streams use
import numpy as np
from qcodes.dataset import load_by_guid, load_by_id
from qcodes.dataset.sqlite.database import connect

from .datadir import database_path

_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


@dataclass
class RunData:
    """A run as numpy arrays with its metadata; ``dataset`` is the QCoDeS dataset."""

    name: str
    guid: str
    run_id: int
    status: str
    dataset: Any
    hdf5_path: Path | None
    streams: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """Swept data as numpy arrays: ``{dependent: {name: array, setpoint: array}}``."""
        return self.dataset.get_parameter_data()

    def xarray(self) -> Any:
        """Swept data as an xarray Dataset (QCoDeS's own export)."""
        return self.dataset.to_xarray_dataset()


def read_hdf5(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Attributes, JSON blocks and streams of a run file, also of one killed mid-run."""
    try:
        f = h5py.File(path, "r", swmr=True)
    except OSError:
        f = h5py.File(path, "r")
    with f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        blocks = {k: json.loads(f[k][()]) for k in ("snapshot", "calibration", "metadata")
                  if k in f}
        streams = {}
        for name, group in f.get("streams", {}).items():
            if f.swmr_mode:
                for ds in group.values():
                    ds.refresh()
            n = min((ds.shape[0] for ds in group.values()), default=0)
            streams[name] = {k: ds[:n] for k, ds in group.items()}
    return {"attrs": attrs, "streams": streams, **blocks}


def load_run(ref: int | str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None
             ) -> RunData:
    """Load a run by QCoDeS run id (int), GUID (str) or the path of its HDF5 file."""
    h5: dict[str, Any] | None = None
    if isinstance(ref, os.PathLike) or (isinstance(ref, str) and ref.endswith(".h5")):
        h5 = read_hdf5(ref)
        conn = connect(h5["attrs"]["qcodes_db"])
        dataset = load_by_guid(h5["attrs"]["guid"], conn=conn)
        hdf5_path: Path | None = Path(ref)
    else:
        conn = connect(database_path(data_dir))
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            dataset = load_by_id(int(ref), conn=conn)
        elif isinstance(ref, str) and _GUID.match(ref):
            dataset = load_by_guid(ref, conn=conn)
        else:
            raise ValueError(f"run reference {ref!r} is not a run id, a GUID or an .h5 path")
        path = dataset.metadata.get("qnetlab_hdf5")
        hdf5_path = Path(path) if path else None
        if hdf5_path is not None and hdf5_path.exists():
            h5 = read_hdf5(hdf5_path)
    status = str(dataset.metadata.get("qnetlab_status", ""))
    if h5 is not None:
        status = str(h5["attrs"].get("status", status))
    return RunData(
        name=str(dataset.metadata.get("qnetlab_run_name", dataset.name)),
        guid=dataset.guid, run_id=dataset.captured_run_id,
        status=status or ("completed" if dataset.completed else "running"),
        dataset=dataset, hdf5_path=hdf5_path,
        streams=h5["streams"] if h5 else {}, snapshot=h5.get("snapshot", {}) if h5 else {},
        calibration=h5.get("calibration", {}) if h5 else {},
        metadata=h5.get("metadata", {}) if h5 else {}, attrs=h5["attrs"] if h5 else {},
    )


def list_runs(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every run of the data directory's QCoDeS database, newest first."""
    from qcodes.dataset import experiments

    path = database_path(data_dir)
    if not path.exists():
        return []
    conn = connect(path)
    rows = []
    for exp in experiments(conn=conn):
        for ds in exp.data_sets():
            meta = ds.metadata
            rows.append({
                "run_id": ds.captured_run_id, "guid": ds.guid,
                "name": str(meta.get("qnetlab_run_name", ds.name)),
                "status": str(meta.get("qnetlab_status", "completed" if ds.completed
                                       else "running")),
                "started": (ds.run_timestamp() or "")[:19], "sample": exp.sample_name,
                "hdf5": meta.get("qnetlab_hdf5", ""),
            })
    conn.close()
    return sorted(rows, key=lambda r: r["run_id"], reverse=True)
