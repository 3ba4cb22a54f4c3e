"""The shared bug-report cases (../shared/cases) through the HTTP API, for those not already
covered by test_api_labels.py / test_api_aggregation.py: each case's answers are posted to a
project, aggregated by an RQ job, and read back as a client would."""

from __future__ import annotations

import pytest
from cases import load_case


def setup(client, project, case, labels=None, pid="case"):
    answers = case["answers"]
    labels = labels or sorted({str(a[2]) for a in answers})
    p = project(pid, labels=labels)
    resp = client.post(f"/v1/projects/{pid}/labels", json={"labels": answers}, headers=p["writer"])
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["accepted"] == len(answers)
    return p


def aggregate(client, p, run_jobs, method, **params):
    body = {"method": method, **({"params": params} if params else {})}
    resp = client.post(f"/v1/projects/{p['id']}/aggregations", json=body, headers=p["writer"])
    assert resp.status_code == 202, resp.get_json()
    run_jobs()
    job = client.get(resp.headers["Location"], headers=p["reader"]).get_json()["job"]
    assert job["status"] == "finished", job
    return job


def consensus(client, p):
    body = client.get(f"/v1/projects/{p['id']}/consensus?limit=1000", headers=p["reader"]).get_json()
    assert body["next_cursor"] is None
    return {it["task"]: it for it in body["items"]}


def agreement(client, p):
    return client.get(f"/v1/projects/{p['id']}/agreement", headers=p["reader"]).get_json()["agreement"]


@pytest.mark.parametrize("method", ["majority_vote", "dawid_skene"])
def test_ds_unseen_class(client, project, run_jobs, method):
    case = load_case("ds-unseen-class-zero-confusion")
    p = setup(client, project, case)
    aggregate(client, p, run_jobs, method)
    got = consensus(client, p)
    assert {t: it["label"] for t, it in got.items()} == case["expected"][method]
    for it in got.values():
        assert sum(it["probabilities"].values()) == pytest.approx(1.0)
    worker = client.get(f"/v1/projects/{p['id']}/workers/w2", headers=p["reader"]).get_json()["item"]
    assert all(v is not None for row in worker["confusion"].values() for v in row.values())


def test_majority_vote_ties_are_reported_and_deterministic(client, project, run_jobs):
    case = load_case("majority-vote-ties")
    p = setup(client, project, case)
    aggregate(client, p, run_jobs, "majority_vote")
    got = consensus(client, p)
    assert got["t2"]["label"] == "dog" and got["t2"]["tie"] is False
    for task, candidates in case["expected"]["ties"].items():
        assert got[task]["tie"] is True and got[task]["label"] in candidates
    # The same answers posted in reverse order to another project: the same consensus.
    q = project("reversed", labels=sorted({a[2] for a in case["answers"]}))
    client.post("/v1/projects/reversed/labels", json={"labels": case["answers"][::-1]}, headers=q["writer"])
    aggregate(client, q, run_jobs, "majority_vote")
    assert {t: it["label"] for t, it in consensus(client, q).items()} == {t: it["label"] for t, it in got.items()}


def test_glad_perfect_agreement(client, project, run_jobs):
    case = load_case("glad-perfect-agreement-divergence")
    p = setup(client, project, case)
    aggregate(client, p, run_jobs, "glad")
    assert {t: it["label"] for t, it in consensus(client, p).items()} == case["expected"]["glad"]
    workers = client.get(f"/v1/projects/{p['id']}/workers", headers=p["reader"]).get_json()["items"]
    accuracies = {w["accuracy"] for w in workers}
    assert len(accuracies) == 1 and None not in accuracies  # finite and equal for the symmetric workers


def test_single_worker_only(client, project, run_jobs):
    case = load_case("single-worker-only")
    p = setup(client, project, case)
    job = aggregate(client, p, run_jobs, "dawid_skene")
    assert {t: it["label"] for t, it in consensus(client, p).items()} == case["expected"]["majority_vote"]
    assert any("only one worker" in w for w in job["result"]["summary"]["warnings"])
    worker = client.get(f"/v1/projects/{p['id']}/workers/w1", headers=p["reader"]).get_json()["item"]
    assert worker["accuracy"] is None and "not_estimable" in worker["flags"]
    for stat in agreement(client, p).values():
        assert stat["value"] is None and stat["status"] != "ok"


def test_negative_agreement_is_not_clamped(client, project, run_jobs):
    case = load_case("negative-agreement-not-clamped")
    p = setup(client, project, case)
    aggregate(client, p, run_jobs, "majority_vote")
    got, exp = agreement(client, p), case["expected"]
    assert got["krippendorff_alpha"]["value"] == pytest.approx(exp["krippendorff_alpha_nominal"], abs=1e-6)
    assert got["cohen_kappa"]["value"] == pytest.approx(exp["cohen_kappa"], abs=1e-6)
    assert got["fleiss_kappa"]["value"] == pytest.approx(exp["fleiss_kappa"], abs=1e-6)
    assert got["percent_agreement"]["value"] == pytest.approx(exp["percent_agreement"], abs=1e-6)


def test_fleiss_unused_declared_category(client, project, run_jobs):
    case = load_case("fleiss-unused-category")
    p = setup(client, project, case, labels=case["params"]["categories"])
    aggregate(client, p, run_jobs, "majority_vote")
    fleiss = agreement(client, p)["fleiss_kappa"]
    assert fleiss["value"] == pytest.approx(case["expected"]["fleiss_kappa"], abs=1e-6)
    per = fleiss["details"]["per_category_kappa"]
    assert per["unsure"] is None
    assert per["yes"] == pytest.approx(1 / 3, abs=1e-6) and per["no"] == pytest.approx(1 / 3, abs=1e-6)

    variant = case["variants"][0]
    q = setup(client, project, variant, labels=variant["params"]["categories"], pid="variant")
    aggregate(client, q, run_jobs, "majority_vote")
    got = agreement(client, q)
    assert got["fleiss_kappa"]["value"] is None and got["fleiss_kappa"]["status"] == "undefined_no_variation"
    assert got["percent_agreement"]["value"] == 1.0


def test_krippendorff_single_rated_unit(client, project, run_jobs):
    case = load_case("kripp-single-rated-unit")
    p = setup(client, project, case)
    aggregate(client, p, run_jobs, "majority_vote")
    alpha = agreement(client, p)["krippendorff_alpha"]
    assert alpha["value"] == pytest.approx(0.0, abs=1e-9)
    assert alpha["details"]["D_o"] == pytest.approx(0.5) and alpha["details"]["D_e"] == pytest.approx(0.5)

    variant = case["variants"][0]
    q = setup(client, project, variant, pid="variant")
    aggregate(client, q, run_jobs, "majority_vote")
    alpha = agreement(client, q)["krippendorff_alpha"]
    assert alpha["value"] is None and alpha["status"] != "ok"


def test_many_classes_are_refused_quickly_or_aggregated(client, admin, project, run_jobs):
    """3,000 distinct labels: over the per-project label limit (1,000 by default), so the
    project is refused with a 422 naming the limit, before anything is stored."""
    case = load_case("many-classes-dense-confusion")
    labels = sorted({a[2] for a in case["answers"]})
    resp = client.post("/v1/projects", json={"id": "many", "labels": labels}, headers=admin)
    assert resp.status_code == 422
    assert "labels" in resp.get_json()["error"]["message"] and "1000" in resp.get_json()["error"]["message"]
    # Under the limit, the same kind of data aggregates with memory linear in the classes
    # (one-coin) and gives every task its own label.
    few = [a for a in case["answers"] if int(a[0][1:]) < 800]
    p = project("many", labels=sorted({a[2] for a in few}))
    assert client.post("/v1/projects/many/labels", json={"labels": few}, headers=p["writer"]).status_code == 200
    aggregate(client, p, run_jobs, "one_coin_dawid_skene")
    got = consensus(client, p)
    assert len(got) == 800 and all(it["label"] == "c" + t[1:] for t, it in got.items())
