"""`qnetlab serve` under load and faults: 50 clients reading while requests are submitted, a
SIGKILL while a request runs (then a restart), and calibration upkeep on the lab-clock
schedule."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import h5py
import httpx
from test_service_harness import make_keys, qnetlab, start

from qnetlab.runread import list_runs, run_file
from qnetlab.service.audit import AuditLog

READERS, SUBMITTERS, PER_SUBMITTER = 50, 4, 5
READ_PAUSE_S = 0.01  # each reader: status as fast as it comes back, 10 ms apart


def test_50_clients_read_status_while_requests_are_submitted(tmp_path):
    keys = make_keys(tmp_path)
    svc = start(tmp_path, "--pace", "0", "--maintain-every", "0", keys=keys)
    stop = threading.Event()
    reads, errors = [], []

    def reader() -> None:
        with httpx.Client(base_url=svc.url, timeout=30.0) as c:
            while not stop.is_set():
                r = c.get("/api/status")
                (reads if r.status_code == 200 and r.json()["state"] == "ready"
                 else errors).append(r.status_code)
                stop.wait(READ_PAUSE_S)

    def submitter(n: int) -> list[int]:
        ids = []
        with svc.client("operator") as c:
            for i in range(PER_SUBMITTER):
                idem = f"{n}-{i}-{uuid.uuid4().hex}"
                body = {"link": "ab", "pairs": 20 + i}
                first = c.post("/api/requests", json=body, headers={"Idempotency-Key": idem})
                again = c.post("/api/requests", json=body, headers={"Idempotency-Key": idem})
                assert first.status_code == again.status_code == 201
                assert first.json()["id"] == again.json()["id"]  # a retry never doubles it
                ids.append(first.json()["id"])
        return ids

    try:
        started = time.monotonic()
        with ThreadPoolExecutor(READERS + SUBMITTERS) as pool:
            readers = [pool.submit(reader) for _ in range(READERS)]
            submitted = [pool.submit(submitter, n) for n in range(SUBMITTERS)]
            ids = [i for f in submitted for i in f.result(timeout=120)]
            jobs = [svc.wait_job(i, timeout_s=120) for i in ids]
            stop.set()
            for f in readers:
                f.result(timeout=60)
        assert time.monotonic() - started < 120
        assert not errors and len(reads) >= READERS
        assert len(ids) == len(set(ids)) == SUBMITTERS * PER_SUBMITTER
        assert all(j["state"] == "done" for j in jobs), [j for j in jobs if j["state"] != "done"]
        with svc.client("admin") as c:
            listed = c.get("/api/requests", params={"limit": 1000}).json()
        assert sorted(j["id"] for j in listed) == sorted(ids)  # none lost, none extra
        guids = [j["result"]["run_guid"] for j in jobs]
        assert len(set(guids)) == len(guids)
        assert sorted(j["result"]["delivered_pairs"] for j in jobs) == sorted(
            20 + i for _ in range(SUBMITTERS) for i in range(PER_SUBMITTER))
    finally:
        stop.set()
        svc.stop()


def test_sigkill_while_a_request_runs_then_restart(tmp_path):
    keys = make_keys(tmp_path)
    svc = start(tmp_path, "--pace", "0", "--maintain-every", "0", keys=keys)
    try:
        with svc.client("operator") as c:
            lease = c.post("/api/leases", json={"duration_s": 3600, "reason": "long run"}).json()
            long = c.post("/api/requests", json={"link": "ab", "pairs": 400_000}).json()
            queued = c.post("/api/requests", json={"link": "ab", "pairs": 50}).json()
            end = time.monotonic() + 60
            while c.get(f"/api/jobs/{long['id']}").json()["state"] != "running":
                assert time.monotonic() < end
                time.sleep(0.05)
            time.sleep(1.0)  # well inside the generation
        svc.kill()
    except BaseException:
        svc.stop()
        raise
    svc = start(tmp_path, "--pace", "0", "--maintain-every", "0", keys=keys)
    try:
        killed = svc.wait_job(long["id"])
        assert killed["state"] == "interrupted" and "died while this job ran" in killed["error"]
        after = svc.wait_job(queued["id"])
        assert after["state"] == "done" and after["result"]["delivered_pairs"] == 50
        time.sleep(1.0)
        assert svc.wait_job(long["id"])["state"] == "interrupted"  # not silently repeated
        with svc.client("operator") as c:
            assert c.get("/api/leases").json()["current"]["id"] == lease["id"]
            assert len(c.get("/api/requests").json()) == 2
        with svc.client("operator2") as other:
            refused = other.post("/api/requests", json={"link": "ab", "pairs": 5})
            assert refused.status_code == 409 and "test-operator " in refused.json()["detail"]
    finally:
        svc.stop()
    runs = {r["name"]: r for r in list_runs(tmp_path) if r["name"] == "service.request"}
    assert runs  # the killed run is listed, its file readable by h5py
    for r in list_runs(tmp_path):
        path = run_file(tmp_path / r["file"]) if r["file"] else None
        if path is not None:
            with h5py.File(path, "r"):
                pass
    statuses = sorted(r["status"] for r in list_runs(tmp_path) if r["name"] == "service.request")
    assert "completed" in statuses and any(s in ("dead", "interrupted") for s in statuses)
    audit = AuditLog(tmp_path)
    assert audit.verify() == (True, "")
    assert any("marked interrupted: [1]" in r["outcome"] for r in audit.records())
    assert qnetlab("--data", str(tmp_path), "runs").returncode == 0


def test_calibration_is_maintained_on_the_lab_clock_schedule(tmp_path):
    svc = start(tmp_path, "--pace", "3600", "--maintain-every", "7200")
    try:
        end = time.monotonic() + 120
        while True:
            jobs = httpx.get(svc.url + "/api/jobs").json()
            done = [j for j in jobs if j["kind"] == "maintain" and j["state"] == "done"]
            if len(done) >= 2:
                break
            assert time.monotonic() < end, jobs
            time.sleep(0.2)
        status = httpx.get(svc.url + "/api/status").json()
    finally:
        svc.stop()
    first, second = sorted(done, key=lambda j: j["id"])[:2]
    assert all(j["submitted_by"] == "scheduler" for j in done)
    assert first["result"]["ok"] and second["result"]["ok"]
    assert second["result"]["lab_time"] >= 7200  # due again 7200 lab s after the first
    calibrated = [r for r in first["result"]["results"] if r["status"] == "calibrated"]
    assert calibrated  # the first upkeep calibrated the never-calibrated graph
    assert {r["status"] for r in second["result"]["results"]} <= {"fresh", "in_spec",
                                                                  "calibrated"}
    assert status["watchdog"]["state"] == "running"
    assert status["lab_time"] > 7200


def test_sigterm_stops_a_running_request_at_a_safe_point(tmp_path):
    keys = make_keys(tmp_path)
    svc = start(tmp_path, "--pace", "0", "--maintain-every", "0", keys=keys)
    try:
        with svc.client("operator") as c:
            long = c.post("/api/requests", json={"link": "ab", "pairs": 400_000}).json()
            end = time.monotonic() + 60
            while c.get(f"/api/jobs/{long['id']}").json()["state"] != "running":
                assert time.monotonic() < end
                time.sleep(0.05)
        time.sleep(0.5)
        t0 = time.monotonic()
        svc.stop()  # SIGTERM
        assert svc.proc.returncode == 0 and time.monotonic() - t0 < 60
    finally:
        svc.stop()
    log = (tmp_path / f"serve-{svc.port}.log").read_text()
    assert "stopped; the lab is in its safe state" in log and "Traceback" not in log
    svc = start(tmp_path, "--pace", "0", "--maintain-every", "0", keys=keys)
    try:
        job = svc.wait_job(long["id"])
        assert job["state"] == "interrupted" and "stopped while this job ran" in job["error"]
    finally:
        svc.stop()
    statuses = [r["status"] for r in list_runs(tmp_path) if r["name"] == "service.request"]
    assert statuses == ["interrupted"]
