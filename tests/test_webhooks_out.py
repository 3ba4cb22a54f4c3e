"""Outbound webhooks, seen from a real receiver: an HTTP server on loopback that records every
delivery and answers as each test scripts it."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import aggregate

EVENTS = ["aggregation.finished", "task.consensus_changed", "task.confidence_reached", "worker.flagged"]


class Receiver:
    """Records (headers, body) of every POST; answers with the next scripted status (then 200)."""

    def __init__(self):
        self.requests: list[tuple[dict, bytes]] = []
        self.script: list[int] = []
        self.location = None
        self.delay = 0.0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = receiver.script.pop(0) if receiver.script else 200
                self.send_response(status)
                if receiver.location and 300 <= status < 400:
                    self.send_header("Location", receiver.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?src=crowdqc"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self, event_type=None) -> list[dict]:
        out = [json.loads(body) for _, body in self.requests]
        return [b for b in out if event_type is None or b["type"] == event_type]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def verify(headers: dict, body: bytes, secret: str) -> bool:
    """What a receiver does (docs/webhooks.md)."""
    ts = headers["x-crowdqc-timestamp"]
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers["x-crowdqc-signature"], f"sha256={mac}")


def subscribe(client, p, url, events=EVENTS, headers=None, **extra):
    resp = client.post(f"/v1/projects/{p['id']}/webhooks", json={"url": url, "events": events, **extra},
                       headers=headers or p["writer"])
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["webhook"]


def post(client, p, rows):
    resp = client.post(f"/v1/projects/{p['id']}/labels", json={"labels": rows}, headers=p["writer"])
    assert resp.status_code == 200, resp.get_json()


def consensus(client, p) -> dict:
    body = client.get(f"/v1/projects/{p['id']}/consensus?limit=1000", headers=p["reader"]).get_json()
    return {it["task"]: it for it in body["items"]}


def hooks(client, p) -> dict:
    resp = client.get(f"/v1/projects/{p['id']}/webhooks", headers=p["writer"])
    assert resp.status_code == 200, resp.get_json()
    return {h["id"]: h for h in resp.get_json()["items"]}


@pytest.fixture
def configured(make_app):
    """(client, project) of an app with settings overridden; run_jobs serves its queue too
    (one namespace per test), and jobs carry the settings of the app that enqueued them."""

    def build(**overrides):
        from conftest import ADMIN_TOKEN, bearer

        client = make_app(**overrides).test_client()
        admin = bearer(ADMIN_TOKEN)
        assert client.post("/v1/projects", json={"id": "p1", "labels": ["a", "b"]}, headers=admin).status_code == 201
        return client, {"id": "p1", "writer": admin, "reader": admin}

    return build


def good_answers(n_tasks=12, workers=("w1", "w2", "w3", "w4")):
    return [[f"t{i:02d}", w, "ab"[i % 2]] for i in range(n_tasks) for w in workers]


# -- subscriptions ---------------------------------------------------------------------------


def test_subscriptions_are_created_listed_and_deleted_by_writers(client, project, admin, receiver):
    p = project("p1")
    hook = subscribe(client, p, receiver.url, confidence_target=0.9)
    assert hook["id"] and hook["secret"].startswith("whsec_") and len(hook["secret"]) > 30
    assert hook["events"] == EVENTS and hook["confidence_target"] == 0.9 and hook["url"] == receiver.url
    other = subscribe(client, p, receiver.url, ["aggregation.finished"], headers=admin)
    assert other["secret"] != hook["secret"]

    listed = hooks(client, p)
    assert set(listed) == {hook["id"], other["id"]}
    # The secret is shown once, at creation.
    assert all("secret" not in h for h in listed.values())
    assert listed[hook["id"]]["last_delivery"] is None
    one = client.get(f"/v1/projects/p1/webhooks/{hook['id']}", headers=p["writer"])
    assert one.status_code == 200 and "secret" not in one.get_json()["webhook"]

    assert client.delete(f"/v1/projects/p1/webhooks/{hook['id']}", headers=p["writer"]).status_code == 204
    assert set(hooks(client, p)) == {other["id"]}
    resp = client.delete(f"/v1/projects/p1/webhooks/{hook['id']}", headers=p["writer"])
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "not_found"


def test_subscription_auth(client, project, receiver):
    p, q = project("p1"), project("p2")
    body = {"url": receiver.url, "events": ["aggregation.finished"]}
    assert client.post("/v1/projects/p1/webhooks", json=body, headers=p["reader"]).status_code == 403
    assert client.get("/v1/projects/p1/webhooks", headers=p["reader"]).status_code == 403
    # A key of another project learns nothing, not even that the project exists.
    assert client.post("/v1/projects/p1/webhooks", json=body, headers=q["writer"]).status_code == 404
    assert client.get("/v1/projects/p1/webhooks", headers=q["writer"]).status_code == 404
    hook = subscribe(client, p, receiver.url, confidence_target=0.9)
    assert client.delete(f"/v1/projects/p1/webhooks/{hook['id']}", headers=q["writer"]).status_code == 404
    assert client.delete(f"/v1/projects/p1/webhooks/{hook['id']}", headers=p["reader"]).status_code == 403
    assert client.post("/v1/projects/p1/webhooks", json=body).status_code == 401


@pytest.mark.parametrize(
    "body, field",
    [
        ({"events": ["aggregation.finished"]}, "url"),
        ({"url": "ftp://example.org/x", "events": ["aggregation.finished"]}, "url"),
        ({"url": "http://", "events": ["aggregation.finished"]}, "url"),
        ({"url": "http://user:pw@example.org/", "events": ["aggregation.finished"]}, "url"),
        ({"url": "http://example.org/\nx", "events": ["aggregation.finished"]}, "url"),
        ({"url": "http://example.org/"}, "events"),
        ({"url": "http://example.org/", "events": []}, "events"),
        ({"url": "http://example.org/", "events": ["task.created"]}, "events"),
        ({"url": "http://example.org/", "events": ["task.confidence_reached"]}, "confidence_target"),
        ({"url": "http://example.org/", "events": ["task.confidence_reached"], "confidence_target": 1.5}, "confidence_target"),
        ({"url": "http://example.org/", "events": ["aggregation.finished"], "colour": "red"}, "colour"),
    ],
)
def test_bad_subscriptions_name_the_field(client, project, body, field):
    p = project("p1")
    resp = client.post("/v1/projects/p1/webhooks", json=body, headers=p["writer"])
    assert resp.status_code == 422, resp.get_json()
    paths = [d.get("path") for d in resp.get_json()["error"].get("details", [])]
    assert any(path == field or path.startswith(f"{field}") for path in paths), resp.get_json()


# -- deliveries ------------------------------------------------------------------------------


def test_aggregation_finished_is_signed_and_self_contained(client, project, run_jobs, receiver):
    p = project("p1")
    hook = subscribe(client, p, receiver.url, ["aggregation.finished"])
    post(client, p, good_answers())
    version = aggregate(client, p, run_jobs)

    ((headers, body),) = receiver.requests
    assert verify(headers, body, hook["secret"])
    assert not verify(headers, body, "whsec_wrong")
    assert headers["content-type"] == "application/json"
    assert abs(int(headers["x-crowdqc-timestamp"]) - time.time()) < 60
    event = json.loads(body)
    assert set(event) == {"id", "type", "created", "project", "data"}
    assert event["type"] == headers["x-crowdqc-event"] == "aggregation.finished"
    assert event["id"] == headers["x-crowdqc-delivery"]
    assert event["project"] == "p1"
    data = event["data"]
    assert data["version"] == version and data["previous_version"] is None
    assert data["method"] == "majority_vote"
    assert data["summary"]["counts"]["tasks"] == 12
    assert data["changes"]["tasks_changed"] == 12

    last = hooks(client, p)[hook["id"]]["last_delivery"]
    assert last["status"] == "delivered" and last["http_status"] == 200 and last["attempt"] == 1
    assert last["event"] == event["id"] and last["type"] == "aggregation.finished"


def test_consensus_changed_carries_old_and_new_label(client, project, run_jobs, receiver):
    p = project("p1")
    hook = subscribe(client, p, receiver.url, ["task.consensus_changed"])
    rows = good_answers(4)
    post(client, p, rows + [["solo", "w1", "a"]])
    v1 = aggregate(client, p, run_jobs)
    (first,) = receiver.bodies()
    # Against no previous result, every task is new (old label null).
    assert first["data"]["version"] == v1 and first["data"]["previous_version"] is None
    assert {t["task"]: (t["old_label"], t["new_label"]) for t in first["data"]["tasks"]} == {
        "t00": (None, "a"), "t01": (None, "b"), "t02": (None, "a"), "t03": (None, "b"), "solo": (None, "a")}

    # Two more workers turn "solo" from a into b; nothing else changes.
    post(client, p, [["solo", "w2", "b"], ["solo", "w3", "b"]])
    v2 = aggregate(client, p, run_jobs)
    second = receiver.bodies()[1]
    assert second["type"] == "task.consensus_changed" and second["project"] == "p1"
    assert second["data"]["version"] == v2 and second["data"]["previous_version"] == v1
    (change,) = second["data"]["tasks"]
    assert change == {"task": "solo", "old_label": "a", "new_label": "b",
                      "confidence": consensus(client, p)["solo"]["confidence"], "old_confidence": 1.0}
    assert change["confidence"] == pytest.approx(2 / 3)
    assert second["data"]["total"] == 1 and second["data"]["truncated"] is False
    assert all(verify(h, b, hook["secret"]) for h, b in receiver.requests)

    # Same data again: no change, no delivery.
    aggregate(client, p, run_jobs)
    assert len(receiver.requests) == 2


def test_confidence_reached_fires_once_per_crossing(client, project, run_jobs, receiver):
    p = project("p1")
    subscribe(client, p, receiver.url, ["task.confidence_reached"], confidence_target=0.9)
    post(client, p, [["x", "w1", "a"], ["x", "w2", "a"], ["x", "w3", "b"],
                     ["y", "w1", "a"], ["y", "w2", "a"], ["y", "w3", "a"]])
    aggregate(client, p, run_jobs)  # x 2/3, y 1.0
    post(client, p, [["x", f"u{i}", "a"] for i in range(4)])
    aggregate(client, p, run_jobs)  # x 6/7
    post(client, p, [["x", f"v{i}", "a"] for i in range(4)])
    v3 = aggregate(client, p, run_jobs)  # x 10/11
    post(client, p, [["x", "z", "a"]])
    aggregate(client, p, run_jobs)  # x 11/12: still above, no new event

    events = receiver.bodies("task.confidence_reached")
    reached = [(e["data"]["version"], t["task"]) for e in events for t in e["data"]["tasks"]]
    assert [task for _, task in reached] == ["y", "x"]
    assert reached[1][0] == v3
    x = events[1]["data"]["tasks"][0]
    assert x["label"] == "a" and x["confidence"] == pytest.approx(10 / 11) and x["old_confidence"] == pytest.approx(6 / 7)
    assert events[1]["data"]["confidence_target"] == 0.9


def test_worker_flagged_when_newly_flagged(client, project, run_jobs, receiver):
    p = project("p1")
    subscribe(client, p, receiver.url, ["worker.flagged"])
    post(client, p, good_answers())
    aggregate(client, p, run_jobs)
    assert receiver.bodies("worker.flagged") == []

    # A worker who always answers the other label.
    post(client, p, [[f"t{i:02d}", "spam", "ba"[i % 2]] for i in range(12)])
    v2 = aggregate(client, p, run_jobs)
    (event,) = receiver.bodies("worker.flagged")
    assert event["data"]["version"] == v2
    (worker,) = event["data"]["workers"]
    api = client.get("/v1/projects/p1/workers/spam", headers=p["reader"]).get_json()["item"]
    assert worker["worker"] == "spam" and worker["flags"] == api["flags"] and "low_agreement" in worker["new_flags"]
    assert worker["agreement"] == api["agreement"] == 0.0 and worker["n_answers"] == 12
    assert "confusion" not in worker

    aggregate(client, p, run_jobs)  # still flagged: not news
    assert len(receiver.bodies("worker.flagged")) == 1


def test_a_failed_delivery_is_retried_with_the_same_event_id(configured, run_jobs, receiver):
    client, p = configured(webhook_retry_intervals=(0, 0))
    hook = subscribe(client, p, receiver.url, ["aggregation.finished", "task.consensus_changed"])
    receiver.script = [500]
    post(client, p, good_answers(3))
    aggregate(client, p, run_jobs)

    bodies = receiver.bodies()
    assert len(bodies) == 3  # two events, one of them twice
    ids = [b["id"] for b in bodies]
    assert len(set(ids)) == 2
    retried = [h for h, b in receiver.requests if ids.count(json.loads(b)["id"]) == 2]
    first, second = [b for h, b in receiver.requests if ids.count(json.loads(b)["id"]) == 2]
    assert first == second  # the very same event, byte for byte
    assert retried[0]["x-crowdqc-delivery"] == retried[1]["x-crowdqc-delivery"]
    assert [h["x-crowdqc-attempt"] for h in retried] == ["1", "2"]
    assert all(verify(h, b, hook["secret"]) for h, b in receiver.requests)
    last = hooks(client, p)[hook["id"]]["last_delivery"]
    assert last["status"] == "delivered"


def test_retries_with_a_delay_go_through_the_scheduler(configured, run_jobs, receiver):
    client, p = configured(webhook_retry_intervals=(1,))
    hook = subscribe(client, p, receiver.url, ["aggregation.finished"])
    receiver.script = [503]
    post(client, p, good_answers(3))
    aggregate(client, p, run_jobs)
    assert len(receiver.requests) == 1
    last = hooks(client, p)[hook["id"]]["last_delivery"]
    assert last["status"] == "retrying" and last["http_status"] == 503
    time.sleep(1.2)
    run_jobs()
    assert len(receiver.requests) == 2
    assert hooks(client, p)[hook["id"]]["last_delivery"]["status"] == "delivered"


def test_redirects_are_not_followed_and_failures_are_recorded(configured, run_jobs, receiver):
    client, p = configured(webhook_retry_intervals=())
    elsewhere = Receiver()
    try:
        hook = subscribe(client, p, receiver.url, ["aggregation.finished"])
        receiver.script = [307]
        receiver.location = elsewhere.url
        post(client, p, good_answers(3))
        aggregate(client, p, run_jobs)
        assert len(receiver.requests) == 1 and elsewhere.requests == []
        last = hooks(client, p)[hook["id"]]["last_delivery"]
        assert last["status"] == "failed" and last["http_status"] == 307 and "redirect" in last["error"]
    finally:
        elsewhere.close()


def test_a_slow_receiver_times_out(configured, run_jobs, receiver):
    client, p = configured(webhook_retry_intervals=(), webhook_timeout_seconds=0.3)
    hook = subscribe(client, p, receiver.url, ["aggregation.finished"])
    receiver.delay = 1.0
    post(client, p, good_answers(3))
    started = time.time()
    aggregate(client, p, run_jobs)
    assert time.time() - started < 5
    last = hooks(client, p)[hook["id"]]["last_delivery"]
    assert last["status"] == "failed" and last["http_status"] is None and "timed out" in last["error"]


def test_no_deliveries_without_subscriptions(client, project, run_jobs, receiver, app):
    from rq.registry import FinishedJobRegistry

    p = project("p1")
    hook = subscribe(client, p, receiver.url, confidence_target=0.9)
    assert client.delete(f"/v1/projects/p1/webhooks/{hook['id']}", headers=p["writer"]).status_code == 204
    post(client, p, good_answers())
    aggregate(client, p, run_jobs)
    queue = app.extensions["crowdqc_jobs"].queue
    # Only the aggregation ran: no delivery job was even enqueued.
    assert len(FinishedJobRegistry(queue=queue)) == 1 and len(queue) == 0
    assert receiver.requests == []


def test_many_changed_tasks_are_batched_and_capped(client, project, run_jobs, receiver, monkeypatch):
    import service.webhooks as webhooks

    monkeypatch.setattr(webhooks, "TASKS_PER_EVENT", 2)
    monkeypatch.setattr(webhooks, "MAX_TASKS_PER_VERSION", 5)
    p = project("p1")
    subscribe(client, p, receiver.url, ["task.consensus_changed"])
    post(client, p, good_answers(12))
    aggregate(client, p, run_jobs)
    events = receiver.bodies()
    assert [len(e["data"]["tasks"]) for e in events] == [2, 2, 1]
    assert [t["task"] for e in events for t in e["data"]["tasks"]] == [f"t{i:02d}" for i in range(5)]
    assert {(e["data"]["total"], e["data"]["truncated"]) for e in events} == {(12, True)}
    assert [e["data"]["batch"] for e in events] == [{"index": i, "count": 3} for i in range(3)]
    assert len({e["id"] for e in events}) == 3
