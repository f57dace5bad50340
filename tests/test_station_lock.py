"""Two processes never drive the same instruments: real processes contend for a hardware
station; a lock left by a SIGKILLed process is taken over."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from qnetlab.stations import StationInUse, load, lock_instruments, station_file

HOLD = """
import sys, time
from pathlib import Path
from qnetlab.stations import lock_instruments
lock = lock_instruments(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(120)
"""

TAKE = """
import sys
from pathlib import Path
from qnetlab.stations import lock_instruments
lock = lock_instruments(Path(sys.argv[1]))
print("\\n".join(lock.taken_over))
lock.release()
"""


@pytest.fixture
def hw_station(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # The hardware link as an IVI user has it: the lock is taken before any backend is opened,
    # so the refusal does not depend on which VISA backend this machine has installed.
    path = tmp_path / "hw_link.station.yaml"
    path.write_text(station_file("hw_link").read_text().replace("'@py'", "'@ivi'")
                    .replace('"@py"', '"@ivi"').replace("@py\n", "@ivi\n"))
    monkeypatch.setenv("QNETLAB_LOCK_DIR", str(tmp_path / "locks"))
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "QNETLAB_DATA": str(tmp_path / "data"), "MPLBACKEND": "Agg"}


def test_second_process_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(
        hw_station, tmp_path):
    env = _env(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(hw_station)], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run([sys.executable, "-m", "qnetlab", "--station", str(hw_station),
                                 "status"], env=env, capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        # the CLI brings the station up site by site (its agents): the line names the site
        assert re.match(r"qnetlab: error: StationInUse: hw_link\.station\.yaml (\(site \w+\))?: "
                        r"instrument \w+ \(TCPIP0::", lines[0]), lines[0]
        assert f"in use by pid {holder.pid} on host {socket.gethostname()} since 20" \
            in lines[0]
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: no cleanup at all
        holder.wait(timeout=60)
        third = subprocess.run([sys.executable, "-c", TAKE, str(hw_station)], env=env,
                               capture_output=True, text=True, timeout=120)
        assert third.returncode == 0, third.stderr
        notes = third.stdout.strip().splitlines()
        assert len(notes) == 11  # every instrument: two nodes of five, and the herald
        assert all(f"took over the lock of pid {holder.pid} on host " in n and
                   "no longer running" in n for n in notes)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=60)
        holder.stdout.close()


def test_a_released_station_is_free_again_without_a_takeover(hw_station):
    first = lock_instruments(hw_station)
    with pytest.raises(StationInUse, match=f"in use by pid {os.getpid()}"):
        lock_instruments(hw_station)  # a second station object in the same process, too
    first.release()
    again = lock_instruments(hw_station)
    assert again.taken_over == []
    again.release()


def test_a_refused_load_touches_no_instrument_and_keeps_nothing_locked(hw_station):
    held = lock_instruments(hw_station)
    try:
        with pytest.raises(StationInUse):
            load(hw_station)
    finally:
        held.release()
    lock_instruments(hw_station).release()  # nothing left behind by the refused load


def test_simulated_stations_take_no_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("QNETLAB_LOCK_DIR", str(tmp_path / "locks"))
    assert lock_instruments(station_file("sim_link")).files == []
    assert not (tmp_path / "locks").exists()
