"""The run store: every run's swept data in QCoDeS, its raw high-rate data in one HDF5 file.

- Swept (scalar or array) data goes through QCoDeS's ``Measurement`` with the station, into the
  data directory's QCoDeS database, with the station snapshot; scalar points are buffered and
  handed to QCoDeS in batches (arrays to ``add_result``), then committed, every
  ``flush_period_s`` or ``flush_points``; a sequence that gathers its own batches hands them
  over as arrays with ``add_points``, committed the same way (no per-point cost over QCoDeS).
  A flusher thread commits pending points when no further point arrives, so they reach disk
  within the flush period in any case.
- Raw streams (time tags, per-herald records, per-shot outcomes) go into one HDF5 file per run,
  written with h5py in SWMR mode in the HDF5 1.10 format, flushed after every append, so a run
  killed with SIGKILL leaves a file holding everything appended before the kill. While the run
  is open the file is ``<final>.h5.live`` (an SWMR file, which plain HDF5 opens refuse after a
  kill); closing the run compacts it (see :class:`Stream`) into an ordinary ``<final>.h5``.
  So every ``*.h5`` is a closed, ordinary file that any HDF5 tool opens. The live file is
  created under a temporary name and linked into place, so a kill during creation leaves no
  file. Schema: ``docs/run-store.md`` (``SCHEMA_VERSION``).
- Several processes may share a data directory: QCoDeS writes take the directory's lock, the
  connection has a busy timeout, file names carry the unique run id and GUID.
- Every run records its process (pid, host, start); ``qnetlab runs`` shows a run whose process
  died as ``dead``; :func:`clean_dead_runs` (``qnetlab runs --clean-dead``) and every
  :class:`RunStore` opening the data directory (:func:`recover_dead_runs`) mark it so and turn
  its live file into an ordinary ``.h5``.
- The HDF5 file carries the QCoDeS run's GUID; the QCoDeS run carries the HDF5 path (the final
  ``.h5`` name; readers fall back to the live name) in its metadata (``qnetlab_hdf5``).
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
from qcodes.dataset.sqlite.connection import atomic
from qcodes.parameters import ParameterBase
from qcodes.utils import NumpyJSONEncoder

from .clock import Clock
from .datadir import data_dir as resolve_data_dir
from .datadir import database_path, exclusive, open_database, process_identity, process_state
from .runread import (
    LIVE_SUFFIX,
    final_path,
    live_path,
    open_hdf5,
    run_status,
    stream_columns,
    tolerating_unstarted_runs,
)

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
            held = self.rows > self._main_rows
            # whole chunks are written straight from the caller's arrays; the rows held back
            # are copied (they must not change if the caller reuses its arrays)
            self._pending = ({k: np.concatenate((self._pending[k], a)) for k, a in arrays.items()}
                             if held else arrays)
            self.rows += n
            if not self._write_whole_chunks() and not held:
                self._pending = {k: a.copy() for k, a in arrays.items()}
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

    def _write_whole_chunks(self) -> bool:
        """Move every whole chunk of pending rows to the compressed datasets, then flush (the
        tail slots those rows held may be reused only once they are safely in the data); the
        rows left pending are copied. False if there was no whole chunk (nothing changed)."""
        whole = (self.rows - self._main_rows) // self.chunk_rows * self.chunk_rows
        if not whole:
            return False
        new = self._main_rows + whole
        for field, ds in self._datasets.items():
            ds.resize((new,))
            ds[self._main_rows:new] = self._pending[field][:whole]
        self._pending = {k: a[whole:].copy() for k, a in self._pending.items()}
        self._main_rows = new
        self._file.flush()
        return True

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
        self._handed = 0  # points handed to QCoDeS, not yet committed
        self._handed_since = 0.0
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

    @property
    def live_path(self) -> Path | None:
        """The run's file while the run is open (``hdf5_path`` + ``.live``); ``hdf5_path``, its
        final name, exists once the run is closed."""
        return None if self.hdf5_path is None else live_path(self.hdf5_path)

    @staticmethod
    def _name_of(p: ParameterBase | str) -> str:
        return p.register_name if isinstance(p, ParameterBase) else str(p)

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> Run:
        # one transaction for the QCoDeS run's creation (a few dozen statements that QCoDeS
        # would commit one by one, each a disk sync): all of it or none, and fast
        with self.store.database() as conn, atomic(conn):
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
        self._snapshot_raw = ds.snapshot_raw  # read here, holding the database
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
        """Create the file under a temporary name, switch it to SWMR, then link it into place
        under its live name (``<final>.h5.live``): a kill at any moment leaves either no run
        file or a valid one (never a stub), and never an SWMR file named ``*.h5``."""
        assert self.hdf5_path is not None and self.live_path is not None
        tmp = _temporary(self.hdf5_path, "creating")
        f = h5py.File(tmp, "w", libver=LIBVER)
        try:
            self._write_header(f)
            f.swmr_mode = True
            f.flush()
            os.link(tmp, self.live_path)  # fails rather than overwrite another run's file
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
        # the station snapshot QCoDeS took as the run started (one snapshot per run: on a
        # large network a snapshot costs more than many measurements)
        snapshot = self._snapshot_raw if self.station is not None else None
        for key, block in (("snapshot", {}), ("calibration", self.calibration),
                           ("metadata", self.metadata)):
            text = snapshot if key == "snapshot" and snapshot else _json(block)
            # fixed-length UTF-8 bytes: stored in the dataset itself, so h5py's storage size
            # counts them (a variable-length string lives in the global heap, uncounted)
            f.create_dataset(key, data=np.bytes_(text.encode()))
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
                finalize_file(self.live_path, self._final_attrs(exc_type, exc))
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
        row = {self._name_of(k): v for k, v in pairs} if pairs else values
        if pairs:
            row.update(values)
        with self._lock:
            buffer = self._buffer
            if buffer and row.keys() == buffer.keys():  # checked when the batch began
                for key, value in row.items():
                    buffer[key].append(value)
                self._buffered += 1
            elif not self._begin_batch(row):
                return
            if (self._buffered + self._handed >= self.store.flush_points
                    or time.perf_counter() - self._last_flush >= self.store.flush_period_s):
                self.flush()

    def add_points(self, *pairs: tuple[Any, Any], **columns: Any) -> int:
        """Record many sweep points at once: ``add_points(x=xs, y=ys)`` or ``add_points((param,
        xs), ...)``, one equal-length 1-D array per registered scalar quantity; returns how many.

        For a sequence that gathers its own batches: the arrays go to QCoDeS as they are (after
        the points ``add_point`` buffered, so the order is kept) and are committed as buffered
        points are, every ``flush_points`` points or ``flush_period_s``, or by the flusher
        thread when no more come, so they reach disk within the flush period in any case."""
        if self.status != "running":
            raise RuntimeError(f"run {self.name!r} is {self.status}; use 'with run:'")
        named = {self._name_of(k): v for k, v in pairs}
        named.update(columns)
        arrays, count = self._point_columns(named)
        with self._lock:
            with self.store.database():
                if self._buffered:
                    self._hand_over()
                if count:
                    self._saver.add_result(*((self._registered[k], a) for k, a in arrays.items()))
            if count and not self._handed:
                self._handed_since = time.perf_counter()
            self._handed += count
            if (self._handed >= self.store.flush_points
                    or time.perf_counter() - self._last_flush >= self.store.flush_period_s):
                self.flush()
        return count

    def _point_columns(self, named: dict[str, Any]) -> tuple[dict[str, np.ndarray], int]:
        """``named`` as 1-D arrays of one length, checked: registered scalar quantities only."""
        unknown = set(named) - set(self._registered)
        if unknown:
            raise KeyError(f"run {self.name!r}: {sorted(unknown)} not registered "
                           f"(registered: {sorted(self._registered)})")
        arrays = sorted(self._array_names & set(named))
        if arrays:
            raise ValueError(f"run {self.name!r}: add_points takes scalar quantities, {arrays} "
                             f"are array quantities (add them with add_point)")
        columns = {k: np.asarray(v) for k, v in named.items()}
        shapes = {k: a.shape for k, a in columns.items()}
        if not columns or any(a.ndim != 1 for a in columns.values()) \
                or len(set(shapes.values())) != 1:
            raise ValueError(f"run {self.name!r}: add_points needs one 1-D array of the same "
                             f"length per quantity, got shapes {shapes}")
        return columns, next(iter(shapes.values()))[0]

    def _begin_batch(self, row: dict[str, Any]) -> bool:
        """Check a point whose quantities differ from the buffered ones; write it at once if it
        holds an array (returns False), else flush the buffer and start a batch with it."""
        unknown = set(row) - set(self._registered)
        if unknown:
            raise KeyError(f"run {self.name!r}: {sorted(unknown)} not registered "
                           f"(registered: {sorted(self._registered)})")
        if self._array_names & set(row):
            self.flush()
            with self.store.database():
                self._saver.add_result(*((self._registered[k], v) for k, v in row.items()))
            return False
        if self._buffer:
            self.flush()
        self._buffer = {key: [value] for key, value in row.items()}
        self._buffered, self._buffered_since = 1, time.perf_counter()
        return True

    def _flush_if_stale(self, age_s: float) -> None:
        """Flush when points have waited ``age_s`` (called by the flusher thread)."""
        with self._lock:
            oldest = self._handed_since if self._handed else self._buffered_since
            if (self.status == "running" and (self._buffered or self._handed)
                    and time.perf_counter() - oldest >= age_s):
                self.flush()

    def flush(self) -> None:
        """Hand buffered points to QCoDeS and commit them to the database."""
        if self.status == "new":
            return
        with self._lock, self.store.database():
            if self._buffered:
                self._hand_over()
            self._saver.flush_data_to_database(block=True)
            self._handed = 0
            self._last_flush = time.perf_counter()

    def _hand_over(self) -> None:
        """Give the points ``add_point`` buffered to QCoDeS as arrays (committed by
        :meth:`flush`); call holding the run's lock and the database."""
        self._saver.add_result(*((self._registered[k], np.asarray(v))
                                 for k, v in self._buffer.items()))
        if not self._handed:
            self._handed_since = self._buffered_since
        self._handed += self._buffered
        self._buffer, self._buffered = {}, 0

    @property
    def dataset(self) -> Any:
        """The QCoDeS dataset (write to it through :meth:`add_metadata`: the connection is
        shared by the threads of the process)."""
        return self._saver.dataset

    def add_metadata(self, key: str, value: Any) -> None:
        """Add metadata to the run's QCoDeS dataset, holding the store's database (safe
        while other threads' runs write)."""
        with self.store.database():
            self._saver.dataset.add_metadata(key, value)


def finalize_file(path: str | os.PathLike[str], attrs: Mapping[str, Any]) -> Path:
    """Rewrite a run file compactly and closed, with ``attrs`` added, under a temporary name,
    then rename it to its final ``.h5`` name and remove the live file ``path`` (if ``path``
    is a final name, the file is replaced in place). Returns the final path.

    A kill meanwhile leaves the original intact (or, after the rename, both: readers take the
    final file, recovery removes the live one). Stream data is copied chunk for chunk (no
    recompression), the tail rows are appended and the tails dropped, so the file holds its
    data and little else; the result is an ordinary (non-SWMR) HDF5 1.10 file, also when the
    original was left behind by a killed writer."""
    path = Path(path)
    final = final_path(path)
    tmp = _temporary(final, "compacting")
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
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)
    if path != final:
        path.unlink(missing_ok=True)
    return final


def _temporary(final: Path, purpose: str) -> Path:
    """A hidden temporary next to run file ``final``, naming this process and host, e.g.
    ``.<final>.<pid>@<host>.creating`` (see :func:`_remove_stray_temporaries`)."""
    me = process_identity()
    return final.with_name(f".{final.name}.{me['pid']}@{me['host']}.{purpose}")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a power cut cannot bring the old name back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """``qnetlab runs --clean-dead``: :func:`recover_dead_runs` on the data directory (without
    creating a database where there is none). Returns the runs it finalised."""
    folder = resolve_data_dir(data_dir)
    if not database_path(folder).exists():
        with exclusive(folder).hold():
            _remove_stray_temporaries(folder)
        return []
    conn = open_database(folder)
    try:
        return recover_dead_runs(folder, conn)
    finally:
        conn.close()


def recover_dead_runs(folder: Path, conn: Any) -> list[dict[str, Any]]:
    """Finalise every run of data directory ``folder`` whose process died, under the
    directory's lock: its live file becomes an ordinary, compacted ``<final>.h5`` holding all
    it held (status ``dead``), QCoDeS records the run as ended (``qnetlab_status``), and
    temporaries a killed writer left are removed.

    Only a process that pid, host and start time say is dead on *this* host counts: a live
    file of a process still running, here or on another host, is never touched. Returns one
    dict per run finalised (``run_id``, ``guid``, ``name``, ``pid``, ``host``, ``status``)."""
    from qcodes.dataset import load_by_guid

    done: dict[str, dict[str, Any]] = {}
    with exclusive(folder).hold():
        _remove_stray_temporaries(folder)
        for live in sorted((folder / "runs").glob("*/*.h5" + LIVE_SUFFIX)):
            recovered = _recover_live_file(live)
            if recovered is not None:
                done[recovered["guid"]] = recovered
        for guid in {*done, *_unfinished_guids(conn)}:
            try:
                with tolerating_unstarted_runs():
                    ds = load_by_guid(guid, conn=conn)
            except NameError:  # a file whose run is not in this database
                continue
            row = done.get(guid) or _dead_unfinished(ds)
            if row is not None:
                _mark_ended(ds, row["status"])
                done[guid] = {**row, "run_id": ds.captured_run_id,
                              "name": str(ds.metadata.get("qnetlab_run_name", ds.name))}
    for row in done.values():
        log.info("run %s (%s) of dead process %s on %s finalised as %s", row["run_id"],
                 row["name"], row["pid"], row["host"], row["status"])
    return sorted(done.values(), key=lambda r: r["run_id"] or 0)


def _recover_live_file(live: Path) -> dict[str, Any] | None:
    """Finalise live file ``live`` if its writer is dead on this host; its run's identity and
    end status, or ``None`` when the file is left alone."""
    try:
        with open_hdf5(live) as f:
            attrs = {k: (v.item() if isinstance(v, np.generic) else v)
                     for k, v in f.attrs.items()}
    except OSError as exc:
        log.warning("live run file %s unreadable, left alone: %s", live, exc)
        return None
    pid, host = attrs.get("pid"), attrs.get("host", "")
    if process_state(pid, host, attrs.get("proc_start", -1)) != "dead":
        return None
    final = final_path(live)
    if final.exists():  # killed between writing the final file and removing the live one
        with open_hdf5(final) as f:
            status = str(f.attrs.get("status", "dead"))
        live.unlink(missing_ok=True)
    else:
        status = str(attrs.get("status", "running"))
        status = "dead" if status == "running" else status
        finalize_file(live, {"status": status, "ended_utc": _utc_now()})
    return {"guid": str(attrs.get("guid", "")), "pid": pid, "host": host, "status": status,
            "run_id": attrs.get("qcodes_run_id"), "name": str(attrs.get("run_name", ""))}


def _unfinished_guids(conn: Any) -> list[str]:
    """GUIDs of the QCoDeS runs not marked completed (few: running or dead ones)."""
    return [row[0] for row in conn.execute("SELECT guid FROM runs WHERE is_completed = 0")]


def _dead_unfinished(ds: Any) -> dict[str, Any] | None:
    """The end to record for unfinished QCoDeS run ``ds`` if its process is dead (its file, if
    any, already finalised), else ``None``."""
    meta = ds.metadata
    if "qnetlab_status" in meta:  # killed after recording its status, before QCoDeS's end
        status = str(meta["qnetlab_status"])
        if process_state(meta.get("qnetlab_pid"), meta.get("qnetlab_host"),
                         meta.get("qnetlab_proc_start", -1)) != "dead":
            return None
    elif run_status(ds) != "dead":
        return None
    else:
        path = meta.get("qnetlab_hdf5")
        status = _close_dead_file(Path(path)) if path else "dead"
    return {"guid": ds.guid, "pid": meta.get("qnetlab_pid"),
            "host": meta.get("qnetlab_host", ""), "status": status}


def _mark_ended(ds: Any, status: str) -> None:
    """Record in QCoDeS that run ``ds`` ended with ``status`` (a status it recorded itself
    stays)."""
    if "qnetlab_status" not in ds.metadata:
        ds.add_metadata("qnetlab_status", status)
    # A start killed early never started; one killed before QCoDeS made its results table
    # loads as an in-memory dataset, which has no ``started`` and nothing to complete.
    if getattr(ds, "started", False) and not ds.completed:
        ds.mark_completed()


def _close_dead_file(path: Path) -> str:
    """The status a dead run's final file records; one written in place by an older qnetlab
    (an SWMR ``.h5`` still ``running``) is finalised as ``dead`` first."""
    if not path.exists():
        return "dead"
    with open_hdf5(path) as f:
        status = str(f.attrs.get("status", "running"))
    if status != "running":
        return status
    finalize_file(path, {"status": "dead", "ended_utc": _utc_now()})
    return "dead"


def _remove_stray_temporaries(folder: Path) -> None:
    """Delete ``.<run>.h5.<pid>@<host>.creating|compacting`` files whose process is dead on
    this host (names without ``@host``, from older versions, are taken as this host's)."""
    for tmp in (folder / "runs").glob("*/.*.h5.*.*ing"):
        writer = tmp.name.rsplit(".", 1)[0]
        writer, _, host = writer.partition("@") if "@" in writer else (writer, "", None)
        pid = writer.rsplit(".", 1)[-1]
        if not pid.isdigit():
            continue
        state = process_state(int(pid), host or process_identity()["host"])
        if state == "dead":
            tmp.unlink(missing_ok=True)


class RunStore:
    """Runs in one data directory (QCoDeS database ``qnetlab.db`` plus ``runs/*/*.h5``)."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *,
                 flush_period_s: float = 0.5, flush_points: int = 20_000,
                 chunk_rows: int = STREAM_CHUNK_ROWS) -> None:
        self.data_dir = resolve_data_dir(data_dir)
        self.database_path = self.data_dir / "qnetlab.db"
        self.connection = open_database(self.data_dir, any_thread=True)
        #: runs of dead processes this store finalised on opening (see recover_dead_runs)
        self.recovered = recover_dead_runs(self.data_dir, self.connection)
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
