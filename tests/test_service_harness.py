"""Starting `qnetlab serve` for the tests: a real uvicorn subprocess on a free loopback port,
its own tmp_path data directory, keys of every role made beforehand in the same store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from qnetlab.service.store import ServiceStore

ROLES = ("observer", "operator", "expert", "admin")
READY_TIMEOUT_S = 180.0  # generous: the machine may be shared and busy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_keys(data: Path) -> dict[str, str]:
    """A token per role, plus an expired, a revoked, a second operator and a wrong one."""
    store = ServiceStore(data)
    tokens = {role: store.create_key(f"test-{role}", role, 3600.0, "tests")[1] for role in ROLES}
    tokens["operator2"] = store.create_key("test-operator2", "operator", 3600.0, "tests")[1]
    tokens["expired"] = store.create_key("test-expired", "admin", 1e-3, "tests")[1]
    row, tokens["revoked"] = store.create_key("test-revoked", "admin", 3600.0, "tests")
    store.revoke_key(row["id"])
    admin_id = tokens["admin"].split("_")[1]
    tokens["wrong"] = f"qnl_{admin_id}_{'A' * 43}"  # the admin's id with a wrong secret
    time.sleep(0.01)
    return tokens


@dataclass
class Served:
    """A running service: its URL, process, data directory and keys."""

    data: Path
    port: int
    proc: subprocess.Popen
    keys: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def client(self, who: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60.0, **kwargs)

    def wait_job(self, job_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
        end = time.monotonic() + timeout_s
        with self.client("admin") as c:
            while True:
                job = c.get(f"/api/jobs/{job_id}").json()
                if job["state"] not in ("queued", "running") or time.monotonic() > end:
                    return job
                time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        os.killpg(self.proc.pid, sig)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


def start(data: Path, *args: str, keys: dict[str, str] | None = None, port: int | None = None,
          scheme: str = "http", verify: Any = None, ready: bool = True) -> Served:
    """Start `qnetlab --data DATA serve --port P ARGS` and wait until its lab is up."""
    port = port or free_port()
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    with open(data / f"serve-{port}.log", "ab") as log:  # the child keeps its own copy
        proc = subprocess.Popen(
            [sys.executable, "-m", "qnetlab", "--data", str(data), "serve", "--port",
             str(port), *args], stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    served = Served(data, port, proc, keys or {}, args, scheme)
    if ready:
        try:
            wait_ready(served, verify)
        except BaseException:
            served.stop()
            raise
    return served


def wait_ready(served: Served, verify: Any = None) -> dict[str, Any]:
    end = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < end:
        if served.proc.poll() is not None:
            raise AssertionError(f"service exited {served.proc.returncode}: {log_of(served)}")
        try:
            context = verify.context() if verify is not None else True
            status = httpx.get(served.url + "/api/status", timeout=5.0, verify=context).json()
            if status.get("state") == "ready":
                return status
        except (httpx.HTTPError, OSError):  # not listening yet, or no certificate yet
            pass
        time.sleep(0.2)
    raise AssertionError(f"service not ready in {READY_TIMEOUT_S} s: {log_of(served)}")


def log_of(served: Served) -> str:
    return (served.data / f"serve-{served.port}.log").read_text(errors="replace")[-3000:]


def qnetlab(*args: str, env: dict[str, str] | None = None, timeout: float = 120.0
            ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qnetlab", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "MPLBACKEND": "Agg", **(env or {})})
