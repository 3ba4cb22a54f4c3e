"""Label Studio webhook receiver: events in Label Studio's own shape, queued by the
receiver and applied in order by the drain job."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from conftest import bearer

LABELS = ["Positive", "Negative", "Neutral"]
HOOK = "/v1/projects/{}/integrations/label-studio/webhook"
SETUP = "/v1/projects/{}/integrations/label-studio"
PROJECT = {"id": 3, "title": "Product reviews", "created_at": "2024-03-10T16:40:02.100Z"}


def task(tid: int, review: str | None = None) -> dict:
    # As Label Studio's TaskSerializer sends it next to an annotation event.
    return {
        "id": tid, "data": {"text": f"review {tid}", "review_id": review or f"R-{tid}"}, "meta": {},
        "created_at": "2024-03-10T16:45:12.883910Z", "updated_at": "2024-03-11T10:02:44.153004Z",
        "is_labeled": True, "overlap": 1, "inner_id": tid, "total_annotations": 1, "cancelled_annotations": 0,
        "total_predictions": 0, "comment_count": 0, "unresolved_comment_count": 0, "last_comment_updated_at": None,
        "project": 3, "updated_by": 7, "file_upload": 1, "comment_authors": [],
    }


def annotation(aid: int, tid: int, worker, choice: str | None, tag: str = "sentiment", **extra) -> dict:
    result = []
    if choice is not None:
        result.append({"value": {"choices": [choice]}, "id": f"r{aid}", "from_name": tag, "to_name": "text",
                       "type": "choices", "origin": "manual"})
    return {
        "id": aid, "result": result, "created_username": "ana@example.org, 7", "created_ago": "0 minutes",
        "completed_by": worker, "was_cancelled": False, "ground_truth": False,
        "created_at": "2024-03-11T09:21:07.511205Z", "updated_at": "2024-03-11T09:21:07.511221Z",
        "draft_created_at": None, "lead_time": 7.4, "import_id": None, "last_action": None, "task": tid,
        "project": 3, "updated_by": worker if isinstance(worker, int) else 7, "parent_prediction": None,
        "parent_annotation": None, "last_created_by": None, **extra,
    }


def created(ann: dict, tid: int | None = None) -> dict:
    return {"action": "ANNOTATION_CREATED", "annotation": ann, "task": task(tid or ann["task"]), "project": PROJECT}


def updated(ann: dict) -> dict:
    return {**created(ann), "action": "ANNOTATION_UPDATED"}


def deleted(*aids: int) -> dict:
    return {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": a} for a in aids], "project": PROJECT}


def tasks_deleted(*tids: int) -> dict:
    return {"action": "TASKS_DELETED", "tasks": [{"id": t} for t in tids], "project": PROJECT}


@pytest.fixture
def ls(client, project, app, run_jobs):
    """A project with a webhook secret; ``send(event)`` posts it as Label Studio does."""
    p = project("rev", labels=LABELS)
    resp = client.post(SETUP.format("rev"), json={}, headers=p["writer"])
    assert resp.status_code == 201, resp.get_json()
    secret = resp.get_json()["label_studio"]["secret"]
    store = app.extensions["crowdqc_store"]

    def send(event, headers=None, expect=202):
        h = {"X-Crowdqc-Webhook-Secret": secret} if headers is None else headers
        r = client.post(HOOK.format("rev"), json=event, headers=h)
        assert r.status_code == expect, r.get_json()
        return r.get_json()

    def answers(tid):
        got = store.task_answers("rev", str(tid))
        return None if got is None else [(w, LABELS[i]) for w, i in got]

    def counts():
        return client.get("/v1/projects/rev", headers=p["reader"]).get_json()["counts"]

    def status():
        return client.get(SETUP.format("rev"), headers=p["reader"]).get_json()["label_studio"]

    return {**p, "secret": secret, "send": send, "answers": answers, "counts": counts, "status": status,
            "store": store, "run": run_jobs}


def test_created_updated_deleted(ls):
    out = ls["send"](created(annotation(2001, 201, 7, "Positive")))
    assert out["event"]["status"] == "queued" and out["event"]["action"] == "ANNOTATION_CREATED"
    assert ls["answers"](201) is None  # applied by the job, not the request
    ls["run"]()
    assert ls["answers"](201) == [("7", "Positive")]
    assert ls["counts"]()["answers"] == 1

    ls["send"](updated(annotation(2001, 201, 7, "Negative")))
    ls["run"]()
    assert ls["answers"](201) == [("7", "Negative")]
    assert ls["counts"]()["answers"] == 1

    ls["send"](deleted(2001))
    ls["run"]()
    assert ls["answers"](201) == []
    assert ls["counts"]()["answers"] == 0
    st = ls["status"]()
    assert st["events"] == {"received": 3, "applied": 3, "failed": 0, "ignored": 0, "pending": 0}
    assert [e["action"] for e in st["recent"]] == ["ANNOTATIONS_DELETED", "ANNOTATION_UPDATED", "ANNOTATION_CREATED"]
    assert st["recent"][0]["result"]["removed"] == 1 and st["recent"][1]["result"]["replaced"] == 1
    # The tag is remembered from the first event, as from a first import.
    assert (st["from_name"], st["to_name"]) == ("sentiment", "text")


def test_bulk_created_and_user_objects(ls):
    anns = [annotation(3001, 301, {"id": 7, "email": "ana@example.org", "first_name": "Ana"}, "Neutral"),
            annotation(3002, 301, 9, "Positive"), annotation(3003, 302, 9, "Negative")]
    ls["send"]({"action": "ANNOTATIONS_CREATED", "annotation": anns, "task": [task(301), task(302)], "project": PROJECT})
    ls["run"]()
    assert ls["answers"](301) == [("7", "Neutral"), ("9", "Positive")]
    assert ls["answers"](302) == [("9", "Negative")]


def test_tasks_deleted_removes_answers_and_gold(ls):
    ls["send"](created(annotation(4001, 401, 7, "Positive")))
    ls["send"](created(annotation(4002, 401, 1, "Positive", ground_truth=True)))
    ls["send"](created(annotation(4003, 402, 7, "Neutral")))
    ls["run"]()
    assert ls["counts"]()["gold"] == 1 and ls["counts"]()["answers"] == 2
    ls["send"](tasks_deleted(401))
    ls["run"]()
    assert ls["answers"](401) == []
    c = ls["counts"]()
    assert (c["answers"], c["gold"]) == (1, 0)
    assert ls["answers"](402) == [("7", "Neutral")]


def test_ground_truth_becomes_gold_not_an_answer(ls):
    ls["send"](created(annotation(5001, 501, 1, "Negative", ground_truth=True)))
    ls["run"]()
    assert ls["answers"](501) is None  # no answer, the task is only known as gold
    assert ls["store"].snapshot("rev").gold == {"501": LABELS.index("Negative")}
    # Unmarking it as ground truth turns it into an ordinary answer and drops the gold.
    ls["send"](updated(annotation(5001, 501, 1, "Negative", ground_truth=False)))
    ls["run"]()
    assert ls["answers"](501) == [("1", "Negative")]
    assert ls["counts"]()["gold"] == 0
    # Deleting a ground-truth annotation removes its gold label.
    ls["send"](created(annotation(5002, 502, 1, "Neutral", ground_truth=True)))
    ls["send"](deleted(5002))
    ls["run"]()
    assert ls["store"].snapshot("rev").gold == {}


def test_cancelled_is_not_an_answer(ls):
    ls["send"](created(annotation(6001, 601, 7, None, was_cancelled=True)))
    ls["run"]()
    assert ls["counts"]()["answers"] == 0
    assert ls["status"]()["recent"][0]["result"]["left_out"] == {"cancelled": 1}
    # An answer that becomes cancelled on update is removed.
    ls["send"](created(annotation(6002, 602, 7, "Positive")))
    ls["send"](updated(annotation(6002, 602, 7, "Positive", was_cancelled=True)))
    ls["run"]()
    assert ls["answers"](602) == []


def test_event_without_payload_is_acknowledged_and_ignored(ls):
    before = ls["counts"]()
    for action in ("ANNOTATION_CREATED", "ANNOTATIONS_DELETED", "TASKS_DELETED"):
        out = ls["send"]({"action": action}, expect=200)
        assert out["event"]["status"] == "ignored" and "Send payload" in out["event"]["reason"]
    out = ls["send"]({"action": "PROJECT_UPDATED", "project": PROJECT}, expect=200)
    assert out["event"]["status"] == "ignored"
    ls["run"]()
    assert ls["counts"]() == before
    assert ls["status"]()["events"] == {"received": 4, "applied": 0, "failed": 0, "ignored": 4, "pending": 0}


def test_create_then_delete_back_to_back_are_applied_in_order(ls):
    ls["send"](created(annotation(7001, 701, 7, "Positive")))
    ls["send"](updated(annotation(7001, 701, 7, "Neutral")))
    ls["send"](deleted(7001))
    assert ls["status"]()["events"]["pending"] == 3
    ls["run"]()
    assert ls["answers"](701) == []
    assert ls["counts"]()["answers"] == 0
    assert ls["status"]()["events"]["pending"] == 0


def test_label_outside_the_project_fails_the_whole_event(ls):
    anns = [annotation(8001, 801, 7, "Positive"), annotation(8002, 802, 9, "Sarcastic")]
    ls["send"]({"action": "ANNOTATIONS_CREATED", "annotation": anns, "task": [task(801), task(802)], "project": PROJECT})
    ls["send"](created(annotation(8003, 803, 7, "Neutral")))
    ls["run"]()
    assert ls["counts"]()["answers"] == 1  # the later, valid event still applies
    assert ls["answers"](801) is None
    st = ls["status"]()
    assert st["events"]["failed"] == 1
    failure = st["recent"][1]
    assert failure["status"] == "failed"
    assert "task 802, annotation 8002: label 'Sarcastic'" in failure["reason"]
    assert "'Sarcastic' is not one of the project's labels" in failure["reason"]
    assert "nothing was applied" in failure["reason"]


def test_remembered_tag_and_second_tag(ls, client, project):
    # Two choices tags: the one remembered from the first event is used.
    ls["send"](created(annotation(9001, 901, 7, "Positive")))
    ann = annotation(9002, 902, 7, "Negative")
    ann["result"].append({"value": {"choices": ["Neutral"]}, "from_name": "quality", "to_name": "text", "type": "choices"})
    ls["send"](created(ann))
    ls["run"]()
    assert ls["answers"](902) == [("7", "Negative")]
    # Without a remembered tag, two choices tags cannot be told apart.
    p = project("fresh", labels=LABELS)
    secret = client.post(SETUP.format("fresh"), json={}, headers=p["writer"]).get_json()["label_studio"]["secret"]
    r = client.post(HOOK.format("fresh"), json=created(ann), headers={"X-Crowdqc-Webhook-Secret": secret})
    assert r.status_code == 202
    ls["run"]()
    st = client.get(SETUP.format("fresh"), headers=p["reader"]).get_json()["label_studio"]
    assert st["events"]["failed"] == 1 and "several choices tags" in st["recent"][0]["reason"]


def test_deletion_of_an_imported_annotation(ls, client):
    export = (Path(__file__).parent / "data" / "formats" / "label_studio_export.json").read_bytes()
    r = client.post("/v1/projects/rev/imports?preset=label_studio", data=export,
                    headers={**ls["writer"], "Content-Type": "application/json"})
    assert r.status_code == 202
    ls["run"]()
    assert ls["answers"](102) == [("12", "Neutral"), ("7", "Negative")]
    ls["send"](deleted(1003, 99999))
    ls["run"]()
    assert ls["answers"](102) == [("12", "Neutral")]
    assert ls["status"]()["recent"][0]["result"] == {"annotations": 2, "removed": 1, "gold_removed": 0, "unknown": 1}


def test_tasks_keyed_by_a_data_field(client, project, run_jobs, app):
    p = project("keyed", labels=LABELS)
    r = client.post(SETUP.format("keyed"), json={"task_key": "data.review_id", "field": "sentiment"}, headers=p["writer"])
    assert r.status_code == 201 and r.get_json()["label_studio"]["task_key"] == "data.review_id"
    h = {"Authorization": "Token " + r.get_json()["label_studio"]["secret"]}
    assert client.post(HOOK.format("keyed"), json=created(annotation(1, 11, 7, "Positive")), headers=h).status_code == 202
    run_jobs()
    store = app.extensions["crowdqc_store"]
    assert store.task_answers("keyed", "R-11") == [("7", 0)]
    assert client.post(HOOK.format("keyed"), json=tasks_deleted(11), headers=h).status_code == 202
    run_jobs()
    assert store.task_answers("keyed", "R-11") == []


def test_authentication(ls, client, project):
    ev = created(annotation(1, 1, 7, "Positive"))
    url = HOOK.format("rev")
    for headers in ({}, {"X-Crowdqc-Webhook-Secret": "wrong"}, {"Authorization": "Token wrong"},
                    {"Authorization": "Bearer wrong"}):
        r = client.post(url, json=ev, headers=headers)
        assert r.status_code == 401, headers
        assert r.get_json()["error"]["code"] == "unauthorized"
    r = client.post(url, json=ev, headers=ls["reader"])
    assert r.status_code == 403 and r.get_json()["error"]["status"] == 403
    other = project("other", labels=LABELS)
    r = client.post(url, json=ev, headers=other["writer"])
    assert r.status_code == 404 and "not found" in r.get_json()["error"]["message"]
    # A writer key works as well as the secret; so does the secret as a bearer credential.
    assert client.post(url, json=ev, headers=ls["writer"]).status_code == 202
    assert client.post(url, json=ev, headers=bearer(ls["secret"])).status_code == 202
    # The secret of another project is no credential here.
    other_secret = client.post(SETUP.format("other"), json={}, headers=other["writer"]).get_json()["label_studio"]["secret"]
    assert client.post(url, json=ev, headers={"X-Crowdqc-Webhook-Secret": other_secret}).status_code == 401
    # Rotation: the old secret stops working at once.
    new = client.post(SETUP.format("rev"), json={}, headers=ls["writer"]).get_json()["label_studio"]["secret"]
    assert client.post(url, json=ev, headers={"X-Crowdqc-Webhook-Secret": ls["secret"]}).status_code == 401
    assert client.post(url, json=ev, headers={"X-Crowdqc-Webhook-Secret": new}).status_code == 202
    # Readers may look at the integration but not change it; the secret is never shown again.
    st = client.get(SETUP.format("rev"), headers=ls["reader"]).get_json()["label_studio"]
    assert st["configured"] and "secret" not in st and new not in str(st)
    assert client.post(SETUP.format("rev"), json={}, headers=ls["reader"]).status_code == 403
    assert client.delete(SETUP.format("rev"), headers=ls["writer"]).status_code == 204
    assert client.post(url, json=ev, headers={"X-Crowdqc-Webhook-Secret": new}).status_code == 401


@pytest.mark.parametrize("body, path", [
    ({"annotation": {}}, "action"),
    ({"action": 3}, "action"),
    ({"action": "ANNOTATION_CREATED", "annotation": "x"}, "annotation"),
    ({"action": "ANNOTATION_CREATED", "annotation": {"result": []}}, "annotation.id"),
    ({"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 1}, {"id": None}]}, "annotations[1].id"),
    ({"action": "TASKS_DELETED", "tasks": {"id": 1}}, "tasks"),
])
def test_malformed_events_name_the_field(ls, body, path):
    out = ls["send"](body, expect=422)
    assert out["error"]["details"][0]["path"] == path


def test_setup_options_are_validated(ls, client):
    r = client.post(SETUP.format("rev"), json={"task_key": "review_id"}, headers=ls["writer"])
    assert r.status_code == 422 and "task_key" in r.get_json()["error"]["message"]


def test_a_lost_drain_job_is_replaced(ls):
    # A lease left by a job that no longer exists (and is not being enqueued right now).
    lease = ls["store"].pkey("rev", "lsw:drain")
    ls["store"].r.set(lease, "ghost-job", ex=60)
    ls["send"](created(annotation(1101, 1101, 7, "Positive")))
    ls["run"]()
    assert ls["answers"](1101) == [("7", "Positive")]
    assert not ls["store"].r.exists(lease)


def test_events_are_not_applied_twice_when_a_job_is_repeated(ls):
    ev = copy.deepcopy(created(annotation(1201, 1201, 7, "Positive")))
    ls["send"](ev)
    ls["send"](ev)  # Label Studio may deliver the same event again
    ls["run"]()
    assert ls["answers"](1201) == [("7", "Positive")]
    assert ls["counts"]()["answers"] == 1


# -- events about annotations that came in by a file import ---------------------------------------

EXPORT = Path(__file__).parent / "data" / "formats" / "label_studio_export.json"


def import_export(client, pid, headers, run, query=""):
    r = client.post(f"/v1/projects/{pid}/imports?preset=label_studio{query}", data=EXPORT.read_bytes(),
                    headers={**headers, "Content-Type": "application/json"})
    assert r.status_code == 202, r.get_json()
    run()
    job = client.get(r.headers["Location"], headers=headers).get_json()["job"]
    assert job["status"] == "finished", job


def test_deleting_an_imported_ground_truth_annotation_removes_its_gold(ls, client):
    import_export(client, "rev", ls["writer"], ls["run"])
    # The export's only ground truth: annotation 1006 on task 103, Neutral.
    assert ls["store"].snapshot("rev").gold == {"103": LABELS.index("Neutral")}
    ls["send"](deleted(1006))
    ls["run"]()
    assert ls["store"].snapshot("rev").gold == {}
    assert ls["counts"]()["gold"] == 0
    assert ls["status"]()["recent"][0]["result"] == {"annotations": 1, "removed": 0, "gold_removed": 1, "unknown": 0}
    # The crowd's answers on that task are not the annotation that was deleted.
    assert ls["answers"](103) == [("9", "Neutral")]


def test_unmarking_an_imported_ground_truth_turns_it_into_an_answer(ls, client):
    import_export(client, "rev", ls["writer"], ls["run"])
    ann = annotation(1006, 103, 1, "Neutral", ground_truth=False)
    ls["send"](updated(ann))
    ls["run"]()
    assert ls["store"].snapshot("rev").gold == {}
    assert ls["answers"](103) == [("1", "Neutral"), ("9", "Neutral")]
    c = ls["counts"]()
    assert (c["answers"], c["gold"]) == (6, 0)


def test_tasks_deleted_after_an_import_keyed_by_a_data_field(client, project, run_jobs, app):
    p = project("keyed2", labels=LABELS)
    r = client.post(SETUP.format("keyed2"), json={"task_key": "data.review_id"}, headers=p["writer"])
    h = {"X-Crowdqc-Webhook-Secret": r.get_json()["label_studio"]["secret"]}
    import_export(client, "keyed2", p["writer"], run_jobs, "&task_key=data.review_id")
    store = app.extensions["crowdqc_store"]
    # Label Studio task 102 is review R-0002 (workers 7 and 12); 103 is R-0003 (worker 9, and
    # the ground truth).
    assert store.task_answers("keyed2", "R-0002") == [("12", 2), ("7", 1)]
    assert store.snapshot("keyed2").gold == {"R-0003": 2}
    for tid in (102, 103):
        assert client.post(HOOK.format("keyed2"), json=tasks_deleted(tid), headers=h).status_code == 202
    run_jobs()
    assert store.task_answers("keyed2", "R-0002") == []
    assert store.task_answers("keyed2", "R-0003") == []
    assert store.snapshot("keyed2").gold == {}
    view = client.get("/v1/projects/keyed2", headers=p["reader"]).get_json()["counts"]
    assert (view["answers"], view["gold"]) == (2, 0)  # task 101's two answers stay
    recent = client.get(SETUP.format("keyed2"), headers=p["reader"]).get_json()["label_studio"]["recent"]
    assert [e["result"] for e in recent] == [
        {"tasks": 1, "removed": 1, "gold_removed": 1, "unknown": 0},
        {"tasks": 1, "removed": 2, "gold_removed": 0, "unknown": 0},
    ]


def test_answers_applied_from_events_are_counted_in_the_metrics(ls, client):
    from test_observability import delta, scrape

    before = scrape(client)
    ls["send"](created(annotation(1301, 1301, 7, "Positive")))
    ls["send"](created(annotation(1302, 1301, 9, "Negative")))
    ls["send"](updated(annotation(1301, 1301, 7, "Neutral")))  # 7 changes their answer
    ls["send"](updated(annotation(1302, 1301, 9, "Negative")))  # saved again unchanged
    ls["run"]()
    assert ls["answers"](1301) == [("7", "Neutral"), ("9", "Negative")]
    after = scrape(client)
    ans = "crowdqc_answers_ingested_total"
    assert delta(before, after, ans, outcome="accepted") == 2
    assert delta(before, after, ans, outcome="replaced") == 1
    assert delta(before, after, ans, outcome="duplicate") == 1
