"""Live run files (issue 10, section 3): while a run is open its SWMR file is ``<final>.h5.live``,
so a writer killed with SIGKILL leaves no ``*.h5`` that a plain HDF5 open refuses; the next
RunStore opening the data directory turns the dead run's live file into an ordinary ``.h5``
holding everything flushed, and never touches the live file of a process still running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import hdf5_refusals
from qnetlab.cli import run_cli
from qnetlab.runread import list_runs, load_run, read_hdf5
from qnetlab.runstore import RunStore

# Default flush settings; the stream is flushed by every append, points every 0.5 s.
WRITER = textwrap.dedent("""
    import sys, time, numpy as np
    from qnetlab.runstore import RunStore
    store = RunStore(sys.argv[1])
    run = store.run("live_writer")
    run.register("i"); run.register("v", setpoints=("i",))
    run.stream("tags", time_ps="i8", channel="u1", units={"time_ps": "ps"})
    with run:
        for i in range(10**9):
            run.add_point(i=i, v=2.0 * i)
            run.streams["tags"].append(time_ps=np.arange(i * 100, (i + 1) * 100),
                                       channel=np.full(100, i % 3))
            if i == 300:
                print("ROWS", (i + 1) * 100, flush=True)
            if len(sys.argv) > 2 and i >= 300:
                time.sleep(0.01)          # a slow writer that lives while the test looks
""")


def start_writer(data: Path, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data), *extra],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("ROWS"), "the writer did not get going"
    return proc


def sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()



def test_a_killed_writer_leaves_no_refused_h5_and_the_next_store_makes_it_whole(tmp_path):
    proc = start_writer(tmp_path)
    time.sleep(0.6)  # more than the default flush period: the buffered points are committed
    sigkill(proc)
    assert not list(tmp_path.rglob("*.h5"))  # the open run's file is not an .h5 yet ...
    (live,) = tmp_path.rglob("*.h5.live")
    with pytest.raises(OSError, match=r"h5clear|already open"):  # ... because of this
        h5py.File(live, "r").close()
    assert hdf5_refusals(tmp_path) == []
    (row,) = list_runs(tmp_path)
    assert row["status"] == "dead" and row["hdf5"] == str(live)[: -len(".live")]
    assert row["file"] == str(live)
    before = load_run(row["guid"], tmp_path)  # readable meanwhile, through the live file
    assert before.status == "dead" and before.hdf5_file == live
    flushed_tags = before.streams["tags"]["time_ps"]
    assert flushed_tags.size >= 30_100
    np.testing.assert_array_equal(flushed_tags, np.arange(flushed_tags.size))
    flushed_v = before.arrays()["v"]["v"]
    assert flushed_v.size >= 1
    by_live_path = load_run(live)
    np.testing.assert_array_equal(by_live_path.streams["tags"]["time_ps"], flushed_tags)

    store = RunStore(tmp_path)  # opening the directory finalises the dead run
    store.close()
    assert [(r["guid"], r["status"], r["pid"]) for r in store.recovered] == \
        [(row["guid"], "dead", proc.pid)]
    assert not list(tmp_path.rglob("*.live")) and not list((tmp_path / "runs").glob("*/.*"))
    (final,) = tmp_path.rglob("*.h5")
    assert str(final) == row["hdf5"] and hdf5_refusals(tmp_path) == []
    with h5py.File(final, "r") as f:  # an ordinary, closed file: no SWMR flag, no tail ring
        assert f.attrs["status"] == "dead" and "tails" not in f
        np.testing.assert_array_equal(f["streams/tags/time_ps"][()], flushed_tags)
    after = load_run(row["guid"], tmp_path)
    assert after.status == "dead" and after.dataset.completed and after.hdf5_file == final
    np.testing.assert_array_equal(after.arrays()["v"]["v"], flushed_v)
    assert [(r["status"], r["file"]) for r in list_runs(tmp_path)] == [("dead", str(final))]
    again = RunStore(tmp_path)  # nothing left to do: nothing reported twice
    again.close()
    assert again.recovered == []


def test_a_store_opening_the_directory_leaves_a_running_writers_file_alone(tmp_path):
    proc = start_writer(tmp_path, "slow")
    try:
        (live,) = tmp_path.rglob("*.h5.live")
        rows_before = read_hdf5(live)["streams"]["tags"]["time_ps"].size
        store = RunStore(tmp_path)
        store.close()
        assert store.recovered == []
        assert live.exists() and not list(tmp_path.rglob("*.h5"))
        assert list_runs(tmp_path)[0]["status"] == "running"
        time.sleep(0.3)  # the writer goes on writing into the same file
        assert read_hdf5(live)["streams"]["tags"]["time_ps"].size > rows_before
    finally:
        sigkill(proc)
    store = RunStore(tmp_path)  # once it is dead, the same opening finalises it
    store.close()
    assert [r["status"] for r in store.recovered] == ["dead"]
    assert not live.exists() and hdf5_refusals(tmp_path) == []


def test_a_dead_writer_of_another_host_is_left_alone(tmp_path, monkeypatch):
    """pid and host say whose file it is: seen from another host, a pid that does not exist
    here proves nothing, so neither the live file nor the writer's temporaries are touched."""
    proc = start_writer(tmp_path)
    sigkill(proc)
    (live,) = tmp_path.rglob("*.h5.live")
    final_name = live.name[: -len(".live")]
    theirs = live.with_name(f".{final_name}.{proc.pid}@{socket.gethostname()}.compacting")
    mine = live.with_name(f".{final_name}.{proc.pid}@elsewhere.compacting")
    theirs.write_bytes(b"half")  # a temporary of the dead writer's host
    mine.write_bytes(b"half")  # one of a dead process of the host the store opens on
    monkeypatch.setattr(socket, "gethostname", lambda: "elsewhere")
    store = RunStore(tmp_path)
    store.close()
    assert store.recovered == []
    assert live.exists() and theirs.exists() and not list(tmp_path.rglob("*.h5"))
    assert not mine.exists()
    monkeypatch.undo()
    store = RunStore(tmp_path)  # back on the writer's host: its dead run is finalised
    store.close()
    assert [r["status"] for r in store.recovered] == ["dead"]
    assert not theirs.exists() and not live.exists()
    assert hdf5_refusals(tmp_path) == []


CLOSE_KILLED = textwrap.dedent("""
    import os, signal, sys, numpy as np
    from qnetlab.runstore import RunStore
    real = os.replace
    def dying(src, dst):                # the final file is in place, the live one not yet gone
        real(src, dst)
        if str(dst).endswith(".h5"):
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = dying
    store = RunStore(sys.argv[1])
    run = store.run("closing")
    run.stream("tags", time_ps="i8")
    with run:
        run.streams["tags"].append(time_ps=np.arange(5000))
""")


def test_a_kill_between_the_final_file_and_removing_the_live_one(tmp_path, capsys):
    proc = subprocess.run([sys.executable, "-c", CLOSE_KILLED, str(tmp_path)], timeout=120)
    assert proc.returncode == -signal.SIGKILL
    (live,), (final,) = tmp_path.rglob("*.h5.live"), tmp_path.rglob("*.h5")
    assert hdf5_refusals(tmp_path) == []
    run = load_run(list_runs(tmp_path)[0]["guid"], tmp_path)
    assert run.hdf5_file == final and run.status == "completed"  # the whole file is read
    np.testing.assert_array_equal(run.streams["tags"]["time_ps"], np.arange(5000))
    assert run_cli(["--data", str(tmp_path), "runs", "--clean-dead"]) == 0
    assert "marked run 1 (closing" in capsys.readouterr().out
    assert not live.exists()
    run = load_run(list_runs(tmp_path)[0]["guid"], tmp_path)
    assert run.status == "completed" and run.dataset.completed
    np.testing.assert_array_equal(run.streams["tags"]["time_ps"], np.arange(5000))
