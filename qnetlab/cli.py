"""The ``qnetlab`` command line (click): demo, calibrate, entangle, status, runs, report.

Every failure a user can cause (bad arguments, a missing or invalid station file, an unreachable
instrument, an instrument error) ends in one line ``qnetlab: error: ...`` on stderr and a non-zero
exit code, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from .datadir import data_dir as resolve_data_dir

DEMO_STATION = "sim_link"


class Context:
    def __init__(self, station: str, data: str | None) -> None:
        self.station = station
        self.data = resolve_data_dir(data)


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--station", default=DEMO_STATION, show_default=True,
              help="Station file: a bundled name (sim_node, sim_link, sim_chain) or a path.")
@click.option("--data", envvar="QNETLAB_DATA", default=None, metavar="DIR",
              help="Data directory (default $QNETLAB_DATA, else ~/qnetlab-data).")
@click.pass_context
def main(ctx: click.Context, station: str, data: str | None) -> None:
    """Operate a quantum-networking testbed (real or simulated)."""
    ctx.obj = Context(station, data)


@contextmanager
def operating(bundle: Any, runs: Any) -> Iterator[Any]:
    """Sequences run guarded: the safety watchdog polls on the lab clock, and interruptions
    and instrument recoveries are written into the runs open at the time."""
    from qnetlab.drivers.base import RECOVERY_LISTENERS
    from qnetlab.sequences.safety import default_watchdog, guarded

    watchdog = default_watchdog(bundle, poll_s=5.0, on_event=runs.log_event)
    RECOVERY_LISTENERS.append(runs.log_event)
    try:
        with guarded(bundle, watchdog) as safe:
            yield safe
    finally:
        RECOVERY_LISTENERS.remove(runs.log_event)


def _bar(label: str, length: int) -> Any:
    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True)


def _calibrate(station: str, data: Path, targets: tuple[str, ...] = (), force: bool = False
               ) -> tuple[Any, Any, Any]:
    from qnetlab.runstore import RunStore
    from qnetlab.sequences.calibration import (
        CalibrationGraph,
        calibrate,
        default_calibrations,
        load_calibrated,
    )

    bundle, store = load_calibrated(station, data)
    runs = RunStore(data)
    graph = CalibrationGraph(default_calibrations(), bundle.topology)
    total = len(graph.order(targets or None))
    with _bar("calibrating", total) as bar, operating(bundle, runs) as safe:
        report = calibrate(safe, targets=targets or None, force=force, data_dir=data,
                           store=store, runs=runs, progress=lambda r: bar.update(1))
    return bundle, store, report


@main.command()
@click.option("--pairs", default=2000, show_default=True, type=click.IntRange(100, 100_000),
              help="Pairs for tomography and for CHSH.")
@click.option("--report/--no-report", default=True, help="Write the HTML report.")
@pass_ctx
def demo(ctx: Context, pairs: int, report: bool) -> None:
    """Bring the simulated link up, calibrate it, generate and verify entanglement."""
    from qnetlab.sequences.entanglement import verify

    bundle, store, cal = _calibrate(ctx.station, ctx.data)
    try:
        click.echo(cal.table())
        if not cal.ok:
            raise click.ClickException("calibration did not complete; see the table above")
        from qnetlab.runstore import RunStore

        link = next(iter(bundle.topology.links))
        runs = RunStore(ctx.data)
        with _bar("entangling", 2) as bar, operating(bundle, runs) as safe:
            result = verify(safe, link, pairs=pairs, calibration=store.as_dict(), runs=runs)
            bar.update(2)
        rows = _summary_rows(store, result)
        click.echo(_text_table(rows, ("quantity", "value")))
        if report:
            path = _demo_report(ctx, store, bundle, cal, result, rows)
            click.echo(f"report: {path}")
    finally:
        bundle.close()


def _summary_rows(store: Any, result: Any) -> list[tuple[str, str]]:
    rows = []
    for (quantity, target), rec in sorted(store.state().items()):
        if quantity in ("resonance_nm", "bias_ma", "swap_amplitude", "pump_power_dbm",
                        "pump_pulse_width_s", "alpha", "det1_delay_ps", "det2_delay_ps",
                        "phase_rad", "visibility", "link_fidelity"):
            err = f" +- {rec.uncertainty:.2g}" if rec.uncertainty else ""
            rows.append((f"{quantity} [{target}]", f"{rec.value:.9g}{err} {rec.unit}".strip()))
    tomo, chsh = result.tomography, result.chsh
    rows += [("fidelity to the heralded Bell state", f"{tomo.fidelity:.3f} +- "
                                                     f"{tomo.fidelity_err:.3f}"),
             ("CHSH |S|", f"{abs(chsh.s):.3f} +- {chsh.s_err:.3f}"),
             ("herald rate", f"{result.tomography_run.rate_hz:.1f} /s"),
             ("pairs (tomography + CHSH)", f"{len(result.tomography_run)} + "
                                           f"{len(result.chsh_run)}")]
    return rows


def _text_table(rows: list[tuple[str, str]], header: tuple[str, str]) -> str:
    width = max(len(r[0]) for r in [*rows, header])
    lines = [f"{header[0]:<{width}}  {header[1]}", "-" * (width + 30)]
    lines += [f"{a:<{width}}  {b}" for a, b in rows]
    return "\n".join(lines)


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
@pass_ctx
def calibrate_cmd(ctx: Context, targets: tuple[str, ...], force: bool,
                  approve: tuple[int, ...]) -> None:
    """Maintain the calibration graph (all targets, or TARGETS: nodes, links, cal:target)."""
    if approve:
        from qnetlab.runstore import RunStore
        from qnetlab.sequences.calibration import (
            CalContext,
            CalibrationGraph,
            Calibrator,
            default_calibrations,
            load_calibrated,
        )

        bundle, store = load_calibrated(ctx.station, ctx.data)
        try:
            graph = CalibrationGraph(default_calibrations(), bundle.topology)
            calibrator = Calibrator(graph, CalContext(bundle, RunStore(ctx.data), store))
            for record in approve:
                ids = calibrator.approve(record)
                click.echo(f"approved records {ids}")
        finally:
            bundle.close()
        return
    bundle, _, report = _calibrate(ctx.station, ctx.data, targets, force)
    bundle.close()
    click.echo(report.table())
    if not report.ok:
        sys.exit(1)


@main.command()
@click.option("--link", default=None, help="Link name (default: the station's first).")
@click.option("--pairs", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--protocol", type=click.Choice(["single_click", "two_photon"]), default=None,
              help="Default: as configured on the QNUs.")
@click.option("--bases", default="X,Y,Z", show_default=True,
              help="Bases both ends pick from: X, Y, Z or A<deg>, comma separated.")
@click.option("--max-time", default=3600.0, show_default=True, type=float, help="Seconds.")
@pass_ctx
def entangle(ctx: Context, link: str | None, pairs: int, protocol: str | None, bases: str,
             max_time: float) -> None:
    """Generate heralded pairs on a link and report rate and fidelity."""
    from qnetlab.runstore import RunStore
    from qnetlab.sequences.calibration import load_calibrated
    from qnetlab.sequences.entanglement import generate, quick_fidelity

    tokens = tuple(b.strip().upper() for b in bases.split(",") if b.strip())
    bundle, store = load_calibrated(ctx.station, ctx.data)
    try:
        link = link or next(iter(bundle.topology.links), None)
        if link not in bundle.topology.links:
            raise click.BadParameter(f"{link!r} is not a link of {ctx.station} "
                                     f"(links: {', '.join(bundle.topology.links) or 'none'})",
                                     param_hint="--link")
        runs = RunStore(ctx.data)
        with _bar("pairs", pairs) as bar, operating(bundle, runs) as safe:
            state = {"n": 0}

            def progress(got: int, _total: int) -> None:
                bar.update(got - state["n"])
                state["n"] = got

            gen = generate(safe, link, pairs, protocol=protocol, bases=tokens,
                           max_time_s=max_time, runs=runs, progress=progress,
                           calibration=store.as_dict())
        click.echo(f"{len(gen)} pairs on {link} ({gen.protocol}, {gen.state}) at "
                   f"{gen.rate_hz:.1f} heralds/s; run {gen.run_guid}")
        if set(tokens) >= {"X", "Y", "Z"}:
            f, err = quick_fidelity(gen)
            click.echo(f"fidelity to the heralded Bell state: {f:.3f} +- {err:.3f}")
    finally:
        bundle.close()


@main.command()
@pass_ctx
def status(ctx: Context) -> None:
    """Instruments, interlocks, calibration state and staleness."""
    from qnetlab import stations
    from qnetlab.sequences.calibration import CalibrationStore, default_calibrations

    bundle = stations.load(ctx.station)
    try:
        click.echo(f"station {ctx.station}: {', '.join(bundle.topology.nodes)}; lab time "
                   f"{bundle.clock.now():.0f} s")
        for name, component in sorted(bundle.station.components.items()):
            idn = getattr(component, "IDN", None)
            if idn is not None and name != "network":
                vendor = idn.get()
                click.echo(f"  {name:<14} {vendor.get('vendor')} {vendor.get('model')} "
                           f"{vendor.get('serial')}")
        for node in bundle.topology.nodes:
            inst = bundle.node(node)
            click.echo(f"  {node}: MXC {inst['fridge'].mxc.temperature() * 1e3:.2f} mK, "
                       f"fridge interlock {inst['fridge'].interlock_state()}, pump "
                       f"{'interlocked' if inst['pump'].interlocked() else 'free'}, "
                       f"{inst['pump'].power_actual():.2f} dBm emitted")
        store = CalibrationStore(ctx.data)
        states = store.node_states()
        now = max(bundle.clock.now(), store.latest_time())
        click.echo("calibration:")
        for cal in default_calibrations():
            for target in _targets(bundle, cal.scope):
                st = states.get((cal.name, target))
                if st is None or st.last_success is None:
                    click.echo(f"  {cal.name}:{target:<8} never calibrated")
                    continue
                age = now - st.last_success
                flag = "fresh" if age <= cal.timeout_s else "STALE"
                click.echo(f"  {cal.name}:{target:<8} {st.last_outcome:<10} {age / 3600:6.2f} h "
                           f"old (timeout {cal.timeout_s / 3600:g} h) {flag}")
    finally:
        bundle.close()


def _targets(bundle: Any, scope: str) -> list[str]:
    topo = bundle.topology
    return {"node": list(topo.nodes), "station": list(topo.stations),
            "link": list(topo.links)}[scope]


@main.command()
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--clean-dead", is_flag=True,
              help="Mark runs whose process died as dead and make their files whole.")
@pass_ctx
def runs(ctx: Context, limit: int, clean_dead: bool) -> None:
    """List the runs in the data directory, newest first (``dead``: its process died)."""
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
        from qnetlab.sequences.calibration import CalibrationStore, default_calibrations

        store = CalibrationStore(ctx.data)
        topo = stations.read_topology(stations.station_file(ctx.station))
        targets = {"node": list(topo.nodes), "station": list(topo.stations),
                   "link": list(topo.links)}
        path = reports.dashboard(store, default_calibrations(), targets, store.latest_time(),
                                 out or ctx.data / "reports" / "dashboard.html")
    elif run is None:
        raise click.UsageError("give a RUN (id, GUID or .h5 path) or --dashboard")
    else:
        ref: Any = Path(run) if run.endswith(".h5") else run
        path = reports.run_report(ref, ctx.data, out)
    click.echo(str(path))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def run_cli(argv: list[str] | None = None,
            entry: Callable[..., Any] = main) -> int:
    """Entry point: click in non-standalone mode, every error one line on stderr."""
    import pyvisa

    from qnetlab.errors import QnetlabError

    try:
        entry.main(args=argv, prog_name="qnetlab", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("qnetlab: aborted", err=True)
        return 130
    except click.UsageError as exc:
        where = f" ({exc.ctx.command_path})" if exc.ctx else ""
        click.echo(f"qnetlab: error{where}: {' '.join(exc.format_message().split())}", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"qnetlab: error: {' '.join(exc.format_message().split())}", err=True)
        return 1
    except (QnetlabError, FileNotFoundError, ValueError, KeyError, OSError,
            pyvisa.Error) as exc:
        click.echo(f"qnetlab: error: {type(exc).__name__}: {_one_line(exc)}", err=True)
        return 1
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def entry_point() -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(run_cli())


if __name__ == "__main__":
    entry_point()
