"""``qnetlab serve`` and ``qnetlab serve keys create|revoke|list`` (click).

The station and data directory are qnetlab's global options (``qnetlab --station X --data D
serve``) or the same options after ``serve``. ``keys`` works on the data directory directly,
with or without a running service (the store is safe to share between processes), and every
change is written to the audit log.
"""

from __future__ import annotations

import getpass
import math
import socket
from pathlib import Path
from typing import Any

import click


def _root(click_ctx: click.Context) -> Any:
    """qnetlab's global options (``qnetlab.cli.Context``: station, data)."""
    return click_ctx.find_root().obj


def _apply(click_ctx: click.Context, station: str | None, data: str | None) -> Any:
    root = _root(click_ctx)
    if station is not None:
        root.station = station
    if data is not None:
        root.data_option, root._data = data, None
    return root


def _finite(_ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a number", param=param)
    return value


@click.group(invoke_without_command=True)
@click.option("--station", default=None, help="Station file (as qnetlab --station).")
@click.option("--data", default=None, metavar="DIR", help="Data directory (as qnetlab --data).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback needs TLS and an API key.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option("--tls/--no-tls", default=None,
              help="TLS with the self-signed certificate kept in the data directory "
                   "(default: on unless the host is loopback).")
@click.option("--client-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Mutual TLS: require client certificates signed by this CA.")
@click.option("--pace", default=1.0, show_default=True, callback=_finite,
              type=click.FloatRange(0, 1e6),
              help="Simulated lab only: lab seconds that pass per wall second while idle.")
@click.option("--maintain-every", default=3600.0, show_default=True, callback=_finite,
              type=click.FloatRange(0, 30 * 86400.0), metavar="LAB_S",
              help="Calibration upkeep every LAB_S lab seconds (first at start; 0: never).")
@click.pass_context
def serve(click_ctx: click.Context, station: str | None, data: str | None, host: str,
          port: int, tls: bool | None, client_ca: Path | None, pace: float,
          maintain_every: float) -> None:
    """Run the lab as a service: HTTP API, live status page at /, calibration upkeep.

    Binds loopback by default (no set-up: anonymous callers there can read, not write). See
    `qnetlab serve keys --help` for API keys."""
    root = _apply(click_ctx, station, data)
    if click_ctx.invoked_subcommand is not None:
        return
    from .server import ServeError, ServeOptions
    from .server import serve as run

    opts = ServeOptions(root.station, root.data, host, port, tls, client_ca, pace,
                        maintain_every)
    try:
        _check_port(host, port)
        run(opts, echo=lambda line: click.echo(line, err=True))
    except ServeError as exc:
        raise click.ClickException(str(exc)) from None


def _check_port(host: str, port: int) -> None:
    from .server import ServeError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ServeError(f"cannot bind {host}:{port}: {exc.strerror or exc}; choose "
                             "another --port or --host") from None


@serve.group()
def keys() -> None:
    """Create, revoke and list API keys (stored hashed in the data directory)."""


def _local_who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (local CLI)"


@keys.command("create")
@click.option("--role", required=True,
              type=click.Choice(["observer", "operator", "expert", "admin"]))
@click.option("--expires", default="7d", show_default=True,
              help="Lifetime: a number with s, m, h, d or w (at most 366d).")
@click.option("--name", default=None, help="Who or what uses the key (default: the role).")
@click.pass_context
def keys_create(click_ctx: click.Context, role: str, expires: str, name: str | None) -> None:
    """Create a key; its token is printed once (keep it: only its hash is stored)."""
    from . import auth
    from .audit import AuditLog
    from .store import ServiceStore

    data = _root(click_ctx).data
    try:
        seconds = auth.parse_duration(expires)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from None
    row, token = ServiceStore(data).create_key(name or role, role, seconds, _local_who())
    AuditLog(data).append(_local_who(), "keys create", "local", f"created key {row['id']} "
                          f"({row['name']}, {role}, expires {row['expires_utc']})")
    click.echo(f"key {row['id']} ({row['name']}, role {role}) expires {row['expires_utc']}",
               err=True)
    click.echo(token)


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(click_ctx: click.Context, key_id: str) -> None:
    """Revoke a key at once (by its id, as `keys list` shows)."""
    from .audit import AuditLog
    from .store import NotFound, ServiceStore

    data = _root(click_ctx).data
    try:
        row = ServiceStore(data).revoke_key(key_id)
    except NotFound as exc:
        AuditLog(data).append(_local_who(), f"keys revoke {key_id}", "local", f"refused: {exc}")
        raise click.ClickException(f"{exc} in {data} (`qnetlab serve keys list` lists them)"
                                   ) from None
    AuditLog(data).append(_local_who(), f"keys revoke {key_id}", "local", "revoked")
    click.echo(f"key {row['id']} ({row['name']}) revoked at {row['revoked_utc']}")


@keys.command("list")
@click.pass_context
def keys_list(click_ctx: click.Context) -> None:
    """Every key: id, name, role, state, expiry (never the secret)."""
    from .store import ServiceStore

    rows = ServiceStore(_root(click_ctx).data).keys()
    if not rows:
        click.echo("no keys")
        return
    click.echo(f"{'id':<10}  {'name':<20} {'role':<8} {'state':<7} expires (UTC)")
    for r in rows:
        click.echo(f"{r['id']:<10}  {r['name'][:20]:<20} {r['role']:<8} {r['state']:<7} "
                   f"{r['expires_utc']}")
