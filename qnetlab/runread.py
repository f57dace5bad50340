"""Reading runs back: one call, by QCoDeS run id, GUID or HDF5 path.

A run's file is ``<final>.h5.live`` while its run is open (or after its writer was killed) and
``<final>.h5`` once closed; every reader here takes either name and finds whichever exists
(:func:`run_file`)."""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401 - registers the Blosc filter the streams use
import numpy as np
from qcodes.dataset import load_by_guid, load_by_id

from .datadir import database_path, exclusive, open_database, process_state

log = logging.getLogger(__name__)
#: Appended to a run file's final name while the run is open (an SWMR file): never ``*.h5``,
#: so tools that open ``*.h5`` plainly only ever meet closed, ordinary files.
LIVE_SUFFIX = ".live"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


@dataclass
class RunData:
    """A run as numpy arrays with its metadata; ``dataset`` is the QCoDeS dataset."""

    name: str
    guid: str
    run_id: int
    status: str
    dataset: Any
    hdf5_path: Path | None  # the run's file as recorded (its final ``.h5`` name)
    streams: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    #: the file actually read: ``hdf5_path`` or, for a run open or killed, its live file
    hdf5_file: Path | None = None

    def arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """Swept data as numpy arrays: ``{dependent: {name: array, setpoint: array}}``."""
        return self.dataset.get_parameter_data()

    def xarray(self) -> Any:
        """Swept data as an xarray Dataset (QCoDeS's own export)."""
        return self.dataset.to_xarray_dataset()


def final_path(path: str | os.PathLike[str]) -> Path:
    """A run file's final ``.h5`` name, given it or its live name."""
    path = Path(path)
    if path.name.endswith(".h5" + LIVE_SUFFIX):
        return path.with_name(path.name[: -len(LIVE_SUFFIX)])
    return path


def live_path(path: str | os.PathLike[str]) -> Path:
    """The name a run file has while its run is open: ``<final>.h5.live``."""
    final = final_path(path)
    return final.with_name(final.name + LIVE_SUFFIX)


def run_file(path: str | os.PathLike[str]) -> Path | None:
    """The file holding the run recorded as ``path`` (final or live name): the closed final file
    if it exists (complete, even when a killed closer left the live one too), else the live
    file, else ``None``."""
    final = final_path(path)
    for candidate in (final, live_path(final)):
        if candidate.exists():
            return candidate
    return None


def open_run_file(path: str | os.PathLike[str]) -> h5py.File:
    """Open the run file recorded as ``path`` for reading (see :func:`run_file`); a file
    renamed from live to final between the look and the open is found under its new name."""
    for _ in range(3):
        found = run_file(path)
        if found is None:
            break
        try:
            return open_hdf5(found)
        except OSError:
            if found.exists():
                raise
    final = final_path(path)
    raise FileNotFoundError(f"no run file {os.fspath(final)!r} (nor {live_path(final).name!r})")


def open_hdf5(path: str | os.PathLike[str]) -> h5py.File:
    """Open a run file for reading, whatever state its writer left it in.

    A live or killed SWMR writer leaves the file's SWMR-write flag set, which a plain open
    refuses ("use h5clear"): SWMR-read mode reads such files as they are. Files from before the
    1.10 format do not take SWMR-read mode and open plainly; a lock held by a stuck process on
    a file system without working locks is not honoured when reading."""
    errors = []
    for kwargs in ({"swmr": True}, {}, {"swmr": True, "locking": False}, {"locking": False}):
        try:
            return h5py.File(path, "r", **kwargs)
        except OSError as exc:
            errors.append(exc)
    raise OSError(f"run file {os.fspath(path)!r} cannot be opened: {errors[0]}")


def stream_columns(f: h5py.File, name: str, *, tail_only: bool = False
                   ) -> tuple[int, dict[str, np.ndarray]]:
    """The rows of stream ``name``: ``(n, columns)`` where ``n`` is the number of whole rows in
    its compressed datasets and ``columns`` all rows (or, with ``tail_only``, only those after
    ``n``, taken from the stream's tail ring; see :class:`qnetlab.runstore.Stream`)."""
    group = f["streams"][name]
    if f.swmr_mode:
        for ds in group.values():
            ds.refresh()
    n = min((ds.shape[0] for ds in group.values()), default=0)
    tail = _tail_rows(f, name, n)
    if tail_only:
        return n, tail
    columns = {k: ds[:n] for k, ds in group.items()}
    if tail:
        columns = {k: np.concatenate((a, tail[k])) for k, a in columns.items()}
    return n, columns


def _tail_rows(f: h5py.File, name: str, start: int) -> dict[str, np.ndarray]:
    """Rows ``start, start + 1, ...`` found in the tail ring (stops at the first gap)."""
    if "tails" not in f or name not in f["tails"]:
        return {}
    ds = f["tails"][name]
    if f.swmr_mode:
        ds.refresh()
    ring = ds[()]
    rows = ring["row"]
    keep = ring[rows >= start]
    keep = keep[np.argsort(keep["row"], kind="stable")]
    expected = np.arange(start, start + keep.size)
    gap = np.flatnonzero(keep["row"] != expected)
    keep = keep[: gap[0]] if gap.size else keep
    return {k: np.ascontiguousarray(keep[k]) for k in ring.dtype.names if k != "row"}


def read_hdf5(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Attributes, JSON blocks and streams of a run file (final or live name, see
    :func:`run_file`), also of one killed mid-run."""
    with open_run_file(path) as f:
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        blocks = {k: json.loads(f[k][()]) for k in ("snapshot", "calibration", "metadata")
                  if k in f}
        streams = {name: stream_columns(f, name)[1] for name in f.get("streams", {})}
        file = Path(f.filename)
    return {"attrs": attrs, "streams": streams, "file": file, **blocks}


def _read_hdf5_or_note(path: Path) -> dict[str, Any]:
    """The run file's contents, or (for a file no reader can open, e.g. a stub left by a
    writer of an older qnetlab killed while creating it) the error, so the run still loads."""
    try:
        return read_hdf5(path)
    except OSError as exc:
        log.warning("run file %s unreadable: %s", path, exc)
        return {"attrs": {"hdf5_error": str(exc)}, "streams": {}}


@contextmanager
def tolerating_unstarted_runs() -> Iterator[None]:
    """QCoDeS creates a run's row and its results table in two steps; a process killed between
    them leaves a run that QCoDeS loads with a "No raw data stored" warning. Such a run has no
    points to lose (and shows as ``dead``), so readers take it as it is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No raw data stored for dataset",
                                category=UserWarning)
        yield


def load_run(ref: int | str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None
             ) -> RunData:
    """Load a run by QCoDeS run id (int), GUID (str) or the path of its HDF5 file (its final
    ``.h5`` name or its live name, whichever exists)."""
    h5: dict[str, Any] | None = None
    if isinstance(ref, os.PathLike) or (isinstance(ref, str) and ref.endswith(
            (".h5", ".h5" + LIVE_SUFFIX))):
        h5 = read_hdf5(ref)
        folder = Path(h5["attrs"]["qcodes_db"]).parent
        conn = open_database(folder)
        with exclusive(folder).hold(), tolerating_unstarted_runs():  # read once started
            dataset = load_by_guid(h5["attrs"]["guid"], conn=conn)
        hdf5_path: Path | None = final_path(ref)
    else:
        dataset = _load_dataset(ref, data_dir)
        path = dataset.metadata.get("qnetlab_hdf5")
        hdf5_path = Path(path) if path else None
        if hdf5_path is not None and run_file(hdf5_path) is not None:
            h5 = _read_hdf5_or_note(hdf5_path)
    status = run_status(dataset)
    if h5 is not None and h5["attrs"].get("status", "running") != "running":
        status = str(h5["attrs"]["status"])
    return RunData(
        name=str(dataset.metadata.get("qnetlab_run_name", dataset.name)),
        guid=dataset.guid, run_id=dataset.captured_run_id, status=status,
        dataset=dataset, hdf5_path=hdf5_path,
        streams=h5["streams"] if h5 else {}, snapshot=h5.get("snapshot", {}) if h5 else {},
        calibration=h5.get("calibration", {}) if h5 else {},
        metadata=h5.get("metadata", {}) if h5 else {}, attrs=h5["attrs"] if h5 else {},
        hdf5_file=h5.get("file") if h5 else None,
    )


def _load_dataset(ref: int | str, data_dir: str | os.PathLike[str] | None) -> Any:
    """The QCoDeS dataset of run id or GUID ``ref``."""
    conn = open_database(data_dir)
    with exclusive(data_dir).hold(), tolerating_unstarted_runs():  # read once started
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            return load_by_id(int(ref), conn=conn)
        if isinstance(ref, str) and _GUID.match(ref):
            return load_by_guid(ref, conn=conn)
    raise ValueError(f"run reference {ref!r} is not a run id, a GUID or an .h5 path")


def run_status(dataset: Any) -> str:
    """The status a run ended with; for one not ended, ``running`` while its process lives
    (or lives on another host) and ``dead`` once it is gone.

    The run store records the process while it starts the run, holding the data directory's
    lock, ``qnetlab_started_utc`` last; callers read under the same lock, so a run not ended
    and without that key is a start its process never finished (it was killed): ``dead``."""
    meta = dataset.metadata
    if "qnetlab_status" in meta:
        return str(meta["qnetlab_status"])
    if dataset.completed:
        return "completed"
    if "qnetlab_started_utc" not in meta:
        return "dead"
    state = process_state(meta.get("qnetlab_pid"), meta.get("qnetlab_host"),
                          meta.get("qnetlab_proc_start", -1))
    return "dead" if state == "dead" else "running"


def list_runs(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Every run of the data directory's QCoDeS database, newest first; ``status`` is
    ``dead`` for a run whose process died (see :func:`run_status`), ``hdf5`` the run file's
    recorded (final) name and ``file`` the file that exists now (live or final; ``""`` if
    none)."""
    from qcodes.dataset import experiments

    if not database_path(data_dir).exists():
        return []
    conn = open_database(data_dir)
    with exclusive(data_dir).hold(), tolerating_unstarted_runs():  # listed once started
        rows = [_row(exp, ds) for exp in experiments(conn=conn) for ds in exp.data_sets()]
    conn.close()
    return sorted(rows, key=lambda r: r["run_id"], reverse=True)


def _row(exp: Any, ds: Any) -> dict[str, Any]:
    """One line of :func:`list_runs`."""
    meta = ds.metadata
    return {
        "run_id": ds.captured_run_id, "guid": ds.guid,
        "name": str(meta.get("qnetlab_run_name", ds.name)),
        "status": run_status(ds), "pid": meta.get("qnetlab_pid"),
        "host": meta.get("qnetlab_host", ""),
        "started": (ds.run_timestamp() or "")[:19], "sample": exp.sample_name,
        "hdf5": meta.get("qnetlab_hdf5", ""),  # the final name, as recorded
        "file": str(run_file(meta["qnetlab_hdf5"]) or "") if meta.get("qnetlab_hdf5") else "",
    }
