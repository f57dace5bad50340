"""Runs the queued jobs: one at a time per resource, each resource on a thread of its own.

The lab thread owns the station (``Lab.resource``): it brings the lab up, takes the oldest
queued job of that resource, runs it, and while idle lets lab time pass (``Lab.tick``) and
queues calibration upkeep when the lab-clock schedule says it is due. Reports touch no
instrument and run on their own thread (resource ``reports``). A job's outcome is written to
the store before the next one is taken; a job cut off by the process's death stays
``running`` in the store until the next start marks it ``interrupted``.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .lab import Lab, ServiceStopping
from .store import ServiceStore

REPORTS = "reports"


class Executor:
    """The lab thread and the reports thread of one service."""

    def __init__(self, store: ServiceStore, lab: Lab, data_dir: Path, *,
                 tick_s: float = 1.0) -> None:
        self.store = store
        self.lab = lab
        self.data_dir = Path(data_dir)
        self.tick_s = tick_s
        self.stopping = threading.Event()
        self.wakes = {lab.resource: threading.Event(), REPORTS: threading.Event()}
        self.done = threading.Condition()
        self.startup_error: str | None = None
        self.threads: list[threading.Thread] = []
        self.changes = 0  # bumped whenever this process queues, takes or finishes a job

    def start(self) -> list[dict[str, Any]]:
        """Mark jobs the last process left running ``interrupted``; start the threads.
        Returns the interrupted jobs."""
        interrupted = self.store.mark_interrupted()
        for target, name in ((self._lab_loop, "qnetlab-lab"), (self._report_loop,
                                                                "qnetlab-reports")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)
        return interrupted

    def changed(self) -> None:
        self.changes += 1

    def wake(self, resource: str) -> None:
        event = self.wakes.get(resource)
        if event is not None:
            event.set()

    def stop(self, timeout_s: float = 120.0) -> None:
        """Finish the job in hand, then stop (the lab goes to its safe state)."""
        self.stopping.set()
        self.lab.stopping.set()  # the running sequence stops at its next safe point
        for event in self.wakes.values():
            event.set()
        for thread in self.threads:
            thread.join(timeout_s)

    def wait(self, job_id: int, timeout_s: float) -> dict[str, Any]:
        """The job once it has finished, or as it is after ``timeout_s``."""
        end = time.monotonic() + timeout_s
        with self.done:
            while True:
                job = self.store.job(job_id)
                left = end - time.monotonic()
                if job["state"] not in ("queued", "running") or left <= 0:
                    return job
                self.done.wait(min(left, 0.5))

    def _lab_loop(self) -> None:
        try:
            self.lab.start()
        except Exception as exc:
            self.startup_error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            traceback.print_exc()
            return
        try:
            last = time.monotonic()
            while not self.stopping.is_set():
                if self._run_next(self.lab.resource, self.lab.run):
                    last = time.monotonic()
                    continue
                now = time.monotonic()
                self.lab.tick(now - last)
                last = now
                if self.lab.maintenance_due():
                    self.store.submit("maintain", self.lab.resource, {}, "scheduler")
                    continue
                self._idle(self.lab.resource)
        except ServiceStopping:
            pass  # stopped between jobs (at the watchdog's poll)
        finally:
            self.lab.close()

    def _report_loop(self) -> None:
        from .reports import make_report

        while not self.stopping.is_set():
            if not self._run_next(REPORTS, lambda _kind, params: make_report(self.data_dir,
                                                                             **params)):
                self._idle(REPORTS)

    def _idle(self, resource: str) -> None:
        event = self.wakes[resource]
        event.wait(self.tick_s)
        event.clear()

    def _run_next(self, resource: str,
                  runner: Callable[[str, dict[str, Any]], dict[str, Any]]) -> bool:
        job = self.store.claim_next(resource)
        if job is None:
            return False
        self.changed()
        try:
            result = runner(job["kind"], job["params"])
        except ServiceStopping as exc:
            self.store.finish(job["id"], "interrupted", error=str(exc))
        except Exception as exc:
            self.store.finish(job["id"], "failed",
                              error=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        else:
            self.store.finish(job["id"], "done", result=result)
        self.changed()
        with self.done:
            self.done.notify_all()
        return True
