"""``qnetlab --server URL ...``: the existing commands run against a service.

``status``, ``calibrate``, ``entangle``, ``runs`` and ``report`` keep their options and output
shape; the work happens on the service's station. The key comes from ``QNETLAB_API_KEY`` or
``--key-file`` (none: anonymous, which a service allows read-only and only on loopback).
``QNETLAB_SERVER_CA`` names the certificate to trust for ``https://`` (the service's own
``<data>/service/tls/cert.pem``); ``QNETLAB_CLIENT_CERT`` a client certificate (PEM with its
key) for mutual TLS. Every failure is one ``qnetlab: error: ...`` line.
"""

from __future__ import annotations

import os
import ssl
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

REMOTE_COMMANDS = ("status", "calibrate", "entangle", "runs", "report")
NOT_DELIVERED = 3


class NotDelivered(click.ClickException):
    exit_code = NOT_DELIVERED


def _remember(click_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    click_ctx.meta[f"qnetlab.{param.name}"] = value
    return value


def server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """qnetlab's global ``--server URL`` and ``--key-file FILE`` (kept in the click context's
    ``meta``, read by :class:`RemoteAwareGroup` and the remote commands)."""
    command = click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
                           default=None, expose_value=False, is_eager=True, callback=_remember,
                           help="File holding the API key for --server (default: "
                                "$QNETLAB_API_KEY).")(command)
    return click.option("--server", envvar="QNETLAB_SERVER", default=None, metavar="URL",
                        expose_value=False, is_eager=True, callback=_remember,
                        help="Run the command on a qnetlab service (status, calibrate, "
                             "entangle, runs, report).")(command)


class RemoteAwareGroup(click.Group):
    """With ``--server``, commands resolve to their remote versions."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        if ctx.meta.get("qnetlab.server") and name is not None:
            if name not in REMOTE_COMMANDS:
                raise click.UsageError(f"--server runs {', '.join(REMOTE_COMMANDS)}; "
                                       f"{name!r} runs only locally", ctx)
            return name, remote_command(name), rest
        return name, cmd, rest


class Client:
    """A thin httpx client for one service; every failure a one-line ClickException."""

    def __init__(self, url: str, key: str | None) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{url!r} is not an http:// or https:// URL",
                                     param_hint="--server")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        ca = os.environ.get("QNETLAB_SERVER_CA")
        verify: Any = ssl.create_default_context(cafile=ca) if ca else True
        cert = os.environ.get("QNETLAB_CLIENT_CERT")
        if cert:
            if verify is True:
                verify = ssl.create_default_context()
            verify.load_cert_chain(cert)
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, verify=verify,
                                 timeout=httpx.Timeout(30.0, read=660.0))

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach the service at {self.url}: "
                                       f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                                       ) from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            raise click.ClickException(f"service {self.url}: {response.status_code}: "
                                       f"{' '.join(str(detail).split())}")
        return response.json() if "json" in response.headers.get("content-type", "") \
            else response.text


def client_of(click_ctx: click.Context) -> Client:
    meta = click_ctx.meta
    key = os.environ.get("QNETLAB_API_KEY")
    key_file = meta.get("qnetlab.key_file")
    if key_file is not None:
        try:
            key = Path(key_file).read_text().strip()
        except OSError as exc:
            raise click.BadParameter(f"{key_file}: {exc.strerror or exc}",
                                     param_hint="--key-file") from None
    return Client(meta["qnetlab.server"], key or None)


def _job(client: Client, body: dict[str, Any], path: str = "/api/jobs") -> dict[str, Any]:
    """Submit, wait for the outcome (idempotent: a retry never doubles the job)."""
    job = client.call("POST", path, json=body, params={"wait": 600},
                      headers={"Idempotency-Key": uuid.uuid4().hex})
    if job["state"] in ("failed", "interrupted"):
        raise click.ClickException(f"job {job['id']} {job['state']}: {job['error']}")
    if job["state"] != "done":
        raise click.ClickException(f"job {job['id']} still {job['state']} after 600 s; "
                                   f"follow it at {client.url}/api/jobs/{job['id']}")
    return job


@click.command("status")
@click.pass_context
def status(click_ctx: click.Context) -> None:
    """The service's lab: nodes, watchdog, calibration, queue and lease."""
    s = client_of(click_ctx).call("GET", "/api/status")
    if s.get("state") != "ready":
        click.echo(f"service state: {s.get('state')} {s.get('startup_error') or ''}".strip())
        return
    veto = s["watchdog"]["veto"]
    click.echo(f"station {s['station']} (served): lab time {s['lab_time']:.0f} s; watchdog "
               f"{s['watchdog']['state']}{'; ' + veto if veto else ''}")
    for name, n in s["nodes"].items():
        click.echo(f"node {name}: MXC {n['mxc_k'] * 1e3:.2f} mK, fridge interlock "
                   f"{n['interlock']}, pump output {n['pump_output']}"
                   f", {n['emitted_dbm']:.2f} dBm emitted")
    for row in s["calibration"]:
        age = "never" if row["age_s"] is None else f"{row['age_s'] / 3600:.2f} h"
        click.echo(f"calibration {row['key']}: {row['outcome'] or '-'}, age {age}, "
                   f"{row['state'].upper() if row['state'] != 'fresh' else 'fresh'}")
    queue = ", ".join(f"{k} {v}" for k, v in sorted(s["queue"].items())) or "empty"
    click.echo(f"queue: {queue}")
    if s.get("lease"):
        click.echo(f"lease: {s['lease']['holder']} until {s['lease']['expires_utc']}")


@click.command("calibrate")
@click.argument("targets", nargs=-1)
@click.option("--force", is_flag=True, help="Measure every node even if fresh.")
@click.pass_context
def calibrate(click_ctx: click.Context, targets: tuple[str, ...], force: bool) -> None:
    """Maintain the service's calibration graph (all targets, or TARGETS)."""
    job = _job(client_of(click_ctx), {"kind": "calibrate",
                                      "params": {"targets": list(targets), "force": force}})
    click.echo(job["result"]["table"])
    if not job["result"]["ok"]:
        failed = [r["key"] for r in job["result"]["results"] if r["status"] == "failed"]
        raise click.ClickException(f"calibration did not complete (failed: "
                                   f"{', '.join(failed) or 'see the table above'})")


@click.command("entangle")
@click.option("--link", default=None, help="Link name (default: the station's first).")
@click.option("--pairs", default=1000, show_default=True, type=click.IntRange(1, 1_000_000))
@click.option("--protocol", type=click.Choice(["single_click", "two_photon"]), default=None)
@click.option("--bases", default="X,Y,Z", show_default=True)
@click.option("--max-time", default=3600.0, show_default=True,
              type=click.FloatRange(1e-6, 7 * 86400.0))
@click.option("--min-fidelity", default=0.5, show_default=True, type=click.FloatRange(0, 1))
@click.pass_context
def entangle(click_ctx: click.Context, link: str | None, pairs: int, protocol: str | None,
             bases: str, max_time: float, min_fidelity: float) -> None:
    """An entanglement request on the service's lab; rate, fidelity and a verdict."""
    client = client_of(click_ctx)
    if link is None:
        links = client.call("GET", "/api/status").get("topology", {}).get("links", {})
        if not links:
            raise click.ClickException("the service's station has no link (or is starting)")
        link = next(iter(links))
    tokens = [b.strip().upper() for b in bases.split(",") if b.strip()]
    body = {"link": link, "pairs": pairs, "protocol": protocol, "bases": tokens,
            "max_time_s": max_time, "min_fidelity": min_fidelity}
    r = _job(client, body, "/api/requests")["result"]
    click.echo(f"{r['delivered_pairs']} of {r['requested']} pairs on {r['link']} "
               f"({r['protocol']}, request {r['request_state']}) at {r['rate_hz']:.1f} "
               f"heralds/s; run {r['run_guid']}")
    if r["fidelity"] is not None:
        click.echo(f"fidelity to the heralded Bell state: {r['fidelity']:.3f} +- "
                   f"{r['fidelity_err']:.3f}")
    else:
        click.echo(f"fidelity to the heralded Bell state: {r['fidelity_note']}")
    if not r["delivered"]:
        click.echo("verdict: NOT DELIVERED")
        raise NotDelivered(f"entangle did not deliver on {r['link']}: {r['delivered_pairs']} "
                           f"of {r['requested']} pairs, F = {r['fidelity']}")
    click.echo(f"verdict: delivered {r['delivered_pairs']} of {r['requested']} pairs")


@click.command("runs")
@click.option("--limit", default=30, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
def runs(click_ctx: click.Context, limit: int) -> None:
    """The service's runs, newest first."""
    rows = client_of(click_ctx).call("GET", "/api/runs", params={"limit": limit})
    if not rows:
        click.echo("no runs")
        return
    click.echo(f"{'id':>5}  {'status':<11} {'started (UTC)':<20} {'name':<34} guid")
    for r in rows:
        click.echo(f"{r['run_id']:>5}  {r['status']:<11} {r['started']:<20} {r['name']:<34} "
                   f"{r['guid']}")


@click.command("report")
@click.argument("run", required=False)
@click.option("--dashboard", is_flag=True, help="The calibration dashboard instead.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the HTML here (default: print its URL).")
@click.pass_context
def report(click_ctx: click.Context, run: str | None, dashboard: bool, out: Path | None) -> None:
    """Have the service write a run's report (or the dashboard); save or show where it is."""
    if run is None and not dashboard:
        raise click.UsageError("give a RUN (id or GUID) or --dashboard")
    client = client_of(click_ctx)
    result = _job(client, {"kind": "report",
                           "params": {"run": run, "dashboard": dashboard}})["result"]
    if out is None:
        click.echo(f"{client.url}{result['url']}")
        return
    out.write_text(client.call("GET", result["url"]))
    click.echo(str(out))


def remote_command(name: str) -> click.Command:
    """The remote version of a ``qnetlab`` command."""
    return {"status": status, "calibrate": calibrate, "entangle": entangle, "runs": runs,
            "report": report}[name]
