"""End to end over HTTP: post a real data set in batches, aggregate in an in-process RQ
worker, read every page; plus ETags, pagination, workers, disagreements, agreement and the
shared cases that make sense through the API."""

from __future__ import annotations

import csv
import json

import pytest
from cases import DATASETS, load_case

from aggregation import encode
from service.analysis import analyse


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def strict_json(resp):
    """The body parsed with NaN/Infinity literals refused."""

    def refuse(name):
        raise AssertionError(f"non-standard JSON literal {name} in the response")

    return json.loads(resp.data, parse_constant=refuse)


def aggregate(client, p, run_jobs, **body):
    resp = client.post(f"/v1/projects/{p['id']}/aggregations", json=body, headers=p["writer"])
    assert resp.status_code == 202, resp.get_json()
    assert resp.headers["Location"] == f"/v1/jobs/{resp.get_json()['job']['id']}"
    run_jobs()
    job = client.get(resp.headers["Location"], headers=p["reader"]).get_json()["job"]
    assert job["status"] == "finished", job
    return job


def all_pages(client, p, query="", limit=10):
    items, cursor, versions, n_pages = [], None, set(), 0
    while True:
        url = f"/v1/projects/{p['id']}/consensus?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
        resp = client.get(url, headers=p["reader"])
        assert resp.status_code == 200, resp.get_json()
        body = strict_json(resp)
        items += body["items"]
        versions.add(body["version"])
        n_pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items, versions, n_pages


@pytest.fixture
def bluebirds(client, project, run_jobs):
    """bluebirds (Welinder et al. 2010) posted over HTTP in batches of 500, gold included,
    aggregated with Dawid-Skene."""
    answers = read_csv(DATASETS / "bluebirds" / "answers.csv")
    gold = read_csv(DATASETS / "bluebirds" / "gold.csv")
    p = project("bb", labels=["0", "1"])
    for i in range(0, len(answers), 500):
        batch = [[r["task"], r["worker"], r["label"]] for r in answers[i : i + 500]]
        resp = client.post("/v1/projects/bb/labels", json={"labels": batch}, headers=p["writer"])
        assert resp.status_code == 200 and resp.get_json()["accepted"] == len(batch)
    resp = client.post("/v1/projects/bb/gold", json={"gold": gold}, headers=p["writer"])
    assert resp.status_code == 200
    # gold only measures here, as in `crowdqc aggregate --gold` (the service's default clamps it)
    job = aggregate(client, p, run_jobs, method="dawid_skene", params={"gold": "evaluate"})
    return {**p, "answers": answers, "gold": gold, "job": job}


def test_bluebirds_end_to_end_matches_offline_analysis(client, bluebirds):
    p, answers, gold = bluebirds, bluebirds["answers"], bluebirds["gold"]
    items, versions, n_pages = all_pages(client, p, limit=10)
    assert n_pages == 11 and len(versions) == 1
    tasks = [it["task"] for it in items]
    assert len(tasks) == len(set(tasks)) == 108  # nothing skipped, nothing repeated

    offline = analyse(
        encode([r["task"] for r in answers], [r["worker"] for r in answers], [r["label"] for r in answers]),
        "dawid_skene",
        {},
        gold=([g["task"] for g in gold], [g["label"] for g in gold]),
    )
    offline_labels = {row["task"]: row["label"] for row in offline.consensus_rows()}
    assert {it["task"]: it["label"] for it in items} == offline_labels
    truth = {g["task"]: g["label"] for g in gold}
    accuracy = sum(it["label"] == truth[it["task"]] for it in items) / len(items)
    assert accuracy == pytest.approx(offline.summary()["accuracy"]["method"], abs=1e-12)
    # Published Dawid-Skene accuracy on bluebirds (datasets README): 0.8981.
    assert accuracy == pytest.approx(0.8981, abs=0.02)
    assert p["job"]["result"]["summary"]["accuracy"]["method"] == pytest.approx(accuracy)
    for it in items:
        assert sum(it["probabilities"].values()) == pytest.approx(1.0)
        assert it["confidence"] == pytest.approx(it["probabilities"][it["label"]])
        assert it["n_labels"] == 39

    project_view = client.get("/v1/projects/bb", headers=p["reader"]).get_json()
    assert project_view["counts"] == {"answers": 4212, "tasks": 108, "workers": 39, "gold": 108, "revision": 10}
    latest = project_view["latest_aggregation"]
    assert latest["method"] == "dawid_skene" and latest["stale"] is False and latest["version"] == 1


def test_gold_is_clamped_by_default(client, bluebirds, run_jobs):
    """Without ``gold: evaluate`` the known answers are fixed while fitting: every gold task's
    consensus is its gold label with certainty, and the method's accuracy on gold is not
    reported as a measurement (it would be 1 by construction)."""
    p = bluebirds
    job = aggregate(client, p, run_jobs, method="dawid_skene")
    summary = job["result"]["summary"]
    assert summary["gold_mode"] == "clamp"
    assert summary["accuracy"]["method"] is None and "clamped" in summary["accuracy"]["method_note"]
    # Majority vote ignores gold, so its accuracy stays the published figure (datasets README).
    assert summary["accuracy"]["majority_vote"] == pytest.approx(0.7593, abs=1e-4)
    items, _, _ = all_pages(client, p, limit=200)
    truth = {g["task"]: g["label"] for g in p["gold"]}
    assert all(it["label"] == truth[it["task"]] and it["confidence"] == 1.0 for it in items)
    # Clamping every task fixes the posteriors, so the worker confusion matrices become the
    # empirical ones against gold: a worker's estimated accuracy is (nearly) its gold accuracy.
    rows = client.get("/v1/projects/bb/workers?limit=100", headers=p["reader"]).get_json()["items"]
    for w in rows:
        assert w["accuracy"] == pytest.approx(w["gold_accuracy"], abs=0.01)


def test_single_task_with_answers(client, bluebirds):
    p = bluebirds
    task = bluebirds["answers"][0]["task"]
    body = client.get(f"/v1/projects/bb/consensus/{task}", headers=p["reader"]).get_json()["item"]
    expected = sorted((r["worker"], r["label"]) for r in bluebirds["answers"] if r["task"] == task)
    assert sorted((a["worker"], a["label"]) for a in body["answers"]) == expected
    assert body["task"] == task and body["label"] in ("0", "1")
    assert client.get("/v1/projects/bb/consensus/no-such-task", headers=p["reader"]).status_code == 404


def test_confidence_filter_pages(client, bluebirds):
    p = bluebirds
    everything, _, _ = all_pages(client, p, limit=50)
    expected = [it["task"] for it in everything if 0.6 <= it["confidence"] <= 0.999]
    got, _, _ = all_pages(client, p, query="&min_confidence=0.6&max_confidence=0.999", limit=3)
    assert [it["task"] for it in got] == expected
    resp = client.get("/v1/projects/bb/consensus?min_confidence=2", headers=p["reader"])
    assert resp.status_code == 422


def test_etag_and_304(client, bluebirds, run_jobs):
    p = bluebirds
    first = client.get("/v1/projects/bb/consensus?limit=5", headers=p["reader"])
    etag = first.headers["ETag"]
    again = client.get("/v1/projects/bb/consensus?limit=5", headers={**p["reader"], "If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    other_page = client.get("/v1/projects/bb/consensus?limit=6", headers={**p["reader"], "If-None-Match": etag})
    assert other_page.status_code == 200
    # A new result version changes the tag.
    client.post("/v1/projects/bb/labels", json={"labels": [["new-task", "w-new", "1"]]}, headers=p["writer"])
    aggregate(client, p, run_jobs, method="dawid_skene")
    fresh = client.get("/v1/projects/bb/consensus?limit=5", headers={**p["reader"], "If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["ETag"] != etag
    assert fresh.get_json()["version"] == 2


def test_paging_across_a_new_version_neither_skips_nor_repeats(client, bluebirds, run_jobs):
    p = bluebirds
    page = client.get("/v1/projects/bb/consensus?limit=40", headers=p["reader"]).get_json()
    seen = [it["task"] for it in page["items"]]
    # Meanwhile: new answers and a new result (a task sorting first).
    client.post("/v1/projects/bb/labels", json={"labels": [["00000", "w-new", "1"]]}, headers=p["writer"])
    aggregate(client, p, run_jobs)
    cursor = page["next_cursor"]
    while cursor:
        body = client.get(f"/v1/projects/bb/consensus?limit=40&cursor={cursor}", headers=p["reader"]).get_json()
        assert body["version"] == page["version"]  # pinned to the version the walk began on
        seen += [it["task"] for it in body["items"]]
        cursor = body["next_cursor"]
    assert len(seen) == len(set(seen)) == 108 and "00000" not in seen
    latest = client.get("/v1/projects/bb/consensus?limit=1", headers=p["reader"]).get_json()
    assert latest["version"] == page["version"] + 1 and latest["items"][0]["task"] == "00000"
    bad = client.get("/v1/projects/bb/consensus?cursor=garbage", headers=p["reader"])
    assert bad.status_code == 400


def test_workers_sorted_and_paginated(client, bluebirds):
    p = bluebirds
    rows, cursor = [], None
    while True:
        url = "/v1/projects/bb/workers?limit=7&sort=-accuracy" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=p["reader"]).get_json()
        rows += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(rows) == len({r["worker"] for r in rows}) == 39
    acc = [r["accuracy"] for r in rows if r["accuracy"] is not None]
    assert acc == sorted(acc, reverse=True)
    one = client.get(f"/v1/projects/bb/workers/{rows[0]['worker']}", headers=p["reader"]).get_json()["item"]
    assert set(one["confusion"]) == {"0", "1"} and isinstance(one["flags"], list)
    # gold figures count by hand: this worker's answers on gold tasks
    truth = {g["task"]: g["label"] for g in bluebirds["gold"]}
    mine = [r for r in bluebirds["answers"] if r["worker"] == one["worker"]]
    assert one["gold_n"] == len(mine) and one["gold_correct"] == sum(r["label"] == truth[r["task"]] for r in mine)
    assert client.get("/v1/projects/bb/workers?sort=height", headers=p["reader"]).status_code == 422
    assert client.get("/v1/projects/bb/workers/nobody", headers=p["reader"]).status_code == 404


def test_disagreements_and_agreement(client, bluebirds):
    p = bluebirds
    body = strict_json(client.get("/v1/projects/bb/disagreements?limit=5", headers=p["reader"]))
    assert [r["rank"] for r in body["items"]] == [0, 1, 2, 3, 4]
    agreement = strict_json(client.get("/v1/projects/bb/agreement", headers=p["reader"]))["agreement"]
    assert {"krippendorff_alpha", "fleiss_kappa", "cohen_kappa", "percent_agreement"} <= set(agreement)


def test_no_result_yet_is_404(client, project):
    p = project()
    resp = client.get("/v1/projects/p1/consensus", headers=p["reader"])
    assert resp.status_code == 404 and "no aggregation result yet" in resp.get_json()["error"]["message"]


def test_integer_ids_and_labels_case(client, project, run_jobs):
    case = load_case("integer-ids-and-labels")
    p = project("ints", labels=[0, 1])
    client.post("/v1/projects/ints/labels", json={"labels": case["answers"]}, headers=p["writer"])
    for method in ("majority_vote", "dawid_skene"):
        aggregate(client, p, run_jobs, method=method)
        items, _, _ = all_pages(client, p)
        # Task keys are strings, labels come back as the integers the project declared.
        assert {it["task"]: it["label"] for it in items} == case["expected"][method]
        assert all(type(it["label"]) is int for it in items)
    # The mixed int/str variant is coerced by the documented rule: same answers, no new
    # class, no new answers.
    resp = client.post("/v1/projects/ints/labels", json={"labels": case["variants"][0]["answers"]}, headers=p["writer"])
    assert resp.get_json()["duplicates"] == 16 and resp.get_json()["accepted"] == 0


def test_unicode_whitespace_labels_case(client, project, run_jobs):
    case = load_case("unicode-whitespace-labels")
    p = project("uni", labels=["café", "tea"])
    client.post("/v1/projects/uni/labels", json={"labels": case["answers"]}, headers=p["writer"])
    aggregate(client, p, run_jobs, method="majority_vote")
    items, _, _ = all_pages(client, p)
    assert {it["task"]: it["label"] for it in items} == case["expected"]["majority_vote"]
    agreement = client.get("/v1/projects/uni/agreement", headers=p["reader"]).get_json()["agreement"]
    assert agreement["krippendorff_alpha"]["value"] == pytest.approx(case["expected"]["krippendorff_alpha_nominal"], abs=1e-6)


def test_kappa_single_class_case_is_strict_json(client, project, run_jobs):
    case = load_case("kappa-single-class-undefined")
    p = project("one", labels=["pos", "neg"])
    client.post("/v1/projects/one/labels", json={"labels": case["answers"]}, headers=p["writer"])
    job = aggregate(client, p, run_jobs, method="dawid_skene")
    resp = client.get("/v1/projects/one/agreement", headers=p["reader"])
    assert resp.status_code == 200
    agreement = strict_json(resp)["agreement"]
    assert agreement["percent_agreement"]["value"] == pytest.approx(1.0)
    for name in ("cohen_kappa", "fleiss_kappa", "krippendorff_alpha"):
        assert agreement[name]["value"] is None and agreement[name]["reason"]
    for path in ("consensus", "workers", "disagreements"):
        strict_json(client.get(f"/v1/projects/one/{path}", headers=p["reader"]))
    strict_json(client.get(f"/v1/jobs/{job['id']}", headers=p["reader"]))
