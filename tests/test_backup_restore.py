"""The backup and restore procedures of docs/operations.md, run as written against a
redis-server with deploy/redis.conf: an RDB snapshot (BGSAVE, copy dump.rdb) and a copy of
the append-only directory, each restored into an empty data directory; the restored
service serves the same project, keys, answers and consensus as at backup time."""

from __future__ import annotations

import shutil

import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from conftest import ADMIN_TOKEN, bearer
from procs import processes, wait_until  # noqa: F401 - fixture

ADMIN = bearer(ADMIN_TOKEN)


def app_on(url):
    from service.app import create_app

    return create_app({"REDIS_URL": url, "TESTING": True, "admin_token": ADMIN_TOKEN})


def persistence(client) -> dict:
    return client.info("persistence")


def shutdown(redis) -> None:
    """Stop Redis as `redis-cli shutdown` or `docker compose stop` would (SIGTERM: it
    saves per its configuration, then exits)."""
    redis.proc.popen.terminate()
    assert redis.proc.popen.wait(10) == 0


def view(client, reader) -> dict:
    project = client.get("/v1/projects/bk", headers=reader).get_json()
    page = client.get("/v1/projects/bk/consensus", query_string={"limit": 1000}, headers=reader).get_json()
    return {"counts": project["counts"], "latest": project["latest_aggregation"]["version"], "consensus": page["items"]}


@pytest.mark.slow
def test_rdb_snapshot_and_aof_copy_restore_the_service(processes, tmp_path):
    redis = processes.redis()
    app = app_on(redis.url)
    client = app.test_client()
    assert client.post("/v1/projects", json={"id": "bk", "labels": ["a", "b"]}, headers=ADMIN).status_code == 201
    writer = bearer(client.post("/v1/projects/bk/keys", json={"role": "writer"}, headers=ADMIN).get_json()["key"])
    reader = bearer(client.post("/v1/projects/bk/keys", json={"role": "reader"}, headers=ADMIN).get_json()["key"])
    rows = [[f"t{i}", f"w{j}", "ab"[(i + (j == 2)) % 2]] for i in range(500) for j in range(3)]
    assert client.post("/v1/projects/bk/labels", json={"labels": rows}, headers=writer).get_json()["accepted"] == 1500
    client.post("/v1/projects/bk/aggregations", json={"method": "majority_vote"}, headers=writer)
    queue = app.extensions["crowdqc_jobs"].queue
    SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer).work(burst=True)
    at_backup = view(client, reader)
    assert at_backup["counts"]["answers"] == 1500 and len(at_backup["consensus"]) == 500

    r = redis.client()
    # Backup 1: an RDB snapshot.  Done when rdb_saves has moved (it moves when the save
    # starts) and no save is in progress any more.  (LASTSAVE, in whole seconds, may not
    # move at all when Redis started in the same second.)
    saves = persistence(r)["rdb_saves"]
    r.bgsave()
    wait_until(lambda: (p := persistence(r))["rdb_saves"] > saves and p["rdb_bgsave_in_progress"] == 0, 30, what="BGSAVE")
    assert persistence(r)["rdb_last_bgsave_status"] == "ok"
    (tmp_path / "backup-rdb").mkdir()
    shutil.copy2(redis.data_dir / "dump.rdb", tmp_path / "backup-rdb" / "dump.rdb")
    # Backup 2: the append-only directory, with automatic rewrites paused so that its
    # files do not change while they are copied.
    r.config_set("auto-aof-rewrite-percentage", 0)
    wait_until(lambda: persistence(r)["aof_rewrite_in_progress"] == 0, 30, what="no AOF rewrite in progress")
    shutil.copytree(redis.data_dir / "appendonlydir", tmp_path / "backup-aof" / "appendonlydir")
    r.config_set("auto-aof-rewrite-percentage", 100)

    # Written after the backups: must not come back.
    client.post("/v1/projects/bk/labels", json={"labels": [["late", "w0", "a"]]}, headers=writer)
    shutdown(redis)

    # Restore the RDB snapshot.  With appendonly yes and no AOF, Redis would start empty
    # (and write an empty AOF): load the snapshot with AOF off, then turn it on, which
    # writes a new AOF from memory, then restart as configured.
    rdb_dir = tmp_path / "restore-rdb"
    rdb_dir.mkdir()
    shutil.copy2(tmp_path / "backup-rdb" / "dump.rdb", rdb_dir / "dump.rdb")
    restored = processes.redis(data_dir=rdb_dir, appendonly="no")
    rc = restored.client()
    rc.config_set("appendonly", "yes")
    wait_until(
        lambda: (p := persistence(rc))["aof_enabled"] == 1 and p["aof_rewrite_in_progress"] == 0 and p["aof_rewrite_scheduled"] == 0,
        30, what="the AOF written from the loaded snapshot",
    )
    shutdown(restored)
    restored = processes.redis(data_dir=rdb_dir)
    assert restored.client().config_get("appendonly")["appendonly"] == "yes"
    assert view(app_on(restored.url).test_client(), reader) == at_backup
    shutdown(restored)

    # Restore the append-only directory copy: start Redis on it.
    aof_dir = tmp_path / "backup-aof"
    restored = processes.redis(data_dir=aof_dir)
    after = app_on(restored.url).test_client()
    assert view(after, reader) == at_backup
    # The restored keys work for writing too, and the service carries on.
    out = after.post("/v1/projects/bk/labels", json={"labels": [["new", "w0", "a"]]}, headers=writer).get_json()
    assert out["accepted"] == 1 and out["revision"] == at_backup["counts"]["revision"] + 1
