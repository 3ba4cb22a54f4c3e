"""Exports of the consensus over HTTP: CSV, JSON Lines and Label Studio predictions, streamed
and pinned to one result version."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from conftest import aggregate

DATA = Path(__file__).parent / "data" / "formats"

# Vote shares are easy to check by hand: majority vote's confidence is the winner's share.
ANSWERS = [
    ["t1", "w1", "a"], ["t1", "w2", "a"], ["t1", "w3", "b"],
    ["t2", "w1", "b"], ["t2", "w2", "b"], ["t2", "w3", "b"],
    ["t3", "w1", "c"], ["t3", "w2", "a"], ["t3", "w3", "c"], ["t3", "w4", "c"],
    ["t,4 \"quoted\"", "w1", "a"],
]
EXPECTED = {  # task -> (label, confidence, n_labels)
    "t1": ("a", 2 / 3, 3),
    "t2": ("b", 1.0, 3),
    "t3": ("c", 3 / 4, 4),
    "t,4 \"quoted\"": ("a", 1.0, 1),
}


def export(client, p, query="", headers=None):
    return client.get(f"/v1/projects/{p['id']}/exports/consensus{query}", headers=headers or p["reader"])


def consensus(client, p):
    """Every item of the JSON consensus endpoint, by task."""
    items, cursor = [], None
    while True:
        url = f"/v1/projects/{p['id']}/consensus?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=p["reader"]).get_json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return {it["task"]: it for it in items}, body["version"]


@pytest.fixture
def small(client, project, run_jobs):
    p = project("ex", labels=["a", "b", "c"])
    assert client.post("/v1/projects/ex/labels", json={"labels": ANSWERS}, headers=p["writer"]).status_code == 200
    p["version"] = aggregate(client, p, run_jobs)
    return p


def test_csv_matches_the_consensus_endpoint_and_the_votes(client, small):
    resp = export(client, small, "?format=csv")
    assert resp.status_code == 200
    assert resp.is_streamed
    assert resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"] and ".csv" in resp.headers["Content-Disposition"]
    assert resp.headers["X-Crowdqc-Result-Version"] == str(small["version"])
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert list(rows[0]) == ["task", "label", "confidence", "probabilities", "n_labels", "tie", "method", "version"]
    api, version = consensus(client, small)
    assert version == small["version"]
    assert [r["task"] for r in rows] == sorted(api)  # one row per task, task order
    for r in rows:
        label, conf, n = EXPECTED[r["task"]]
        assert r["label"] == label == api[r["task"]]["label"]
        # The text round-trips to exactly the float the API serves.
        assert float(r["confidence"]) == api[r["task"]]["confidence"] == pytest.approx(conf)
        assert json.loads(r["probabilities"]) == api[r["task"]]["probabilities"]
        assert int(r["n_labels"]) == n == api[r["task"]]["n_labels"]
        assert r["tie"] == "false"
        assert r["method"] == "majority_vote"
        assert int(r["version"]) == small["version"]


def test_jsonl_matches_the_consensus_endpoint(client, small):
    resp = export(client, small, "?format=jsonl")
    assert resp.status_code == 200 and resp.mimetype == "application/x-ndjson"
    lines = resp.get_data(as_text=True).splitlines()
    rows = [json.loads(line) for line in lines]
    api, _ = consensus(client, small)
    assert len(rows) == len(api) == len(EXPECTED)
    for r in rows:
        assert set(r) == {"task", "label", "confidence", "probabilities", "n_labels", "tie", "method", "version"}
        want = api[r["task"]]
        assert (r["label"], r["confidence"], r["probabilities"], r["n_labels"]) == (
            want["label"], want["confidence"], want["probabilities"], want["n_labels"])
        assert r["method"] == "majority_vote" and r["version"] == small["version"]
    # Vote shares of t3: c, a, c, c.
    t3 = next(r for r in rows if r["task"] == "t3")
    assert t3["probabilities"] == pytest.approx({"a": 0.25, "b": 0.0, "c": 0.75})


def test_integer_labels_stay_integers_in_json_lines(client, project, run_jobs):
    p = project("ints", labels=[0, 1])
    rows = [["x", "w1", 1], ["x", "w2", 1], ["x", "w3", 0]]
    assert client.post("/v1/projects/ints/labels", json={"labels": rows}, headers=p["writer"]).status_code == 200
    aggregate(client, p, run_jobs)
    (row,) = [json.loads(line) for line in export(client, p, "?format=jsonl").get_data(as_text=True).splitlines()]
    assert row["label"] == 1 and row["probabilities"] == pytest.approx({"0": 1 / 3, "1": 2 / 3})
    csv_rows = list(csv.DictReader(io.StringIO(export(client, p, "?format=csv").get_data(as_text=True))))
    assert csv_rows[0]["label"] == "1"


def test_default_format_is_csv_and_bad_format_names_the_field(client, small):
    assert export(client, small).mimetype == "text/csv"
    resp = export(client, small, "?format=xml")
    assert resp.status_code == 422
    assert resp.get_json()["error"]["details"][0]["path"] == "format"


def test_label_studio_predictions_round_trip_an_import(client, project, run_jobs):
    p = project("ls", labels=["Positive", "Negative", "Neutral"])
    resp = client.post("/v1/projects/ls/imports?preset=label_studio", data=(DATA / "label_studio_export.json").read_bytes(),
                       headers={**p["writer"], "Content-Type": "application/json"})
    assert resp.status_code == 202
    run_jobs()
    version = aggregate(client, p, run_jobs)
    api, _ = consensus(client, p)

    resp = export(client, p, "?format=label_studio")
    assert resp.status_code == 200 and resp.mimetype == "application/json" and resp.is_streamed
    preds = json.loads(resp.get_data())
    # The body of Label Studio's POST /api/projects/{id}/import/predictions: a list of
    # {"task": <existing task id>, "result", "score", "model_version"}.  A task object
    # without "data" would be imported by POST /api/projects/{id}/import as a new, empty task.
    assert isinstance(preds, list) and len(preds) == len(api) == 3
    # Tasks imported from Label Studio are named by their Label Studio id: an integer again.
    assert [f["task"] for f in preds] == [101, 102, 103]
    for f in preds:
        assert set(f) == {"task", "model_version", "score", "result"}
        want = api[str(f["task"])]
        assert f["score"] == want["confidence"]
        assert f["model_version"] == f"crowdqc-majority_vote-v{version}"
        (result,) = f["result"]
        assert result == {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [want["label"]]}}
    # By hand from the export: 101 Positive x2; 102 a tie, Neutral; 103 Neutral (answer of 9).
    assert [f["result"][0]["value"]["choices"] for f in preds] == [["Positive"], ["Neutral"], ["Neutral"]]

    # label_studio_predictions (the name this body had beside the old task shape) is the same body.
    assert json.loads(export(client, p, "?format=label_studio_predictions").get_data()) == preds

    # Query parameters override the remembered tag names.
    preds = json.loads(export(client, p, "?format=label_studio&from_name=mood&to_name=review").get_data())
    assert {(r["from_name"], r["to_name"]) for f in preds for r in f["result"]} == {("mood", "review")}


def test_label_studio_needs_known_tag_names(client, small):
    resp = export(client, small, "?format=label_studio")
    assert resp.status_code == 422
    err = resp.get_json()["error"]
    assert "from_name" in err["message"] and err["details"][0]["path"] == "from_name"
    resp = export(client, small, "?format=label_studio&from_name=choice")
    assert resp.status_code == 422 and resp.get_json()["error"]["details"][0]["path"] == "to_name"
    resp = export(client, small, "?format=label_studio&from_name=choice&to_name=text")
    assert resp.status_code == 200
    preds = json.loads(resp.get_data())
    # Names that are not Label Studio ids (integers) are kept as they are.
    assert sorted(f["task"] for f in preds) == sorted(EXPECTED)


def test_no_result_yet_is_a_404_in_the_error_shape(client, project):
    p = project("empty")
    resp = export(client, p, "?format=jsonl")
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "not_found"


def test_readers_and_writers_export_other_projects_do_not(client, small, project, admin):
    assert export(client, small, "?format=jsonl", headers=small["writer"]).status_code == 200
    assert export(client, small, "?format=jsonl", headers=admin).status_code == 200
    other = project("other")
    assert export(client, small, "?format=jsonl", headers=other["reader"]).status_code == 404
    assert client.get("/v1/projects/ex/exports/consensus").status_code == 401


def test_rows_are_read_in_chunks_and_pinned_to_one_version(client, small, run_jobs, app, monkeypatch):
    import service.exports as exports

    monkeypatch.setattr(exports, "CHUNK", 1)
    store = app.extensions["crowdqc_store"]
    calls = []
    real = store.consensus_rows
    monkeypatch.setattr(store, "consensus_rows", lambda *a, **k: calls.append(a) or real(*a, **k))

    resp = client.get("/v1/projects/ex/exports/consensus?format=jsonl", headers=small["reader"], buffered=False)
    body = iter(resp.response)
    first = next(body)
    # A new result is published while the export is being read: t2 becomes "a".
    more = [["t2", f"x{i}", "a"] for i in range(5)]
    assert client.post("/v1/projects/ex/labels", json={"labels": more}, headers=small["writer"]).status_code == 200
    new_version = aggregate(client, small, run_jobs)
    assert new_version > small["version"]
    rest = b"".join(body)
    rows = [json.loads(line) for line in (first + rest).decode().splitlines()]
    assert {r["version"] for r in rows} == {small["version"]}
    assert next(r for r in rows if r["task"] == "t2")["label"] == "b"
    assert len(rows) == len(EXPECTED)
    # One read per row here (CHUNK = 1), never the whole list at once.
    assert len(calls) >= len(EXPECTED) and all(stop - start <= 1 for _pid, _v, start, stop in calls)


def test_an_export_whose_version_expires_midway_fails_loudly(make_app, admin, run_jobs, monkeypatch):
    import service.exports as exports

    monkeypatch.setattr(exports, "CHUNK", 1)
    # A replaced result is deleted at once: the export cannot finish and must not look complete.
    app = make_app(result_grace_seconds=0)
    client = app.test_client()
    assert client.post("/v1/projects", json={"id": "g", "labels": ["a", "b", "c"]}, headers=admin).status_code == 201
    assert client.post("/v1/projects/g/labels", json={"labels": ANSWERS}, headers=admin).status_code == 200
    p = {"id": "g", "writer": admin, "reader": admin}
    # run_jobs works on this test's queue, which this app shares.
    aggregate(client, p, run_jobs)
    resp = client.get("/v1/projects/g/exports/consensus?format=csv", headers=admin, buffered=False)
    body = iter(resp.response)
    next(body)
    aggregate(client, p, run_jobs, method="dawid_skene")
    with pytest.raises(exports.ExportInterrupted):
        b"".join(body)
