"""RQ jobs: JSON serializer, joining a queued aggregation, debounced automatic
aggregation, failures with a reason, and the previous result staying readable."""

from __future__ import annotations

import json
import time

import pytest

from rq.registry import ScheduledJobRegistry

ANSWERS = [["t1", "w1", "a"], ["t1", "w2", "a"], ["t1", "w3", "b"], ["t2", "w1", "b"], ["t2", "w2", "b"], ["t2", "w3", "b"]]


def post_labels(client, p, rows):
    resp = client.post(f"/v1/projects/{p['id']}/labels", json={"labels": rows}, headers=p["writer"])
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def request_aggregation(client, p, **body):
    resp = client.post(f"/v1/projects/{p['id']}/aggregations", json=body, headers=p["writer"])
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()["job"]


def job_view(client, p, job_id):
    return client.get(f"/v1/jobs/{job_id}", headers=p["reader"]).get_json()["job"]


def test_jobs_are_stored_as_json_not_pickle(client, project, app, redis_client):
    p = project()
    post_labels(client, p, ANSWERS)
    job = request_aggregation(client, p, method="majority_vote")
    raw = redis_client.hget(f"rq:job:{job['id']}", "data")
    import zlib

    payload = json.loads(zlib.decompress(raw))  # RQ compresses the serialized payload
    assert payload[0] == "service.jobs.run_aggregation" and payload[3]["project"] == "p1"


def test_requests_join_a_queued_aggregation(client, project, run_jobs):
    p = project()
    post_labels(client, p, ANSWERS)
    first = request_aggregation(client, p, method="dawid_skene")
    second = request_aggregation(client, p, method="dawid_skene")
    assert first["joined"] is False and second["joined"] is True and second["id"] == first["id"]
    assert first["status"] == "queued"
    # Different parameters are a different aggregation.
    other = request_aggregation(client, p, method="dawid_skene", params={"max_iter": 5})
    assert other["id"] != first["id"] and other["joined"] is False
    run_jobs()
    assert job_view(client, p, first["id"])["status"] == "finished"
    assert job_view(client, p, other["id"])["status"] == "finished"
    # Once it has run, a new request starts a new job.
    third = request_aggregation(client, p, method="dawid_skene")
    assert third["id"] != first["id"] and third["joined"] is False


def test_previous_result_stays_readable_while_a_new_one_is_queued(client, project, run_jobs):
    p = project()
    post_labels(client, p, ANSWERS)
    request_aggregation(client, p, method="majority_vote")
    run_jobs()
    before = client.get("/v1/projects/p1/consensus", headers=p["reader"]).get_json()
    # t1: a, a, b -> a; t2: b, b, b -> b
    assert [(i["task"], i["label"]) for i in before["items"]] == [("t1", "a"), ("t2", "b")]
    post_labels(client, p, [["t1", "w1", "b"], ["t1", "w2", "b"]])  # two workers change their minds
    job = request_aggregation(client, p, method="majority_vote")
    during = client.get("/v1/projects/p1/consensus", headers=p["reader"]).get_json()
    assert during["items"] == before["items"] and during["version"] == before["version"]
    view = client.get("/v1/projects/p1", headers=p["reader"]).get_json()
    assert view["latest_aggregation"]["stale"] is True
    run_jobs()
    after = client.get("/v1/projects/p1/consensus", headers=p["reader"]).get_json()
    assert after["version"] == before["version"] + 1
    assert [(i["task"], i["label"]) for i in after["items"]] == [("t1", "b"), ("t2", "b")]
    finished = job_view(client, p, job["id"])
    assert finished["result"]["version"] == after["version"] and finished["progress"]["stage"]


def test_failed_job_reports_a_reason(client, project, app, run_jobs):
    p = project()
    post_labels(client, p, ANSWERS)
    # Bypass the API's parameter check to make the estimator itself refuse.
    jobs = app.extensions["crowdqc_jobs"]
    job_id, _ = jobs.request("p1", "dawid_skene", {"max_iter": 0})
    run_jobs()
    view = job_view(client, p, job_id)
    assert view["status"] == "failed"
    assert "max_iter" in view["reason"] and "Traceback" not in view["reason"]


def test_job_of_a_deleted_project_fails_cleanly(client, project, admin, run_jobs):
    p = project()
    post_labels(client, p, ANSWERS)
    job = request_aggregation(client, p, method="majority_vote")
    assert client.delete("/v1/projects/p1", headers=admin).status_code == 204
    run_jobs()
    view = client.get(f"/v1/jobs/{job['id']}", headers=admin).get_json()["job"]
    assert view["status"] == "failed" and "no longer exists" in view["reason"]


def test_jobs_are_private_to_their_project(client, project):
    p = project("p1")
    q = project("p2")
    post_labels(client, p, ANSWERS)
    job = request_aggregation(client, p, method="majority_vote")
    assert client.get(f"/v1/jobs/{job['id']}", headers=q["writer"]).status_code == 404
    assert client.get("/v1/jobs/nope", headers=q["writer"]).status_code == 404
    assert client.get(f"/v1/jobs/{job['id']}", headers=p["reader"]).status_code == 200


def test_params_are_validated_before_enqueueing(client, project):
    p = project()
    post_labels(client, p, ANSWERS)
    for body in ({"method": "nope"}, {"method": "dawid_skene", "params": {"bogus": 1}}, {"method": "dawid_skene", "params": {"max_iter": "ten"}}):
        resp = client.post("/v1/projects/p1/aggregations", json=body, headers=p["writer"])
        assert resp.status_code == 422, body
        assert resp.get_json()["error"]["details"]


@pytest.mark.parametrize("params, path_message", [
    ({"max_iter": -1}, "params: parameter max_iter must be an integer >= 1, got -1"),
    ({"tol": -0.5}, "params: parameter tol must be finite and >= 0, got -0.5"),
    ({"spammer_threshold": 3}, "params: parameter spammer_threshold must be between 0 and 1, got 3.0"),
])
def test_out_of_range_params_are_422_at_the_request_and_on_the_project(client, project, admin, redis_client, namespace,
                                                                        params, path_message):
    """Ranges are the estimators' own checks, run at the edge: a bad value never becomes
    a job that fails later (nor, as a project setting, every automatic job)."""
    p = project()
    post_labels(client, p, ANSWERS)
    resp = client.post("/v1/projects/p1/aggregations", json={"method": "dawid_skene", "params": params}, headers=p["writer"])
    assert resp.status_code == 422
    assert resp.get_json()["error"]["details"][0]["message"] == path_message
    assert not list(redis_client.scan_iter(match=f"{namespace['key_prefix']}job:*"))  # nothing enqueued
    resp = client.post("/v1/projects", json={"id": "p2", "labels": ["a", "b"],
                                             "aggregation": {"method": "dawid_skene", "params": params}}, headers=admin)
    assert resp.status_code == 422 and resp.get_json()["error"]["details"][0]["message"] == "aggregation." + path_message


def test_flag_thresholds_are_aggregation_params(client, project, run_jobs):
    p = project()
    post_labels(client, p, ANSWERS)
    job = request_aggregation(client, p, method="majority_vote", params={"spammer_threshold": 0.5, "min_answers": 1})
    run_jobs()
    view = client.get(f"/v1/jobs/{job['id']}", headers=p["reader"]).get_json()["job"]
    assert view["status"] == "finished", view
    used = view["result"]["summary"]["params"]
    assert (used["spammer_threshold"], used["min_answers"], used["agreement_threshold"]) == (0.5, 1, 0.5)


def test_auto_aggregation_is_debounced(client, project, app, run_jobs, redis_client):
    """Settings from conftest: quiet 1 s, at most 3 s after the first batch."""
    p = project(aggregation={"method": "majority_vote", "auto": True})
    registry = ScheduledJobRegistry(queue=app.extensions["crowdqc_jobs"].queue)
    job_ids = set()
    t0 = time.time()
    for i in range(3):
        out = post_labels(client, p, [[f"t{i}", "w1", "a"], [f"t{i}", "w2", "b"]])
        job_ids.add(out["auto_aggregation"]["job"])
    assert len(job_ids) == 1  # one aggregation for three batches
    (job_id,) = job_ids
    assert registry.get_job_ids() == [job_id]
    score = redis_client.zscore(registry.key, job_id)
    assert t0 + 1 - 1 <= score <= t0 + 3 + 1  # quiet period, capped by the max wait
    assert job_view(client, p, job_id)["status"] == "queued"
    # A duplicate batch changes nothing and does not touch the schedule.
    assert "auto_aggregation" not in post_labels(client, p, [["t0", "w1", "a"]])
    # Not due yet: a burst worker leaves it alone.
    run_jobs()
    assert job_view(client, p, job_id)["status"] == "queued"
    time.sleep(max(0.0, score - time.time()) + 0.1)
    run_jobs()
    assert job_view(client, p, job_id)["status"] == "finished"
    items = client.get("/v1/projects/p1/consensus", headers=p["reader"]).get_json()["items"]
    assert [i["task"] for i in items] == ["t0", "t1", "t2"]
    # New labels after the run schedule a new job.
    out = post_labels(client, p, [["t9", "w1", "a"]])
    assert out["auto_aggregation"]["job"] != job_id


def test_progress_saver_throttles_iterations():
    from service.jobs import _progress_saver

    class FakeJob:
        def __init__(self):
            self.meta, self.saved = {}, []

        def save_meta(self):
            self.saved.append(dict(self.meta["progress"]))

    job = FakeJob()
    progress = _progress_saver(job, every=3600)
    progress({"stage": "fit"})
    progress({"stage": "fit", "iteration": 1, "log_likelihood": float("-inf")})
    progress({"stage": "fit", "iteration": 2, "log_likelihood": -3.5})
    progress({"stage": "reliability"})
    # Stage changes are always saved; iterations at most once per period; -inf -> None.
    assert job.saved == [{"stage": "fit"}, {"stage": "reliability"}]
    job2 = FakeJob()
    p2 = _progress_saver(job2, every=0)
    p2({"stage": "fit", "iteration": 1, "log_likelihood": float("-inf")})
    assert job2.saved == [{"stage": "fit", "iteration": 1, "log_likelihood": None}]
