"""`crowdqc worker` as operators run it (docs/operations.md): its options reach the worker."""

from __future__ import annotations

import os
import subprocess

from conftest import REDIS_URL
from procs import BIN


def test_burst_worker_without_scheduler_runs_queued_jobs_and_exits(client, project, namespace):
    p = project("wc", labels=("a", "b"))
    rows = [["t1", "w1", "a"], ["t1", "w2", "a"], ["t2", "w1", "b"]]
    client.post("/v1/projects/wc/labels", json={"labels": rows}, headers=p["writer"])
    job = client.post("/v1/projects/wc/aggregations", json={"method": "majority_vote"}, headers=p["writer"]).headers["Location"]
    env = {**os.environ, "REDIS_URL": REDIS_URL, "CROWDQC_KEY_PREFIX": namespace["key_prefix"], "CROWDQC_QUEUE": namespace["queue_name"]}
    done = subprocess.run([str(BIN / "crowdqc"), "worker", "--burst", "--no-scheduler", "--log-level", "warning"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert client.get(job, headers=p["reader"]).get_json()["job"]["status"] == "finished"
    assert len(client.get("/v1/projects/wc/consensus", headers=p["reader"]).get_json()["items"]) == 2
