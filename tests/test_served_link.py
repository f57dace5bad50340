"""Issue 11 §4: the whole link, calibrated and verified over real sockets.

``qnetlab sim serve --hardware hw_link`` runs the link lab in a process of its own at 2000x real
time and writes the hardware station file ``hw_link.station.yaml`` (its drivers, timeouts,
reconnect policy and limits) pointed at the served sockets (``@py``, raw sockets, plus the served
lab clock); it is brought up like any hardware station, and the full link calibration and
entanglement verification run over TCP.
The same seed is run in-process on ``@qnetlab``; both must agree within statistics.

Tolerances: quantities estimated from counts (fidelity, visibility, detector delays) agree
within 4 combined standard errors. The lab drifts with lab time (the transducer's resonance and
the qubit's swap wander, the link phase diffuses by 0.05 rad per square-root hour, physics.md),
and a served run spends more lab time than an in-process one (lab time passes while bytes
travel: one millisecond of wall time is two lab seconds at 2000x), so resonance, bias and swap
amplitude get the absolute allowance stated beside each, and the phase 4 rms of its diffusion
over the difference in lab time. A detector delay is the weighted mean of each node's photon
arrival peak, and where a photon peaks depends on its width, so on the pump power the
calibration picked: delays get 4 standard errors plus a quarter of the arrival sigma. The herald
rate follows the pump power and pulse width the calibration picks from a scan, which may land one
step apart: 15 % on top of 4 standard errors.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from qnetlab import stations
from qnetlab.runstore import RunStore
from qnetlab.sequences.calibration import CalibrationStore, calibrate
from qnetlab.sequences.entanglement import verify

SPEED = 2000
PAIRS = 500
DRIFT = {"resonance_nm": 0.005, "bias_ma": 0.01, "swap_amplitude": 0.04}  # absolute allowances
STATISTICAL = ("visibility", "det1_delay_ps", "det2_delay_ps")
PHASE_DIFFUSION_RAD_PER_SQRT_H = 0.05


def link_run(bundle, data: Path) -> dict:
    """Calibrate the station and verify entanglement on link ab; the figures to compare."""
    store, runs = CalibrationStore(data), RunStore(data)
    report = calibrate(bundle, data_dir=data, store=store, runs=runs)
    assert report.ok, report.table()
    result = verify(bundle, "ab", pairs=PAIRS, calibration=store.as_dict(), runs=runs)
    heralds = result.tomography_run.herald_time_s
    figures = {(q, t): (rec.value, rec.uncertainty) for (q, t), rec in store.state().items()}
    figures["fidelity"] = (result.tomography.fidelity, result.tomography.fidelity_err)
    rate = (heralds.size - 1) / float(heralds[-1] - heralds[0])  # in the lab's own time
    figures["herald_rate_hz"] = (rate, rate / math.sqrt(heralds.size))
    figures["lab_time_s"] = bundle.clock.now()
    runs.close()
    return figures


@pytest.fixture
def served_station(tmp_path, qnetlab_seed):
    out = tmp_path / "served.station.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "qnetlab", "sim", "serve", "--speed",
                             str(SPEED), "--seed", str(qnetlab_seed), "--hardware", "hw_link",
                             "--station-out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while not out.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.05)
        yield out
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_link_calibrated_and_verified_over_sockets_matches_in_process(
        served_station, sim_lab, tmp_path):
    started = time.monotonic()
    bundle = stations.load(served_station)
    try:
        assert type(bundle.clock).__name__ == "ServedClock"
        qnu = bundle.node("alice")["qnu"]
        assert qnu.visa_handle.visalib.library_path == "py" and qnu.timeout() == 5  # hw_link's
        served = link_run(bundle, tmp_path / "served-data")
    finally:
        bundle.close()
    wall = time.monotonic() - started
    sim_lab("link")  # the in-process lab, reset to the same seed
    bundle = stations.load("sim_link")
    try:
        local = link_run(bundle, tmp_path / "local-data")
    finally:
        bundle.close()

    def close(key, allowance: float | None = None) -> None:
        (a, ea), (b, eb) = served[key], local[key]
        limit = allowance if allowance is not None else 4 * math.hypot(ea or 0.0, eb or 0.0)
        assert abs(a - b) <= limit, f"{key}: served {a} +- {ea}, in-process {b} +- {eb}"

    for node in ("alice", "bob"):
        for quantity, allowance in DRIFT.items():
            close((quantity, node), allowance)
    sigma_ps = max(served[("arrival_sigma_ps", "mid")][0], local[("arrival_sigma_ps", "mid")][0])
    for quantity in STATISTICAL:
        for key in [k for k in served if isinstance(k, tuple) and k[0] == quantity]:
            (_, ea), (_, eb) = served[key], local[key]
            peak_shift = 0.25 * sigma_ps if quantity.endswith("_delay_ps") else 0.0
            close(key, 4 * math.hypot(ea or 0.0, eb or 0.0) + peak_shift)
    close("fidelity")
    hours = abs(served["lab_time_s"] - local["lab_time_s"]) / 3600
    (phase_s, e_s), (phase_l, e_l) = served[("phase_rad", "ab")], local[("phase_rad", "ab")]
    wrapped = abs((phase_s - phase_l + math.pi) % (2 * math.pi) - math.pi)
    assert wrapped <= 4 * math.hypot(e_s, e_l) + 4 * PHASE_DIFFUSION_RAD_PER_SQRT_H * \
        math.sqrt(hours), f"phase: served {phase_s} +- {e_s}, in-process {phase_l} +- {e_l}"
    rate = local["herald_rate_hz"][0]
    close("herald_rate_hz", 4 * math.hypot(served["herald_rate_hz"][1],
                                           local["herald_rate_hz"][1]) + 0.15 * rate)
    assert served["fidelity"][0] > 0.5 and np.isfinite(served["herald_rate_hz"][0])
    assert wall < 90, f"the served run took {wall:.0f} s of wall time"
