"""The OpenAPI description, its browsable page, and whether the description is true.

A real session (projects, labels, gold, imports, aggregations run by an in-process RQ
worker, every read endpoint, Label Studio and outbound webhooks, the usual errors) checks
each response against what /openapi.json says of its operation, with schemathesis' own
checks (status code, content type, required headers, body schema); the walk must reach
every documented operation.  A control test shows that the same checks reject bodies that
are wrong in small ways, so that a walk that passes means something."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from conftest import ADMIN_TOKEN, bearer

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.test import TestResponse  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
ADMIN = bearer(ADMIN_TOKEN)


def test_openapi_json_is_public_and_lists_the_api(client):
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.get_json()
    assert spec["openapi"].startswith("3.") and spec["info"]["title"] == "crowdqc"
    for path in ("/v1/projects", "/v1/projects/{project_id}/labels", "/v1/projects/{project_id}/consensus",
                 "/v1/jobs/{job_id}", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path


def test_docs_page_loads_its_assets_from_the_service(client):
    page = client.get("/docs")
    assert page.status_code == 200 and b"swagger" in page.data.lower()
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.get_data(as_text=True))
    assert assets, "the page references no scripts or styles"
    for url in assets:
        assert url.startswith("/docs/static/"), f"{url} would be fetched from outside the service"
        resp = client.get(url)
        assert resp.status_code == 200 and len(resp.data) > 1000, url


def _operations(spec: dict):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                yield method.upper(), path, op


def test_every_operation_documents_its_success_body_and_no_catch_all(client):
    spec = client.get("/openapi.json").get_json()
    for method, path, op in _operations(spec):
        responses = op["responses"]
        # A 'default' response would make every status code "documented".
        assert "default" not in responses, (method, path)
        success = [code for code in responses if code.startswith("2")]
        assert success, (method, path)
        for code in success:
            content = responses[code].get("content")
            if code == "204":
                assert content is None, (method, path)
                continue
            assert content, (method, path, code)
            for media_type, body in content.items():
                # The placeholder this document used to have everywhere.
                assert body["schema"] not in ({}, {"type": "object"}), (method, path, code, media_type)
        if "security" not in op or op["security"]:
            assert "401" in responses, (method, path)


class Walk:
    """Calls the API and checks each response against the document."""

    def __init__(self, app):
        self.client = app.test_client()
        self.spec = self.client.get("/openapi.json").get_json()
        self.schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, method, template, expect, *, path=None, query=None, headers=ADMIN, **kwargs):
        path = path or {}
        url = template.format(**{k: quote(str(v), safe="") for k, v in path.items()})
        resp = self.client.open(url, method=method, query_string=query, headers=headers, **kwargs)
        assert resp.status_code == expect, (method, url, resp.status_code, resp.get_data(as_text=True)[:500])
        self.check(method, template, resp, path=path, query=query)
        self.seen.add((method, template, resp.status_code))
        return resp

    def check(self, method, template, resp, path=None, query=None):
        documented = self.spec["paths"][template][method.lower()]["responses"]
        assert str(resp.status_code) in documented, (method, template, resp.status_code)
        response_doc = documented[str(resp.status_code)]
        if "$ref" in response_doc:
            response_doc = self.spec["components"]["responses"][response_doc["$ref"].rsplit("/", 1)[1]]
        if resp.status_code not in (204, 304):
            # Without a schema for the body there would be nothing to validate it against.
            assert resp.mimetype in response_doc.get("content", {}), (method, template, resp.mimetype)
        case = self.schema[template][method].Case(path_parameters=path or None, query=query)
        case.validate_response(resp, checks=CHECKS)


@pytest.fixture
def walk(app):
    return Walk(app)


def _job(walk, job_id, status, headers=ADMIN):
    view = walk("GET", "/v1/jobs/{job_id}", 200, path={"job_id": job_id}, headers=headers).get_json()["job"]
    assert view["status"] == status, view
    return view


def _ls_event(action, annotation_id, task_id, worker, choice):
    annotation = {"id": annotation_id, "task": task_id, "completed_by": worker, "was_cancelled": False, "ground_truth": False,
                  "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}]}
    return {"action": action, "annotation": annotation, "task": {"id": task_id, "data": {"text": "review"}}, "project": {"id": 3}}


def test_a_whole_session_conforms_to_the_document(walk, run_jobs):
    P = "/v1/projects/{project_id}"
    p1 = {"project_id": "p1"}

    walk("GET", "/healthz", 200, headers={})
    walk("GET", "/readyz", 200, headers={})
    assert b"crowdqc_http_requests_total" in walk("GET", "/metrics", 200).data

    # projects and keys
    created = walk("POST", "/v1/projects", 201, json={"id": "p1", "labels": ["a", "b", "c"]})
    assert created.headers["Location"] == "/v1/projects/p1" and created.get_json()["latest_aggregation"] is None
    walk("POST", "/v1/projects", 409, json={"id": "p1", "labels": ["a"]})
    walk("POST", "/v1/projects", 422, json={"id": "p1"})
    walk("POST", "/v1/projects", 401, json={"id": "p9", "labels": ["a"]}, headers={})
    walk("POST", "/v1/projects", 415, data="id=p9", headers={**ADMIN, "Content-Type": "text/plain"})
    walk("POST", "/v1/projects", 400, data="{", headers={**ADMIN, "Content-Type": "application/json"})
    keys = {role: walk("POST", P + "/keys", 201, path=p1, json={"role": role}).get_json() for role in ("writer", "reader")}
    writer, reader = bearer(keys["writer"]["key"]), bearer(keys["reader"]["key"])
    walk("GET", P + "/keys", 200, path=p1)
    walk("GET", P + "/keys", 403, path=p1, headers=reader)
    walk("PATCH", P, 200, path=p1, json={"name": "Project one"})
    walk("GET", P, 404, path={"project_id": "nope"})
    walk("GET", "/v1/projects", 200, headers=reader)

    # labels and gold
    labels = [[f"t{i}", f"w{j}", "abc"[(i * j + i) % 3]] for i in range(12) for j in range(4)]
    walk("POST", P + "/labels", 200, path=p1, json={"labels": labels}, headers=writer)
    again = walk("POST", P + "/labels", 200, path=p1, json={"labels": labels[:3]}, headers=writer).get_json()
    assert again["duplicates"] == 3
    walk("POST", P + "/labels", 403, path=p1, json={"labels": labels[:1]}, headers=reader)
    walk("POST", P + "/labels", 422, path=p1, json={"labels": [["t1", "w1", "zzz"]]}, headers=writer)
    walk("POST", P + "/labels", 413, path=p1, json={"labels": [["t", "w", "a"]] * 10_001}, headers=writer)
    walk("POST", P + "/gold", 200, path=p1, json={"gold": [{"task": "t1", "label": "a"}, {"task": "t2", "label": "b"}]},
         headers=writer)

    # before any result
    walk("GET", P + "/consensus", 404, path=p1, headers=reader)

    # aggregation, followed through the job
    accepted = walk("POST", P + "/aggregations", 202, path=p1, json={"method": "dawid_skene"}, headers=writer)
    job_id = accepted.get_json()["job"]["id"]
    assert accepted.headers["Location"] == f"/v1/jobs/{job_id}"
    walk("POST", P + "/aggregations", 422, path=p1, json={"method": "nope"}, headers=writer)
    _job(walk, job_id, "queued", headers=reader)
    run_jobs()
    assert _job(walk, job_id, "finished", headers=reader)["result"]["summary"]["accuracy"]["gold_tasks_used"] == 2
    walk("GET", "/v1/jobs/{job_id}", 404, path={"job_id": "0" * 32})
    assert walk("GET", P, 200, path=p1, headers=reader).get_json()["latest_aggregation"]["version"] == 1

    # imports: one that works, one that fails
    imported = walk("POST", P + "/imports", 202, path=p1, data="task,worker,label\nt1,w9,a\nt20,w9,b\n",
                    headers={**writer, "Content-Type": "text/csv"})
    broken = walk("POST", P + "/imports", 202, path=p1, data="task,worker,label\nt1,w9,nope\n",
                  headers={**writer, "Content-Type": "text/csv"})
    walk("POST", P + "/imports", 400, path=p1, data="", headers={**writer, "Content-Type": "text/csv"})
    walk("POST", P + "/imports", 422, path=p1, query={"format": "xlsx"}, data="x", headers=writer)
    run_jobs()
    assert _job(walk, imported.get_json()["job"]["id"], "finished")["result"]["accepted"] == 2
    assert "nope" in _job(walk, broken.get_json()["job"]["id"], "failed")["reason"]

    # outbound webhook (its deliveries fail: nothing listens on port 9)
    hook = walk("POST", P + "/webhooks", 201, path=p1, json={"url": "http://127.0.0.1:9/hook", "events": ["aggregation.finished"]},
                headers=writer).get_json()["webhook"]
    walk("POST", P + "/webhooks", 422, path=p1, json={"url": "ftp://x", "events": ["aggregation.finished"]}, headers=writer)

    # Label Studio: the secret, one ignored and one queued event
    secret = walk("POST", P + "/integrations/label-studio", 201, path=p1, json={}, headers=writer).get_json()["label_studio"]
    LS = P + "/integrations/label-studio/webhook"
    ls_auth = {"X-Crowdqc-Webhook-Secret": secret["secret"]}
    walk("POST", LS, 200, path=p1, json={"action": "PROJECT_UPDATED"}, headers=ls_auth)
    walk("POST", LS, 202, path=p1, json=_ls_event("ANNOTATION_CREATED", 501, 801, 7, "b"), headers=ls_auth)
    walk("POST", LS, 401, path=p1, json={"action": "PROJECT_UPDATED"}, headers={"X-Crowdqc-Webhook-Secret": "wrong"})
    walk("POST", LS, 422, path=p1, json={"nothing": 1}, headers=ls_auth)
    run_jobs()
    status = walk("GET", P + "/integrations/label-studio", 200, path=p1, headers=reader).get_json()["label_studio"]
    assert [e["status"] for e in status["recent"]] == ["applied", "ignored"]

    # a second result (after the imports and the event), which the webhook tries to deliver
    second = walk("POST", P + "/aggregations", 202, path=p1, headers=writer).get_json()["job"]["id"]
    run_jobs()
    _job(walk, second, "finished")
    delivery = walk("GET", P + "/webhooks/{webhook_id}", 200, path={**p1, "webhook_id": hook["id"]},
                    headers=writer).get_json()["webhook"]["last_delivery"]
    assert delivery["status"] in ("retrying", "failed") and delivery["http_status"] is None
    walk("GET", P + "/webhooks", 200, path=p1, headers=writer)

    # results, with their ETags
    page = walk("GET", P + "/consensus", 200, path=p1, query={"limit": 5}, headers=reader)
    body = page.get_json()
    assert len(body["items"]) == 5 and body["next_cursor"] and "gold" in body["items"][0]
    walk("GET", P + "/consensus", 200, path=p1, query={"limit": 5, "cursor": body["next_cursor"]}, headers=reader)
    walk("GET", P + "/consensus", 200, path=p1, query={"min_confidence": 0.9}, headers=reader)
    walk("GET", P + "/consensus", 304, path=p1, query={"limit": 5}, headers={**reader, "If-None-Match": page.headers["ETag"]})
    walk("GET", P + "/consensus", 400, path=p1, query={"cursor": "nonsense"}, headers=reader)
    from service.api.results import encode_cursor

    walk("GET", P + "/consensus", 410, path=p1, query={"cursor": encode_cursor(999, 0)}, headers=reader)
    walk("GET", P + "/consensus", 422, path=p1, query={"limit": 0}, headers=reader)
    task = P + "/consensus/{task}"
    assert walk("GET", task, 200, path={**p1, "task": "t1"}, headers=reader).get_json()["item"]["answers"]
    walk("POST", P + "/labels", 200, path=p1, json={"labels": [["late task", "w1", "c"]]}, headers=writer)
    assert walk("GET", task, 200, path={**p1, "task": "late task"}, headers=reader).get_json()["item"]["label"] is None
    walk("GET", task, 404, path={**p1, "task": "never"}, headers=reader)
    workers = walk("GET", P + "/workers", 200, path=p1, query={"sort": "-accuracy", "limit": 2}, headers=reader)
    walk("GET", P + "/workers", 422, path=p1, query={"sort": "height"}, headers=reader)
    walk("GET", P + "/workers/{worker}", 200, path={**p1, "worker": "w1"}, headers=reader)
    walk("GET", P + "/workers/{worker}", 304, path={**p1, "worker": "w1"}, headers={**reader, "If-None-Match": "*"})
    walk("GET", P + "/workers/{worker}", 404, path={**p1, "worker": "nobody"}, headers=reader)
    assert workers.get_json()["items"][0]["confusion"]
    walk("GET", P + "/disagreements", 200, path=p1, query={"limit": 3}, headers=reader)
    walk("GET", P + "/agreement", 200, path=p1, headers=reader)

    # exports in every format
    export = P + "/exports/consensus"
    for fmt in ("csv", "jsonl", "label_studio", "label_studio_predictions"):
        resp = walk("GET", export, 200, path=p1, query={"format": fmt}, headers=reader)
        assert resp.headers["X-Crowdqc-Result-Version"] == "2"
    walk("GET", export, 422, path=p1, query={"format": "xml"}, headers=reader)

    # a project with integer labels that aggregates by itself
    walk("POST", "/v1/projects", 201, json={"id": "nums", "labels": [1, 2], "aggregation": {"method": "majority_vote", "auto": True}})
    nums = {"project_id": "nums"}
    auto = walk("POST", P + "/labels", 200, path=nums, json={"labels": [["t1", "w1", 1], ["t1", "w2", 2], ["t2", "w1", 2]]})
    auto_job = _job(walk, auto.get_json()["auto_aggregation"]["job"], "queued")
    assert auto_job["kind"] == "auto" and "scheduled_for" in auto_job
    walk("POST", P + "/aggregations", 202, path=nums)
    run_jobs()
    assert {i["label"] for i in walk("GET", P + "/consensus", 200, path=nums).get_json()["items"]} <= {1, 2}
    walk("GET", P + "/disagreements", 200, path=nums)

    # a job whose project goes away before it runs
    walk("POST", "/v1/projects", 201, json={"id": "gone", "labels": ["x", "y"]})
    gone = {"project_id": "gone"}
    walk("POST", P + "/labels", 200, path=gone, json={"labels": [["t1", "w1", "x"]]})
    orphan = walk("POST", P + "/aggregations", 202, path=gone).get_json()["job"]["id"]
    walk("DELETE", P, 204, path=gone)
    run_jobs()
    assert "no longer exists" in _job(walk, orphan, "failed")["reason"]

    # removals
    walk("DELETE", P + "/webhooks/{webhook_id}", 204, path={**p1, "webhook_id": hook["id"]}, headers=writer)
    walk("DELETE", P + "/webhooks/{webhook_id}", 404, path={**p1, "webhook_id": hook["id"]}, headers=writer)
    walk("DELETE", P + "/integrations/label-studio", 204, path=p1, headers=writer)
    walk("DELETE", P + "/integrations/label-studio", 404, path=p1, headers=writer)
    walk("DELETE", P + "/keys/{key_id}", 204, path={**p1, "key_id": keys["reader"]["id"]})
    walk("GET", P, 401, path=p1, headers=reader)
    walk("DELETE", P, 403, path=p1, headers=writer)
    walk("DELETE", P, 204, path=p1)
    walk("DELETE", P, 404, path=p1)

    never_ok = {(method, path) for method, path, _ in _operations(walk.spec)} - {
        (method, path) for method, path, status in walk.seen if 200 <= status < 300}
    assert not never_ok, f"the walk never got a success from {sorted(never_ok)}"


def _tampered(real: TestResponse, change) -> TestResponse:
    body = json.loads(real.get_data())
    change(body)
    return TestResponse([json.dumps(body).encode()], real.status, real.headers, request=real.request)


@pytest.mark.parametrize("name, template, change", [
    ("consensus item without n_labels", "consensus", lambda b: b["items"][0].pop("n_labels")),
    ("probability as a string", "consensus", lambda b: b["items"][0]["probabilities"].update(a="0.5")),
    ("confidence above 1", "consensus", lambda b: b["items"][0].update(confidence=1.5)),
    ("label as a float", "consensus", lambda b: b["items"][0].update(label=1.5)),
    ("an undeclared field", "consensus", lambda b: b.update(page=1)),
    ("next_cursor missing", "consensus", lambda b: b.pop("next_cursor")),
    ("unknown worker flag", "worker", lambda b: b["item"]["flags"].append("lazy")),
    ("confusion cell as a string", "worker", lambda b: b["item"]["confusion"]["a"].update(a="high")),
    ("unknown job status", "job", lambda b: b["job"].update(status="done")),
    ("job result of the wrong kind", "job", lambda b: b["job"]["result"].update(left_out={})),
    ("summary without counts", "project", lambda b: b["latest_aggregation"]["summary"].pop("counts")),
    ("agreement status unknown", "agreement", lambda b: b["agreement"]["fleiss_kappa"].update(status="great")),
    ("error without message", "missing", lambda b: b["error"].pop("message")),
])
def test_the_checks_reject_a_wrong_body(walk, run_jobs, name, template, change):
    walk("POST", "/v1/projects", 201, json={"id": "p1", "labels": ["a", "b"]})
    walk("POST", "/v1/projects/{project_id}/labels", 200, path={"project_id": "p1"},
         json={"labels": [["t1", "w1", "a"], ["t1", "w2", "a"], ["t2", "w1", "b"], ["t2", "w2", "a"]]})
    job = walk("POST", "/v1/projects/{project_id}/aggregations", 202, path={"project_id": "p1"}).get_json()["job"]["id"]
    run_jobs()
    calls = {
        "consensus": ("/v1/projects/{project_id}/consensus", {"project_id": "p1"}, 200),
        "worker": ("/v1/projects/{project_id}/workers/{worker}", {"project_id": "p1", "worker": "w1"}, 200),
        "job": ("/v1/jobs/{job_id}", {"job_id": job}, 200),
        "project": ("/v1/projects/{project_id}", {"project_id": "p1"}, 200),
        "agreement": ("/v1/projects/{project_id}/agreement", {"project_id": "p1"}, 200),
        "missing": ("/v1/projects/{project_id}", {"project_id": "nope"}, 404),
    }
    path_template, path, status = calls[template]
    real = walk("GET", path_template, status, path=path)
    wrong = _tampered(real, change)
    with pytest.raises(FailureGroup):
        walk.check("GET", path_template, wrong, path=path)
