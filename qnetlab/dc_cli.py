"""``qnetlab request``: submit a link-layer request to a simulated data center.

The data center is built in this process from a generated lab (``dc:K,M``: K QPUs, M heralding
stations, one switch) or a lab file with an ``x-lab: switches`` entry, at the level of the QNU
link-layer model (``qnetlab.sim_instruments.fabric``), calibrated, and run in lab time with the
dynamic switch scheduler until the request ends. The request and its outcome are one run in the
run store. Exit status 0: every pair delivered; 3: ACK'ed or answered but not delivered (ERR
REJECTED, UNSUPP, TIMEOUT or EXPIRE, printed as the error line); 2: a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

NOT_DELIVERED = 3
DEFAULT_LAB = "dc:16,4"


class NotDelivered(click.ClickException):
    exit_code = NOT_DELIVERED


def fabric_for(lab: str, seed: int | None) -> Any:
    """The simulated fabric of ``dc:K,M``, a bundled lab or a lab file (imports the simulator
    only here)."""
    from qnetlab.sim_instruments.fabric import SimFabric

    try:
        return SimFabric.from_spec(lab, seed=seed)
    except ValueError as exc:
        raise click.BadParameter(str(exc).splitlines()[0], param_hint="--lab") from None


def _bases(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(b.strip().upper() for b in value.split(",") if b.strip())


@click.command(name="request")
@click.argument("origin")
@click.argument("remote")
@click.option("--pairs", default=10, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--min-fidelity", default=0.5, show_default=True, type=click.FloatRange(0, 1))
@click.option("--max-time", default=10.0, show_default=True,
              type=click.FloatRange(0, 7 * 86400.0, min_open=True), help="Lab seconds.")
@click.option("--priority", default=0, show_default=True, type=int, help="Higher first.")
@click.option("--type", "kind", type=click.Choice(["K", "M"]), default="K", show_default=True,
              help="K: keep the pairs; M: measure at once in one of --bases.")
@click.option("--bases", default="Z", show_default=True, callback=_bases,
              help="Bases for type M, comma-separated (X, Y, Z).")
@click.option("--purpose", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Purpose id of the application.")
@click.option("--lab", default=DEFAULT_LAB, show_default=True,
              help="dc:K,M (K QPUs, M heralding stations) or a lab file with a switch.")
@click.option("--seed", type=int, default=None, help="Seed of the simulated world.")
@click.option("--timeline", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              default=None, help="Write the switch schedule (one row per station) as PNG.")
@click.pass_obj
def request(state: Any, origin: str, remote: str, pairs: int, min_fidelity: float,
            max_time: float, priority: int, kind: str, bases: tuple[str, ...], purpose: int,
            lab: str, seed: int | None, timeline: Path | None) -> None:
    """Ask the data center for PAIRS entangled pairs between ORIGIN and REMOTE."""
    from qnetlab.datacenter import Ack, Create, DataCenter, DynamicScheduler
    from qnetlab.datacenter.runs import record
    from qnetlab.runstore import RunStore

    fabric = fabric_for(lab, seed)
    dc = DataCenter(fabric, DynamicScheduler())
    create = Create(origin, remote, pairs=pairs, min_fidelity=min_fidelity,
                    max_time_s=max_time, priority=priority, kind=kind, bases=bases,
                    purpose_id=purpose)
    reply = dc.submit(create)
    if isinstance(reply, Ack):
        click.echo(f"ACK {reply.create_id}: {origin} - {remote}, {pairs} pairs at fidelity >= "
                   f"{min_fidelity} within {max_time:g} s of lab time")
        dc.run(dc.clock.now() + max_time)
    outcome = dc.outcomes[reply.create_id]
    store = RunStore(state.data)
    try:
        run = record(store, outcome, list(fabric.stations), clock=dc.clock,
                     metadata={"lab": lab}, services=dc.log.services)
    finally:
        store.close()
    if timeline is not None:
        from qnetlab.datacenter.timeline import timeline as draw

        draw(dc.log, list(fabric.stations)).savefig(timeline, dpi=120)
    oks = outcome.oks
    if oks:
        where = sorted({o.station for o in oks})
        click.echo(f"OK {len(oks)} pairs at {', '.join(where)}: goodness "
                   f"{min(o.goodness for o in oks):.3f}..{max(o.goodness for o in oks):.3f}, "
                   f"{oks[0].time_of_goodness:.3f} s to {oks[-1].time_of_goodness:.3f} s")
    click.echo(f"run {run.run_id}: {outcome.status}")
    err = outcome.error or (None if isinstance(outcome.reply, Ack) else outcome.reply)
    if err is not None:
        raise NotDelivered(f"ERR {err.code.value} (create {err.create_id}): {err.detail}")
