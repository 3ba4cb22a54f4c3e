"""Bulk imports over HTTP: staged upload, RQ job with progress, validation before storing."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from cases import DATASETS

DATA = Path(__file__).parent / "data" / "formats"


def job(client, headers, resp):
    assert resp.status_code == 202, resp.get_json()
    loc = resp.headers["Location"]
    return client.get(loc, headers=headers).get_json()["job"]


def counts(client, p):
    return client.get(f"/v1/projects/{p['id']}", headers=p["reader"]).get_json()["counts"]


def test_label_studio_export_raw_body(client, project, run_jobs, app):
    p = project("ls", labels=["Positive", "Negative", "Neutral"])
    resp = client.post("/v1/projects/ls/imports?preset=label_studio", data=(DATA / "label_studio_export.json").read_bytes(),
                       headers={**p["writer"], "Content-Type": "application/json"})
    assert resp.get_json()["job"]["status"] == "queued"
    run_jobs()
    view = job(client, p["reader"], resp)
    assert view["status"] == "finished", view
    r = view["result"]
    # 5 answers and 1 gold label (see test_formats_label_studio); 1 cancelled, 1 without a choice.
    assert (r["answers"], r["gold"], r["accepted"], r["replaced"]) == (5, 1, 5, 0)
    assert r["left_out"] == {"cancelled": 1, "no_choice": 1}
    assert counts(client, p)["answers"] == 5 and counts(client, p)["gold"] == 1
    store = app.extensions["crowdqc_store"]
    assert store.task_answers("ls", "102") == [("12", 2), ("7", 1)]
    # Annotation ids are kept for Label Studio deletions, and the tag names for exports.
    assert store.r.hget(store.pkey("ls", "lsa"), "1003") == b"102\x007"
    assert store.r.hgetall(store.pkey("ls", "ls")) == {b"from_name": b"sentiment", b"to_name": b"text"}
    # The staged upload is gone.
    assert not list(store.r.scan_iter(match=f"{store.prefix}import:*"))


def test_csv_mapping_inferred_from_content_type_in_small_batches(make_app, admin, monkeypatch):
    import service.imports as imports

    # Tiny chunks and batches: staging spans many list items, storing many batches.
    monkeypatch.setattr(imports, "CHUNK", 64)
    app = make_app(max_batch=7)
    client = app.test_client()
    assert client.post("/v1/projects", json={"id": "c", "labels": ["yes", "no"]}, headers=admin).status_code == 201
    rows = ["item;ignored,annotator,answer,truth"]
    want = {}
    for i in range(40):
        for w in range(3):
            lab = "yes" if (i + w) % 3 else "no"
            rows.append(f"i{i};x,w{w},{lab},{'yes' if i == 5 else ''}")
            want[(f"i{i};x", f"w{w}")] = lab
    body = ("\n".join(rows) + "\n").encode()
    resp = client.post("/v1/projects/c/imports?task_column=item%3Bignored&worker_column=annotator&label_column=answer&gold_column=truth",
                       data=body, headers={**admin, "Content-Type": "text/csv"})
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json()["job"]["options"]["format"] == "csv"
    run_jobs_for(app)
    view = client.get(resp.headers["Location"], headers=admin).get_json()["job"]
    assert view["status"] == "finished", view
    assert (view["result"]["answers"], view["result"]["gold"]) == (120, 1)
    snap = app.extensions["crowdqc_store"].snapshot("c")
    got = {(snap.task_names[t], snap.worker_names[w]): ["yes", "no"][lab] for t, w, lab in zip(snap.task, snap.worker, snap.label)}
    assert got == want
    assert snap.gold == {"i5;x": 0}


def run_jobs_for(app):
    import uuid

    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    queue = app.extensions["crowdqc_jobs"].queue
    SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer,
                 name=f"{queue.name}-{uuid.uuid4().hex[:8]}").work(burst=True, logging_level="WARNING")


def test_multipart_toloka_with_form_options(client, project, run_jobs):
    p = project("tk", labels=["cat", "dog"])
    data = {"file": (io.BytesIO((DATA / "toloka_results.tsv").read_bytes()), "assignments_from_pool_41234567__28-03-2024.tsv"),
            "preset": "toloka", "include_rejected": "true"}
    resp = client.post("/v1/projects/tk/imports", data=data, content_type="multipart/form-data", headers=p["writer"])
    run_jobs()
    view = job(client, p["reader"], resp)
    assert view["status"] == "finished", view
    # With the rejected assignment: 9 answers, the control task's gold once.
    assert (view["result"]["answers"], view["result"]["gold"]) == (9, 1)
    assert view["result"]["left_out"] == {"no_answer": 1}
    assert view["params"]["name"].startswith("assignments_from_pool")


def test_bad_row_fails_with_its_line_and_stores_nothing(client, project, run_jobs):
    p = project("bad", labels=["a", "b"])
    client.post("/v1/projects/bad/labels", json={"labels": [["t0", "w0", "a"]]}, headers=p["writer"])
    body = "task\tworker\tlabel\nt1\tw1\ta\nt1\tw2\tb\nt2\tw1\tc\nt2\tw2\ta\n"
    resp = client.post("/v1/projects/bad/imports?format=tsv&name=batch7.tsv", data=body, headers={**p["writer"], "Content-Type": "application/octet-stream"})
    run_jobs()
    view = job(client, p["reader"], resp)
    assert view["status"] == "failed"
    assert view["reason"].startswith("batch7.tsv, line 4: label 'c' is not one of the project's labels ('a', 'b')")
    assert "nothing was imported" in view["reason"]
    assert counts(client, p)["answers"] == 1


def test_request_errors(client, project):
    p = project("e", labels=["a", "b"])
    url = "/v1/projects/e/imports"
    r = client.post(url, data=b"task,worker,label\n", headers={**p["writer"], "Content-Type": "application/octet-stream"})
    assert r.status_code == 422 and "format=csv|tsv|jsonl or preset=" in r.get_json()["error"]["message"]
    r = client.post(url + "?preset=toloka&label_column=x", data=b"x", headers=p["writer"])
    assert r.status_code == 422 and "label_column applies to format" in r.get_json()["error"]["message"]
    r = client.post(url + "?preset=nope", data=b"x", headers=p["writer"])
    assert r.status_code == 422
    r = client.post(url + "?format=csv", data=b"", headers=p["writer"])
    assert r.status_code == 400
    r = client.post(url + "?format=csv", data=b"task,worker,label\nt,w,a\n", headers=p["reader"])
    assert r.status_code == 403
    r = client.post(url + "?format=csv", data=b"task,worker,label\nt,w,a\n")
    assert r.status_code == 401


def test_import_limit_is_enforced_while_streaming(make_app, admin):
    app = make_app(max_import_bytes=100)
    client = app.test_client()
    client.post("/v1/projects", json={"id": "big", "labels": ["a"]}, headers=admin)
    body = b"task,worker,label\n" + b"t,w,a\n" * 50
    r = client.post("/v1/projects/big/imports?format=csv", data=body, headers=admin)
    assert r.status_code == 413
    store = app.extensions["crowdqc_store"]
    assert not list(store.r.scan_iter(match=f"{store.prefix}import:*"))


def test_imports_are_not_bound_by_the_json_body_limit(make_app, admin):
    app = make_app(max_body_bytes=50, max_import_bytes=10_000)
    client = app.test_client()
    client.post("/v1/projects", json={"id": "big", "labels": ["a"]}, headers=admin)
    body = b"task,worker,label\n" + b"t,w,a\n" * 50
    assert client.post("/v1/projects/big/imports?format=csv", data=body, headers=admin).status_code == 202


def _ls_annotation(aid, worker, choice, ground_truth=False):
    return {"id": aid, "completed_by": worker, "was_cancelled": False, "ground_truth": ground_truth,
            "result": [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [choice]}}]}


def test_two_different_ground_truths_for_one_task_fail_the_import_naming_the_line(client, project, run_jobs):
    p = project("gt", labels=["Positive", "Negative"])
    doc = [
        {"id": 1, "data": {"text": "a"}, "annotations": [_ls_annotation(11, 7, "Positive"),
                                                         _ls_annotation(12, 1, "Positive", ground_truth=True)]},
        {"id": 2, "data": {"text": "b"}, "annotations": [_ls_annotation(21, 7, "Negative"),
                                                         _ls_annotation(22, 1, "Positive", ground_truth=True),
                                                         _ls_annotation(23, 2, "Negative", ground_truth=True)]},
    ]
    text = json.dumps(doc, indent=2)
    line = text.splitlines().index('    "id": 2,')  # 0-based index of the id line: the "{" is one up
    resp = client.post("/v1/projects/gt/imports?preset=label_studio&name=export.json", data=text.encode(),
                       headers={**p["writer"], "Content-Type": "application/json"})
    run_jobs()
    view = job(client, p["reader"], resp)
    assert view["status"] == "failed", view
    assert view["reason"] == (f"export.json, line {line}: task '2' has two gold labels: 'Positive' and 'Negative'; "
                              "nothing was imported")
    c = counts(client, p)
    assert (c["answers"], c["gold"]) == (0, 0)
    # The same ground truth twice is no conflict.
    doc[1]["annotations"][2]["result"][0]["value"]["choices"] = ["Positive"]
    resp = client.post("/v1/projects/gt/imports?preset=label_studio", data=json.dumps(doc).encode(), headers=p["writer"])
    run_jobs()
    assert job(client, p["reader"], resp)["status"] == "finished"
    assert counts(client, p)["gold"] == 2


def test_two_different_toloka_control_answers_fail_the_import(client, project, run_jobs):
    p = project("tkg", labels=["cat", "dog"])
    head = "INPUT:image\tOUTPUT:result\tGOLDEN:result\tASSIGNMENT:worker_id\tASSIGNMENT:status\n"
    body = head + "a.jpg\tcat\tcat\tw1\tAPPROVED\nb.jpg\tdog\t\tw1\tAPPROVED\na.jpg\tdog\tdog\tw2\tAPPROVED\n"
    resp = client.post("/v1/projects/tkg/imports?preset=toloka&name=pool.tsv", data=body.encode(), headers=p["writer"])
    run_jobs()
    view = job(client, p["reader"], resp)
    assert view["status"] == "failed", view
    assert view["reason"] == "pool.tsv, line 4: task 'a.jpg' has two control answers: 'cat' and 'dog'; nothing was imported"
    c = counts(client, p)
    assert (c["answers"], c["gold"]) == (0, 0)


# -- formats over HTTP ------------------------------------------------------------------------------


def test_json_lines_with_mapped_fields_integers_and_gold(client, project, run_jobs, app):
    p = project("jl", labels=[1, 2, 3])
    lines = [
        {"item": 1, "who": "w1", "answer": 1, "truth": 1, "note": "extra fields are ignored"},
        {"item": 1, "who": "w2", "answer": "3", "truth": None},
        {"item": "x", "who": 7, "answer": 2},
        {"item": "x", "who": 7, "answer": " 2 "},  # the same worker again: a duplicate after trimming
    ]
    body = "".join(json.dumps(x) + "\n" for x in lines) + "\n"
    resp = client.post("/v1/projects/jl/imports?task_column=item&worker_column=who&label_column=answer&gold_column=truth",
                       data=body.encode(), headers={**p["writer"], "Content-Type": "application/x-ndjson"})
    assert resp.get_json()["job"]["options"]["format"] == "jsonl"
    run_jobs()
    view = job(client, p["reader"], resp)
    assert view["status"] == "finished", view
    r = view["result"]
    assert (r["answers"], r["gold"], r["accepted"], r["duplicates"], r["replaced"]) == (4, 1, 3, 1, 0)
    store = app.extensions["crowdqc_store"]
    # Label indices into [1, 2, 3]; integers are their decimal strings, as ids are.
    assert store.task_answers("jl", "1") == [("w1", 0), ("w2", 2)]
    assert store.task_answers("jl", "x") == [("7", 1)]
    assert store.snapshot("jl").gold == {"1": 0}

    bad = '{"item": 1, "who": "w1", "answer": 1}\n{"item": 2, "who": "w1"}\n'
    resp = client.post("/v1/projects/jl/imports?format=jsonl&task_column=item&worker_column=who&label_column=answer&name=more.jsonl",
                       data=bad, headers=p["writer"])
    run_jobs()
    view = job(client, p["reader"], resp)
    assert view["reason"] == "more.jsonl, line 2: missing field 'answer'; nothing was imported"


H1, H2 = "3W1K7D6QSBL7Y8VP3X0NDX2Q4B8ZBA", "3YKP7CX6G2RAPXU1XPC7BG0HPZ8B7D"


def test_mturk_batch_results_over_http(client, project, run_jobs, app):
    p = project("mt", labels=["Cat", "Dog"])
    resp = client.post("/v1/projects/mt/imports?preset=mturk", data=(DATA / "mturk_batch_results.csv").read_bytes(),
                       headers={**p["writer"], "Content-Type": "text/csv"})
    # A preset wins over what the Content-Type would suggest.
    assert resp.get_json()["job"]["options"]["preset"] == "mturk"
    run_jobs()
    view = job(client, p["reader"], resp)
    assert view["status"] == "finished", view
    # Line 4 is the Rejected assignment (AQRSTUV1234567's Dog on the first HIT).
    assert (view["result"]["answers"], view["result"]["gold"], view["result"]["left_out"]) == (4, 0, {"rejected": 1})
    store = app.extensions["crowdqc_store"]
    assert store.task_answers("mt", H1) == [("A1B2C3D4E5F6G7", 0), ("A9Z8Y7X6W5V4U3", 0)]
    assert store.task_answers("mt", H2) == [("A1B2C3D4E5F6G7", 1), ("A9Z8Y7X6W5V4U3", 0)]


def test_mturk_every_input_column_as_the_task_merges_republished_hits(client, project, run_jobs, app):
    p = project("mti", labels=["Cat", "Dog"])
    resp = client.post("/v1/projects/mti/imports?preset=mturk&task_key=Input.*&field=category.label",
                       data=(DATA / "mturk_republished.csv").read_bytes(), headers=p["writer"])
    run_jobs()
    view = job(client, p["reader"], resp)
    assert view["status"] == "finished", view
    assert (view["result"]["answers"], view["result"]["left_out"]) == (4, {"rejected": 1})
    store = app.extensions["crowdqc_store"]
    # Two HITs of img_0101 (the second re-published) are one task: its inputs as a JSON object, keys sorted.
    img1 = '{"image_url":"https://example-bucket.s3.amazonaws.com/pets/img_0101.jpg","prompt":"Cat or dog?"}'
    img2 = '{"image_url":"https://example-bucket.s3.amazonaws.com/pets/img_0102.jpg","prompt":"Cat or dog?"}'
    assert store.task_answers("mti", img1) == [("A1B2C3D4E5F6G7", 0), ("A7M8N9P0Q1R2S3", 1), ("A9Z8Y7X6W5V4U3", 0)]
    assert store.task_answers("mti", img2) == [("A1B2C3D4E5F6G7", 1)]
    assert counts(client, p)["tasks"] == 2


# -- progress, atomicity, limits, metrics ---------------------------------------------------------


def test_import_progress_is_visible_while_the_job_runs(make_app, admin, monkeypatch):
    import service.imports as imports

    monkeypatch.setattr(imports, "CHUNK", 4096)
    monkeypatch.setattr(imports, "PROGRESS_EVERY", 0)
    monkeypatch.setattr(imports, "PROGRESS_ROWS", 250)
    app = make_app(max_batch=500)
    client = app.test_client()
    assert client.post("/v1/projects", json={"id": "pr", "labels": ["a", "b"]}, headers=admin).status_code == 201
    body = ("task,worker,label\n" + "".join(f"t{i // 3},w{i % 3},{'ab'[i % 2]}\n" for i in range(3000))).encode()
    resp = client.post("/v1/projects/pr/imports?format=csv", data=body, headers=admin)
    url = resp.headers["Location"]
    # What a client polling GET /v1/jobs/{id} sees each time the job reads more of the file.
    seen = []
    real = imports.StagedStream.readinto
    monkeypatch.setattr(imports.StagedStream, "readinto",
                        lambda self, b: seen.append(client.get(url, headers=admin).get_json()["job"]) or real(self, b))
    run_jobs_for(app)
    assert client.get(url, headers=admin).get_json()["job"]["status"] == "finished"
    assert {j["status"] for j in seen} == {"running"}
    progress = [j["progress"] for j in seen if "progress" in j]
    stages = [e["stage"] for e in progress]
    assert "validating" in stages and "storing" in stages
    assert stages == sorted(stages, key=["validating", "storing"].index)  # validation first, then storing
    for e in progress:
        assert e["bytes_total"] == len(body) and 0 < e["bytes_read"] <= len(body)
        half = e["bytes_read"] / len(body) / 2
        if e["stage"] == "validating":
            assert e["rows"] % 250 == 0 and 0 < e["rows"] <= 3000
            assert e["fraction"] == round(half, 4) and e["fraction"] <= 0.5
        else:
            assert e["rows"] % 500 == 0 and 0 < e["rows"] <= 3000  # answers stored so far, whole batches
            assert e["fraction"] == round(0.5 + half, 4) and e["fraction"] >= 0.5
    for stage in ("validating", "storing"):
        rows = [e["rows"] for e in progress if e["stage"] == stage]
        assert rows == sorted(rows)


def test_a_bad_row_after_flushed_batches_leaves_nothing_half_imported(make_app, admin):
    # Batches of 2: without the validation pass, lines 2-3 (and the gold of t1) would be
    # stored before line 5 is read.
    app = make_app(max_batch=2)
    client = app.test_client()
    assert client.post("/v1/projects", json={"id": "half", "labels": ["a", "b"]}, headers=admin).status_code == 201
    body = "task,worker,label,gold\nt1,w1,a,a\nt1,w2,b,\nt2,w1,a,\nt2,w2,c,\nt3,w1,a,\n"
    resp = client.post("/v1/projects/half/imports?format=csv&gold_column=gold&name=day3.csv", data=body, headers=admin)
    run_jobs_for(app)
    view = client.get(resp.headers["Location"], headers=admin).get_json()["job"]
    assert view["status"] == "failed"
    assert view["reason"] == ("day3.csv, line 5: label 'c' is not one of the project's labels ('a', 'b'); "
                              "nothing was imported")
    c = client.get("/v1/projects/half", headers=admin).get_json()["counts"]
    assert (c["answers"], c["gold"]) == (0, 0)


def test_the_answer_limit_holds_per_batch_while_labels_arrive_during_an_import(make_app, admin, monkeypatch):
    from service.store import Store

    app = make_app(max_answers_per_project=10, max_batch=2)
    client = app.test_client()
    assert client.post("/v1/projects", json={"id": "lim", "labels": ["a", "b"]}, headers=admin).status_code == 201
    body = "task,worker,label\n" + "".join(f"i{i},w1,a\n" for i in range(6))
    real = Store.ingest
    sent = []

    def ingest(self, pid, tasks, *args, **kw):
        if tasks[0].startswith("i") and not sent:
            # 7 labels arrive over HTTP after the import checked the limit (0 + 6 <= 10),
            # before it stores its first batch.
            labels = [[f"l{j}", "w2", "b"] for j in range(7)]
            for k in range(0, 7, 2):  # max_batch is 2 for label batches too
                r = client.post("/v1/projects/lim/labels", json={"labels": labels[k:k + 2]}, headers=admin)
                sent.append(r.status_code)
        return real(self, pid, tasks, *args, **kw)

    monkeypatch.setattr(Store, "ingest", ingest)
    resp = client.post("/v1/projects/lim/imports?format=csv&name=more.csv", data=body, headers=admin)
    run_jobs_for(app)
    assert sent == [200] * 4
    view = client.get(resp.headers["Location"], headers=admin).get_json()["job"]
    assert view["status"] == "failed"
    # 7 + the first batch of 2 = 9 answers; the second batch would make 11.
    full = ("project 'lim' is full: it holds 9 answers and this batch would add 2, over the limit of 10 answers "
            "per project (CROWDQC_MAX_ANSWERS)")
    assert view["reason"] == (f"more.csv: {full}; 2 answers of this import were stored before the project filled up "
                              "(answers sent meanwhile count too), the rest were not")
    assert client.get("/v1/projects/lim", headers=admin).get_json()["counts"]["answers"] == 9
    # The labels endpoint says the same of a batch of 2 now.
    r = client.post("/v1/projects/lim/labels", json={"labels": [["x", "w1", "a"], ["y", "w1", "a"]]}, headers=admin)
    assert r.status_code == 409 and r.get_json()["error"]["message"] == full + "; nothing was stored"


def test_imported_answers_are_counted_in_the_metrics(client, project, run_jobs):
    from test_observability import delta, scrape

    p = project("met", labels=["a", "b"])
    before = scrape(client)
    first = "task,worker,label\nt1,w1,a\nt1,w2,b\nt2,w1,a\nt2,w2,a\n"
    # Again t1/w1 a (a duplicate), t1/w2 now a (replaced), t3/w1 new.
    second = "task,worker,label\nt1,w1,a\nt1,w2,a\nt3,w1,b\n"
    for body in (first, second):
        resp = client.post("/v1/projects/met/imports?format=csv", data=body, headers=p["writer"])
        run_jobs()
        assert job(client, p["reader"], resp)["status"] == "finished"
    after = scrape(client)
    ans = "crowdqc_answers_ingested_total"
    assert delta(before, after, ans, outcome="accepted") == 5
    assert delta(before, after, ans, outcome="duplicate") == 1
    assert delta(before, after, ans, outcome="replaced") == 1


def test_an_aggregation_requested_during_an_import_waits_for_it(client, project, run_jobs):
    """Otherwise a worker free before the import ends would aggregate part of the file."""
    p = project("wait", labels=["0", "1"])
    body = (DATASETS / "bluebirds" / "answers.csv").read_bytes()
    imp = client.post("/v1/projects/wait/imports", data=body, headers={**p["writer"], "Content-Type": "text/csv"})
    import_id = imp.get_json()["job"]["id"]
    # one hand-posted answer, so that the aggregation is allowed before the import ran
    assert client.post("/v1/projects/wait/labels", json={"labels": [["extra", "w1", "1"]]},
                       headers=p["writer"]).status_code == 200
    agg = client.post("/v1/projects/wait/aggregations", json={"method": "majority_vote"}, headers=p["writer"])
    view = client.get(agg.headers["Location"], headers=p["reader"]).get_json()["job"]
    assert (view["status"], view["waiting_for"]) == ("queued", [import_id])
    run_jobs()
    view = client.get(agg.headers["Location"], headers=p["reader"]).get_json()["job"]
    assert view["status"] == "finished" and "waiting_for" not in view
    # the whole file (4,212 answers, datasets/README.md) plus the hand-posted one
    assert view["result"]["summary"]["counts"]["answers"] == 4213
    # an ended import holds nothing up
    again = client.post("/v1/projects/wait/aggregations", json={"method": "wawa"}, headers=p["writer"])
    assert "waiting_for" not in client.get(again.headers["Location"], headers=p["reader"]).get_json()["job"]


def test_gold_of_an_import_counts_against_the_limit_too(make_app, admin):
    app = make_app(max_answers_per_project=3)
    client = app.test_client()
    assert client.post("/v1/projects", json={"id": "gl", "labels": ["a", "b"]}, headers=admin).status_code == 201
    gold = {"gold": [{"task": f"g{i}", "label": "a"} for i in range(3)]}
    assert client.post("/v1/projects/gl/gold", json=gold, headers=admin).status_code == 200
    resp = client.post("/v1/projects/gl/imports?format=csv&gold_column=truth&name=g.csv",
                       data="task,worker,label,truth\nt1,w1,a,b\n", headers=admin)
    run_jobs_for(app)
    view = client.get(resp.headers["Location"], headers=admin).get_json()["job"]
    assert view["status"] == "failed"
    assert view["reason"] == ("g.csv: project 'gl' is full: it holds 3 gold labels and this batch would add 1, over the "
                              "limit of 3 gold labels per project (CROWDQC_MAX_ANSWERS); 1 answers of this import were "
                              "stored, its remaining gold labels were not")
    assert client.get("/v1/projects/gl", headers=admin).get_json()["counts"]["gold"] == 3


def test_a_finished_import_reports_its_last_progress_as_complete(client, project, run_jobs):
    p = project("done", labels=["0", "1"])
    body = (DATASETS / "bluebirds" / "answers.csv").read_bytes()
    resp = client.post("/v1/projects/done/imports", data=body, headers={**p["writer"], "Content-Type": "text/csv"})
    run_jobs()
    view = job(client, p["reader"], resp)
    assert view["status"] == "finished"
    assert view["progress"] == {"stage": "storing", "bytes_read": len(body), "rows": 4212,
                                "bytes_total": len(body), "fraction": 1.0}
