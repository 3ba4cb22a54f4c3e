"""``If-None-Match`` on the result endpoints: ``*`` matches any current representation
(RFC 9110, 13.1.2), so it answers 304 exactly when a result exists, and 404 before."""

from __future__ import annotations

import pytest

READS = ["/consensus", "/consensus/t1", "/workers", "/workers/w1", "/disagreements", "/agreement"]


@pytest.fixture
def aggregated(client, project, run_jobs):
    p = project("cg")
    labels = [[f"t{i}", f"w{j}", "ab"[(i + j) % 2]] for i in range(4) for j in range(3)]
    assert client.post("/v1/projects/cg/labels", json={"labels": labels}, headers=p["writer"]).status_code == 200
    assert client.post("/v1/projects/cg/aggregations", json={"method": "majority_vote"}, headers=p["writer"]).status_code == 202
    run_jobs()
    return p


@pytest.mark.parametrize("read", READS)
def test_star_is_not_modified_when_a_result_exists(client, aggregated, read):
    url = "/v1/projects/cg" + read
    fresh = client.get(url, headers=aggregated["reader"])
    assert fresh.status_code == 200 and fresh.headers["ETag"]
    for header in ("*", ' * ', 'W/"0-unknown", *'):
        cached = client.get(url, headers={**aggregated["reader"], "If-None-Match": header})
        assert cached.status_code == 304, (header, cached.get_data(as_text=True))
        assert cached.data == b"" and cached.headers["ETag"] == fresh.headers["ETag"]


@pytest.mark.parametrize("read", READS)
def test_another_tag_still_gets_the_body(client, aggregated, read):
    resp = client.get("/v1/projects/cg" + read, headers={**aggregated["reader"], "If-None-Match": 'W/"0-unknown"'})
    assert resp.status_code == 200 and resp.get_json()["version"] == 1


def test_star_without_a_result_is_not_found(client, project):
    p = project("cg")
    assert client.post("/v1/projects/cg/labels", json={"labels": [["t1", "w1", "a"]]}, headers=p["writer"]).status_code == 200
    for read in READS:
        resp = client.get("/v1/projects/cg" + read, headers={**p["reader"], "If-None-Match": "*"})
        assert resp.status_code == 404, read


def test_star_for_a_task_or_worker_that_is_not_there_is_not_found(client, aggregated):
    for read in ("/consensus/nope", "/workers/nobody"):
        resp = client.get("/v1/projects/cg" + read, headers={**aggregated["reader"], "If-None-Match": "*"})
        assert resp.status_code == 404, read
