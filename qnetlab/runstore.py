"""The run store: every run's swept data in QCoDeS, its raw high-rate data in one HDF5 file.

- Swept (scalar or array) data goes through QCoDeS's ``Measurement`` with the station, into the
  data directory's QCoDeS database, with the station snapshot; scalar points are buffered and
  handed to QCoDeS in batches (arrays to ``add_result``), then committed, every
  ``flush_period_s`` or ``flush_points``. A flusher thread commits buffered points when no
  further point arrives, so they reach disk within the flush period in any case.
- Raw streams (time tags, per-herald records, per-shot outcomes) go into one HDF5 file per run,
  written with h5py in SWMR mode in the HDF5 1.10 format, flushed after every append, so a run
  killed with SIGKILL leaves a readable file holding everything appended before the kill. The
  file is created under a temporary name and linked into place, so a kill during creation
  leaves no file; closing the run compacts it (see :class:`Stream`) and renames it into place.
  Schema: ``docs/run-store.md`` (``SCHEMA_VERSION``).
- Several processes may share a data directory: QCoDeS writes take the directory's lock, the
  connection has a busy timeout, file names carry the unique run id and GUID.
- Every run records its process (pid, host, start); ``qnetlab runs`` shows a run whose process
  died as ``dead`` and :func:`clean_dead_runs` marks it so and compacts its file.
- The HDF5 file carries the QCoDeS run's GUID; the QCoDeS run carries the HDF5 path in its
  metadata (``qnetlab_hdf5``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import hdf5plugin
import numpy as np
from qcodes.dataset import Measurement, load_or_create_experiment
from qcodes.parameters import ParameterBase
from qcodes.utils import NumpyJSONEncoder

from .clock import Clock
from .datadir import data_dir as resolve_data_dir
from .datadir import exclusive, open_database, process_identity
from .runread import list_runs, open_hdf5, stream_columns

log = logging.getLogger(__name__)

SCHEMA_NAME = "qnetlab.run"
SCHEMA_VERSION = 1
STREAM_CHUNK_ROWS = 1 << 16
#: Blosc LZ4 with bit shuffle: ~3x smaller time-tag streams at close to uncompressed write speed
#: (readers need ``import hdf5plugin``, which qnetlab.runread does).
STREAM_COMPRESSION = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE)
#: The oldest HDF5 file format that supports SWMR (HDF5 1.10): Debian's h5dump/h5ls read it.
LIBVER = ("v110", "v110")
#: Rows per chunk of a stream's tail (uncompressed, rewritten in place).
TAIL_CHUNK_ROWS = 4096


def _json(obj: Any) -> str:
    return json.dumps(obj, cls=NumpyJSONEncoder)


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Stream:
    """An append-only table of equal-length columns in the run's HDF5 file.

    Why two places: rewriting a compressed chunk moves it in the file, and a SWMR writer never
    reuses the old space, so appending a few rows per flush to compressed data grows the file by
    a chunk per flush. Here ``streams/<name>/<field>`` (compressed) only ever receives whole
    chunks, written once; rows flushed since the last whole chunk live in ``tails/<name>``, a
    fixed-size uncompressed ring (rewritten in place, so it never grows) whose rows carry their
    row number ``row`` (slot = row mod chunk rows; ``-1`` = empty). A reader takes the
    compressed rows, then the tail rows numbered from there on (:func:`qnetlab.runread.
    stream_columns`). Closing the run compacts the file: the tail joins the data, and the
    ring disappears (:func:`finalize_file`)."""

    def __init__(self, group: h5py.Group, tails: h5py.Group, name: str,
                 fields: Mapping[str, Any], units: Mapping[str, str], chunk_rows: int) -> None:
        self.name = name
        self.fields = {k: np.dtype(v) for k, v in fields.items()}
        if not self.fields:
            raise ValueError(f"stream {name!r} needs at least one field")
        if "row" in self.fields:
            raise ValueError(f"stream {name!r}: field name 'row' is reserved")
        self.chunk_rows = chunk_rows
        self._datasets = {
            field: group.create_dataset(
                field, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(chunk_rows,),
                **STREAM_COMPRESSION)
            for field, dtype in self.fields.items()
        }
        for field, unit in units.items():
            self._datasets[field].attrs["unit"] = unit
        self._tail_dtype = np.dtype([("row", "i8"), *self.fields.items()])
        empty = np.zeros((), self._tail_dtype)
        empty["row"] = -1
        self._tail = tails.create_dataset(
            name, shape=(chunk_rows,), dtype=self._tail_dtype,
            chunks=(min(chunk_rows, TAIL_CHUNK_ROWS),), fillvalue=empty)
        self.rows = 0  # rows appended (all flushed)
        self._main_rows = 0  # rows in the compressed datasets
        self._pending = {k: np.empty(0, dtype) for k, dtype in self.fields.items()}
        self._file = group.file

    def append(self, **columns: Any) -> int:
        """Append rows (one array per field, same length) and flush; returns the row count."""
        arrays, n = self._validated(columns)
        if n:
            first_new = self.rows
            # copies either way: rows held back must not change if the caller reuses its arrays
            if self.rows > self._main_rows:
                self._pending = {k: np.concatenate((self._pending[k], a))
                                 for k, a in arrays.items()}
            else:
                self._pending = {k: a.copy() for k, a in arrays.items()}
            self.rows += n
            self._write_whole_chunks()
            self._write_tail(max(first_new, self._main_rows))
            self._file.flush()
        return self.rows

    def _validated(self, columns: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], int]:
        if set(columns) != set(self.fields):
            raise ValueError(f"stream {self.name!r} takes fields {sorted(self.fields)}, "
                             f"got {sorted(columns)}")
        arrays = {k: np.asarray(v, dtype=self.fields[k]).reshape(-1) for k, v in columns.items()}
        lengths = {a.size for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"stream {self.name!r}: columns of different lengths "
                             f"{ {k: a.size for k, a in arrays.items()} }")
        return arrays, lengths.pop()

    def _write_whole_chunks(self) -> None:
        """Move every whole chunk of pending rows to the compressed datasets, then flush (the
        tail slots those rows held may be reused only once they are safely in the data)."""
        whole = (self.rows - self._main_rows) // self.chunk_rows * self.chunk_rows
        if not whole:
            return
        new = self._main_rows + whole
        for field, ds in self._datasets.items():
            ds.resize((new,))
            ds[self._main_rows:new] = self._pending[field][:whole]
        self._pending = {k: a[whole:].copy() for k, a in self._pending.items()}
        self._main_rows = new
        self._file.flush()

    def _write_tail(self, start: int) -> None:
        """Write rows ``start .. self.rows`` (all pending) into their ring slots."""
        if start >= self.rows:
            return
        offset = start - self._main_rows
        block = np.empty(self.rows - start, self._tail_dtype)
        block["row"] = np.arange(start, self.rows)
        for field, array in self._pending.items():
            block[field] = array[offset:]
        slot = start % self.chunk_rows
        first = min(block.size, self.chunk_rows - slot)
        self._tail[slot:slot + first] = block[:first]
        if first < block.size:
            self._tail[0:block.size - first] = block[first:]


class _Flusher(threading.Thread):
    """Commits a run's buffered points when they have waited half a flush period, so they reach
    disk within the flush period even when the sequence adds no further point."""

    def __init__(self, run: Run) -> None:
        super().__init__(name=f"qnetlab-flush-{run.name}", daemon=True)
        self.run_ = run
        self.stop = threading.Event()
        self.period = max(run.store.flush_period_s, 0.004)

    def run(self) -> None:
        while not self.stop.wait(self.period / 4):
            self.run_._flush_if_stale(self.period / 2)


class Run:
    """One run: a QCoDeS dataset and an HDF5 file, opened by ``with run:``."""

    def __init__(self, store: RunStore, name: str, *, station: Any = None,
                 experiment: str = "qnetlab", sample: str = "", clock: Clock | None = None,
                 calibration: Mapping[str, Any] | None = None,
                 metadata: Mapping[str, Any] | None = None) -> None:
        self.store = store
        self.name = name
        self.station = station
        self.clock = clock
        self.calibration = dict(calibration or {})
        self.metadata = dict(metadata or {})
        with store.database():
            exp = load_or_create_experiment(experiment, sample_name=sample or name,
                                            conn=store.connection)
        self._measurement = Measurement(exp=exp, station=station, name=name)
        self._measurement.write_period = max(store.flush_period_s, 0.001)
        self._stream_specs: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
        self._registered: dict[str, Any] = {}
        self._array_names: set[str] = set()
        self._buffer: dict[str, list[Any]] = {}
        self._buffered = 0
        self._buffered_since = 0.0
        self._last_flush = time.perf_counter()
        self._lock = threading.RLock()
        self._flusher: _Flusher | None = None
        self.streams: dict[str, Stream] = {}
        self.guid: str | None = None
        self.run_id: int | None = None
        self.hdf5_path: Path | None = None
        self.status = "new"
        self.events: list[dict[str, Any]] = []

    # --- declaration (before the run starts) -----------------------------------------------
    def register(self, parameter: ParameterBase | str, *, setpoints: Iterable[Any] = (),
                 unit: str = "", label: str = "", array: bool = False) -> str:
        """Register a swept or measured quantity (a QCoDeS parameter or a plain name)."""
        if self.status != "new":
            raise RuntimeError(f"run {self.name!r}: register before the run starts")
        names = [self._name_of(s) for s in setpoints]
        paramtype = "array" if array else "numeric"
        if isinstance(parameter, ParameterBase):
            self._measurement.register_parameter(parameter, setpoints=tuple(setpoints),
                                                 paramtype=paramtype)
            name = parameter.register_name
        else:
            self._measurement.register_custom_parameter(
                parameter, label=label or parameter, unit=unit, setpoints=names or None,
                paramtype=paramtype)
            name = parameter
        self._registered[name] = parameter
        if array:
            self._array_names.add(name)
        return name

    def stream(self, name: str, units: Mapping[str, str] | None = None,
               **fields: Any) -> None:
        """Declare a raw stream and its columns, e.g. ``stream("tags", time_ps="i8",
        channel="u1", units={"time_ps": "ps"})``."""
        if self.status != "new":
            raise RuntimeError(f"run {self.name!r}: declare streams before the run starts")
        self._stream_specs[name] = (dict(fields), dict(units or {}))

    @staticmethod
    def _name_of(p: ParameterBase | str) -> str:
        return p.register_name if isinstance(p, ParameterBase) else str(p)

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Run:
        with self.store.database():
            self._start_qcodes_run()
        try:
            self._open_hdf5()
        except BaseException as exc:
            self.status = "failed"
            with self.store.database():
                self._saver.dataset.add_metadata("qnetlab_status", "failed")
                self._runner.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self.status = "running"
        self.store.active.append(self)
        self._flusher = _Flusher(self)
        self._flusher.start()
        return self

    def _start_qcodes_run(self) -> None:
        """Start the QCoDeS run (its "Starting experimental run" line goes to logging, not
        stdout) and record the HDF5 path and the writing process in its metadata."""
        self._runner = self._measurement.run()
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            self._saver = self._runner.__enter__()
        for line in captured.getvalue().splitlines():
            log.info("qcodes: %s", line)
        ds = self._saver.dataset
        self.guid, self.run_id = ds.guid, ds.captured_run_id
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        folder = self.store.data_dir / "runs" / day
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.name)
        self.hdf5_path = folder / f"{self.run_id:05d}_{safe}_{self.guid[:8]}.h5"
        self.process = {**process_identity(), "started_utc": _utc_now()}
        ds.add_metadata("qnetlab_hdf5", str(self.hdf5_path))
        ds.add_metadata("qnetlab_run_name", self.name)
        for key, value in self.process.items():  # started_utc last: marks a finished start
            ds.add_metadata(f"qnetlab_{key}", value)

    def log_event(self, kind: str, detail: str = "", lab_time: float | None = None) -> None:
        """Record an interruption, a recovery or any other event of the run."""
        if lab_time is None and self.clock is not None:
            lab_time = self.clock.now()
        self.events.append({"lab_time": lab_time, "kind": kind, "detail": detail})

    def _open_hdf5(self) -> None:
        """Create the file under a temporary name, switch it to SWMR, then link it into place:
        a kill at any moment leaves either no run file or a valid one (never a stub)."""
        assert self.hdf5_path is not None
        tmp = self.hdf5_path.with_name(f".{self.hdf5_path.name}.{os.getpid()}.creating")
        f = h5py.File(tmp, "w", libver=LIBVER)
        try:
            self._write_header(f)
            f.swmr_mode = True
            f.flush()
            os.link(tmp, self.hdf5_path)  # fails rather than overwrite another run's file
        except BaseException:
            f.close()
            tmp.unlink(missing_ok=True)
            raise
        tmp.unlink()
        self._h5 = f

    def _write_header(self, f: h5py.File) -> None:
        f.attrs.update({
            "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "run_name": self.name,
            "guid": self.guid, "qcodes_run_id": self.run_id,
            "qcodes_db": str(self.store.database_path), "created_utc": _utc_now(),
            "status": "running", "pid": self.process["pid"], "host": self.process["host"],
            "proc_start": self.process["proc_start"],
            "lab_time_start": self.clock.now() if self.clock is not None else np.nan,
        })
        snapshot = {"station": self.station.snapshot()} if self.station is not None else {}
        for key, block in (("snapshot", snapshot), ("calibration", self.calibration),
                           ("metadata", self.metadata)):
            # fixed-length UTF-8 bytes: stored in the dataset itself, so h5py's storage size
            # counts them (a variable-length string lives in the global heap, uncounted)
            f.create_dataset(key, data=np.bytes_(_json(block).encode()))
        group, tails = f.create_group("streams"), f.create_group("tails")
        for name, (fields, units) in self._stream_specs.items():
            self.streams[name] = Stream(group.create_group(name), tails, name, fields, units,
                                        self.store.chunk_rows)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.status = "completed"
        elif issubclass(exc_type, KeyboardInterrupt | GeneratorExit):
            self.status = "interrupted"
        else:
            self.status = getattr(exc, "run_status", "failed")
        if self in self.store.active:
            self.store.active.remove(self)
        if self._flusher is not None:
            self._flusher.stop.set()
            self._flusher.join()
        try:
            self.flush()
        finally:
            self._h5.close()
            try:  # the file first: a kill before QCoDeS records the end leaves a dead run
                finalize_file(self.hdf5_path, self._final_attrs(exc_type, exc))
            finally:
                with self.store.database():
                    self._saver.dataset.add_metadata("qnetlab_status", self.status)
                    if self.events:
                        self._saver.dataset.add_metadata("qnetlab_events", _json(self.events))
                    self._runner.__exit__(exc_type, exc, tb)

    def _final_attrs(self, exc_type: type[BaseException] | None,
                     exc: BaseException | None) -> dict[str, Any]:
        attrs: dict[str, Any] = {"status": self.status, "ended_utc": _utc_now(),
                                 "events": _json(self.events)}
        if self.clock is not None:
            attrs["lab_time_end"] = self.clock.now()
        if exc_type is not None:
            attrs["error"] = f"{exc_type.__name__}: {exc}"
        return attrs

    # --- data -----------------------------------------------------------------------------------
    def add_point(self, *pairs: tuple[Any, Any], **values: Any) -> None:
        """Record one sweep point: ``add_point((param, v), ...)`` or ``add_point(x=1, y=2)``.

        Scalars are buffered and written in batches; arrays for ``array=True`` quantities go
        straight to QCoDeS."""
        if self.status != "running":
            raise RuntimeError(f"run {self.name!r} is {self.status}; use 'with run:'")
        row = {self._name_of(k): v for k, v in pairs}
        row.update(values)
        unknown = set(row) - set(self._registered)
        if unknown:
            raise KeyError(f"run {self.name!r}: {sorted(unknown)} not registered "
                           f"(registered: {sorted(self._registered)})")
        with self._lock:
            if self._array_names & set(row):
                self.flush()
                with self.store.database():
                    self._saver.add_result(*((self._registered[k], v) for k, v in row.items()))
                return
            if self._buffer and set(row) != set(self._buffer):
                self.flush()
            for key, value in row.items():
                self._buffer.setdefault(key, []).append(value)
            if not self._buffered:
                self._buffered_since = time.perf_counter()
            self._buffered += 1
            if (self._buffered >= self.store.flush_points
                    or time.perf_counter() - self._last_flush >= self.store.flush_period_s):
                self.flush()

    def _flush_if_stale(self, age_s: float) -> None:
        """Flush when points have waited ``age_s`` (called by the flusher thread)."""
        with self._lock:
            if (self.status == "running" and self._buffered
                    and time.perf_counter() - self._buffered_since >= age_s):
                self.flush()

    def flush(self) -> None:
        """Hand buffered points to QCoDeS and commit them to the database."""
        if self.status == "new":
            return
        with self._lock, self.store.database():
            if self._buffered:
                self._saver.add_result(*((self._registered[k], np.asarray(v))
                                         for k, v in self._buffer.items()))
                self._buffer, self._buffered = {}, 0
            self._saver.flush_data_to_database(block=True)
            self._last_flush = time.perf_counter()

    @property
    def dataset(self) -> Any:
        return self._saver.dataset


def finalize_file(path: str | os.PathLike[str], attrs: Mapping[str, Any]) -> None:
    """Rewrite a run file compactly and closed, with ``attrs`` added, under a temporary name,
    then rename it over the original (a kill meanwhile leaves the original intact).

    Stream data is copied chunk for chunk (no recompression), the tail rows are appended and the
    tails dropped, so the file holds its data and little else; the result is an ordinary
    (non-SWMR) HDF5 1.10 file, also when the original was left behind by a killed writer."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.compacting")
    try:
        with open_hdf5(path) as src, h5py.File(tmp, "w", libver=LIBVER) as dst:
            dst.attrs.update(dict(src.attrs))
            dst.attrs.update(dict(attrs))
            for key in src:
                if key not in ("streams", "tails"):
                    src.copy(src[key], dst, key)
            out = dst.create_group("streams")
            for name, group in src.get("streams", {}).items():
                _copy_stream(src, group, out.create_group(name), name)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_stream(src: h5py.File, group: h5py.Group, out: h5py.Group, name: str) -> None:
    """Copy one stream's compressed chunks, then append its tail rows."""
    n_main, tail = stream_columns(src, name, tail_only=True)
    for field, ds in group.items():
        src.copy(ds, out, field)
        total = n_main + (tail[field].size if tail else 0)
        if out[field].shape[0] != total:
            out[field].resize((total,))
        if tail:
            out[field][n_main:total] = tail[field]


def clean_dead_runs(data_dir: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Mark every run whose process died as ``dead`` in QCoDeS and in its HDF5 file (compacted,
    readable without ``h5clear``); remove files a killed writer left half-created. Returns the
    runs marked, each with the status recorded."""
    from qcodes.dataset import load_by_guid

    folder = resolve_data_dir(data_dir)
    dead = [r for r in list_runs(folder) if r["status"] == "dead"]
    _remove_stray_temporaries(folder)
    if not dead:
        return []
    conn = open_database(folder)
    try:
        for row in dead:
            status = _close_dead_file(Path(row["hdf5"])) if row["hdf5"] else "dead"
            row["status"] = status
            with exclusive(folder).hold():
                ds = load_by_guid(row["guid"], conn=conn)
                ds.add_metadata("qnetlab_status", status)
                if ds.started and not ds.completed:  # a start killed early never started
                    ds.mark_completed()
    finally:
        conn.close()
    return dead


def _close_dead_file(path: Path) -> str:
    """Finalize a dead run's file as ``dead``; a file its writer had already closed keeps its
    status (the kill fell between closing the file and recording the end in QCoDeS)."""
    if not path.exists():
        return "dead"
    with open_hdf5(path) as f:
        status = str(f.attrs.get("status", "running"))
    if status != "running":
        return status
    finalize_file(path, {"status": "dead", "ended_utc": _utc_now()})
    return "dead"


def _remove_stray_temporaries(folder: Path) -> None:
    """Delete ``.<run>.h5.<pid>.creating|compacting`` files whose process is gone."""
    for tmp in (folder / "runs").glob("*/.*.h5.*.*ing"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not _pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """Runs in one data directory (QCoDeS database ``qnetlab.db`` plus ``runs/*/*.h5``)."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *,
                 flush_period_s: float = 0.5, flush_points: int = 20_000,
                 chunk_rows: int = STREAM_CHUNK_ROWS) -> None:
        self.data_dir = resolve_data_dir(data_dir)
        self.database_path = self.data_dir / "qnetlab.db"
        self.connection = open_database(self.data_dir, any_thread=True)
        self._thread_lock = threading.RLock()
        self.flush_period_s = flush_period_s
        self.flush_points = flush_points
        self.chunk_rows = chunk_rows
        self.active: list[Run] = []

    @contextlib.contextmanager
    def database(self) -> Iterator[Any]:
        """Exclusive use of the QCoDeS connection: one thread of this process, one process of
        the data directory (writes are short; others wait, never fail as "locked")."""
        with self._thread_lock, exclusive(self.data_dir).hold():
            yield self.connection

    def log_event(self, event: dict[str, Any]) -> None:
        """Record an event (``lab_time``, ``kind``, ``detail``) in every run open now."""
        for run in self.active:
            run.log_event(event.get("kind", "event"), event.get("detail", ""),
                          event.get("lab_time"))

    def run(self, name: str, **kwargs: Any) -> Run:
        """A new run (not started): register quantities and streams, then ``with run:``."""
        return Run(self, name, **kwargs)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
