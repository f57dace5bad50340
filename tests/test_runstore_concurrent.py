"""Many processes on one data directory (issue 10, section 2, run-store side)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import numpy as np
from qcodes.dataset import experiments

from qnetlab.datadir import open_database
from qnetlab.runread import list_runs, load_run

WORKER = textwrap.dedent("""
    import sys, time, numpy as np
    from pathlib import Path
    from qnetlab.runstore import RunStore
    data, me, go = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    while time.time() < go:                 # all workers start together
        time.sleep(0.001)
    store = RunStore(data)                  # a brand-new data directory for all of them
    for k in range(4):
        run = store.run("shared", metadata={"worker": me, "k": k})
        run.register("i"); run.register("v", setpoints=("i",))
        run.stream("tags", time_ps="i8")
        with run:
            for i in range(50):
                run.add_point(i=i, v=1000.0 * me + i)
                run.flush()
                run.streams["tags"].append(time_ps=np.arange(i * 10, i * 10 + 10) + me)
    store.close()
""")


def test_several_processes_write_runs_to_one_new_data_directory(tmp_path):
    data = tmp_path / "data"
    go = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(data), str(me), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me in range(4)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0 and "Traceback" not in err, err[-2000:]
        assert "locked" not in err and "Starting experimental run" not in out
    rows = list_runs(data)
    assert len(rows) == 16 and {r["status"] for r in rows} == {"completed"}
    assert len({r["run_id"] for r in rows}) == 16 and len({r["hdf5"] for r in rows}) == 16
    conn = open_database(data)
    assert len(experiments(conn=conn)) == 1  # no duplicated experiment
    conn.close()
    seen = set()
    for row in rows:
        run = load_run(row["guid"], data)
        me, k = run.metadata["worker"], run.metadata["k"]
        seen.add((me, k))
        np.testing.assert_array_equal(run.arrays()["v"]["v"], 1000.0 * me + np.arange(50))
        np.testing.assert_array_equal(run.streams["tags"]["time_ps"], np.arange(500) + me)
    assert seen == {(me, k) for me in range(4) for k in range(4)}
