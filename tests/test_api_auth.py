"""Bearer tokens: admin, project keys with roles, and no leaks across projects."""

from __future__ import annotations

from conftest import bearer

LABELS = {"labels": [{"task": "t1", "worker": "w1", "label": "a"}]}


def error_of(resp):
    body = resp.get_json()
    assert resp.is_json and set(body) == {"error"}, resp.data[:200]
    return body["error"]


def test_health_checks_need_no_token(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_missing_or_malformed_token_is_401(client, project):
    project("p1")
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "}):
        resp = client.get("/v1/projects/p1", headers=headers)
        assert resp.status_code == 401
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert error_of(resp)["code"] == "unauthorized"


def test_wrong_token_is_401_even_before_validation(client, project):
    project("p1")
    resp = client.post("/v1/projects/p1/labels", json={"bogus": 1}, headers=bearer("cq_wrong"))
    assert resp.status_code == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    resp = client.post("/v1/projects", json={}, headers=bearer("nope"))
    assert resp.status_code == 401


def test_reader_reads_but_cannot_write(client, project):
    p = project("p1")
    assert client.get("/v1/projects/p1", headers=p["reader"]).status_code == 200
    resp = client.post("/v1/projects/p1/labels", json=LABELS, headers=p["reader"])
    assert resp.status_code == 403 and error_of(resp)["code"] == "forbidden"
    assert client.post("/v1/projects/p1/gold", json={"gold": [{"task": "t1", "label": "a"}]}, headers=p["reader"]).status_code == 403
    assert client.post("/v1/projects/p1/aggregations", json={}, headers=p["reader"]).status_code == 403
    assert client.get("/v1/projects/p1", headers=p["writer"]).get_json()["counts"]["answers"] == 0


def test_writer_writes(client, project):
    p = project("p1")
    resp = client.post("/v1/projects/p1/labels", json=LABELS, headers=p["writer"])
    assert resp.status_code == 200 and resp.get_json()["accepted"] == 1


def test_key_of_another_project_gets_the_same_404_as_a_missing_project(client, project):
    project("p1")
    other = project("p2")
    for method, path, body in (
        ("get", "/v1/projects/p1", None),
        ("post", "/v1/projects/p1/labels", LABELS),
        ("get", "/v1/projects/p1/consensus", None),
        ("get", "/v1/projects/p1/workers", None),
        ("post", "/v1/projects/p1/aggregations", {}),
    ):
        theirs = getattr(client, method)(path, json=body, headers=other["writer"])
        missing = getattr(client, method)(path.replace("/p1", "/nope"), json=body, headers=other["writer"])
        assert theirs.status_code == missing.status_code == 404, path
        assert error_of(theirs)["code"] == error_of(missing)["code"] == "not_found"
    # Listing shows only the key's own project.
    listed = client.get("/v1/projects", headers=other["reader"]).get_json()["items"]
    assert [p["id"] for p in listed] == ["p2"]


def test_only_admin_creates_projects_and_keys(client, project, admin):
    p = project("p1")
    resp = client.post("/v1/projects", json={"id": "p9", "labels": ["a"]}, headers=p["writer"])
    assert resp.status_code == 403
    resp = client.post("/v1/projects/p1/keys", json={"role": "writer"}, headers=p["writer"])
    assert resp.status_code == 403
    assert client.get("/v1/projects/p1/keys", headers=p["writer"]).status_code == 403
    keys = client.get("/v1/projects/p1/keys", headers=admin).get_json()["items"]
    assert sorted(k["role"] for k in keys) == ["reader", "writer"]
    assert all("key" not in k for k in keys)  # the secret is shown once, at creation


def test_revoked_key_stops_working(client, project, admin):
    p = project("p1")
    created = client.post("/v1/projects/p1/keys", json={"role": "reader"}, headers=admin).get_json()
    token = bearer(created["key"])
    assert client.get("/v1/projects/p1", headers=token).status_code == 200
    assert client.delete(f"/v1/projects/p1/keys/{created['id']}", headers=admin).status_code == 204
    assert client.get("/v1/projects/p1", headers=token).status_code == 401
    assert client.get("/v1/projects/p1", headers=p["reader"]).status_code == 200


def test_no_admin_token_configured_means_no_admin(make_app):
    app = make_app(admin_token=None)
    client = app.test_client()
    resp = client.post("/v1/projects", json={"id": "p1", "labels": ["a"]}, headers=bearer(""))
    assert resp.status_code == 401
    resp = client.post("/v1/projects", json={"id": "p1", "labels": ["a"]}, headers=bearer("None"))
    assert resp.status_code == 401


def test_bad_key_role_is_422(client, project, admin):
    project("p1")
    resp = client.post("/v1/projects/p1/keys", json={"role": "owner"}, headers=admin)
    assert resp.status_code == 422
    assert error_of(resp)["details"][0]["path"] == "role"
