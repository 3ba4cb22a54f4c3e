"""Bad and hostile input: body size limits (enforced before the body is read whole),
malformed JSON, wrong types, bad ids, unicode round trips, the per-project answer limit."""

from __future__ import annotations

import io
import json
from urllib.parse import quote

import pytest


def err(resp, status):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    body = resp.get_json()
    assert set(body) == {"error"} and body["error"]["status"] == status
    return body["error"]


class CountingStream(io.RawIOBase):
    """An endless body that records how much the server read of it."""

    def __init__(self):
        self.read_bytes = 0

    def readable(self):
        return True

    def readinto(self, buf):
        n = len(buf)
        buf[:] = b" " * n
        self.read_bytes += n
        return n


@pytest.fixture
def small_app(make_app):
    return make_app(max_body_bytes=2000)


def raw_post(app, path, headers, stream, content_length=None):
    """POST with a hand-built WSGI environ: the test client would seek the stream."""
    from werkzeug.test import create_environ, run_wsgi_app
    from werkzeug.wrappers import Response

    environ = create_environ(path, method="POST", headers=headers)
    environ["wsgi.input"] = stream
    if content_length is None:
        environ.pop("CONTENT_LENGTH", None)
        environ["wsgi.input_terminated"] = True  # what gunicorn sets for chunked bodies
    else:
        environ["CONTENT_LENGTH"] = str(content_length)
    body, status, hdrs = run_wsgi_app(app, environ, buffered=True)
    return Response(b"".join(body), status=status, headers=hdrs)


def test_declared_oversized_body_is_refused_without_reading_it(small_app, project):
    p = project()
    stream = CountingStream()
    r = raw_post(small_app, "/v1/projects/p1/labels", {**p["writer"], "Content-Type": "application/json"}, stream, 50 * 1024 * 1024)
    e = err(r, 413)
    assert "too large" in e["message"]
    assert stream.read_bytes == 0


def test_chunked_oversized_body_is_read_only_up_to_the_limit(small_app, project):
    p = project()
    stream = CountingStream()
    r = raw_post(small_app, "/v1/projects/p1/labels", {**p["writer"], "Content-Type": "application/json"}, stream)
    err(r, 413)
    # io buffering may read ahead one buffer, never the endless rest
    assert stream.read_bytes <= 2000 + io.DEFAULT_BUFFER_SIZE + 1


def test_body_at_the_limit_is_accepted(small_app, project):
    p = project()
    client = small_app.test_client()
    body = json.dumps({"labels": [["t", "w", "a"]]}).encode()
    body += b" " * (2000 - len(body))
    r = client.post("/v1/projects/p1/labels", data=body, headers={**p["writer"], "Content-Type": "application/json"})
    assert r.status_code == 200, r.get_json()


@pytest.mark.parametrize(
    "raw",
    [b'{"labels": [["t", "w", "a"]', b"{labels: []}", b'{"labels": [["t", "w", NaN]]}', b"\xff\xfe{}", b'{"a":1}{"b":2}'],
)
def test_malformed_json_is_400(client, project, raw):
    p = project()
    r = client.post("/v1/projects/p1/labels", data=raw, headers={**p["writer"], "Content-Type": "application/json"})
    assert "not valid JSON" in err(r, 400)["message"]


@pytest.mark.parametrize("depth", [900, 1000, 5000, 100_000])
def test_deeply_nested_json_is_400_on_every_json_route(client, project, depth):
    """A few kilobytes of brackets overflow a recursive parser: a 400, never a 500, on
    routes with a project key, with the admin token and with a webhook's own secret."""
    p = project()
    body = b'{"labels": ' + b"[" * depth + b"]" * depth + b"}"
    routes = [("/v1/projects/p1/labels", p["writer"]), ("/v1/projects", {}),
              ("/v1/projects/p1/integrations/label-studio/webhook", {})]
    for url, headers in routes:
        r = client.post(url, data=body, headers={**headers, "Content-Type": "application/json"})
        assert r.status_code in (400, 401, 422), (url, r.status_code, r.get_data(as_text=True)[:200])
        assert r.get_json()["error"]["status"] == r.status_code
    r = client.post("/v1/projects/p1/labels", data=body, headers={**p["writer"], "Content-Type": "application/json"})
    if depth >= 1000:
        assert "nested too deeply" in err(r, 400)["message"]


def test_wrong_content_type_is_415(client, project):
    p = project()
    r = client.post("/v1/projects/p1/labels", data="t,w,a", headers={**p["writer"], "Content-Type": "text/csv"})
    err(r, 415)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"labels": "t,w,a"},
        {"labels": {"task": "t"}},
        {"labels": [["t", "w"]]},
        {"labels": [["t", "w", True]]},
        {"labels": [["t", "w", 1.5]]},
        {"labels": [["t", None, "a"]]},
        {"labels": [[["t"], "w", "a"]]},
        {"labels": [{"task": "t", "worker": {"id": 1}, "label": "a"}]},
        {"labels": [["t", "w", "a"]], "extra": 1},
    ],
)
def test_wrong_types_are_422(client, project, body):
    p = project()
    err(client.post("/v1/projects/p1/labels", json=body, headers=p["writer"]), 422)
    assert client.get("/v1/projects/p1", headers=p["reader"]).get_json()["counts"]["answers"] == 0


@pytest.mark.parametrize(
    "bad",
    ["", "x" * 257, "a\nb", "a\tb", "\x1b[31mred", "a\x00b", "del\x7f", "nel\x85", "\u0080"],
)
@pytest.mark.parametrize("field", [0, 1])
def test_bad_ids_are_422_naming_the_item(client, project, bad, field):
    p = project()
    item = ["task", "worker", "a"]
    item[field] = bad
    r = client.post("/v1/projects/p1/labels", json={"labels": [["ok", "ok", "a"], item]}, headers=p["writer"])
    e = err(r, 422)
    assert e["details"][0]["index"] == 1 and e["details"][0]["field"] == ("task", "worker")[field]
    assert client.get("/v1/projects/p1", headers=p["reader"]).get_json()["counts"]["answers"] == 0


def test_lone_surrogate_is_422_not_500(client, project):
    p = project()
    raw = b'{"labels": [["\\ud800", "w", "a"]]}'
    r = client.post("/v1/projects/p1/labels", data=raw, headers={**p["writer"], "Content-Type": "application/json"})
    assert err(r, 422)["details"][0]["field"] == "task"


def test_id_at_the_length_limit_is_accepted(client, project):
    p = project()
    r = client.post("/v1/projects/p1/labels", json={"labels": [["x" * 256, "y" * 256, "a"]]}, headers=p["writer"])
    assert r.status_code == 200 and r.get_json()["accepted"] == 1


@pytest.mark.parametrize("labels", [["a", "x" * 257], ["a", "b\nc"], ["a", "\x1b"], ["a", ""], ["a", None], ["a", 1.5], "ab", []])
def test_bad_project_labels_are_422(client, admin, labels):
    err(client.post("/v1/projects", json={"id": "bad", "labels": labels}, headers=admin), 422)
    assert client.get("/v1/projects/bad", headers=admin).status_code == 404


@pytest.mark.parametrize("name", ["bell\x07", "two\nlines", "\x1b[2J", "x" * 201])
def test_bad_project_names_are_422(client, admin, project, name):
    e = err(client.post("/v1/projects", json={"id": "named", "name": name, "labels": ["a"]}, headers=admin), 422)
    assert e["details"][0]["path"] == "name"
    project("p1")
    e = err(client.patch("/v1/projects/p1", json={"name": name}, headers=admin), 422)
    assert e["details"][0]["path"] == "name"
    assert client.get("/v1/projects/p1", headers=admin).get_json()["name"] == "p1"


UNICODE_IDS = [
    "задача-1",
    "任务二",
    "🐱‍👤 ninja",
    "e\u0301",  # decomposed: a different id from the precomposed one below
    "\u00e9",
    "שלום עולם",
    "a/b?c#d%20e",
    " padded ",
    "\U0001f600" * 60,
]


def test_unicode_ids_round_trip_exactly(client, project, run_jobs):
    p = project("uni", labels=("yes", "no"))
    labels = []
    for i, task in enumerate(UNICODE_IDS):
        for w in ("рабочий", "作業者", "👷"):
            labels.append({"task": task, "worker": w, "label": "yes" if i % 2 else "no"})
    r = client.post("/v1/projects/uni/labels", json={"labels": labels}, headers=p["writer"])
    assert r.status_code == 200 and r.get_json()["accepted"] == len(labels)
    assert client.post("/v1/projects/uni/aggregations", json={"method": "majority_vote"}, headers=p["writer"]).status_code == 202
    run_jobs()
    rows = client.get("/v1/projects/uni/consensus", query_string={"limit": 100}, headers=p["reader"]).get_json()["items"]
    assert {row["task"]: row["label"] for row in rows} == {t: ("yes" if i % 2 else "no") for i, t in enumerate(UNICODE_IDS)}
    for task in UNICODE_IDS:
        one = client.get(f"/v1/projects/uni/consensus/{quote(task, safe='')}", headers=p["reader"])
        assert one.status_code == 200, (task, one.get_json())
        item = one.get_json()["item"]
        assert item["task"] == task
        assert sorted(a["worker"] for a in item["answers"]) == sorted(["рабочий", "作業者", "👷"])
    workers = client.get("/v1/projects/uni/workers", headers=p["reader"]).get_json()["items"]
    assert sorted(w["worker"] for w in workers) == sorted(["рабочий", "作業者", "👷"])


# -- the per-project answer limit ------------------------------------------------------------


@pytest.fixture
def limited(make_app):
    return make_app(max_answers_per_project=100)


def _post(client, writer, items):
    return client.post("/v1/projects/p1/labels", json={"labels": items}, headers=writer)


def test_answer_limit_refuses_whole_batches_and_names_the_limit(limited, redis_client, namespace):
    client = limited.test_client()
    from conftest import ADMIN_TOKEN, bearer

    admin = bearer(ADMIN_TOKEN)
    assert client.post("/v1/projects", json={"id": "p1", "labels": ["a", "b"]}, headers=admin).status_code == 201
    writer = bearer(client.post("/v1/projects/p1/keys", json={"role": "writer"}, headers=admin).get_json()["key"])

    first = [[f"t{i}", "w0", "a"] for i in range(90)]
    assert _post(client, writer, first).get_json()["accepted"] == 90
    before = {k: redis_client.dump(k) for k in redis_client.scan_iter(match=f"{namespace['key_prefix']}p:p1:*")}

    # 20 new answers (and brand-new tasks and a worker) would make 110: refused, nothing written.
    r = _post(client, writer, [[f"n{i}", "w-new", "b"] for i in range(20)])
    e = err(r, 409)
    assert "100" in e["message"] and "CROWDQC_MAX_ANSWERS" in e["message"] and "nothing was stored" in e["message"]
    after = {k: redis_client.dump(k) for k in redis_client.scan_iter(match=f"{namespace['key_prefix']}p:p1:*")}
    assert after == before

    # 10 new + 15 already stored (duplicates) + 5 replacements: exactly 100, accepted.
    batch = [[f"n{i}", "w1", "a"] for i in range(10)] + first[:15] + [[f"t{i}", "w0", "b"] for i in range(80, 85)]
    out = _post(client, writer, batch).get_json()
    assert (out["accepted"], out["duplicates"], out["replaced"]) == (10, 15, 5)

    # Full: one more new answer is refused; repeats and replacements still pass.
    err(_post(client, writer, [["t0", "w9", "a"]]), 409)
    out = _post(client, writer, [["t0", "w0", "a"], ["t1", "w0", "b"]]).get_json()
    assert (out["accepted"], out["duplicates"], out["replaced"]) == (0, 1, 1)
    # A batch repeating one new pair counts it once: 1 new is still over the limit.
    err(_post(client, writer, [["z", "w0", "a"], ["z", "w0", "a"]]), 409)
    counts = client.get("/v1/projects/p1", headers=admin).get_json()["counts"]
    assert counts["answers"] == 100


def test_answer_limit_counts_answer_ids_like_ingestion(limited):
    client = limited.test_client()
    from conftest import ADMIN_TOKEN, bearer

    admin = bearer(ADMIN_TOKEN)
    client.post("/v1/projects", json={"id": "p1", "labels": ["a", "b"]}, headers=admin)
    writer = bearer(client.post("/v1/projects/p1/keys", json={"role": "writer"}, headers=admin).get_json()["key"])
    items = [{"task": f"t{i}", "worker": "w", "label": "a", "id": f"id{i}"} for i in range(95)]
    assert _post(client, writer, items).get_json()["accepted"] == 95
    # 95 known ids (skipped even with other content) + 5 new: exactly 100.
    again = [{"task": f"other{i}", "worker": "v", "label": "b", "id": f"id{i}"} for i in range(95)]
    again += [{"task": f"u{i}", "worker": "w", "label": "a", "id": f"new{i}"} for i in range(5)]
    out = _post(client, writer, again).get_json()
    assert (out["accepted"], out["duplicates"]) == (5, 95)


def test_gold_is_limited_too(limited, redis_client, namespace):
    """Gold labels of tasks that do not exist cost memory like answers: the same limit."""
    client = limited.test_client()
    from conftest import ADMIN_TOKEN, bearer

    admin = bearer(ADMIN_TOKEN)
    assert client.post("/v1/projects", json={"id": "p1", "labels": ["a", "b"]}, headers=admin).status_code == 201

    def gold(tasks):
        return client.post("/v1/projects/p1/gold", json={"gold": [{"task": t, "label": "a"} for t in tasks]}, headers=admin)

    assert gold([f"g{i}" for i in range(95)]).get_json()["new"] == 95
    before = redis_client.hgetall(f"{namespace['key_prefix']}p:p1:gold")
    e = err(gold([f"h{i}" for i in range(6)]), 409)
    assert e["message"] == ("project 'p1' is full: it holds 95 gold labels and this batch would add 6, over the limit "
                            "of 100 gold labels per project (CROWDQC_MAX_ANSWERS); nothing was stored")
    assert e["details"] == [{"path": "gold", "field": "gold", "message": "limit of 100 gold labels per project reached"}]
    assert redis_client.hgetall(f"{namespace['key_prefix']}p:p1:gold") == before
    # replacing known tasks' labels adds nothing: accepted; 5 new make exactly 100
    out = gold([f"g{i}" for i in range(50)] + [f"h{i}" for i in range(5)]).get_json()
    assert (out["accepted"], out["new"]) == (55, 5)
    err(gold(["one-more"]), 409)
    assert client.get("/v1/projects/p1", headers=admin).get_json()["counts"]["gold"] == 100
