"""The run store: every run's swept data in QCoDeS, its raw high-rate data in one HDF5 file.

- Swept (scalar or array) data goes through QCoDeS's ``Measurement`` with the station, into the
  data directory's QCoDeS database, with the station snapshot; scalar points are buffered and
  handed to QCoDeS in batches (arrays to ``add_result``), then flushed, every
  ``flush_period_s`` (wall) or ``flush_points``.
- Raw streams (time tags, per-herald records, per-shot outcomes) go into one HDF5 file per run,
  written with h5py in SWMR mode: chunked, compressed, flushed after every append, so a run
  killed with SIGKILL leaves a readable file holding everything up to the last flush. Schema:
  ``docs/run-store.md`` (``SCHEMA_VERSION``).
- The HDF5 file carries the QCoDeS run's GUID; the QCoDeS run carries the HDF5 path in its
  metadata (``qnetlab_hdf5``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import hdf5plugin
import numpy as np
from qcodes.dataset import Measurement, load_or_create_experiment
from qcodes.dataset.sqlite.database import connect
from qcodes.parameters import ParameterBase
from qcodes.utils import NumpyJSONEncoder

from .clock import Clock
from .datadir import data_dir as resolve_data_dir

SCHEMA_NAME = "qnetlab.run"
SCHEMA_VERSION = 1
STREAM_CHUNK_ROWS = 1 << 16
#: Blosc LZ4 with bit shuffle: ~3x smaller time-tag streams at close to uncompressed write speed
#: (readers need ``import hdf5plugin``, which qnetlab.runread does).
STREAM_COMPRESSION = hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.BITSHUFFLE)


def _json(obj: Any) -> str:
    return json.dumps(obj, cls=NumpyJSONEncoder)


def _utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class Stream:
    """An append-only table of equal-length columns in the run's HDF5 file."""

    def __init__(self, group: h5py.Group, name: str, fields: Mapping[str, Any],
                 units: Mapping[str, str], chunk_rows: int) -> None:
        self.name = name
        self.fields = {k: np.dtype(v) for k, v in fields.items()}
        if not self.fields:
            raise ValueError(f"stream {name!r} needs at least one field")
        self._datasets = {
            field: group.create_dataset(
                field, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(chunk_rows,),
                **STREAM_COMPRESSION)
            for field, dtype in self.fields.items()
        }
        for field, unit in units.items():
            self._datasets[field].attrs["unit"] = unit
        self.rows = 0
        self._file = group.file

    def append(self, **columns: Any) -> int:
        """Append rows (one array per field, same length) and flush; returns the row count."""
        if set(columns) != set(self.fields):
            raise ValueError(f"stream {self.name!r} takes fields {sorted(self.fields)}, "
                             f"got {sorted(columns)}")
        arrays = {k: np.asarray(v, dtype=self.fields[k]).reshape(-1) for k, v in columns.items()}
        lengths = {a.size for a in arrays.values()}
        if len(lengths) != 1:
            raise ValueError(f"stream {self.name!r}: columns of different lengths "
                             f"{ {k: a.size for k, a in arrays.items()} }")
        n = lengths.pop()
        if n:
            new = self.rows + n
            for field, array in arrays.items():
                ds = self._datasets[field]
                ds.resize((new,))
                ds[self.rows:new] = array
            self.rows = new
            self._file.flush()
        return self.rows


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
        self._measurement = Measurement(
            exp=load_or_create_experiment(experiment, sample_name=sample or name,
                                          conn=store.connection),
            station=station, name=name)
        self._measurement.write_period = max(store.flush_period_s, 0.001)
        self._stream_specs: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
        self._registered: dict[str, Any] = {}
        self._array_names: set[str] = set()
        self._buffer: dict[str, list[Any]] = {}
        self._buffered = 0
        self._last_flush = time.perf_counter()
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
        self._runner = self._measurement.run()
        self._saver = self._runner.__enter__()
        ds = self._saver.dataset
        self.guid, self.run_id = ds.guid, ds.captured_run_id
        day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
        folder = self.store.data_dir / "runs" / day
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.name)
        self.hdf5_path = folder / f"{self.run_id:05d}_{safe}_{self.guid[:8]}.h5"
        ds.add_metadata("qnetlab_hdf5", str(self.hdf5_path))
        ds.add_metadata("qnetlab_run_name", self.name)
        self._open_hdf5()
        self.status = "running"
        self.store.active.append(self)
        return self

    def log_event(self, kind: str, detail: str = "", lab_time: float | None = None) -> None:
        """Record an interruption, a recovery or any other event of the run."""
        if lab_time is None and self.clock is not None:
            lab_time = self.clock.now()
        self.events.append({"lab_time": lab_time, "kind": kind, "detail": detail})

    def _open_hdf5(self) -> None:
        f = h5py.File(self.hdf5_path, "w", libver="latest")
        f.attrs.update({
            "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "run_name": self.name,
            "guid": self.guid, "qcodes_run_id": self.run_id,
            "qcodes_db": str(self.store.database_path), "created_utc": _utc_now(),
            "status": "running",
            "lab_time_start": self.clock.now() if self.clock is not None else np.nan,
        })
        snapshot = {"station": self.station.snapshot()} if self.station is not None else {}
        f.create_dataset("snapshot", data=_json(snapshot))
        f.create_dataset("calibration", data=_json(self.calibration))
        f.create_dataset("metadata", data=_json(self.metadata))
        group = f.create_group("streams")
        for name, (fields, units) in self._stream_specs.items():
            self.streams[name] = Stream(group.create_group(name), name, fields, units,
                                        self.store.chunk_rows)
        f.swmr_mode = True
        f.flush()
        self._h5 = f

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
        try:
            self.flush()
        finally:
            self._saver.dataset.add_metadata("qnetlab_status", self.status)
            if self.events:
                self._saver.dataset.add_metadata("qnetlab_events", _json(self.events))
            self._runner.__exit__(exc_type, exc, tb)
            self._h5.close()
            with h5py.File(self.hdf5_path, "r+") as f:  # SWMR forbids attribute updates
                f.attrs["status"] = self.status
                f.attrs["ended_utc"] = _utc_now()
                if self.clock is not None:
                    f.attrs["lab_time_end"] = self.clock.now()
                if exc is not None:
                    f.attrs["error"] = f"{exc_type.__name__}: {exc}"
                f.attrs["events"] = _json(self.events)

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
        if self._array_names & set(row):
            self.flush()
            self._saver.add_result(*((self._registered[k], v) for k, v in row.items()))
            return
        if self._buffer and set(row) != set(self._buffer):
            self.flush()
        for key, value in row.items():
            self._buffer.setdefault(key, []).append(value)
        self._buffered += 1
        if (self._buffered >= self.store.flush_points
                or time.perf_counter() - self._last_flush >= self.store.flush_period_s):
            self.flush()

    def flush(self) -> None:
        """Hand buffered points to QCoDeS and commit them to the database."""
        if self.status == "new":
            return
        if self._buffered:
            self._saver.add_result(*((self._registered[k], np.asarray(v))
                                     for k, v in self._buffer.items()))
            self._buffer, self._buffered = {}, 0
        if self.status == "running" or self._saver is not None:
            self._saver.flush_data_to_database(block=True)
        self._last_flush = time.perf_counter()

    @property
    def dataset(self) -> Any:
        return self._saver.dataset


class RunStore:
    """Runs in one data directory (QCoDeS database ``qnetlab.db`` plus ``runs/*/*.h5``)."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None, *,
                 flush_period_s: float = 0.5, flush_points: int = 20_000,
                 chunk_rows: int = STREAM_CHUNK_ROWS) -> None:
        self.data_dir = resolve_data_dir(data_dir)
        self.database_path = self.data_dir / "qnetlab.db"
        self.connection = connect(self.database_path)
        self.flush_period_s = flush_period_s
        self.flush_points = flush_points
        self.chunk_rows = chunk_rows
        self.active: list[Run] = []

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
