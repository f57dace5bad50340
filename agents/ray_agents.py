"""Site agents as Ray actors: one named actor per site, on the machine that owns the site.

Each site's :class:`~qnetlab.agents.site.SiteAgent` runs in an actor named
``qnetlab-site-<site>`` (namespace ``qnetlab``), placed by the custom resource ``site:<site>``
that the site's machine declares (``ray start --address HEAD --resources '{"site:alice": 1}'``).
The actor is restarted when its process dies (``max_restarts``) but no call is ever retried
(``max_task_retries=0``: a command to hardware that may have acted must not run twice). The
restarted actor's constructor reconnects to the instruments, puts the site in its safe state
and says so (``status()["restarted"]``); the coordinator sees the death as
:class:`~qnetlab.agents.proxy.SiteRestarted` from the call in flight and
:func:`~qnetlab.agents.resume.calibrate_resuming` resumes from the calibration store.

The station file travels to each actor as text, so site machines need no shared disk; its
instruments must be reachable over the network from the site's machine (a hardware station, or
the station of a served lab, ``qnetlab sim serve LAB --station-out F``), never the in-process
simulator. Authentication is Ray's own (token authentication is on by default for clusters
started by Ray >= 2.59; it is never turned off here).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import tempfile
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

from qnetlab.clock import Clock, WallClock
from qnetlab.stations import Topology
from qnetlab.stations.loader import served_clock

from .proxy import AgentBundle
from .site import Reply, SiteAgent, SiteRestarted
from .sites import Site, sites_of

NAMESPACE = "qnetlab"
ACTOR_PREFIX = "qnetlab-site-"
ACTOR_CONCURRENCY = 4  # a safe-state or status call gets through while a long call runs
IN_PROCESS_LIBRARIES = ("@qnetlab", "@sim")
DEAD = (RayActorError, ActorUnavailableError)


def actor_name(site: str) -> str:
    return f"{ACTOR_PREFIX}{site}"


def _picklable(reply: Reply) -> Reply:
    """The reply with its exception as is when it survives pickling, else the same words in
    a RuntimeError naming the original type (the coordinator must see the instrument's words)."""
    if reply.error is not None:
        try:
            pickle.loads(pickle.dumps(reply.error))
        except Exception:
            reply.error = RuntimeError(f"{type(reply.error).__name__}: {reply.error}")
        reply.error.__traceback__ = None
    return reply


@ray.remote
class SiteActor:
    """A :class:`SiteAgent` in a Ray actor (see the module docstring)."""

    def __init__(self, station_text: str, station_name: str, site: str, watchdog: bool,
                 poll_s: float) -> None:
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self.folder = Path(tempfile.mkdtemp(prefix=f"qnetlab-site-{site}-"))
        path = self.folder / station_name
        path.write_text(station_text)
        self.agent = SiteAgent(path, site, watchdog=watchdog, restarted=restarted,
                               poll_s=poll_s)

    def pid(self) -> int:
        return os.getpid()

    def call(self, parts: tuple[str, ...], attr: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Reply:
        return _picklable(self.agent.call(parts, attr, args, kwargs))

    def acknowledge(self) -> dict[str, Any]:
        return self.agent.acknowledge()

    def describe(self) -> dict[str, Any]:
        return self.agent.describe()

    def snapshot(self, names: list[str] | None = None) -> dict[str, Any]:
        return self.agent.snapshot(names)

    def safe_state(self) -> dict[str, str]:
        return self.agent.safe_state()

    def status(self) -> dict[str, Any]:
        return self.agent.status()

    def close(self) -> None:
        try:
            self.agent.close()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _check_reachable(path: Path) -> None:
    """A cluster needs instruments reachable over the network: refuse the in-process
    simulator in one line."""
    raw = yaml.safe_load(path.read_text()) or {}
    for name, spec in (raw.get("instruments") or {}).items():
        visalib = str(((spec or {}).get("init") or {}).get("visalib", ""))
        if visalib.endswith(IN_PROCESS_LIBRARIES):
            raise ValueError(
                f"--cluster: {path.name}: instrument {name} uses visalib={visalib!r}, a lab "
                "simulated inside one process; on a cluster each site reaches its instruments "
                "over the network: serve the lab (qnetlab sim serve LAB --station-out F) and "
                "use F, or use a hardware station file")


def _check_resources(sites: dict[str, Site]) -> None:
    resources = ray.cluster_resources()
    missing = [s for s in sites if resources.get(f"site:{s}", 0) < 1]
    if missing:
        raise ValueError(
            "--cluster: no Ray node declares " + ", ".join(f"site:{s}" for s in missing)
            + "; on each site's machine run: ray start --address HEAD --resources "
            + "'{\"site:" + missing[0] + "\": 1}'")


class RayAgents:
    """The transport of an :class:`AgentBundle` whose agents are Ray actors."""

    def __init__(self, path: Path, topology: Topology, *, watchdog: bool = True,
                 max_restarts: int = 4, poll_s: float = 5.0, start_timeout_s: float = 120.0
                 ) -> None:
        self.path = path
        self.sites: dict[str, Site] = sites_of(topology)
        _check_reachable(path)
        _check_resources(self.sites)
        self._deaths: list[str] = []
        self._down: set[str] = set()  # died, restart not yet acknowledged: calls not sent
        self._lock = threading.Lock()
        text = path.read_text()
        self.actors = {
            s: SiteActor.options(  # type: ignore[attr-defined]
                name=actor_name(s), namespace=NAMESPACE, resources={f"site:{s}": 1},
                num_cpus=0, max_restarts=max_restarts, max_task_retries=0,
                max_concurrency=ACTOR_CONCURRENCY).remote(text, path.name, s, watchdog, poll_s)
            for s in self.sites}
        try:
            self._gather("status", timeout=start_timeout_s)
        except BaseException:
            self.close()
            raise

    def _gather(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """``method`` on every actor at once; a site whose agent cannot start or answer is a
        one-line error naming it."""
        refs = {s: getattr(a, method).remote() for s, a in self.actors.items()}
        out = {}
        for site, ref in refs.items():
            try:
                out[site] = ray.get(ref, timeout=timeout)
            except (*DEAD, GetTimeoutError) as exc:
                cause = " ".join(str(exc).split())[:300]
                raise ConnectionError(f"site {site}: its agent did not answer {method} "
                                      f"({type(exc).__name__}: {cause})") from None
        return out

    def call(self, site: str, parts: tuple[str, ...], attr: str, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Reply:
        if site in self._down:
            raise SiteRestarted(f"site {site}: its agent restarted; calls wait until the "
                                f"coordinator resumes (not sent: {'.'.join(parts)}.{attr})")
        try:
            reply: Reply = ray.get(self.actors[site].call.remote(parts, attr, args, kwargs))
        except DEAD:
            self._died(site)
            raise SiteRestarted(
                f"site {site}: its agent died during {'.'.join(parts)}.{attr} (not retried: "
                "it may have acted); it restarts and puts the site in its safe state") from None
        if isinstance(reply.error, SiteRestarted):  # it died between calls: refused, not run
            self._died(site)
        return reply

    def _died(self, site: str) -> None:
        with self._lock:
            if site not in self._down:
                self._deaths.append(site)
            self._down.add(site)

    def describe(self) -> dict[str, dict[str, Any]]:
        return self._gather("describe")

    def snapshots(self, names: Collection[str] | None = None) -> dict[str, Any]:
        """The instruments' snapshots (those in ``names`` if given) for a run's metadata; a
        site whose agent is down or restarting says so instead (a run on the other sites goes
        on)."""
        wanted = {s: [n for n in site.instruments if names is None or n in names]
                  for s, site in self.sites.items() if s in self.actors}
        wanted = {s: insts for s, insts in wanted.items() if insts}
        asked = None if names is None else sorted(names)
        up = {s: self.actors[s].snapshot.remote(asked) for s in wanted if s not in self._down}
        out: dict[str, Any] = {}
        for site, instruments in wanted.items():
            try:
                if site not in up:
                    raise SiteRestarted(f"site {site}: agent restarting")
                out.update(ray.get(up[site], timeout=60))
            except (*DEAD, GetTimeoutError, SiteRestarted) as exc:
                if not isinstance(exc, (SiteRestarted, GetTimeoutError)):
                    self._died(site)
                out.update({n: {"unavailable": f"site {site}: {type(exc).__name__}"}
                            for n in instruments})
        return out

    def safe_state(self) -> dict[str, dict[str, str]]:
        """Every site safe at once; a site whose agent cannot be reached says so (a restarting
        agent makes its site safe itself)."""
        refs = {s: a.safe_state.remote() for s, a in self.actors.items()}
        out: dict[str, dict[str, str]] = {}
        for site, ref in refs.items():
            try:
                out[site] = ray.get(ref, timeout=60)
            except (*DEAD, GetTimeoutError) as exc:
                out[site] = {f"site {site}": f"NOT SAFE: agent unreachable "
                                             f"({type(exc).__name__})"}
        return out

    def status(self) -> dict[str, dict[str, Any]]:
        return self._gather("status")

    def pids(self) -> dict[str, int]:
        """Each site's actor process id (tests kill one to see it restarted)."""
        return self._gather("pid")

    def watchdogs(self) -> dict[str, Any]:
        """None reachable here: each actor's watchdog guards its site's calls on its machine."""
        return {}

    def take_events(self) -> list[dict[str, Any]]:
        """None pending here: an actor's events travel with its replies."""
        return []

    def take_deaths(self) -> list[str]:
        with self._lock:
            died, self._deaths = self._deaths, []
        return died

    def wait_ready(self, site: str, timeout_s: float) -> dict[str, Any]:
        """The site's status once its restarted agent answers, acknowledging the restart (its
        calls are served again); ConnectionError after ``timeout_s`` wall seconds (an actor
        restart takes wall time, not lab time)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = ray.get(self.actors[site].acknowledge.remote(),
                                 timeout=max(0.1, deadline - time.monotonic()))
                with self._lock:
                    self._down.discard(site)
                return status
            except (*DEAD, GetTimeoutError) as exc:
                if time.monotonic() >= deadline:
                    raise ConnectionError(f"site {site}: its agent did not come back within "
                                          f"{timeout_s:g} s ({type(exc).__name__})") from None
                time.sleep(0.2)  # waiting for Ray to restart a process, in wall time

    def close(self) -> None:
        """Close every agent's instruments, then end the actors (no restart)."""
        refs = [a.close.remote() for a in self.actors.values()]
        for ref in refs:
            with contextlib.suppress(*DEAD, GetTimeoutError):
                ray.get(ref, timeout=30)
        for actor in self.actors.values():
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        self.actors = {}


def coordinator_clock(path: Path) -> Clock:
    """The coordinator's lab clock: the served lab's time when the station names one, else
    real time (hardware)."""
    _, served = served_clock(path)
    return served if served is not None else WallClock()


def ray_bundle(path: Path, topology: Topology, cluster: str, *, watchdog: bool = True,
               **options: Any) -> AgentBundle:
    """An :class:`AgentBundle` on Ray actors. Connects to ``cluster`` (``"auto"`` or an
    address) unless this process is connected already (a test's local instance)."""
    _check_reachable(path)
    if not ray.is_initialized():
        ray.init(address=cluster, namespace=NAMESPACE, log_to_driver=False)
    transport = RayAgents(path, topology, watchdog=watchdog, **options)
    return AgentBundle(transport, topology, coordinator_clock(path), path)
