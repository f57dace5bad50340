"""The ``qnetlab`` command line (click): demo, calibrate, entangle, status, runs, report.

Every failure (bad arguments, a missing or invalid station file, a driver or VISA backend that
cannot be imported, an unreachable instrument, an instrument error, an unusable data directory)
ends in one line ``qnetlab: error: ...`` on stderr and a non-zero exit code; ``--debug`` adds the
traceback. A command that ran but did not deliver what was asked (pairs, fidelity, witnessed
entanglement) prints a verdict line and exits 3 (docs/operations.md, "Verdicts and exit codes").
Arguments are checked before anything is sent to an instrument or recorded as a run.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import logging
import math
import os
import sqlite3
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from .datadir import data_dir as resolve_data_dir
from .dc_cli import request as request_command
from .service.cli import serve as serve_group
from .service.remote import RemoteAwareGroup, server_options
from .sim_cli import sim as sim_group
from .uncertain import plus_minus

DEMO_STATION = "sim_link"
RULE_MAX = 78
"""Widest rule under a table header (long last cells may run past it)."""
NOT_DELIVERED = 3
"""Exit code of a command that ran but did not deliver what was asked (pairs, fidelity,
witnessed entanglement); 1 is an error, 2 a usage error."""
QUIET_LOGGERS = ("qcodes", "pyvisa", "pyvisa_sim")
"""Libraries whose log records (tracebacks included) only ``--debug`` shows."""
MAX_TIME_S = (1e-6, 7 * 86400.0)
"""What the QNU's link layer accepts as a request's time limit."""


class NotDelivered(click.ClickException):
    """The command ran to the end but did not deliver what was requested."""

    exit_code = NOT_DELIVERED


class _LastLibraryError(logging.Handler):
    """Keeps the last error a quiet library logged (e.g. QCoDeS's "[qnu_bob(QnetlabQNU)] Could
    not connect at ...") so the one error line can say which instrument failed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage().splitlines()[0]


class Context:
    """The group options, shared by every command and read by :func:`run_cli` after an error."""

    def __init__(self) -> None:
        self.station = DEMO_STATION
        self.debug = False
        self.data_option: str | None = None
        self.profile: str | None = None  # --profile: the simulated labs' device profile
        self.cluster: str | None = None  # --cluster: site agents on this Ray cluster
        self._data: Path | None = None
        self.library_errors = _LastLibraryError()

    def configure(self, station: str, data: str | None, debug: bool) -> None:
        self.station, self.data_option, self.debug = station, data, debug
        for name in QUIET_LOGGERS:
            logger = logging.getLogger(name)
            for old in [h for h in logger.handlers if isinstance(h, _LastLibraryError)]:
                logger.removeHandler(old)  # an earlier run_cli in this process
            logger.addHandler(self.library_errors)
            logger.propagate = debug  # without --debug, no library traceback reaches stderr

    @property
    def data(self) -> Path:
        """The data directory, created if missing and checked to be writable."""
        if self._data is None:
            self._data = _writable_data_dir(self.data_option)
        return self._data


def _writable_data_dir(option: str | None) -> Path:
    shown = option or os.environ.get("QNETLAB_DATA") or "~/qnetlab-data"
    hint = "choose another with --data DIR or QNETLAB_DATA"
    try:
        path = resolve_data_dir(option)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise click.ClickException(f"data directory {shown} is not usable "
                                   f"({exc.strerror or exc}); {hint}") from None
    return path


pass_ctx = click.make_pass_decorator(Context, ensure=True)


@click.group(cls=RemoteAwareGroup, context_settings={"help_option_names": ["-h", "--help"]})
@server_options  # --server URL, --key-file: the commands on a service (qnetlab/service/remote.py)
@click.option("--station", default=DEMO_STATION, show_default=True,
              help="Station file: a bundled name (sim_node, sim_link, sim_chain), a path, or a "
                   "generated topology: chain:N, star:N, twosite[:N] (N 2..64).")
@click.option("--data", envvar="QNETLAB_DATA", default=None, metavar="DIR",
              help="Data directory (default $QNETLAB_DATA, else ~/qnetlab-data).")
@click.option("--debug", is_flag=True, envvar="QNETLAB_DEBUG",
              help="On an error, show the traceback and the libraries' log records.")
@click.option("--cluster", envvar="QNETLAB_CLUSTER", default=None, metavar="auto|ADDRESS",
              help="Run one agent per site as Ray actors on this Ray cluster (default: in "
                   "this process). The station's instruments must be reachable over TCP.")
@click.pass_context
def main(ctx: click.Context, station: str, data: str | None, debug: bool,
         cluster: str | None) -> None:
    """Operate a quantum-networking testbed (real or simulated).

    Exit codes: 0 done as asked, 1 error, 2 usage error, 3 ran but did not deliver (pairs,
    fidelity or witnessed entanglement short of what was asked)."""
    ctx.ensure_object(Context).configure(station, data, debug)
    ctx.obj.cluster = cluster


def _station_path(station: str) -> Path:
    """The station file, with every driver class and VISA backend it names importable.

    Checked before any instrument is touched, so a typo or a missing package is one line
    naming the entry, not a traceback from deep inside QCoDeS or pyvisa."""
    import yaml

    from qnetlab import stations

    path = stations.station_file(station)
    stations.read_topology(path)
    instruments = (yaml.safe_load(path.read_text()) or {}).get("instruments") or {}
    for name, spec in instruments.items():
        if isinstance(spec, dict):
            _check_driver(path, name, spec)
            _check_visalib(path, name, spec)
    return path


def _check_driver(path: Path, name: str, spec: dict[str, Any]) -> None:
    kind = str(spec.get("type", ""))
    module, _, cls = kind.rpartition(".")
    where = f"{path.name}: instruments.{name}.type {kind!r}"
    try:
        found = importlib.import_module(module) if module else None
    except ImportError as exc:
        raise click.ClickException(f"{where}: no module {module!r} ({exc})") from None
    if found is None or not hasattr(found, cls):
        raise click.ClickException(f"{where}: module {module!r} has no class {cls!r}")


def _check_visalib(path: Path, name: str, spec: dict[str, Any]) -> None:
    visalib = str((spec.get("init") or {}).get("visalib") or "")
    backend = visalib.rpartition("@")[2] if "@" in visalib else ""
    if backend in ("", "ivi") or importlib.util.find_spec(f"pyvisa_{backend}") is not None:
        return
    package = f"pyvisa-{backend}"
    raise click.ClickException(
        f"{path.name}: instruments.{name}.init.visalib {visalib!r} needs the pyvisa backend "
        f"{package}, which is not installed; install it with `{sys.executable} -m pip install "
        f"{package}`")


def _keep_profile(click_ctx: click.Context, _param: click.Parameter, value: str | None
                  ) -> str | None:
    if value is not None:
        click_ctx.ensure_object(Context).profile = value
    return value


def _profile_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--profile NAME``: the device profile the station's simulated labs run (checked by the
    lab: an unknown name is one error line listing the profiles)."""
    return click.option(
        "--profile", default=None, metavar="NAME", expose_value=False, callback=_keep_profile,
        is_eager=True, help="Device profile of the simulated lab: sota-2025 or target-2030 "
                            "(default: the lab file's, else target-2030).")(command)


def _use_profile(path: Path, profile: str | None) -> None:
    """Put every simulated lab of the station on ``profile`` before anything is brought up."""
    if profile is None:
        return
    import pyvisa
    import yaml

    raw = yaml.safe_load(path.read_text()) or {}
    labs = {str((spec.get("init") or {}).get("visalib") or "")
            for spec in (raw.get("instruments") or {}).values() if isinstance(spec, dict)}
    labs = {v for v in labs if v.endswith("@qnetlab")}
    if not labs:
        raise click.BadParameter(f"{profile!r} needs a simulated (@qnetlab) station; "
                                 f"{path.name} has none", param_hint="--profile")
    for visalib in sorted(labs):
        pyvisa.ResourceManager(visalib).visalib.use_profile(profile)


def _bring_up(ctx: Context, calibrated: bool = True) -> tuple[Any, Any]:
    """(agent bundle, calibration store or None): one agent per site of the station, in this
    process (the embedded default: nothing to start) or as Ray actors on ``--cluster``, the
    stored calibration put on the instruments if asked. The coordinator (calibration graph,
    link and network sequences) talks only to these agents."""
    from qnetlab.agents import load_agents, load_calibrated_agents, unowned_instruments

    path = _station_path(ctx.station)
    if ctx.cluster is None:
        _use_profile(path, ctx.profile)
        if unowned_instruments(path):  # e.g. a data center's switch: no agent owns it yet
            return _bring_up_station(ctx, path, calibrated)
    elif ctx.profile is not None:
        raise click.BadParameter("a device profile is for the in-process simulated lab; with "
                                 "--cluster give it to `qnetlab sim serve`", param_hint="--profile")
    try:
        if calibrated:
            return load_calibrated_agents(path, ctx.data, cluster=ctx.cluster)
        return load_agents(path, cluster=ctx.cluster), None
    except (ValueError, ConnectionError) as exc:
        if ctx.cluster is None:
            raise
        raise click.ClickException(str(exc)) from None


def _bring_up_station(ctx: Context, path: Path, calibrated: bool) -> tuple[Any, Any]:
    """(station bundle, calibration store or None): the plain station in this process, for a
    station with instruments that no site owns."""
    from qnetlab import stations
    from qnetlab.sequences.calibration import load_calibrated

    if calibrated:
        return load_calibrated(path, ctx.data)
    return stations.load(path), None


def _calibrate_on(bundle: Any) -> Callable[..., Any]:
    """The calibration entry for ``bundle``: on site agents it resumes after a restart."""
    from qnetlab.agents import AgentBundle, calibrate_resuming
    from qnetlab.sequences.calibration import calibrate

    return calibrate_resuming if isinstance(bundle, AgentBundle) else calibrate


class SignalStop(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every cleanup runs (the run store marks
    the runs open at the time ``interrupted``); exit status 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _SignalStopper:
    """The SIGTERM/SIGHUP handler: the first signal raises :class:`SignalStop` at once (like
    Ctrl-C); since a signal can land where an exception is swallowed (a ``__del__``, a
    callback), the stop stays pending and :meth:`check` raises it again at the sequences'
    next safe point (the watchdog's polls) in every thread but the one doing the cleanup
    (so concurrent calibration workers stop too, their runs marked interrupted). Later signals
    never raise: they must not cut short the cleanup that makes the lab safe."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.cleaner: int | None = None  # the thread making the lab safe

    @property
    def cleaning(self) -> bool:
        return self.cleaner is not None

    @cleaning.setter
    def cleaning(self, value: bool) -> None:
        self.cleaner = threading.get_ident() if value else None

    def __call__(self, signum: int, _frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            raise SignalStop(signum)

    def check(self) -> None:
        if self.signum is not None and self.cleaner != threading.get_ident():
            raise SignalStop(self.signum)


@contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the command like SIGINT, while the block runs."""
    import signal

    stopper, previous = _SignalStopper(), {}
    try:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, stopper)
    except ValueError:  # not the main thread: signals cannot be handled here
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _installed_stopper() -> _SignalStopper | None:
    """The stopper :func:`run_cli` installed for this process, if any."""
    import signal

    handler = signal.getsignal(signal.SIGTERM)
    return handler if isinstance(handler, _SignalStopper) else None


@contextmanager
def operating(bundle: Any, runs: Any, per_site: bool = False) -> Iterator[Any]:
    """Sequences run guarded: the safety watchdogs poll on the lab clock, and interruptions
    and instrument recoveries are written into the runs open at the time. If the sequence
    ends with any exception (Ctrl-C, SIGTERM, SIGHUP, a failure), every emitter and heater
    goes to its safe state; the read-back travels with the exception (``safe_state``) to the
    one line the CLI prints. The same on site agents (each site's own watchdog) as on a
    plain station (``per_site``: one watchdog per node, for sequences that operate several
    sites at once, so that a trip stops that site's work only; else one for the station)."""
    stopper = _installed_stopper()
    dogs, guard = _guard(bundle, runs, per_site)
    for dog in dogs:
        dog.stop_check = stopper.check if stopper is not None else None
    try:
        with bundle.recovery_listener(runs.log_event), guard as safe:
            yield safe
    except BaseException as exc:
        if stopper is not None:
            stopper.cleaning = True
        exc.safe_state = _make_safe(bundle)  # type: ignore[attr-defined]
        raise
    finally:
        for dog in dogs:  # agents' watchdogs outlive this block
            dog.stop_check = None


def _guard(bundle: Any, runs: Any, per_site: bool) -> tuple[list[Any], Any]:
    """(the watchdogs the sequence's waits poll, the guard giving the bundle it runs on):
    on agents their sites' own watchdogs (reporting through the agents' events), on a plain
    station new ones reporting into ``runs``."""
    from qnetlab.agents import AgentBundle
    from qnetlab.sequences import safety

    if isinstance(bundle, AgentBundle):
        return list({id(d): d for d in bundle.watchdogs().values()}.values()), bundle.guarded()
    if per_site:
        sites = safety.site_watchdogs(bundle, poll_s=5.0, on_event=runs.log_event)
        return list(sites.values()), safety.guarded_sites(bundle, sites)
    dog = safety.default_watchdog(bundle, poll_s=5.0, on_event=runs.log_event)
    return [dog], safety.guarded(bundle, dog)


def _make_safe(bundle: Any) -> dict[str, str]:
    """Every emitter and heater of the bundle safe (on agents all sites at once), read back
    by instrument."""
    from qnetlab.agents import AgentBundle
    from qnetlab.sequences import safety

    if isinstance(bundle, AgentBundle):
        return bundle.safe_state()
    return safety.station_safe_state(bundle)


def _bar(label: str, length: int) -> Any:
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)


def _calibrate(ctx: Context, targets: tuple[str, ...] = (), force: bool = False,
               serial: bool = False) -> tuple[Any, Any, Any]:
    from qnetlab.runstore import RunStore
    from qnetlab.sequences.calibration import CalibrationGraph, default_calibrations

    bundle, store = _bring_up(ctx)
    try:
        runs = RunStore(ctx.data)
        graph = CalibrationGraph(default_calibrations(), bundle.topology)
        total = len(graph.order(targets or None))
        with _bar("calibrating", total) as bar, operating(bundle, runs, not serial) as safe:
            report = _calibrate_on(bundle)(safe, targets=targets or None, force=force,
                                           data_dir=ctx.data, store=store, runs=runs,
                                           progress=lambda r: bar.update(1),
                                           workers=1 if serial else None)
    except BaseException:
        bundle.close()
        raise
    return bundle, store, report


def _first_link(station: str) -> str:
    """The station's first link, checked before anything is brought up."""
    from qnetlab import stations

    topology = stations.read_topology(stations.station_file(station))
    if not topology.links:
        raise click.ClickException(
            f"station {station} has no link (nodes: {', '.join(topology.nodes)}); the demo "
            "entangles the two ends of a link: use a station with one, e.g. --station sim_link")
    return next(iter(topology.links))


@main.command()
@click.option("--pairs", default=2000, show_default=True, type=click.IntRange(100, 100_000),
              help="Pairs for tomography and for CHSH.")
@click.option("--report/--no-report", default=True, help="Write the HTML report.")
@_profile_option
@pass_ctx
def demo(ctx: Context, pairs: int, report: bool) -> None:
    """Bring the simulated link up, calibrate it, generate and verify entanglement.

    Ends with a verdict for each claim: entanglement witnessed (F > 1/2) and Bell violation
    (|S| > 2), each with its significance; exit code 3 when entanglement was not witnessed."""
    from qnetlab.runstore import RunStore
    from qnetlab.sequences.entanglement import verify

    link = _first_link(ctx.station)
    bundle, store, cal = _calibrate(ctx)
    try:
        click.echo(cal.table())
        if not cal.ok:
            raise click.ClickException("calibration did not complete; see the table above")
        runs = RunStore(ctx.data)
        with _bar("entangling", 2) as bar, operating(bundle, runs) as safe:
            result = verify(safe, link, pairs=pairs, calibration=store.as_dict(), runs=runs)
            bar.update(2)
        verdicts = result.verdicts()
        rows = _summary_rows(store, result)
        rows += [("verdict", v.line()) for v in verdicts]
        click.echo(_text_table(rows, ("quantity", "value")))
        if report:
            path = _demo_report(ctx, store, bundle, cal, result, rows)
            click.echo(f"report: {path}")
    finally:
        bundle.close()
    if not verdicts[0].holds:
        raise NotDelivered(f"entanglement not witnessed on {link}: {verdicts[0].line()}")


SUMMARY_QUANTITIES = ("resonance_nm", "bias_ma", "swap_amplitude", "pump_power_dbm",
                      "pump_pulse_width_s", "alpha", "det1_delay_ps", "det2_delay_ps",
                      "phase_rad", "visibility", "link_fidelity")


def _summary_rows(store: Any, result: Any) -> list[tuple[str, str]]:
    rows = [(f"{quantity} [{target}]", plus_minus(rec.value, rec.uncertainty, rec.unit))
            for (quantity, target), rec in sorted(store.state().items())
            if quantity in SUMMARY_QUANTITIES]
    tomo, chsh = result.tomography, result.chsh
    rows += [("fidelity to the heralded Bell state", plus_minus(tomo.fidelity, tomo.fidelity_err)),
             ("CHSH |S|", plus_minus(abs(chsh.s), chsh.s_err)),
             ("herald rate", f"{result.tomography_run.rate_hz:.1f} /s"),
             ("pairs (tomography + CHSH)", f"{len(result.tomography_run)} + "
                                           f"{len(result.chsh_run)}")]
    return rows


def _text_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """Columns padded to their widest cell, the last one left free."""
    widths = [max(len(str(r[i])) for r in [*rows, header]) for i in range(len(header) - 1)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [f"{c:<{w}}" for c, w in zip(cells, widths, strict=False)]
        return "  ".join([*padded, str(cells[-1])]).rstrip()

    rule = "-" * min(sum(widths) + 2 * len(widths) + max(len(str(r[-1])) for r in [*rows, header]),
                     RULE_MAX)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _demo_report(ctx: Context, store: Any, bundle: Any, cal: Any, result: Any,
                 rows: list[tuple[str, str]]) -> Path:
    from qnetlab import report as reports
    from qnetlab.runread import load_run

    cal_rows = [(r.key, r.status, r.detail) for r in cal.results]
    figures = []
    for r in cal.results:
        for guid in r.runs:
            figures += reports.run_figures(load_run(guid, ctx.data))
    figures += reports.run_figures(load_run(result.tomography_run.run_guid, ctx.data))
    sections = [
        ("Summary", reports.table(rows, ("quantity", "value"))),
        ("Calibration", reports.table(cal_rows, ("node", "status", "detail"))),
        ("Figures", "".join(reports.image(p, p.stem) for p in figures)),
        _roadmap_section(bundle, store, result.tomography_run.link),
    ]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    return reports.write(ctx.data / "reports" / f"demo_{stamp}.html",
                         reports.page("qnetlab demo: a two-node link, calibrated and entangled",
                                      sections))


@main.command(name="calibrate")
@click.argument("targets", nargs=-1)
@click.option("--force", is_flag=True, help="Measure every node even if fresh.")
@click.option("--approve", "approve", type=int, multiple=True, metavar="RECORD",
              help="Approve a held update (and the others held with it), then stop.")
@click.option("--serial", is_flag=True,
              help="One step at a time, in graph order (default: independent targets at once).")
@_profile_option
@pass_ctx
def calibrate_cmd(ctx: Context, targets: tuple[str, ...], force: bool,
                  approve: tuple[int, ...], serial: bool) -> None:
    """Maintain the calibration graph (all targets, or TARGETS: nodes, links, cal:target)."""
    if approve:
        from qnetlab.runstore import RunStore
        from qnetlab.sequences.calibration import (
            CalContext,
            CalibrationGraph,
            Calibrator,
            default_calibrations,
        )

        bundle, store = _bring_up(ctx)
        try:
            graph = CalibrationGraph(default_calibrations(), bundle.topology)
            calibrator = Calibrator(graph, CalContext(bundle, RunStore(ctx.data), store))
            for record in approve:
                ids = calibrator.approve(record)
                click.echo(f"approved records {ids}")
        finally:
            bundle.close()
        return
    bundle, _, report = _calibrate(ctx, targets, force, serial)
    bundle.close()
    click.echo(report.table())
    _schedule_report(ctx, report)
    if not report.ok:
        failed = [r.key for r in report.results if r.status == "failed"]
        raise click.ClickException(f"calibration did not complete (failed: "
                                   f"{', '.join(failed) or 'see the table above'})")


def _schedule_report(ctx: Context, report: Any) -> None:
    """Write the calibration's page (outcomes, schedule, Gantt chart); print where."""
    import datetime as dt

    from qnetlab import report as reports

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    path = reports.calibration_report(
        report, ctx.data / "reports" / f"calibration_{stamp}.html")
    click.echo(f"calibration report (schedule, Gantt chart): {path}")


def _bases(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    """Basis tokens X, Y, Z or A<degrees>, checked before anything is sent or recorded."""
    tokens = tuple(b.strip().upper() for b in value.split(",") if b.strip())
    for token in tokens:
        if token in ("X", "Y", "Z"):
            continue
        try:
            angle = float(token[1:]) if token.startswith("A") else math.nan
        except ValueError:
            angle = math.nan
        if not math.isfinite(angle):
            raise click.BadParameter(f"{token!r} is not a basis; allowed: X, Y, Z or "
                                     "A<degrees> (e.g. A45), comma separated")
    if not tokens:
        raise click.BadParameter("no basis given; allowed: X, Y, Z or A<degrees>, comma separated")
    return tokens


def _finite(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number of seconds")
    return value


@main.command()
@click.option("--link", default=None, help="Link name (default: the station's first).")
@click.option("--pairs", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--protocol", type=click.Choice(["single_click", "two_photon"]), default=None,
              help="Default: as configured on the QNUs.")
@click.option("--bases", default="X,Y,Z", show_default=True, callback=_bases,
              help="Bases both ends pick from: X, Y, Z or A<deg>, comma separated.")
@click.option("--max-time", default=3600.0, show_default=True, callback=_finite,
              type=click.FloatRange(*MAX_TIME_S), help="Lab seconds the request may take.")
@click.option("--min-fidelity", default=0.5, show_default=True, type=click.FloatRange(0, 1),
              help="Fidelity the pairs must reach (needs bases X,Y,Z; 0: no requirement).")
@_profile_option
@click.pass_context
def entangle(click_ctx: click.Context, link: str | None, pairs: int, protocol: str | None,
             bases: tuple[str, ...], max_time: float, min_fidelity: float) -> None:
    """Generate heralded pairs on a link and report rate and fidelity.

    Ends with a verdict line; exit code 3 when fewer pairs than asked arrived or their
    fidelity is below --min-fidelity (or cannot be estimated)."""
    from qnetlab import stations
    from qnetlab.runstore import RunStore
    from qnetlab.sequences.entanglement import generate

    ctx = click_ctx.ensure_object(Context)
    measures_fidelity = {"X", "Y", "Z"} <= set(bases)
    if not measures_fidelity:
        if click_ctx.get_parameter_source("min_fidelity") != ParameterSource.DEFAULT \
                and min_fidelity > 0:
            raise click.BadParameter("needs --bases including X, Y and Z to measure a fidelity",
                                     param_hint="--min-fidelity")
        min_fidelity = 0.0
    topology = stations.read_topology(stations.station_file(ctx.station))
    link = link or next(iter(topology.links), None)
    if link not in topology.links:
        raise click.BadParameter(f"{link!r} is not a link of {ctx.station} "
                                 f"(links: {', '.join(topology.links) or 'none'})",
                                 param_hint="--link")
    bundle, store = _bring_up(ctx)
    try:
        runs = RunStore(ctx.data)
        with _bar("pairs", pairs) as bar, operating(bundle, runs) as safe:
            state = {"n": 0}

            def progress(got: int, _total: int) -> None:
                bar.update(got - state["n"])
                state["n"] = got

            gen = generate(safe, link, pairs, protocol=protocol, bases=bases,
                           max_time_s=max_time, runs=runs, progress=progress,
                           calibration=store.as_dict())
    finally:
        bundle.close()
    _entangle_verdict(gen, min_fidelity, measures_fidelity, max_time)


def _entangle_verdict(gen: Any, min_fidelity: float, measures_fidelity: bool,
                      max_time: float) -> None:
    """Print what a generation delivered and its verdict; NotDelivered when it fell short."""
    from qnetlab.sequences.entanglement.verification import (
        entanglement_verdict,
        fidelity_estimate,
    )

    click.echo(f"{len(gen)} of {gen.requested} pairs on {gen.link} ({gen.protocol}, request "
               f"{gen.state}) at {gen.rate_hz:.1f} heralds/s; run {gen.run_guid}")
    short = []
    if len(gen) < gen.requested:
        short.append(f"{len(gen)} of {gen.requested} pairs (request {gen.state} within "
                     f"--max-time {max_time:g} s)")
    if measures_fidelity:
        f, err, reason = fidelity_estimate(gen)
        click.echo("fidelity to the heralded Bell state: "
                   f"{plus_minus(f, err) if reason is None else reason}")
        if reason is None:
            click.echo(entanglement_verdict(f, err).line())
        if min_fidelity > 0 and reason is not None:
            short.append(f"fidelity not verified against the requested {min_fidelity:g}")
        elif min_fidelity > 0 and f < min_fidelity:
            short.append(f"F = {plus_minus(f, err)} below the requested {min_fidelity:g}")
    if short:
        click.echo(f"verdict: NOT DELIVERED: {'; '.join(short)}")
        raise NotDelivered(f"entangle did not deliver: {'; '.join(short)}")
    wanted = f", F >= {min_fidelity:g}" if min_fidelity > 0 else ""
    click.echo(f"verdict: delivered {len(gen)} of {gen.requested} pairs{wanted}")


@main.command()
@pass_ctx
def status(ctx: Context) -> None:
    """Instruments, interlocks, calibration state and staleness."""
    from qnetlab.sequences.calibration import CalibrationStore

    bundle, _ = _bring_up(ctx, calibrated=False)
    try:
        store = CalibrationStore(ctx.data)
        now = max(bundle.clock.now(), store.latest_time())
        click.echo(f"station {ctx.station}: {', '.join(bundle.topology.nodes)}; lab time "
                   f"{now:.0f} s")
        click.echo(_text_table(_instrument_rows(bundle), ("instrument", "vendor", "model",
                                                          "serial")))
        click.echo(_text_table(_node_rows(bundle), ("node", "MXC", "fridge interlock",
                                                    "pump output", "emitted")))
        click.echo(_text_table(_calibration_rows(bundle.topology, store, now),
                               ("calibration:target", "outcome", "age", "timeout", "state")))
    finally:
        bundle.close()


def _instrument_rows(bundle: Any) -> list[tuple[str, ...]]:
    rows = []
    for name, component in sorted(bundle.station.components.items()):
        idn = getattr(component, "IDN", None)
        if idn is not None and name != "network":
            who = idn.get()
            rows.append((name, str(who.get("vendor")), str(who.get("model")),
                         str(who.get("serial"))))
    return rows


def _node_rows(bundle: Any) -> list[tuple[str, ...]]:
    rows = []
    for node in bundle.topology.nodes:
        inst = bundle.node(node)
        rows.append((node, f"{inst['fridge'].mxc.temperature() * 1e3:.2f} mK",
                     str(inst["gas"].interlock_state()),
                     "on" if inst["pump"].output() else "off",
                     f"{inst['pump'].power_actual():.2f} dBm"))
    return rows


def _calibration_rows(topology: Any, store: Any, now: float) -> list[tuple[str, ...]]:
    """One row per calibration node; STALE unless the engine's rule says fresh
    (``CalibrationGraph.fresh``: recent, not failed or held, no dependency recalibrated since)."""
    from qnetlab.sequences.calibration import CalibrationGraph, default_calibrations

    graph = CalibrationGraph(default_calibrations(), topology)
    states = store.node_states()
    rows = []
    for key in graph.keys():
        st, cal = states.get(key), graph.calibrations[key[0]]
        name, timeout = f"{key[0]}:{key[1]}", f"{cal.timeout_s / 3600:g} h"
        if st is None or st.last_success is None:
            rows.append((name, st.last_outcome if st else "-", "never", timeout, "STALE"))
            continue
        rows.append((name, st.last_outcome, f"{(now - st.last_success) / 3600:.2f} h", timeout,
                     "fresh" if graph.fresh(key, states, now) else "STALE"))
    return rows


ROADMAP_HEADER = ("parameter", "rate, 2x better", "F change", "to F > 0.5", "to Bell F > 0.78")


def _link_point(bundle: Any, store: Any, link_name: str, noise_floor: float = 0.0) -> Any:
    """The calibrated link as the roadmap sees it (memory T2 read from the QNUs)."""
    from qnetlab.sequences import roadmap as rm

    link = bundle.topology.links[link_name]
    t2 = [bundle.node(n)["qnu"].qubit.t2() for n in link.nodes]
    return rm.calibrated_point(store.as_dict(), tuple(link.nodes), link.herald,
                               max(link.fiber_km), sum(t2) / len(t2), noise_floor)


def _roadmap_section(bundle: Any, store: Any, link_name: str) -> tuple[str, str]:
    """The demo report's "what would it take": each parameter 2x better alone."""
    import io

    from qnetlab import report as reports
    from qnetlab.sequences import roadmap as rm

    result = rm.roadmap(_link_point(bundle, store, link_name))
    png = io.BytesIO()
    rm.figure(result, f"link {link_name}: each parameter 2x better, alone").savefig(
        png, format="png", dpi=90)
    return ("What would it take", reports.table(rm.table(result), ROADMAP_HEADER)
            + reports.image(png.getvalue(), "roadmap"))


@main.command(name="roadmap")
@click.option("--factor", default=2.0, show_default=True, type=click.FloatRange(min=1.0),
              help="Improvement applied to each parameter alone.")
@click.option("--noise-floor", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Share of the added noise that is not pump heating (photons), if known.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the figure (PNG).")
@_profile_option
@pass_ctx
def roadmap_cmd(ctx: Context, factor: float, noise_floor: float, out: Path | None) -> None:
    """What would it take: the calibrated link's fidelity and rate against single-parameter
    improvements, and the least single improvements to F > 1/2 and to a Bell violation."""
    from qnetlab.sequences import roadmap as rm

    link_name = _first_link(ctx.station)
    bundle, store, report = _calibrate(ctx)
    try:
        if not report.ok:
            click.echo(report.table())
            raise click.ClickException("calibration did not complete; see the table above")
        point = _link_point(bundle, store, link_name, noise_floor)
    finally:
        bundle.close()
    result = rm.roadmap(point, factor)
    rate, fid = result["now"]
    best, alpha, best_rate = result["best"]
    where = f"{ctx.station} link {link_name} as calibrated"
    click.echo(f"{where}: {rate:.3g} heralds/s at F = {fid:.3f} (alpha {point.alpha:.3f}); "
               f"best F = {best:.3f} at alpha {alpha:.3f} ({best_rate:.3g} /s)")
    click.echo(_text_table(rm.table(result), ("parameter", f"rate, {factor:g}x better",
                                              "F change", "to F > 0.5", "to Bell F > 0.78")))
    if out is not None:
        rm.figure(result, where).savefig(out, dpi=100)
        click.echo(f"figure: {out}")


@main.command()
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--clean-dead", is_flag=True,
              help="Finalise runs whose process died on this host: mark them dead and turn "
                   "their live files (.h5.live) into ordinary .h5 files.")
@pass_ctx
def runs(ctx: Context, limit: int, clean_dead: bool) -> None:
    """List the runs in the data directory, newest first (``dead``: its process died; any
    command that records runs finalises such runs, ``--clean-dead`` does only that)."""
    from qnetlab.runread import list_runs

    if clean_dead:
        from qnetlab.runstore import clean_dead_runs

        marked = clean_dead_runs(ctx.data)
        for r in marked:
            click.echo(f"marked run {r['run_id']} ({r['name']}, pid {r['pid']} on "
                       f"{r['host'] or '?'}) {r['status']}")
        click.echo(f"{len(marked)} dead run(s) cleaned up in {ctx.data}")
        return
    rows = list_runs(ctx.data)[:limit]
    if not rows:
        click.echo(f"no runs in {ctx.data}")
        return
    click.echo(f"{'id':>5}  {'status':<11} {'started (UTC)':<20} {'name':<34} guid")
    for r in rows:
        click.echo(f"{r['run_id']:>5}  {r['status']:<11} {r['started']:<20} {r['name']:<34} "
                   f"{r['guid']}")


@main.command()
@click.argument("run", required=False)
@click.option("--dashboard", is_flag=True, help="Write the calibration dashboard instead.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@pass_ctx
def report(ctx: Context, run: str | None, dashboard: bool, out: Path | None) -> None:
    """Write a self-contained HTML report for RUN (id, GUID or .h5 path) or the dashboard."""
    from qnetlab import report as reports

    if dashboard:
        from qnetlab import stations
        from qnetlab.sequences.calibration import (
            CalibrationGraph,
            CalibrationStore,
            default_calibrations,
        )

        store = CalibrationStore(ctx.data)
        topo = stations.read_topology(stations.station_file(ctx.station))
        graph = CalibrationGraph(default_calibrations(), topo)
        path = reports.dashboard(store, graph, store.latest_time(),
                                 out or ctx.data / "reports" / "dashboard.html")
    elif run is None:
        raise click.UsageError("give a RUN (id, GUID or .h5 path) or --dashboard")
    else:
        path = reports.run_report(_find_run(run, ctx.data), ctx.data, out)
    click.echo(str(path))


def _find_run(run: str, data: Path) -> Any:
    """The run RUN names (id, GUID or .h5 path), or one line saying there is none."""
    from qnetlab.runread import load_run

    ref: Any = Path(run) if run.endswith(".h5") else run
    try:
        return load_run(ref, data)
    except (ValueError, NameError, FileNotFoundError) as exc:
        raise click.ClickException(f"no run {run!r} in {data}: {_one_line(exc)} "
                                   "(`qnetlab runs` lists the runs)") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


main.add_command(sim_group)  # `qnetlab sim serve` (qnetlab/sim_cli.py)
main.add_command(request_command)  # `qnetlab request` (qnetlab/dc_cli.py)
main.add_command(serve_group)  # `qnetlab serve`, `qnetlab serve keys ...` (service/cli.py)


def run_cli(argv: list[str] | None = None,
            entry: Callable[..., Any] = main) -> int:
    """Entry point: click in non-standalone mode, every error one line on stderr.

    With ``--debug`` the traceback is printed before that line. SIGTERM and SIGHUP stop a
    command like Ctrl-C: the instruments go to their safe state and open runs are marked
    interrupted."""
    state = Context()
    _no_library_tracebacks()
    try:
        with _signals_stop():
            entry.main(args=argv, prog_name="qnetlab", standalone_mode=False, obj=state)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort as exc:
        return _stopped(exc.__cause__)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
        return 0
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:
        line, code = _error_line(exc, state)
        if state.debug:
            traceback.print_exception(exc)
        click.echo(f"qnetlab: error{line}", err=True)
        return code
    return 0


def _error_line(exc: Exception, state: Context) -> tuple[str, int]:
    """(the error line after ``qnetlab: error``, exit code) for any exception."""
    import pyvisa

    if isinstance(exc, click.UsageError):
        where = f" ({exc.ctx.command_path})" if exc.ctx else ""
        return f"{where}: {' '.join(exc.format_message().split())}", 2
    if isinstance(exc, click.ClickException):
        return f": {' '.join(exc.format_message().split())}", exc.exit_code
    if isinstance(exc, sqlite3.Error):
        where = state._data or state.data_option or "the data directory"
        return f": database in {where}: {type(exc).__name__}: {_one_line(exc)}", 1
    if isinstance(exc, pyvisa.Error) and state.library_errors.last:
        return f": {state.library_errors.last}: {_one_line(exc)}", 1
    return f": {type(exc).__name__}: {_one_line(exc)}", 1


def _no_library_tracebacks() -> None:
    """QCoDeS logs a traceback when a measurement ends with an exception (also an interrupt);
    it is kept in the run's own metadata, so the terminal shows only the one line."""
    import logging

    logger = logging.getLogger("qcodes.dataset.measurements")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _stopped(cause: BaseException | None) -> int:
    """The one line for an interrupted command, with the lab's safe state as read back."""
    import signal

    signum = cause.signum if isinstance(cause, SignalStop) else signal.SIGINT
    states = getattr(cause, "safe_state", None)
    safe = ("; safe state: " + "; ".join(f"{k}: {v}" for k, v in sorted(states.items()))
            if states else "")
    click.echo(f"qnetlab: aborted by {signal.Signals(signum).name}; open runs marked "
               f"interrupted{safe}", err=True)
    return 128 + signum


def entry_point() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(run_cli())


if __name__ == "__main__":
    entry_point()
