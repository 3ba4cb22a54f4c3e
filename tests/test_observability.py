"""What /metrics reports and what the logs say, checked against requests and jobs whose
outcome the test knows: request counts by route template and status, latency histograms,
answers ingested by outcome, jobs by outcome with durations, queue depth; the request id
in the response header and in the JSON log line of the same request."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ADMIN_TOKEN, bearer

LABELS_ROUTE = "/v1/projects/<project_id>/labels"


def scrape(client) -> dict:
    """{(sample name, frozenset(labels)): value} of one /metrics scrape."""
    resp = client.get("/metrics", headers=bearer(ADMIN_TOKEN))
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    out = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def val(metrics, name, **labels) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def delta(before, after, name, **labels) -> float:
    # Request metrics live in this process and other tests have added to them.
    return val(after, name, **labels) - val(before, name, **labels)


def access_lines(capsys) -> list[dict]:
    out = []
    for line in capsys.readouterr().err.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("logger") == "crowdqc.access":
                out.append(rec)
    return out


def test_request_metrics_by_route_and_status_with_latency(client, project):
    p = project("m1", labels=("a", "b"))
    before = scrape(client)
    ok = {"labels": [["t1", "w1", "a"], ["t1", "w2", "a"], ["t2", "w1", "b"]]}
    assert client.post("/v1/projects/m1/labels", json=ok, headers=p["writer"]).status_code == 200
    # one duplicate, one replacement (w2 changes its answer), one new answer
    again = {"labels": [["t1", "w1", "a"], ["t1", "w2", "b"], ["t3", "w1", "a"]]}
    assert client.post("/v1/projects/m1/labels", json=again, headers=p["writer"]).get_json()["replaced"] == 1
    assert client.post("/v1/projects/m1/labels", json=ok, headers=bearer("cq_wrong")).status_code == 401
    assert client.post("/v1/projects/m1/labels", json={"labels": [["t", "w", "zzz"]]}, headers=p["writer"]).status_code == 422
    for path in ("/wp-login.php", "/v1/projects/m1/nothing-here", "/.env"):
        assert client.get(path).status_code == 404
    after = scrape(client)

    req = "crowdqc_http_requests_total"
    for status, n in (("200", 2), ("401", 1), ("422", 1)):
        assert delta(before, after, req, method="POST", route=LABELS_ROUTE, status=status) == n, status
    # Unknown paths share one series: a scanner cannot grow the metrics without bound.
    assert delta(before, after, req, method="GET", route="<unmatched>", status="404") == 3
    assert not [k for k in after if "wp-login" in str(k) or ".env" in str(k)]

    lat = "crowdqc_http_request_duration_seconds"
    count = delta(before, after, f"{lat}_count", method="POST", route=LABELS_ROUTE)
    assert count == 4
    buckets = sorted(
        (float(dict(k[1])["le"]), after[k] - before.get(k, 0.0))
        for k in after
        if k[0] == f"{lat}_bucket" and dict(k[1]).get("route") == LABELS_ROUTE and dict(k[1]).get("method") == "POST"
    )
    assert buckets[-1] == (float("inf"), 4)
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))  # cumulative
    assert 0 < delta(before, after, f"{lat}_sum", method="POST", route=LABELS_ROUTE) < 10

    ans = "crowdqc_answers_ingested_total"
    assert delta(before, after, ans, outcome="accepted") == 4
    assert delta(before, after, ans, outcome="duplicate") == 1
    assert delta(before, after, ans, outcome="replaced") == 1


def test_job_metrics_and_queue_depth(client, project, admin, run_jobs):
    p = project("m2", labels=("a", "b"))
    rows = {"labels": [["t1", "w1", "a"], ["t1", "w2", "a"], ["t2", "w1", "b"], ["t2", "w2", "b"]]}
    client.post("/v1/projects/m2/labels", json=rows, headers=p["writer"])
    m = scrape(client)
    assert val(m, "crowdqc_redis_up") == 1
    for state in ("queued", "scheduled", "started", "failed"):
        assert val(m, "crowdqc_queue_jobs", state=state) == 0, state
    assert val(m, "crowdqc_jobs_total", kind="aggregation", outcome="finished") == 0

    client.post("/v1/projects/m2/aggregations", json={"method": "majority_vote"}, headers=p["writer"])
    client.post("/v1/projects/m2/aggregations", json={"method": "wawa"}, headers=p["writer"])
    # A project with automatic aggregation: its debounced job waits in the scheduled set.
    q = project("m3", labels=("a", "b"), aggregation={"method": "majority_vote", "auto": True})
    client.post("/v1/projects/m3/labels", json=rows, headers=q["writer"])
    m = scrape(client)
    assert val(m, "crowdqc_queue_jobs", state="queued") == 2
    assert val(m, "crowdqc_queue_jobs", state="scheduled") == 1

    # Only due jobs run: the two queued ones finish, the scheduled one is not yet due.
    run_jobs(with_scheduler=False)
    m = scrape(client)
    assert val(m, "crowdqc_queue_jobs", state="queued") == 0
    assert val(m, "crowdqc_queue_jobs", state="scheduled") == 1
    assert val(m, "crowdqc_jobs_total", kind="aggregation", outcome="finished") == 2
    assert val(m, "crowdqc_jobs_total", kind="aggregation", outcome="failed") == 0
    assert val(m, "crowdqc_job_duration_seconds_count", kind="aggregation") == 2
    assert val(m, "crowdqc_job_duration_seconds_bucket", kind="aggregation", le="+Inf") == 2
    assert 0 < val(m, "crowdqc_job_duration_seconds_sum", kind="aggregation") < 60

    # A job whose project is deleted before it runs fails, with its duration counted.
    client.post("/v1/projects/m2/aggregations", json={"method": "majority_vote"}, headers=p["writer"])
    assert client.delete("/v1/projects/m2", headers=admin).status_code == 204
    run_jobs(with_scheduler=False)
    m = scrape(client)
    assert val(m, "crowdqc_jobs_total", kind="aggregation", outcome="failed") == 1
    assert val(m, "crowdqc_queue_jobs", state="failed") == 1
    assert val(m, "crowdqc_job_duration_seconds_count", kind="aggregation") == 3


def test_every_job_kind_is_counted_by_kind_and_outcome(make_app, admin, namespace):
    """Aggregations, imports, webhook deliveries and Label Studio drains, run by the real
    `crowdqc worker`: each counted under its kind and outcome, each run's duration in its
    kind's histogram, and the queue depth covering them all."""
    import os
    import subprocess

    from procs import BIN

    from conftest import REDIS_URL

    # One retry of a failed delivery, at once: the burst worker runs it too.
    client = make_app(webhook_retry_intervals=(0,)).test_client()
    assert client.post("/v1/projects", json={"id": "k", "labels": ["a", "b"]}, headers=admin).status_code == 201
    # Nothing listens on port 1: each delivery attempt fails.
    r = client.post("/v1/projects/k/webhooks", json={"url": "http://127.0.0.1:1/hook", "events": ["aggregation.finished"]},
                    headers=admin)
    assert r.status_code == 201, r.get_json()
    rows = {"labels": [["t1", "w1", "a"], ["t1", "w2", "a"], ["t2", "w1", "b"]]}
    assert client.post("/v1/projects/k/labels", json=rows, headers=admin).status_code == 200
    assert client.post("/v1/projects/k/aggregations", json={"method": "majority_vote"}, headers=admin).status_code == 202
    csv = {"Content-Type": "text/csv"}
    assert client.post("/v1/projects/k/imports", data="task,worker,label\nt3,w1,a\n", headers={**admin, **csv}).status_code == 202
    # an undeclared label: the import job fails
    assert client.post("/v1/projects/k/imports", data="task,worker,label\nt4,w1,zzz\n", headers={**admin, **csv}).status_code == 202
    r = client.post("/v1/projects/k/integrations/label-studio", json={}, headers=admin)
    assert r.status_code == 201, r.get_json()
    event = {"action": "ANNOTATION_CREATED", "project": {"id": 3},
             "task": {"id": 9, "data": {"text": "x"}},
             "annotation": {"id": 90, "task": 9, "completed_by": 7, "was_cancelled": False, "ground_truth": False,
                            "result": [{"from_name": "choice", "to_name": "text", "type": "choices", "value": {"choices": ["a"]}}]}}
    r = client.post("/v1/projects/k/integrations/label-studio/webhook", json=event,
                    headers={"X-Crowdqc-Webhook-Secret": r.get_json()["label_studio"]["secret"]})
    assert r.status_code == 202, r.get_json()
    m = scrape(client)
    assert val(m, "crowdqc_queue_jobs", state="queued") == 4  # aggregation, two imports, one drain

    env = {**os.environ, "REDIS_URL": REDIS_URL, "CROWDQC_KEY_PREFIX": namespace["key_prefix"],
           "CROWDQC_QUEUE": namespace["queue_name"]}
    done = subprocess.run([str(BIN / "crowdqc"), "worker", "--burst", "--no-scheduler"], env=env, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    m = scrape(client)
    expected = {
        ("aggregation", "finished"): 1,
        ("import", "finished"): 1,
        ("import", "failed"): 1,
        ("webhook_delivery", "retried"): 1,
        ("webhook_delivery", "failed"): 1,
        ("label_studio_drain", "finished"): 1,
    }
    counted = {(dict(k[1])["kind"], dict(k[1])["outcome"]): v for k, v in m.items() if k[0] == "crowdqc_jobs_total" and v}
    assert counted == expected
    # every kind and outcome is reported, zeros included, so that rate() has a series
    for kind in ("aggregation", "import", "webhook_delivery", "label_studio_drain"):
        for outcome in ("finished", "failed", "lost", "retried"):
            assert ("crowdqc_jobs_total", frozenset({"kind": kind, "outcome": outcome}.items())) in m, (kind, outcome)
    # one duration per run that ended (both attempts of the delivery)
    runs = {"aggregation": 1, "import": 2, "webhook_delivery": 2, "label_studio_drain": 1}
    for kind, n in runs.items():
        assert val(m, "crowdqc_job_duration_seconds_count", kind=kind) == n, kind
        assert val(m, "crowdqc_job_duration_seconds_bucket", kind=kind, le="+Inf") == n, kind
        assert 0 < val(m, "crowdqc_job_duration_seconds_sum", kind=kind) < 60, kind
    assert val(m, "crowdqc_queue_jobs", state="queued") == 0
    assert val(m, "crowdqc_queue_jobs", state="failed") == 2  # the bad import, the undeliverable event
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics", headers=bearer(ADMIN_TOKEN)).get_data(as_text=True))}
    assert "imports, webhook deliveries, Label Studio drains" in families["crowdqc_queue_jobs"].documentation


def test_request_id_in_header_and_in_the_log_line(client, project, capsys):
    p = project("r1")
    capsys.readouterr()
    sent = {
        "given": ("req-42.abc:x", "req-42.abc:x"),
        # Anything that could forge a log field or split a header is replaced.
        "quote": ('a"b', None),
        "space": ("a b", None),
        "too long": ("x" * 129, None),
        "absent": (None, None),
    }
    seen = {}
    for name, (incoming, expected) in sent.items():
        headers = {**p["reader"], **({"X-Request-ID": incoming} if incoming else {})}
        resp = client.get("/v1/projects/r1", headers=headers)
        rid = resp.headers["X-Request-ID"]
        if expected:
            assert rid == expected
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", rid), (name, rid)
        seen[name] = rid
    assert len(set(seen.values())) == len(seen)
    # Refused and failed requests carry one too.
    refused = client.get("/v1/projects/r1", headers={"X-Request-ID": "refused-1"})
    assert refused.status_code == 401 and refused.headers["X-Request-ID"] == "refused-1"
    missing = client.get("/v1/nowhere", headers={"X-Request-ID": "missing-1"})
    assert missing.status_code == 404 and missing.headers["X-Request-ID"] == "missing-1"

    lines = {rec["request_id"]: rec for rec in access_lines(capsys)}
    for rid in seen.values():
        rec = lines[rid]
        assert (rec["method"], rec["route"], rec["path"], rec["status"]) == ("GET", "/v1/projects/<project_id>", "/v1/projects/r1", 200)
        assert rec["level"] == "INFO" and rec["duration_ms"] >= 0
    assert lines["refused-1"]["status"] == 401
    assert lines["missing-1"]["route"] == "<unmatched>" and lines["missing-1"]["status"] == 404


def test_log_lines_inside_a_request_carry_its_id(make_app, capsys):
    """A log line written while handling a request (here: the 503 of an unreachable Redis)
    names the request, so an operator can join it to the access line and the client's
    report."""
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0", REDIS=None, redis_timeout_seconds=0.2, redis_connect_timeout_seconds=0.2)
    client = app.test_client()
    capsys.readouterr()
    resp = client.get("/v1/projects", headers={**bearer(ADMIN_TOKEN), "X-Request-ID": "down-1"})
    assert resp.status_code == 503
    recs = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    mine = [r for r in recs if r.get("request_id") == "down-1"]
    assert {r["logger"] for r in mine} == {"crowdqc.api", "crowdqc.access"}
    assert any(r["level"] == "ERROR" and "redis unavailable" in r["msg"] for r in mine)


@pytest.fixture(autouse=True)
def _info_logs():
    # Another test may have raised the crowdqc loggers' level; these tests read INFO lines.
    import logging

    logger = logging.getLogger("crowdqc")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)
