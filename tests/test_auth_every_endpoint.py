"""Every route of the app refuses the callers it must refuse.

Routes come from ``app.url_map``, so an endpoint added later is checked without editing this
file.  Only health checks, the API documentation and ``/metrics`` (its own token, checked
below) are left out.  A route that does not take the bearer token (a webhook receiver with
its own secret) is found by asking the app's authentication hook, and must still refuse
every credential this test holds.

For the bearer routes: no token -> 401, a malformed header -> 401, a wrong or revoked token
-> 401, a key of another project -> 404 exactly like a project that does not exist, a
reader key on a writing method -> 403, all in the one JSON error shape, and none of those
requests changes anything.  The admin token is the positive control: it gets through, so
the refusals are about the credential, not the URL.
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets

import pytest

from conftest import ADMIN_TOKEN, bearer

A, B = "alpha-7f3e", "beta-91c2"
MISSING = "nope-0c4d"
WRITING = {"POST", "PUT", "PATCH", "DELETE"}
HEALTH = {"health.Healthz", "health.Readyz"}
# flask-smorest's OpenAPI JSON and browsable page, Flask's static files.
DOCS = ("api-docs.", "static")
METRICS = "metrics"
# URL parts that name something owned by one project.
SCOPED = {"project_id", "job_id"}
# Endpoints that exist today: the enumeration must at least find these.
KNOWN = {
    "projects.Projects", "projects.Project", "projects.Keys", "projects.Key", "labels.Labels", "labels.Gold",
    "aggregations.Aggregations", "aggregations.JobStatus", "results.Consensus", "results.ConsensusTask",
    "results.Workers", "results.Worker", "results.Disagreements", "results.Agreement", "imports.Imports",
}


def error_of(resp, status):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.is_json, resp.get_data(as_text=True)[:300]
    body = resp.get_json()
    assert set(body) == {"error"}, body
    assert body["error"]["status"] == status and isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.fixture
def world(app, client, run_jobs):
    """Projects A and B, keys of every role, answers and a finished job in A, a revoked key."""
    admin = bearer(ADMIN_TOKEN)
    keys = {}
    for pid in (A, B):
        assert client.post("/v1/projects", json={"id": pid, "labels": ["a", "b"]}, headers=admin).status_code == 201
        for role in ("writer", "reader"):
            created = client.post(f"/v1/projects/{pid}/keys", json={"role": role}, headers=admin).get_json()
            keys[(pid, role)] = created
    spare = client.post(f"/v1/projects/{A}/keys", json={"role": "writer"}, headers=admin).get_json()
    assert client.delete(f"/v1/projects/{A}/keys/{spare['id']}", headers=admin).status_code == 204
    rows = [["t1", "w1", "a"], ["t1", "w2", "a"], ["t2", "w1", "b"], ["t2", "w2", "b"]]
    writer_a = bearer(keys[(A, "writer")]["key"])
    assert client.post(f"/v1/projects/{A}/labels", json={"labels": rows}, headers=writer_a).status_code == 200
    job = client.post(f"/v1/projects/{A}/aggregations", json={"method": "majority_vote"}, headers=writer_a).get_json()["job"]["id"]
    run_jobs()
    assert client.get(f"/v1/jobs/{job}", headers=admin).get_json()["job"]["status"] == "finished"
    world = {"keys": keys}
    return {
        "admin": admin,
        "keys": keys,
        "webhook_secrets": webhook_secrets(client, world),
        "revoked": spare["key"],
        "job": job,
        "values": {"project_id": A, "job_id": job, "key_id": keys[(A, "reader")]["id"], "task": "t1", "worker": "w1"},
        "missing": {"project_id": MISSING, "job_id": "0" * 32},
    }


def key(world, pid, role):
    return bearer(world["keys"][(pid, role)]["key"])


# Endpoints that hand out a secret for a route with its own authentication (POST by a
# writer creates or rotates it).
SECRET_ISSUERS = {"integrations.LabelStudio": "/v1/projects/{}/integrations/label-studio"}
SECRET_HEADERS = ("X-Crowdqc-Webhook-Secret", "X-Webhook-Secret")


def webhook_secrets(client, world) -> dict[str, list[str]]:
    """Per project, the secrets of every issuer the app has."""
    out = {A: [], B: []}
    for endpoint, path in SECRET_ISSUERS.items():
        if endpoint not in client.application.view_functions:
            continue
        for pid in out:
            r = client.post(path.format(pid), json={}, headers=key(world, pid, "writer"))
            assert r.status_code == 201, r.get_data(as_text=True)
            found = _secret_values(r.get_json(), set())
            assert len(found) == 1, r.get_json()
            out[pid] += found
    return out


def routes(app):
    """(rule, method, kind) for every route and method; kind: bearer, own-secret or skipped."""
    from service.auth import authenticate_request

    out = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if rule.endpoint in HEALTH or rule.endpoint.startswith(DOCS) or rule.endpoint == METRICS:
                kind = "skipped"
            else:
                # Ask the app itself whether this route wants the bearer token: a route it
                # lets through without one authenticates by its own secret.
                path = rule.build({a: "x" for a in rule.arguments}, append_unknown=False)[1]
                with app.test_request_context(path, method=method):
                    from flask import request

                    assert request.endpoint == rule.endpoint
                    try:
                        authenticate_request()
                        kind = "own-secret"
                    except Exception:  # noqa: BLE001 - the 401 of a bearer route
                        kind = "bearer"
            out.append((rule, method, kind))
    return out


def build(rule, values) -> str:
    return rule.build({a: values.get(a, "x") for a in rule.arguments}, append_unknown=False)[1]


def call(client, method, path, headers, query=None):
    # A JSON object for methods with a body: an empty body would be refused (400) before
    # the view ever checks who is calling.
    body = {} if method in WRITING and method != "DELETE" else None
    return client.open(path, method=method, json=body, headers=headers, query_string=query)


def state(client, world):
    """What a refused request must not have changed."""
    admin = world["admin"]
    out = {}
    for pid in (A, B):
        project = client.get(f"/v1/projects/{pid}", headers=admin).get_json()
        keys = client.get(f"/v1/projects/{pid}/keys", headers=admin).get_json()["items"]
        out[pid] = (project, sorted(k["id"] for k in keys))
    out["projects"] = sorted(p["id"] for p in client.get("/v1/projects", headers=admin).get_json()["items"])
    return out


def test_every_endpoint_refuses_missing_wrong_and_foreign_credentials(app, client, world):
    table = routes(app)
    bearer_routes = [(r, m) for r, m, kind in table if kind == "bearer"]
    assert KNOWN <= {r.endpoint for r, _ in bearer_routes}, "the enumeration missed endpoints"
    before = state(client, world)
    wrong = {
        "no header": {},
        "basic scheme": {"Authorization": "Basic " + secrets.token_urlsafe(12)},
        "empty bearer": {"Authorization": "Bearer "},
        "wrong token": bearer("cq_" + secrets.token_urlsafe(32)),
        "revoked key": bearer(world["revoked"]),
        "admin token with a suffix": bearer(ADMIN_TOKEN + "x"),
        "prefix of the admin token": bearer(ADMIN_TOKEN[:-1]),
    }
    failures = []

    def check(what, fn):
        try:
            fn()
        except AssertionError as exc:
            failures.append(f"{what}: {exc}")

    for rule, method in bearer_routes:
        path = build(rule, world["values"])
        name = f"{method} {rule.rule}"
        for label, headers in wrong.items():
            def refused(headers=headers):
                resp = call(client, method, path, headers)
                e = error_of(resp, 401)
                assert e["code"] == "unauthorized"
                assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
            check(f"{name} [{label}]", refused)

        if SCOPED & set(rule.arguments):
            missing_path = build(rule, {**world["values"], **world["missing"]})
            for role in ("writer", "reader"):
                def foreign(role=role):
                    theirs = call(client, method, path, key(world, B, role))
                    absent = call(client, method, missing_path, key(world, B, role))
                    e, e_absent = error_of(theirs, 404), error_of(absent, 404)
                    # Nothing tells "exists but not yours" from "does not exist".
                    assert e["code"] == e_absent["code"] == "not_found"
                    assert e["message"].replace(A, "?").replace(world["job"], "?") == e_absent["message"].replace(MISSING, "?").replace("0" * 32, "?")
                check(f"{name} [key of another project, {role}]", foreign)
        elif method == "GET":
            def not_listed():
                resp = call(client, method, path, key(world, B, "reader"))
                assert resp.status_code < 500 and A not in resp.get_data(as_text=True)
            check(f"{name} [key of another project sees nothing of it]", not_listed)

        if method in WRITING:
            def reader_writes():
                e = error_of(call(client, method, path, key(world, A, "reader")), 403)
                assert e["code"] == "forbidden"
            check(f"{name} [reader key]", reader_writes)
            if not SCOPED & set(rule.arguments):
                check(f"{name} [writer key of another project]", lambda: error_of(call(client, method, path, key(world, B, "writer")), 403))

    assert not failures, "\n".join(failures)
    assert state(client, world) == before, "a refused request changed something"

    # Positive control, read-only methods: the admin token gets through the same URLs, so
    # the 401/404s above are about the credential.  (Only where every URL part names a real
    # object: a route with parts this test does not know may rightly say 404.)
    for rule, method in bearer_routes:
        if method == "GET" and set(rule.arguments) <= set(world["values"]):
            resp = call(client, method, build(rule, world["values"]), world["admin"])
            assert resp.status_code == 200, (rule.rule, resp.status_code, resp.get_data(as_text=True)[:300])


def test_routes_with_their_own_secret_refuse_every_other_credential(app, client, world):
    own = [(r, m) for r, m, kind in routes(app) if kind == "own-secret"]
    failures = []
    wrong = secrets.token_urlsafe(32)
    attempts = {
        "nothing": ({}, None),
        "wrong bearer": (bearer(wrong), None),
        "wrong Token credential": ({"Authorization": "Token " + wrong}, None),
        "wrong secret in the query": ({}, {"token": wrong, "secret": wrong}),
        "reader key of the project": (key(world, A, "reader"), None),
        "writer key of another project": (key(world, B, "writer"), None),
        "revoked key": (bearer(world["revoked"]), None),
    }
    for h in SECRET_HEADERS:
        attempts[f"wrong {h}"] = ({h: wrong}, None)
    for theirs in world["webhook_secrets"][B]:
        attempts["secret of another project as Token"] = ({"Authorization": "Token " + theirs}, None)
        attempts["secret of another project as Bearer"] = (bearer(theirs), None)
        for h in SECRET_HEADERS:
            attempts[f"secret of another project in {h}"] = ({h: theirs}, None)
    for ours in world["webhook_secrets"][A]:
        attempts["the project's secret, truncated"] = ({SECRET_HEADERS[0]: ours[:-1]}, None)
        attempts["the project's secret, extended"] = ({SECRET_HEADERS[0]: ours + "x"}, None)
    for rule, method in own:
        path = build(rule, world["values"])
        for label, (headers, query) in attempts.items():
            resp = call(client, method, path, headers, query)
            try:
                assert resp.status_code in (401, 403, 404), resp.status_code
                error_of(resp, resp.status_code)
            except AssertionError as exc:
                failures.append(f"{method} {rule.rule} [{label}]: {exc} {resp.get_data(as_text=True)[:200]}")
        # Positive control: the project's own secret gets past authentication.
        for ours in world["webhook_secrets"][A]:
            resp = call(client, method, path, {SECRET_HEADERS[0]: ours})
            if resp.status_code in (401, 403, 404):
                failures.append(f"{method} {rule.rule}: the project's own secret is refused ({resp.status_code})")
    assert not failures, "\n".join(failures)


def test_metrics_token_when_set(make_app):
    token = "metrics-" + secrets.token_urlsafe(16)
    client = make_app(metrics_token=token).test_client()
    for headers in ({}, bearer("wrong"), bearer(ADMIN_TOKEN), {"Authorization": token}):
        e = error_of(client.get("/metrics", headers=headers), 401)
        assert e["code"] == "unauthorized"
    resp = client.get("/metrics", headers=bearer(token))
    assert resp.status_code == 200 and "crowdqc_http_requests_total" in resp.get_data(as_text=True)


def test_metrics_need_the_admin_token_when_no_metrics_token_is_set(client):
    for headers in ({}, bearer("wrong"), {"Authorization": ADMIN_TOKEN}):
        e = error_of(client.get("/metrics", headers=headers), 401)
        assert "CROWDQC_ADMIN_TOKEN" in e["message"]
    assert client.get("/metrics", headers=bearer(ADMIN_TOKEN)).status_code == 200


def test_health_checks_and_docs_need_no_token(client):
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert client.get(path).status_code == 200, path


# -- no secret in the logs --------------------------------------------------------------------


class Capture(logging.Handler):
    """Every record of every logger, formatted as crowdqc formats its JSON lines."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        from service.observability import JsonFormatter

        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs(capsys):
    """Records of every logger at DEBUG (through a root handler), plus what crowdqc's own
    handlers wrote to stderr."""
    cap = Capture()
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in ("", "crowdqc", "rq", "werkzeug")}
    root.addHandler(cap)
    for name in saved:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield lambda: cap.lines + capsys.readouterr().err.splitlines()
    finally:
        root.removeHandler(cap)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _secret_values(obj, found):
    """String values of fields that hold secrets in a JSON response (key, token, secret)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, str) and re.search(r"(^|_)(key|token|secret)$", str(k)) and len(v) >= 16:
                found.add(v)
            else:
                _secret_values(v, found)
    elif isinstance(obj, list):
        for v in obj:
            _secret_values(v, found)
    return found


def test_no_secret_appears_in_the_logs(app, client, world, all_logs, run_jobs):
    admin = world["admin"]
    secrets_seen = {ADMIN_TOKEN, world["revoked"]} | {k["key"] for k in world["keys"].values()}
    secrets_seen |= {s for found in world["webhook_secrets"].values() for s in found}
    wrong_tokens = ["cq_" + secrets.token_urlsafe(32) for _ in range(3)]
    writer, reader = key(world, A, "writer"), key(world, A, "reader")

    # A working session: keys created and revoked, labels, an import, jobs (one that
    # fails), reads, and refusals of every kind.
    if "webhooks.Webhooks" in app.view_functions:
        # An outbound subscription whose receiver refuses connections: its deliveries fail
        # (and are logged) in the jobs below, with its signing secret at hand.
        from procs import free_port

        sub = client.post(f"/v1/projects/{A}/webhooks", headers=writer, json={
            "url": f"http://127.0.0.1:{free_port()}/hook", "events": ["aggregation.finished", "task.consensus_changed"]})
        assert sub.status_code == 201, sub.get_data(as_text=True)
        found = _secret_values(sub.get_json(), set())
        assert found, sub.get_json()
        secrets_seen |= found
    made = client.post(f"/v1/projects/{A}/keys", json={"role": "reader"}, headers=admin)
    secrets_seen |= _secret_values(made.get_json(), set())
    client.delete(f"/v1/projects/{A}/keys/{made.get_json()['id']}", headers=admin)
    client.post(f"/v1/projects/{A}/labels", json={"labels": [["t3", "w1", "a"], ["t3", "w3", "b"]]}, headers=writer)
    client.post(f"/v1/projects/{A}/labels", json={"labels": [["t3", "w1", "zzz"]]}, headers=writer)  # 422
    client.post(f"/v1/projects/{A}/labels", data=b"{not json", headers={**writer, "Content-Type": "application/json"})
    client.post(f"/v1/projects/{A}/imports?format=csv", data=b"task,worker,label\nt9,w9,a\n", headers={**writer, "Content-Type": "text/csv"})
    client.post(f"/v1/projects/{A}/aggregations", json={"method": "dawid_skene"}, headers=writer)
    client.post(f"/v1/projects/{B}/labels", json={"labels": [["t", "w", "a"]]}, headers=key(world, B, "writer"))
    client.post(f"/v1/projects/{B}/aggregations", json={"method": "majority_vote"}, headers=key(world, B, "writer"))
    client.delete(f"/v1/projects/{B}", headers=admin)  # B's job then fails: its project is gone
    run_jobs()
    for path in (f"/v1/projects/{A}/consensus", f"/v1/projects/{A}/workers", f"/v1/projects/{A}/consensus/t1", f"/v1/jobs/{world['job']}"):
        client.get(path, headers=reader)
    for table_rule, method, kind in routes(app):
        if kind == "skipped":
            continue
        path = build(table_rule, world["values"])
        for headers in [bearer(t) for t in wrong_tokens] + [{"Authorization": "Basic " + wrong_tokens[0]}, reader, key(world, B, "reader")]:
            call(client, method, path, headers)
    for pid, found in world["webhook_secrets"].items():
        for secret in found:
            # The right secret, the other project's, in every form a caller might use.
            for headers in ({SECRET_HEADERS[0]: secret}, {"Authorization": "Token " + secret}, bearer(secret)):
                for target in (A, B):
                    client.post(f"/v1/projects/{target}/integrations/label-studio/webhook", json={"action": "PROJECT_UPDATED"}, headers=headers)
    run_jobs()
    client.get("/metrics", headers=bearer(ADMIN_TOKEN))

    lines = all_logs()
    assert len(lines) > 50, "the session was not logged at all"
    access = [json.loads(line) for line in lines if line.startswith("{") and '"crowdqc.access"' in line]
    assert access and all(a.get("request_id") for a in access)
    text = "\n".join(lines)
    from service.store import digest

    # Only the first characters in the report: a failing run must not print the secrets.
    leaked = [s[:6] + "..." for s in sorted(secrets_seen | set(wrong_tokens)) if s in text]
    assert not leaked, f"secrets in the logs: {leaked}"
    # Nor their stored form: the digest is what a key lookup compares against.
    leaked = [s[:6] + "..." for s in sorted(secrets_seen) if digest(s) in text]
    assert not leaked, f"digests of secrets in the logs: {leaked}"
