"""The HTTP API (FastAPI; OpenAPI at ``/openapi.json``) and the live status page.

Every endpoint names the scope it needs; a caller is a key (``Authorization: Bearer
qnl_...``) or, without one, the anonymous loopback caller (read-only), and nobody from
elsewhere (401). Writes that act on the lab also pass the lease (409 naming the holder and
expiry) and the watchdog's veto (409 with its reason), whatever the credentials. Every write,
refused or not, is appended to the audit log by :func:`_audit` with its outcome. Errors are one
line in ``detail``; bad input names the parameter, the value and what is allowed (422).
"""


import asyncio
import ipaddress
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from . import auth
from .audit import AuditLog
from .executor import REPORTS, Executor
from .lab import SETTINGS, Lab, safe_direction
from .reports import report_file
from .store import AuthError, Conflict, NotFound, ServiceStore

STATIC = Path(__file__).with_name("static")
MAX_WAIT_S = 600.0
STATUS_TTL_S = 0.1
Limit = Annotated[int, Query(ge=1, le=10_000)]
Wait = Annotated[float, Query(ge=0, le=MAX_WAIT_S)]
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Service:
    """What the endpoints share: the stores, the lab, its executor and the topology."""

    store: ServiceStore
    audit: AuditLog
    lab: Lab
    executor: Executor
    data_dir: Path
    station: str
    topology: Any
    graph: Any
    _cached: tuple[float, int, bytes] | None = None

    def status_json(self) -> bytes:
        """The status document, composed at most every ``STATUS_TTL_S`` and whenever the lab
        snapshot changed or a job was taken or finished: 50 readers cost one composition."""
        now = time.monotonic()
        key = self.lab.version + self.executor.changes
        cached = self._cached
        if cached is None or cached[1] != key or now - cached[0] > STATUS_TTL_S:
            body = json.dumps(_status(self), default=_plain).encode()
            self._cached = cached = (now, key, body)
        return cached[2]


# -- request bodies (strict: no silent conversions, no unknown fields) -----------------------

Basis = Annotated[str, StringConstraints(pattern=r"^(X|Y|Z|A-?\d{1,3}(\.\d{1,6})?)$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class EntangleIn(Strict):
    """An entanglement request: ``pairs`` heralded pairs on ``link``."""

    link: Name
    pairs: int = Field(ge=1, le=1_000_000)
    protocol: Literal["single_click", "two_photon"] | None = None
    bases: list[Basis] = Field(default=["X", "Y", "Z"], min_length=1, max_length=8)
    max_time_s: float = Field(default=3600.0, gt=0, le=7 * 86400.0, allow_inf_nan=False)
    min_fidelity: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)


class CalibrateIn(Strict):
    targets: list[Name] = Field(default=[], max_length=64)
    force: bool = False


class ReportIn(Strict):
    run: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")] | None = None
    dashboard: bool = False


class JobIn(Strict):
    """An operator job: ``kind`` calibrate, entangle or report, with its parameters."""

    kind: Literal["calibrate", "entangle", "report"]
    params: dict[str, Any] = Field(default={})


class InstrumentIn(Strict):
    node: Name
    setting: Literal["pump_power_dbm", "pump_emission", "mxc_heater_setpoint_k",
                     "mxc_heater_percent", "still_heater_percent"]
    value: float | Literal["on", "off"]


class KeyIn(Strict):
    name: Name
    role: Literal["observer", "operator", "expert", "admin"]
    expires: Annotated[str, StringConstraints(max_length=32)] = "7d"


class LeaseIn(Strict):
    duration_s: float = Field(gt=0, le=12 * 3600.0, allow_inf_nan=False)
    reason: Annotated[str, StringConstraints(max_length=200)] = ""


# -- who is calling ---------------------------------------------------------------------------

def is_loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fail(request: Request, status: int, detail: str) -> HTTPException:
    request.state.detail = detail
    return HTTPException(status, detail)


def create_app(svc: Service) -> FastAPI:
    """The FastAPI application of one service."""
    app = FastAPI(title="qnetlab serve", version="1",
                  description="The lab as a service: status, calibration, runs, entanglement "
                              "requests, operator jobs, reports, keys, leases and audit.")

    async def principal(request: Request) -> auth.Principal:
        """Runs on the event loop (no thread hop): anonymous callers cost no I/O, a key one
        indexed SQLite read."""
        header = request.headers.get("authorization")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise _fail(request, 401, "Authorization must be 'Bearer <API key>'")
            try:
                who = svc.store.authenticate(token)
            except AuthError as exc:
                raise _fail(request, 401, str(exc)) from None
        else:
            host = request.client.host if request.client else None
            anon = auth.anonymous(is_loopback(host))
            if anon is None:
                raise _fail(request, 401, f"an API key is required from {host} (anonymous "
                                          "access is read-only and only on loopback)")
            who = anon
        request.state.who = who.who
        return who

    Caller = Annotated[auth.Principal, Depends(principal)]

    def need(*scopes: str) -> Any:
        async def check(who: Caller, request: Request) -> auth.Principal:
            for scope in scopes:
                if not who.can(scope):
                    raise _fail(request, 403, f"{who.who} (role {who.role}) lacks the scope "
                                              f"{scope}")
            return who
        return Depends(check)

    def guard_lab_write(request: Request, who: auth.Principal, safer: bool = False) -> None:
        """The lease and the watchdog's veto, checked for every write that acts on the lab
        (a write that only makes the lab safer passes both)."""
        if safer:
            return
        try:
            svc.store.check_lease(who)
        except Conflict as exc:
            raise _fail(request, 409, str(exc)) from None
        reason = svc.lab.veto()
        if reason is not None:
            raise _fail(request, 409, f"vetoed: {reason}")

    StatusReader = Annotated[auth.Principal, need("read:status")]
    RunsReader = Annotated[auth.Principal, need("read:runs")]
    CalReader = Annotated[auth.Principal, need("read:calibration")]
    AuditReader = Annotated[auth.Principal, need("read:audit")]
    KeyAdmin = Annotated[auth.Principal, need("admin:keys")]
    RequestWriter = Annotated[auth.Principal, need("write:request")]
    JobWriter = Annotated[auth.Principal, need("write:job")]
    InstrumentWriter = Annotated[auth.Principal, need("write:instrument")]
    LeaseWriter = Annotated[auth.Principal, need("write:lease")]
    _install_handlers(app, svc)

    # -- reads --------------------------------------------------------------------------------

    @app.get("/api/whoami")
    def whoami(who: Caller) -> dict[str, Any]:
        """The caller as the service sees it: name, role and scopes."""
        return {"who": who.who, "key_id": who.key_id, "role": who.role,
                "scopes": sorted(who.scopes)}

    @app.get("/api/status")
    async def status(_: StatusReader) -> Response:
        """The lab now: nodes, links, watchdog, calibration states, queue, lease."""
        return Response(svc.status_json(), media_type="application/json")

    @app.get("/api/calibration")
    def calibration(_: CalReader) -> dict[str, Any]:
        """Every calibration node's state (fresh, stale, failed) and the current values."""
        from qnetlab.sequences.calibration import CalibrationStore

        cal = CalibrationStore(svc.data_dir)
        try:
            values = [_record(r) for r in cal.state().values()]
            held = [_record(r) for r in cal.held()]
        finally:
            cal.close()
        return {"nodes": svc.lab.snapshot().get("calibration", []), "values": values,
                "held": held}

    @app.get("/api/calibration/history")
    def calibration_history(_: CalReader, quantity: Annotated[str, Query(max_length=64)],
                            target: Annotated[str, Query(max_length=64)]) -> list[dict[str, Any]]:
        """Every record of one quantity on one target, oldest first."""
        from qnetlab.sequences.calibration import CalibrationStore

        cal = CalibrationStore(svc.data_dir)
        try:
            return [_record(r) for r in cal.history(quantity, target)]
        finally:
            cal.close()

    @app.get("/api/history")
    def history(_: StatusReader) -> dict[str, Any]:
        """Fridge temperatures, herald rates and fidelities over lab time."""
        done = svc.store.jobs(kinds=("request", "entangle"), states=("done",), limit=500)
        points = [{"lab_time": j["result"]["lab_time"], "link": j["result"]["link"],
                   "rate_hz": j["result"]["rate_hz"], "fidelity": j["result"]["fidelity"]}
                  for j in reversed(done) if j["result"]]
        return {"mxc": svc.lab.snapshot().get("mxc_history", []), "requests": points}

    @app.get("/api/runs")
    def runs(_: RunsReader, limit: Limit = 30) -> list[dict[str, Any]]:
        """The data directory's runs, newest first."""
        from qnetlab.runread import list_runs

        return [{k: _plain(v) for k, v in r.items()} for r in list_runs(svc.data_dir)[:limit]]

    @app.get("/api/requests")
    def requests_(_: StatusReader, limit: Limit = 100) -> list[dict[str, Any]]:
        """Entanglement requests, newest first."""
        return svc.store.jobs(kinds=("request",), limit=limit)

    @app.get("/api/jobs")
    def jobs(_: StatusReader, limit: Limit = 100) -> list[dict[str, Any]]:
        """Every job (requests, operator jobs, scheduled upkeep), newest first."""
        return svc.store.jobs(limit=limit)

    @app.get("/api/jobs/{job_id}")
    @app.get("/api/requests/{job_id}")
    def job(_: StatusReader, job_id: int, request: Request) -> dict[str, Any]:
        try:
            return svc.store.job(job_id)
        except NotFound as exc:
            raise _fail(request, 404, str(exc)) from None

    @app.get("/api/reports")
    def reports(_: RunsReader) -> list[str]:
        folder = svc.data_dir / "reports"
        return sorted(p.name for p in folder.glob("*.html")) if folder.is_dir() else []

    @app.get("/api/reports/{name}")
    def report(_: RunsReader, name: str, request: Request) -> FileResponse:
        path = report_file(svc.data_dir, name)
        if path is None:
            raise _fail(request, 404, f"no report {name!r}")
        return FileResponse(path, media_type="text/html")

    @app.get("/api/leases")
    def leases(_: StatusReader) -> dict[str, Any]:
        return {"current": svc.store.lease(), "recent": svc.store.leases()}

    @app.get("/api/keys")
    def keys(_: KeyAdmin) -> list[dict[str, Any]]:
        return svc.store.keys()

    @app.get("/api/audit")
    def audit(_: AuditReader, limit: Annotated[int, Query(ge=1, le=100_000)] = 200) -> dict[str, Any]:
        intact, why = svc.audit.verify()
        return {"intact": intact, "problem": why, "records": svc.audit.records(limit)}

    @app.get("/api/events")
    async def events(_: StatusReader, request: Request) -> StreamingResponse:
        """Server-sent events: ``update`` (status, recent jobs) whenever the lab or the queue
        changes, a comment every 10 s otherwise."""
        return StreamingResponse(_event_stream(svc, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    # -- writes -----------------------------------------------------------------------------

    @app.post("/api/requests", status_code=201)
    def submit_request(who: RequestWriter, body: EntangleIn, request: Request,
                       wait: Wait = 0.0) -> dict[str, Any]:
        """Queue an entanglement request (``wait``: seconds to wait for its outcome)."""
        _check_link(request, svc, body.link)
        guard_lab_write(request, who)
        return _queue(request, svc, "request", svc.lab.resource, body.model_dump(), who, wait)

    @app.post("/api/jobs", status_code=201)
    def submit_job(who: JobWriter, body: JobIn, request: Request,
                   wait: Wait = 0.0) -> dict[str, Any]:
        """Queue an operator job: calibrate (needs write:calibrate), entangle or report."""
        params = _job_params(request, svc, body)
        if body.kind == "report":
            params["station"] = svc.station
            return _queue(request, svc, "report", REPORTS, params, who, wait)
        if body.kind == "calibrate" and not who.can("write:calibrate"):
            raise _fail(request, 403, f"{who.who} (role {who.role}) lacks the scope "
                                      "write:calibrate")
        guard_lab_write(request, who)
        return _queue(request, svc, body.kind, svc.lab.resource, params, who, wait)

    @app.post("/api/instrument", status_code=201)
    def set_instrument(who: InstrumentWriter, body: InstrumentIn, request: Request,
                       wait: Wait = 60.0) -> dict[str, Any]:
        """One instrument write; hazardous ones (see :data:`~.lab.SETTINGS`) need the expert's
        ``write:hazardous``. Waits for the write to be done (``wait`` seconds at most)."""
        if body.node not in svc.topology.nodes:
            raise _fail(request, 422, f"node {body.node!r} is not a node of {svc.station} "
                                      f"(nodes: {', '.join(svc.topology.nodes)})")
        _check_setting(request, body)
        if svc.lab.is_hazardous(body.node, body.setting, body.value) \
                and not who.can("write:hazardous"):
            raise _fail(request, 403, f"{body.setting}={body.value} on {body.node} is hazardous: "
                                      f"{who.who} (role {who.role}) lacks the scope "
                                      "write:hazardous (the expert role)")
        guard_lab_write(request, who, safe_direction(body.setting, body.value))
        return _queue(request, svc, "instrument", svc.lab.resource, body.model_dump(), who,
                      wait)

    @app.post("/api/keys", status_code=201)
    def create_key(who: KeyAdmin, body: KeyIn, request: Request) -> dict[str, Any]:
        """A new API key; its token is in this reply only."""
        try:
            seconds = auth.parse_duration(body.expires)
            row, token = svc.store.create_key(body.name, body.role, seconds, who.who)
        except ValueError as exc:
            raise _fail(request, 422, str(exc)) from None
        request.state.detail = f"created key {row['id']} ({row['name']}, {row['role']}, " \
                               f"expires {row['expires_utc']})"
        return {**row, "token": token}

    @app.delete("/api/keys/{key_id}")
    def revoke_key(_: KeyAdmin, key_id: Annotated[str, PathParam(max_length=16)],
                   request: Request) -> dict[str, Any]:
        try:
            row = svc.store.revoke_key(key_id)
        except NotFound as exc:
            raise _fail(request, 404, str(exc)) from None
        request.state.detail = f"revoked key {key_id}"
        return row

    @app.post("/api/leases", status_code=201)
    def acquire_lease(who: LeaseWriter, body: LeaseIn, request: Request) -> dict[str, Any]:
        """Exclusive hands-on control for ``duration_s`` (409 while another holds it)."""
        try:
            lease = svc.store.acquire_lease(who, body.duration_s, body.reason)
        except Conflict as exc:
            raise _fail(request, 409, str(exc)) from None
        request.state.detail = f"lease {lease['id']} until {lease['expires_utc']}"
        return lease

    @app.delete("/api/leases/current")
    def release_lease(who: LeaseWriter, request: Request) -> dict[str, Any]:
        try:
            lease = svc.store.release_lease(who)
        except NotFound as exc:
            raise _fail(request, 404, str(exc)) from None
        except Conflict as exc:
            raise _fail(request, 409, str(exc)) from None
        request.state.detail = f"released lease {lease['id']}"
        return lease

    # -- the page ------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html",
                            headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


class StatusFastPath:
    """ASGI wrapper answering ``GET /api/status`` for an anonymous loopback caller straight
    from the cached document, before FastAPI's routing and dependency machinery (the endpoint
    polled by every status page and monitor; about twice the throughput). Any other request,
    and any caller with credentials or from elsewhere, goes to the app (same rules, same
    answer; the OpenAPI description is the app's)."""

    def __init__(self, app: FastAPI, svc: Service) -> None:
        self.app = app
        self.svc = svc

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET"
                and scope["path"] == "/api/status" and not _has_credentials(scope)
                and is_loopback((scope.get("client") or (None,))[0])):
            body = self.svc.status_json()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def _has_credentials(scope: Any) -> bool:
    return any(name == b"authorization" for name, _ in scope.get("headers", ()))


def _install_handlers(app: FastAPI, svc: Service) -> None:
    """One-line errors, and the audit record of every write."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        request.state.detail = str(exc.detail)
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_line(exc)
        request.state.detail = detail
        return JSONResponse({"detail": detail}, status_code=422)

    @app.middleware("http")
    async def audited(request: Request, call_next: Any) -> Any:
        if request.method not in WRITE_METHODS:
            return await call_next(request)
        body = (await request.body())[:2000].decode(errors="replace")
        response = await call_next(request)
        who = getattr(request.state, "who", None) or _claimed(request)
        detail = getattr(request.state, "detail", "")
        source = f"{request.client.host}:{request.client.port}" if request.client else "?"
        await run_in_threadpool(
            svc.audit.append, who, f"{request.method} {request.url.path}"
            + (f"?{request.url.query}" if request.url.query else ""), source,
            f"{response.status_code} {detail}".strip(), body=body)
        return response


def _claimed(request: Request) -> str:
    """Who a refused caller claimed to be (the key id of its token), for the audit log."""
    header = request.headers.get("authorization", "")
    parts = auth.split_token(header.partition(" ")[2]) if header else None
    if parts:
        return f"unverified key {parts[0]}"
    return "anonymous" if not header else "malformed credentials"


def _validation_line(exc: RequestValidationError) -> str:
    """``where: what is wrong (got value)`` for each problem, on one line."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path"))
        got = err.get("input")
        shown = json.dumps(got, default=str)[:80] if got is not None else "nothing"
        if err.get("type") == "missing":
            parts.append(f"{loc or 'body'}: required")
        else:
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')} (got {shown})")
    return "; ".join(" ".join(p.split()) for p in parts) or "invalid request"


def _check_link(request: Request, svc: Service, link: str) -> None:
    if link not in svc.topology.links:
        raise _fail(request, 422, f"link {link!r} is not a link of {svc.station} (links: "
                                  f"{', '.join(svc.topology.links) or 'none'})")


def _check_setting(request: Request, body: InstrumentIn) -> None:
    on_off = body.setting == "pump_emission"
    if on_off != isinstance(body.value, str):
        allowed = "'on' or 'off'" if on_off else "a number"
        raise _fail(request, 422, f"value {body.value!r} is not allowed for {body.setting} "
                                  f"({SETTINGS[body.setting]}); allowed: {allowed}")


def _job_params(request: Request, svc: Service, body: JobIn) -> dict[str, Any]:
    """The job's parameters, checked as strictly as the endpoint bodies."""
    from pydantic import ValidationError

    model = {"calibrate": CalibrateIn, "entangle": EntangleIn, "report": ReportIn}[body.kind]
    try:
        params = model.model_validate(body.params).model_dump()
    except ValidationError as exc:
        line = _validation_line(RequestValidationError(exc.errors()))
        raise _fail(request, 422, f"params: {line}") from None
    if body.kind == "entangle":
        _check_link(request, svc, params["link"])
    if body.kind == "calibrate" and params["targets"]:
        try:
            svc.graph.order(params["targets"])
        except KeyError as exc:
            raise _fail(request, 422, f"params.targets: {exc.args[0]}") from None
    if body.kind == "report" and not params["dashboard"] and params["run"] is None:
        raise _fail(request, 422, "params: a report needs run (id or GUID) or dashboard: true")
    return params


def _queue(request: Request, svc: Service, kind: str, resource: str, params: dict[str, Any],
           who: auth.Principal, wait: float) -> dict[str, Any]:
    idem = request.headers.get("idempotency-key")
    if idem is not None and not (0 < len(idem) <= 128 and idem.isprintable()):
        raise _fail(request, 422, "Idempotency-Key: allowed: 1 to 128 printable characters")
    job, created = svc.store.submit(kind, resource, params, who.who, idem)
    svc.executor.changed()
    svc.executor.wake(resource)
    if wait > 0:
        job = svc.executor.wait(job["id"], wait)
    request.state.detail = (f"{kind} job {job['id']} {'queued' if created else 'already queued'}"
                            f" ({job['state']})")
    return job


def _status(svc: Service) -> dict[str, Any]:
    snap = dict(svc.lab.snapshot())
    snap.pop("mxc_history", None)
    snap["startup_error"] = svc.executor.startup_error
    snap["queue"] = svc.store.counts()
    snap["running"] = svc.store.jobs(states=("running",), limit=5)
    snap["lease"] = svc.store.lease()
    return snap


def _record(r: Any) -> dict[str, Any]:
    return {"id": r.id, "quantity": r.quantity, "target": r.target, "value": _plain(r.value),
            "uncertainty": _plain(r.uncertainty), "unit": r.unit, "lab_time": r.lab_time,
            "status": r.status, "source_run": r.source_run}


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


async def _event_stream(svc: Service, request: Request) -> Any:
    last: Any = None
    last_version, quiet = -1, 0.0
    while not await request.is_disconnected():
        marker = await run_in_threadpool(_marker, svc)
        lab_moved = svc.lab.version != last_version and quiet >= 1.0
        if marker != last or lab_moved:
            last, last_version = marker, svc.lab.version
            payload = await run_in_threadpool(
                lambda: {"status": _status(svc), "jobs": svc.store.jobs(limit=30)})
            yield f"event: update\ndata: {json.dumps(payload, default=_plain)}\n\n"
            quiet = 0.0
        elif quiet >= 10.0:
            yield ": keep-alive\n\n"
            quiet = 0.0
        await asyncio.sleep(0.25)
        quiet += 0.25


def _marker(svc: Service) -> tuple[Any, ...]:
    """Changes whenever the lab's state, the queue or the lease does."""
    jobs = svc.store.jobs(limit=1)
    lease = svc.store.lease()
    return (svc.lab.snapshot().get("state"), tuple(sorted(svc.store.counts().items())),
            jobs[0]["id"] if jobs else None, lease["id"] if lease else None)
