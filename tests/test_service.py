"""`qnetlab serve` over real HTTP: the authorisation matrix, bad input, leases, hazardous writes,
the watchdog's veto, the audit log, keys from the CLI and the API, and the remote CLI."""

from __future__ import annotations

import json
import os
import ssl
import stat
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_service_harness import ROLES, make_keys, qnetlab, start

from qnetlab.service import auth
from qnetlab.service.audit import AuditLog


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One service (lab time still while idle, no upkeep) shared by the read-mostly tests."""
    data = tmp_path_factory.mktemp("served")
    keys = make_keys(data)
    svc = start(data, "--pace", "0", "--maintain-every", "0", keys=keys)
    yield svc
    svc.stop()


# Every endpoint: (method, path, body, scope). Write bodies are valid for authorisation but
# refused afterwards (422/404), so an allowed caller changes nothing in the matrix.
ENDPOINTS = [
    ("GET", "/api/status", None, "read:status"),
    ("GET", "/api/calibration", None, "read:calibration"),
    ("GET", "/api/calibration/history?quantity=pump_power_dbm&target=alice", None,
     "read:calibration"),
    ("GET", "/api/history", None, "read:status"),
    ("GET", "/api/runs", None, "read:runs"),
    ("GET", "/api/requests", None, "read:status"),
    ("GET", "/api/jobs", None, "read:status"),
    ("GET", "/api/jobs/999999", None, "read:status"),
    ("GET", "/api/reports", None, "read:runs"),
    ("GET", "/api/reports/none.html", None, "read:runs"),
    ("GET", "/api/leases", None, "read:status"),
    ("GET", "/api/keys", None, "admin:keys"),
    ("GET", "/api/audit", None, "read:audit"),
    ("POST", "/api/requests", {"link": "nolink", "pairs": 1}, "write:request"),
    ("POST", "/api/jobs", {"kind": "entangle", "params": {"link": "nolink", "pairs": 1}},
     "write:job"),
    ("POST", "/api/jobs", {"kind": "calibrate", "params": {"targets": ["nowhere"]}},
     ("write:job", "write:calibrate")),
    ("POST", "/api/jobs", {"kind": "report", "params": {}}, "write:job"),
    ("POST", "/api/instrument", {"node": "nonode", "setting": "pump_emission", "value": "off"},
     "write:instrument"),
    ("POST", "/api/keys", {"name": "x", "role": "admin", "expires": "forever"}, "admin:keys"),
    ("DELETE", "/api/keys/nosuchkey0", None, "admin:keys"),
    ("POST", "/api/leases", {"duration_s": 1e9}, "write:lease"),
    ("DELETE", "/api/leases/current", None, "write:lease"),
]
CALLERS = [*ROLES, None, "remote-anonymous", "wrong", "expired", "revoked", "malformed"]


def _call(served, caller, method, path, body):
    headers = {}
    if caller == "remote-anonymous":  # a client from elsewhere (uvicorn trusts loopback's XFF)
        headers["X-Forwarded-For"] = "203.0.113.7"
    elif caller == "malformed":
        headers["Authorization"] = "Bearer not-a-key"
    elif caller is not None:
        headers["Authorization"] = f"Bearer {served.keys[caller]}"
    with httpx.Client(base_url=served.url, timeout=30.0) as c:
        return c.request(method, path, json=body, headers=headers)


def _expected_allowed(caller, scopes):
    if caller in ROLES:
        return set(scopes) <= set(auth.ROLE_SCOPES[caller])
    if caller is None:
        return set(scopes) <= set(auth.ANONYMOUS_LOOPBACK)
    return None  # no valid credentials: 401


@pytest.mark.parametrize("caller", CALLERS, ids=str)
def test_authorisation_matrix_every_endpoint_every_role(served, caller):
    for method, path, body, scope in ENDPOINTS:
        scopes = (scope,) if isinstance(scope, str) else scope
        r = _call(served, caller, method, path, body)
        allowed = _expected_allowed(caller, scopes)
        where = f"{caller} {method} {path}: {r.status_code} {r.text[:200]}"
        if allowed is None:
            assert r.status_code == 401, where
        elif allowed:
            assert r.status_code not in (401, 403) and r.status_code < 500, where
        else:
            missing = next(s for s in scopes if s not in auth.ROLE_SCOPES.get(caller, ()))
            assert r.status_code == 403 and missing in r.json()["detail"], where
        assert "\n" not in r.json().get("detail", "") if r.status_code >= 400 else True
    # nothing of the matrix changed the service's state
    with served.client("admin") as c:
        assert c.get("/api/jobs").json() == []
        assert c.get("/api/leases").json()["current"] is None
        assert len(c.get("/api/keys").json()) == 7


def test_refused_keys_say_why_in_one_line(served):
    for caller, words in (("expired", "expired at"), ("revoked", "was revoked at"),
                          ("wrong", "invalid API key"), ("malformed", "malformed API key"),
                          ("remote-anonymous", "an API key is required from 203.0.113.7")):
        r = _call(served, caller, "GET", "/api/status", None)
        assert r.status_code == 401 and words in r.json()["detail"], (caller, r.text)


def _state(served):
    with served.client("admin") as c:
        return (c.get("/api/jobs").json(), c.get("/api/leases").json()["current"],
                [k["id"] for k in c.get("/api/keys").json()])


NOT_INT = st.one_of(st.text(max_size=5), st.floats(allow_nan=False), st.booleans(), st.none(),
                    st.lists(st.integers(), max_size=2))
BAD_PAIRS = st.one_of(st.integers(max_value=0), st.integers(min_value=1_000_001), NOT_INT)
BAD_FLOAT = st.one_of(st.text(max_size=5), st.booleans(), st.none(),
                      st.floats(min_value=1e7, allow_infinity=False), st.integers(max_value=-1))
BAD_BODIES = {
    "/api/requests": st.one_of(
        st.builds(lambda v: {"link": "ab", "pairs": v}, BAD_PAIRS),
        st.builds(lambda v: {"link": v, "pairs": 10},
                  st.one_of(st.text(min_size=3, max_size=80).filter(lambda s: s != "ab"),
                            st.integers(), st.none())),
        st.builds(lambda v: {"link": "ab", "pairs": 10, "max_time_s": v}, BAD_FLOAT),
        st.builds(lambda v: {"link": "ab", "pairs": 10, "min_fidelity": v},
                  st.one_of(st.floats(min_value=1.001, allow_infinity=False), BAD_FLOAT)),
        st.builds(lambda v: {"link": "ab", "pairs": 10, "bases": v},
                  st.one_of(st.just([]), st.lists(st.sampled_from(["Q", "x", "A", "AXY", ""]),
                                                  min_size=1, max_size=3))),
        st.builds(lambda k: {"link": "ab", "pairs": 10, k: 1},
                  st.text(min_size=1, max_size=10).filter(
                      lambda k: k not in ("link", "pairs", "max_time_s", "min_fidelity",
                                          "bases", "protocol")))),
    "/api/jobs": st.one_of(
        st.builds(lambda v: {"kind": v, "params": {}},
                  st.text(max_size=10).filter(lambda s: s not in ("calibrate", "entangle",
                                                                  "report"))),
        st.builds(lambda v: {"kind": "entangle", "params": {"link": "ab", "pairs": v}},
                  BAD_PAIRS),
        st.builds(lambda v: {"kind": "calibrate", "params": {"targets": v}},
                  st.one_of(st.lists(st.text(min_size=1, max_size=8).filter(
                      lambda s: s not in ("alice", "bob", "ab", "mid")), min_size=1,
                      max_size=3), st.text(max_size=4), st.integers())),
        st.builds(lambda v: {"kind": "report", "params": {"run": v}},
                  st.text(min_size=1, max_size=10).filter(lambda s: not s.isalnum()))),
    "/api/instrument": st.one_of(
        st.builds(lambda v: {"node": "alice", "setting": "pump_power_dbm", "value": v},
                  st.one_of(st.sampled_from(["on", "off"]), st.none(), st.booleans())),
        st.builds(lambda v: {"node": "alice", "setting": v, "value": 1.0},
                  st.text(max_size=12)),
        st.builds(lambda v: {"node": v, "setting": "pump_emission", "value": "off"},
                  st.text(min_size=1, max_size=12).filter(lambda s: s not in ("alice", "bob"))),
        st.builds(lambda v: {"node": "alice", "setting": "pump_emission", "value": v},
                  st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                            st.text(max_size=4).filter(lambda s: s not in ("on", "off"))))),
    "/api/keys": st.one_of(
        st.builds(lambda v: {"name": "k", "role": v},
                  st.text(max_size=10).filter(lambda s: s not in ROLES)),
        st.builds(lambda v: {"name": "k", "role": "observer", "expires": v},
                  st.one_of(st.text(max_size=8).filter(
                      lambda s: auth.DURATION_RE.match(s) is None), st.just("999d"),
                      st.just("0s"))),
        st.builds(lambda v: {"name": v, "role": "observer"},
                  st.one_of(st.just(""), st.text(min_size=65, max_size=70), st.integers()))),
    "/api/leases": st.one_of(
        st.builds(lambda v: {"duration_s": v}, st.one_of(
            st.floats(max_value=0, allow_nan=False, allow_infinity=False),
            st.floats(min_value=43201, allow_infinity=False), st.text(max_size=4),
            st.none())),
        st.builds(lambda v: {"duration_s": 60, "reason": v}, st.text(min_size=201,
                                                                     max_size=210))),
}


@pytest.mark.parametrize("path", list(BAD_BODIES))
def test_bad_input_to_every_write_endpoint_is_a_clear_4xx_and_changes_nothing(served, path):
    before = _state(served)

    @settings(max_examples=40, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(body=BAD_BODIES[path])
    def check(body):
        with served.client("admin") as c:
            r = c.post(path, content=json.dumps(body),
                       headers={"Content-Type": "application/json"})
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        detail = r.json()["detail"]
        assert isinstance(detail, str) and "\n" not in detail and len(detail) < 800, detail

    check()
    with served.client("admin") as c:  # not JSON at all
        r = c.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "\n" not in r.json()["detail"]
    assert _state(served) == before


def test_bad_input_message_names_parameter_value_and_what_is_allowed(served):
    with served.client("operator") as c:
        d = c.post("/api/requests", json={"link": "ab", "pairs": 0}).json()["detail"]
        assert "pairs" in d and "greater than or equal to 1" in d and "got 0" in d
        d = c.post("/api/requests", json={"link": "zz", "pairs": 5}).json()["detail"]
        assert d == "link 'zz' is not a link of sim_link (links: ab)"


def test_entanglement_request_runs_and_is_audited(served):
    with served.client("operator") as c:
        r = c.post("/api/requests?wait=60", json={"link": "ab", "pairs": 200})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "done", job
    assert job["result"]["delivered_pairs"] == 200 and job["result"]["run_guid"]
    with served.client("admin") as c:
        audit = c.get("/api/audit").json()
        runs = c.get("/api/runs").json()
        c.delete(f"/api/jobs/{job['id']}")  # no such endpoint: 405, also audited
    assert audit["intact"]
    mine = [a for a in audit["records"] if a["what"].startswith("POST /api/requests")
            and a["outcome"].startswith("201")]
    assert mine and "test-operator" in mine[-1]["who"] and mine[-1]["from"].startswith("127.0.0.1")
    assert any(r["guid"] == job["result"]["run_guid"] for r in runs)


def test_lease_gives_one_operator_exclusive_control(served):
    with served.client("operator") as a, served.client("operator2") as b, \
            served.client("admin") as admin:
        lease = a.post("/api/leases", json={"duration_s": 600, "reason": "aligning"})
        assert lease.status_code == 201, lease.text
        refused = b.post("/api/requests", json={"link": "ab", "pairs": 5})
        assert refused.status_code == 409
        detail = refused.json()["detail"]
        assert "test-operator " in detail and lease.json()["expires_utc"] in detail, detail
        assert b.post("/api/leases", json={"duration_s": 60}).status_code == 409
        assert b.delete("/api/leases/current").status_code == 409
        ok = a.post("/api/requests?wait=60", json={"link": "ab", "pairs": 5})
        assert ok.status_code == 201 and ok.json()["state"] == "done"
        assert admin.delete("/api/leases/current").status_code == 200  # admin breaks it
        assert b.post("/api/requests?wait=60",
                      json={"link": "ab", "pairs": 5}).json()["state"] == "done"


def test_hazardous_writes_need_the_expert_and_are_recorded(served):
    body = {"node": "alice", "setting": "mxc_heater_setpoint_k", "value": 0.01}
    with served.client("operator") as op, served.client("expert") as ex:
        refused = op.post("/api/instrument", json=body)
        assert refused.status_code == 403 and "write:hazardous" in refused.json()["detail"]
        above = op.post("/api/instrument", json={"node": "alice", "setting": "pump_power_dbm",
                                                 "value": 9.5})
        assert above.status_code == 403  # never calibrated: any power is above the point
        assert op.post("/api/instrument?wait=30", json={
            "node": "alice", "setting": "pump_emission", "value": "off"}).json()["state"] == "done"
        done = ex.post("/api/instrument?wait=30", json=body)
        assert done.status_code == 201 and done.json()["state"] == "done", done.text
    records = AuditLog(served.data).records()
    outcomes = [(r["who"], r["outcome"][:3]) for r in records
                if r["what"].startswith("POST /api/instrument")]
    assert ("test-operator (key " + served.keys["operator"].split("_")[1] + ")", "403") \
        in outcomes
    assert any(who.startswith("test-expert") and code == "201" for who, code in outcomes)


def test_keys_through_the_api_create_use_and_revoke(served):
    with served.client("admin") as admin:
        made = admin.post("/api/keys", json={"name": "night shift", "role": "observer",
                                             "expires": "2h"})
        assert made.status_code == 201
        token, key_id = made.json()["token"], made.json()["id"]
        assert token not in json.dumps(admin.get("/api/keys").json())
        with httpx.Client(base_url=served.url,
                          headers={"Authorization": f"Bearer {token}"}) as obs:
            assert obs.get("/api/whoami").json()["role"] == "observer"
            assert obs.post("/api/requests", json={"link": "ab", "pairs": 1}).status_code == 403
            assert admin.delete(f"/api/keys/{key_id}").status_code == 200
            again = obs.get("/api/status")
            assert again.status_code == 401 and "revoked" in again.json()["detail"]
    stored = (served.data / "service" / "service.sqlite").read_bytes()
    assert token.encode() not in stored and token.split("_")[2].encode() not in stored


def test_audit_log_is_append_only_and_tamper_evident(tmp_path):
    log = AuditLog(tmp_path)
    for n in range(5):
        log.append(f"key{n}", "POST /api/requests", "127.0.0.1:1", "201 ok")
    assert log.verify() == (True, "")
    lines = log.path.read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1, 2, 3, 4, 5]
    assert stat.S_IMODE(os.stat(log.path).st_mode) == 0o600
    edited = lines[:]
    edited[2] = edited[2].replace('"201 ok"', '"403 refused"')
    log.path.write_text("\n".join(edited) + "\n")
    assert log.verify() == (False, "record 3: content does not match its hash")
    log.path.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    assert not log.verify()[0] and "chain broken" in log.verify()[1]


def test_keys_cli_create_list_revoke(tmp_path):
    made = qnetlab("--data", str(tmp_path), "serve", "keys", "create", "--role", "operator",
                   "--expires", "7d", "--name", "alice's laptop")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert auth.split_token(token) is not None
    key_id = token.split("_")[1]
    listed = qnetlab("--data", str(tmp_path), "serve", "keys", "list")
    assert key_id in listed.stdout and "operator" in listed.stdout and "active" in listed.stdout
    assert token.split("_")[2] not in listed.stdout
    bad = qnetlab("--data", str(tmp_path), "serve", "keys", "create", "--role", "operator",
                  "--expires", "forever")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "--expires" in bad.stderr and "'forever'" in bad.stderr and "7d" in bad.stderr
    revoked = qnetlab("--data", str(tmp_path), "serve", "keys", "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert "revoked" in qnetlab("--data", str(tmp_path), "serve", "keys", "list").stdout
    missing = qnetlab("--data", str(tmp_path), "serve", "keys", "revoke", "nosuchkey0")
    assert missing.returncode == 1 and missing.stderr.startswith("qnetlab: error: no key")
    assert AuditLog(tmp_path).verify()[0] and len(AuditLog(tmp_path).records()) == 3


def test_refuses_non_loopback_without_tls_and_keys(tmp_path):
    nokey = qnetlab("--data", str(tmp_path), "serve", "--host", "0.0.0.0", timeout=60)
    assert nokey.returncode == 1 and "without an API key" in nokey.stderr
    assert nokey.stderr.startswith("qnetlab: error:") and nokey.stderr.count("\n") == 1
    make_keys(tmp_path)
    notls = qnetlab("--data", str(tmp_path), "serve", "--host", "0.0.0.0", "--no-tls",
                    timeout=60)
    assert notls.returncode == 1 and "without TLS" in notls.stderr


class _Pinned:
    """An SSL context trusting only the service's certificate (made once it exists)."""

    def __init__(self, cert):
        self.cert = cert

    def context(self):
        return ssl.create_default_context(cafile=str(self.cert))


def test_tls_with_a_self_signed_certificate_made_on_first_start(tmp_path):
    keys = make_keys(tmp_path)
    cert = tmp_path / "service" / "tls" / "cert.pem"
    pinned = _Pinned(cert)
    svc = start(tmp_path, "--tls", "--pace", "0", "--maintain-every", "0", keys=keys,
                scheme="https", verify=pinned)
    try:
        key_file = tmp_path / "service" / "tls" / "key.pem"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        with httpx.Client(base_url=svc.url, verify=pinned.context()) as c:
            assert c.get("/api/status").json()["state"] == "ready"
        with pytest.raises(httpx.ConnectError):  # an unpinned client does not trust it
            httpx.get(svc.url + "/api/status")
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
            httpx.get(f"http://127.0.0.1:{svc.port}/api/status", timeout=5)
    finally:
        svc.stop()


def test_watchdog_vetoes_writes_whatever_the_credentials(tmp_path):
    keys = make_keys(tmp_path)
    svc = start(tmp_path, "--pace", "120", "--maintain-every", "0", keys=keys)
    try:
        with svc.client("expert") as ex, svc.client("admin") as admin:
            r = ex.post("/api/instrument?wait=30", json={"node": "alice",
                                                         "setting": "mxc_heater_percent",
                                                         "value": 100.0})
            assert r.json()["state"] == "done", r.text
            end = time.monotonic() + 60
            while admin.get("/api/status").json()["watchdog"]["state"] != "aborted":
                assert time.monotonic() < end, "the watchdog never tripped hard"
                time.sleep(0.1)
            for c in (ex, admin):
                r = c.post("/api/requests", json={"link": "ab", "pairs": 5})
                assert r.status_code == 409, r.text
                assert r.json()["detail"].startswith("vetoed: the watchdog has the site aborted")
                assert "_alice: " in r.json()["detail"]  # the tripped condition
                r = c.post("/api/jobs", json={"kind": "calibrate", "params": {}})
                assert r.status_code == 409 and "vetoed" in r.json()["detail"]
            assert admin.get("/api/requests").json() == []
            # a write that only makes the lab safer still passes
            off = ex.post("/api/instrument?wait=30", json={"node": "bob",
                                                           "setting": "pump_emission",
                                                           "value": "off"})
            assert off.json()["state"] == "done", off.text
    finally:
        svc.stop()


def test_remote_cli_runs_the_commands_against_the_service(served, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(served.keys["operator"] + "\n")
    remote = ("--server", served.url, "--key-file", str(key_file))
    status = qnetlab(*remote, "status")
    assert status.returncode == 0, status.stderr
    assert "station sim_link (served)" in status.stdout and "node alice: MXC" in status.stdout
    ent = qnetlab(*remote, "entangle", "--pairs", "100", "--min-fidelity", "0")
    assert ent.returncode == 0, ent.stderr
    assert "100 of 100 pairs on ab" in ent.stdout and "verdict: delivered" in ent.stdout
    runs = qnetlab(*remote, "runs")
    assert "service.request" in runs.stdout
    cal = qnetlab(*remote, "calibrate", "alice")
    assert cal.returncode == 0, cal.stderr
    assert "alice" in cal.stdout and "(ok)" in cal.stdout
    typo = qnetlab(*remote, "calibrate", "alicia")
    assert typo.returncode == 1 and "names no calibration or target" in typo.stderr
    out = tmp_path / "dash.html"
    rep = qnetlab(*remote, "report", "--dashboard", "--out", str(out))
    assert rep.returncode == 0 and "calibration dashboard" in out.read_text()
    anon = qnetlab("--server", served.url, "entangle", "--pairs", "5",
                   env={"QNETLAB_API_KEY": ""})
    assert anon.returncode == 1 and anon.stderr.count("\n") == 1
    assert "403" in anon.stderr and "write:request" in anon.stderr
    env_key = qnetlab("--server", served.url, "status",
                      env={"QNETLAB_API_KEY": served.keys["expired"]})
    assert env_key.returncode == 1 and "expired" in env_key.stderr
    local_only = qnetlab("--server", served.url, "demo")
    assert local_only.returncode == 2 and "runs only locally" in local_only.stderr
    down = qnetlab("--server", "http://127.0.0.1:9", "status")
    assert down.returncode == 1 and down.stderr.startswith("qnetlab: error: cannot reach")


def _ca_and_client(folder):
    """A CA certificate file and a client certificate+key file it signed (PEM)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def cert(subject, issuer, key, signer, ca):
        now = dt.datetime.now(dt.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(signer, hashes.SHA256()))

    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), \
        ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test lab CA")])
    client_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "operator laptop")])
    ca_cert = cert(ca_name, ca_name, ca_key, ca_key, True)
    client_cert = cert(client_name, ca_name, client_key, ca_key, False)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (folder / "client.pem").write_bytes(client_cert.public_bytes(pem) + client_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder / "ca.pem", folder / "client.pem"


class _PinnedWithClientCert(_Pinned):
    def __init__(self, cert, client):
        super().__init__(cert)
        self.client = client

    def context(self):
        ctx = super().context()
        ctx.load_cert_chain(str(self.client))
        return ctx


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_ca(tmp_path):
    ca, client = _ca_and_client(tmp_path)
    keys = make_keys(tmp_path)
    cert = tmp_path / "service" / "tls" / "cert.pem"
    pinned = _PinnedWithClientCert(cert, client)
    svc = start(tmp_path, "--client-ca", str(ca), "--pace", "0", "--maintain-every", "0",
                keys=keys, scheme="https", verify=pinned)
    try:
        with httpx.Client(base_url=svc.url, verify=pinned.context()) as c:
            assert c.get("/api/status").json()["state"] == "ready"
        with pytest.raises(httpx.HTTPError):  # no client certificate: the handshake fails
            httpx.get(svc.url + "/api/status", verify=_Pinned(cert).context(), timeout=10)
        remote = qnetlab("--server", svc.url, "status",
                         env={"QNETLAB_SERVER_CA": str(cert), "QNETLAB_CLIENT_CERT": str(client),
                              "QNETLAB_API_KEY": keys["observer"]})
        assert remote.returncode == 0 and "station sim_link (served)" in remote.stdout
    finally:
        svc.stop()


def test_processes_sharing_the_data_dir_never_corrupt_it(served):
    """Key-creating CLI processes and API writers at once: every key, job and audit record
    is there once, and the audit chain is intact."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    cli = [sys.executable, "-m", "qnetlab", "--data", str(served.data), "serve", "keys",
           "create", "--role", "observer", "--expires", "1h", "--name"]
    procs = [subprocess.Popen([*cli, f"proc-{i}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(6)]

    def submit(i):
        with served.client("admin") as c:
            return c.post("/api/jobs", json={"kind": "report", "params": {"dashboard": True}},
                          headers={"Idempotency-Key": f"shared-{i}"}).json()["id"]

    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(submit, range(12)))
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len(set(ids)) == 12
    with served.client("admin") as c:
        names = [k["name"] for k in c.get("/api/keys").json()]
        audit = c.get("/api/audit", params={"limit": 100_000}).json()
    assert sorted(n for n in names if n.startswith("proc-")) == [f"proc-{i}" for i in range(6)]
    assert audit["intact"], audit["problem"]
    seqs = [r["seq"] for r in audit["records"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert sum(r["what"] == "keys create" for r in audit["records"]) == 6
    for i in ids:
        assert served.wait_job(i)["state"] == "done"
