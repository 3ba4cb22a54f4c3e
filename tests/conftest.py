"""Shared fixtures: a real Redis (own key prefix and RQ queue per test, cleaned up), the
app, a test client, and helpers to create projects and run an in-process RQ worker."""

from __future__ import annotations

import os
import uuid

import pytest

REDIS_URL = os.environ.get("CROWDQC_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ADMIN_TOKEN = "test-admin-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def redis_server():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"the service tests need Redis at {REDIS_URL} ({exc}); start one with `redis-server --daemonize yes`")
    yield client
    client.close()


@pytest.fixture
def namespace():
    uid = uuid.uuid4().hex[:12]
    return {"key_prefix": f"cqtest:{uid}:", "queue_name": f"cqtest-{uid}"}


@pytest.fixture
def redis_client(redis_server, namespace):
    """The test Redis; every key the test created under its namespace (ours and RQ's) is
    deleted afterwards.  Nothing else in the database is touched."""
    yield redis_server
    prefix, queue = namespace["key_prefix"], namespace["queue_name"]
    job_ids = [k.decode().rsplit(":", 1)[1] for k in redis_server.scan_iter(match=f"{prefix}job:*", count=1000)]
    patterns = [f"{prefix}*", f"rq:*{queue}*"] + [f"rq:*{j}*" for j in job_ids]
    redis_server.srem("rq:queues", f"rq:queue:{queue}")
    for pattern in patterns:
        keys = list(redis_server.scan_iter(match=pattern, count=1000))
        if keys:
            redis_server.delete(*keys)


@pytest.fixture
def make_app(redis_client, namespace):
    from service.app import create_app

    def factory(**overrides):
        config = {
            "REDIS": redis_client,
            "TESTING": True,
            "admin_token": ADMIN_TOKEN,
            "auto_quiet_seconds": 1.0,
            "auto_max_wait_seconds": 3.0,
            **namespace,
            **overrides,
        }
        return create_app(config)

    return factory


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin():
    return bearer(ADMIN_TOKEN)


@pytest.fixture
def project(client, admin):
    """Create a project; returns a function (id, labels, **fields) -> dict with the
    response and bearer headers of a writer and a reader key."""

    def create(pid="p1", labels=("a", "b"), **fields):
        body = {"id": pid, "labels": list(labels), **fields}
        resp = client.post("/v1/projects", json=body, headers=admin)
        assert resp.status_code == 201, resp.get_json()
        keys = {}
        for role in ("writer", "reader"):
            r = client.post(f"/v1/projects/{pid}/keys", json={"role": role}, headers=admin)
            assert r.status_code == 201, r.get_json()
            keys[role] = bearer(r.get_json()["key"])
        return {"project": resp.get_json(), "writer": keys["writer"], "reader": keys["reader"], "id": pid}

    return create


@pytest.fixture
def run_jobs(app):
    """Run every queued (and due scheduled) job in this process, RQ burst mode."""
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    def run(with_scheduler: bool = True) -> bool:
        queue = app.extensions["crowdqc_jobs"].queue
        # Named after the queue so that the cleanup of redis_client finds its keys.
        worker = SimpleWorker(
            [queue], connection=queue.connection, serializer=JSONSerializer, name=f"{queue.name}-{uuid.uuid4().hex[:8]}"
        )
        return worker.work(burst=True, with_scheduler=with_scheduler, logging_level="WARNING")

    return run


def aggregate(client, p, run_jobs, method="majority_vote"):
    """Aggregate project ``p`` (from the ``project`` fixture) in an in-process worker;
    returns the published result's version."""
    resp = client.post(f"/v1/projects/{p['id']}/aggregations", json={"method": method}, headers=p["writer"])
    assert resp.status_code == 202, resp.get_json()
    run_jobs()
    job = client.get(resp.headers["Location"], headers=p["reader"]).get_json()["job"]
    assert job["status"] == "finished", job
    return job["result"]["version"]
