"""POST /labels and /gold: validation (atomic, every bad item named), idempotency,
replacement, label normalisation, and the JSON error shape of the whole API."""

from __future__ import annotations

import pytest
from cases import load_case


def error_of(resp):
    assert resp.is_json, resp.data[:200]
    body = resp.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) <= {"status", "code", "message", "details"}
    assert body["error"]["status"] == resp.status_code
    return body["error"]


def counts(client, p):
    return client.get(f"/v1/projects/{p['id']}", headers=p["reader"]).get_json()["counts"]


def post(client, p, items):
    return client.post(f"/v1/projects/{p['id']}/labels", json={"labels": items}, headers=p["writer"])


def test_accepts_objects_and_triples(client, project):
    p = project(labels=["a", "b"])
    resp = post(client, p, [{"task": "t1", "worker": "w1", "label": "a"}, ["t1", "w2", "b"], {"task": 7, "worker": 8, "label": "b", "id": "x1"}])
    assert resp.status_code == 200
    assert resp.get_json() == {"received": 3, "accepted": 3, "duplicates": 0, "replaced": 0, "revision": 1}
    assert counts(client, p) == {"answers": 3, "tasks": 2, "workers": 3, "gold": 0, "revision": 1}


def test_every_invalid_item_is_named_and_nothing_is_stored(client, project):
    p = project(labels=["a", "b"])
    items = [
        {"task": "t1", "worker": "w1", "label": "a"},  # 0 fine
        {"task": "t1", "worker": "w2"},  # 1 missing label
        {"task": "t1", "worker": "w3", "label": "c"},  # 2 label not in project
        {"task": "t" * 300, "worker": "w4", "label": "a"},  # 3 task too long
        {"task": 1.5, "worker": "w5", "label": "a"},  # 4 float
        {"task": "t1", "worker": True, "label": "a"},  # 5 boolean
        {"task": "t1", "worker": "w6", "label": "a", "id": "i" * 200},  # 6 id too long
        {"task": "t1", "worker": "w7", "label": "a", "colour": "red"},  # 7 unknown field
        {"task": "", "worker": "w8", "label": "a"},  # 8 empty id
        "t1,w9,a",  # 9 not an object
    ]
    resp = post(client, p, items)
    assert resp.status_code == 422
    err = error_of(resp)
    found = {(d["index"], d.get("field")) for d in err["details"]}
    assert found == {(1, "label"), (2, "label"), (3, "task"), (4, "task"), (5, "worker"), (6, "id"), (7, "colour"), (8, "task"), (9, None)}
    assert all(d["message"].startswith(d["path"]) for d in err["details"])
    assert "nothing was stored" in err["message"]
    assert counts(client, p)["answers"] == 0


def test_malformed_answer_rows_case(client, project):
    """shared case malformed-answer-rows through HTTP (we answer 422, a 4xx naming each
    bad row; the case accepts any such 4xx)."""
    case = load_case("malformed-answer-rows")
    p = project(labels=["a", "b"])
    resp = client.post("/v1/projects/p1/labels", json={"labels": case["answers"]}, headers=p["writer"])
    assert resp.status_code == 422
    messages = [d["message"] for d in error_of(resp)["details"]]
    assert messages == [
        "labels[0]: expected 3 items [task, worker, label], got 2",
        "labels[1]: expected 3 items [task, worker, label], got 4",
        "labels[2].worker: must be a non-empty string or integer, got null",
        "labels[3].label: must be a scalar (string/integer), got array",
        "labels[5]: expected an object or an array, got string",
    ]
    assert counts(client, p)["answers"] == 0
    # The related requests of the case.
    w = p["writer"]
    resp = client.post("/v1/projects/p1/labels", data="", headers={**w, "Content-Type": "application/json"})
    assert resp.status_code == 400 and "empty" in error_of(resp)["message"]
    resp = client.post("/v1/projects/p1/labels", data='{"labels": []}', headers={**w, "Content-Type": "text/plain"})
    assert resp.status_code == 415 and "text/plain" in error_of(resp)["message"]
    resp = client.post("/v1/projects/p1/labels", json={}, headers=w)
    assert resp.status_code == 422 and "'labels'" in error_of(resp)["message"]
    resp = client.post("/v1/projects/p1/labels", json={"labels": {"t1": "a"}}, headers=w)
    assert resp.status_code == 422 and "labels" in error_of(resp)["message"]
    resp = client.post("/v1/projects/p1/labels", data='{"labels": [', headers={**w, "Content-Type": "application/json"})
    assert resp.status_code == 400 and "not valid JSON" in error_of(resp)["message"]
    resp = client.post("/v1/projects/p1/labels", data='{"labels": [["t", "w", NaN]]}', headers={**w, "Content-Type": "application/json"})
    assert resp.status_code == 400


def test_empty_input_case(client, project):
    case = load_case("empty-input")
    p = project()
    resp = post(client, p, case["answers"])
    assert resp.status_code in case["expected"]["acceptable_statuses"]
    assert case["expected"]["error_mentions"] in error_of(resp)["message"]
    # And an aggregation of a project without labels is a clean 422, not a failed job.
    resp = client.post("/v1/projects/p1/aggregations", json={}, headers=p["writer"])
    assert resp.status_code == 422
    assert case["expected"]["error_mentions"] in error_of(resp)["message"]


def test_batch_limit(make_app, admin):
    app = make_app(max_batch=5)
    client = app.test_client()
    assert client.post("/v1/projects", json={"id": "p1", "labels": ["a"]}, headers=admin).status_code == 201
    items = [[f"t{i}", "w", "a"] for i in range(6)]
    resp = client.post("/v1/projects/p1/labels", json={"labels": items}, headers=admin)
    assert resp.status_code == 413 and "at most 5" in error_of(resp)["message"]
    resp = client.post("/v1/projects/p1/labels", json={"labels": items[:5]}, headers=admin)
    assert resp.status_code == 200


def test_body_size_limit(make_app, admin):
    client = make_app(max_body_bytes=1000).test_client()
    client.post("/v1/projects", json={"id": "p1", "labels": ["a"]}, headers=admin)
    resp = client.post("/v1/projects/p1/labels", json={"labels": [["t" * 50, "w", "a"]] * 40}, headers=admin)
    assert resp.status_code == 413
    error_of(resp)


def test_same_answer_twice_is_a_duplicate(client, project):
    p = project()
    first = post(client, p, [["t1", "w1", "a"], ["t2", "w1", "b", ]])
    assert first.get_json()["accepted"] == 2
    again = post(client, p, [["t1", "w1", "a"], ["t2", "w1", "b"]])
    assert again.get_json() == {"received": 2, "accepted": 0, "duplicates": 2, "replaced": 0, "revision": 1}
    with_ids = post(client, p, [{"task": "t3", "worker": "w1", "label": "a", "id": "r1"}])
    assert with_ids.get_json()["accepted"] == 1
    retry = post(client, p, [{"task": "t3", "worker": "w1", "label": "a", "id": "r1"}])
    assert retry.get_json()["duplicates"] == 1
    assert counts(client, p)["answers"] == 3


def test_worker_answering_again_replaces(client, project):
    p = project()
    post(client, p, [["t1", "w1", "a"], ["t1", "w2", "a"]])
    resp = post(client, p, [["t1", "w1", "b"]])
    assert resp.get_json() == {"received": 1, "accepted": 0, "duplicates": 0, "replaced": 1, "revision": 2}
    assert counts(client, p)["answers"] == 2
    app = client.application
    snap = app.extensions["crowdqc_store"].snapshot("p1")
    stored = {(snap.task_names[t], snap.worker_names[w]): int(lab) for t, w, lab in zip(snap.task, snap.worker, snap.label)}
    assert stored == {("t1", "w1"): 1, ("t1", "w2"): 0}  # label index 1 is "b"


def test_duplicate_worker_answers_case(client, project):
    """shared case duplicate-worker-answers: the API applies the 'latest answer wins'
    rule (policy B of the case) and says what it did."""
    case = load_case("duplicate-worker-answers")
    p = project(labels=["spam", "ham"])
    resp = post(client, p, case["answers"])
    # 12 rows, 9 distinct (task, worker) pairs: (t1,w1) x3 exact repeats -> 2 duplicates;
    # (t3,w2) spam then ham -> 1 replaced.
    assert resp.get_json() == {"received": 12, "accepted": 9, "duplicates": 2, "replaced": 1, "revision": 1}
    assert counts(client, p)["answers"] == 9


def test_integer_and_unicode_labels_are_normalised(client, project):
    p = project(labels=["café", "tea"])
    case = load_case("unicode-whitespace-labels")
    resp = post(client, p, case["answers"])
    assert resp.status_code == 200 and resp.get_json()["accepted"] == 9
    q = project("ints", labels=[0, 1])
    resp = post(client, q, [[1, 10, 0], ["1", "11", "0"], [2, 10, " 1"]])
    assert resp.status_code == 200 and resp.get_json()["accepted"] == 3
    assert counts(client, q)["tasks"] == 2  # 1 and "1" are one task
    resp = post(client, q, [[3, 10, 2]])
    assert resp.status_code == 422
    assert error_of(resp)["details"][0]["path"] == "labels[0].label"


@pytest.mark.parametrize(
    "body,path",
    [
        ({"id": "bad id", "labels": ["a"]}, "id"),
        ({"id": "p", "labels": []}, "labels"),
        ({"id": "p", "labels": ["a", 1]}, "labels"),
        ({"id": "p", "labels": ["tea", "tea "]}, "labels"),
        ({"id": "p", "labels": [1.5]}, "labels[0]"),
        ({"id": "p", "labels": ["a"], "aggregation": {"method": "nope"}}, "aggregation.method"),
        ({"id": "p", "labels": ["a"], "aggregation": {"method": "dawid_skene", "params": {"max_iter": "x"}}}, "aggregation.params"),
    ],
)
def test_project_validation(client, admin, body, path):
    resp = client.post("/v1/projects", json=body, headers=admin)
    assert resp.status_code == 422
    assert path in [d["path"] for d in error_of(resp)["details"]]


def test_project_ids_are_unique(client, admin, project):
    project("p1")
    resp = client.post("/v1/projects", json={"id": "p1", "labels": ["a"]}, headers=admin)
    assert resp.status_code == 409
    error_of(resp)


def test_gold(client, project):
    p = project(labels=["a", "b"])
    resp = client.post("/v1/projects/p1/gold", json={"gold": [{"task": "t1", "label": "a"}, {"task": 2, "label": "b"}]}, headers=p["writer"])
    assert resp.status_code == 200 and resp.get_json()["accepted"] == 2
    resp = client.post("/v1/projects/p1/gold", json={"gold": [{"task": "t1", "label": "c"}, {"task": "t2"}]}, headers=p["writer"])
    assert resp.status_code == 422
    assert {(d["index"], d["field"]) for d in error_of(resp)["details"]} == {(0, "label"), (1, "label")}
    assert counts(client, p)["gold"] == 2


def test_404_405_and_500_are_json(make_app, client, admin):
    assert error_of(client.get("/nothing/here"))["code"] == "not_found"
    resp = client.delete("/healthz")
    assert resp.status_code == 405 and error_of(resp)["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]
    resp = client.put("/v1/projects", json={}, headers=admin)
    assert resp.status_code == 405
    error_of(resp)
    # Redis gone: a JSON 503, never a traceback.
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    down = make_app(REDIS=dead)
    c = down.test_client()
    resp = c.get("/v1/projects", headers=admin)
    assert resp.status_code == 503 and error_of(resp)["code"] == "service_unavailable"
    resp = c.get("/readyz")
    assert resp.status_code == 503
    error_of(resp)
    assert c.get("/healthz").status_code == 200


def test_unexpected_errors_are_a_json_500_without_traceback(make_app, admin):
    app = make_app()

    def boom():
        raise RuntimeError("secret internals")

    app.add_url_rule("/boom", "boom", boom)
    resp = app.test_client().get("/boom", headers=admin)
    assert resp.status_code == 500
    err = error_of(resp)
    assert err == {"status": 500, "code": "internal_error", "message": "internal error"}


def test_serve_and_worker_explain_a_missing_redis_in_one_line():
    from service.worker import redis_problem

    line = redis_problem("redis://127.0.0.1:1/0")
    assert "\n" not in line and "redis-server" in line and "REDIS_URL" in line
    assert redis_problem("redis://127.0.0.1:6379/15") is None
