"""`crowdqc serve` as a newcomer runs it: one command starts the API (gunicorn) and a job
worker; a real data set posted over HTTP comes back with the accuracy that `crowdqc
aggregate` gives on the same file; stopping the command stops everything it started."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess

import pytest
from cases import DATASETS

from procs import BIN, free_port, processes, wait_until  # noqa: F401 - fixture

requests = pytest.importorskip("requests")


def rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
def test_serve_runs_api_and_worker_end_to_end(processes, tmp_path):
    redis = processes.redis(conf=None, save="", appendonly="no")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CROWDQC_ADMIN_TOKEN"}
    env.update(REDIS_URL=redis.url, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    serve = processes.start("serve", [str(BIN / "crowdqc"), "serve", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(base + "/readyz", timeout=2).status_code == 200, 30, 0.2, "crowdqc serve")

    # No admin token configured: a random one is generated for this run and printed once.
    token = re.search(r"admin token for this run: (\S+)", serve.output()).group(1)
    admin = {"Authorization": f"Bearer {token}"}
    s = requests.Session()
    assert s.post(base + "/v1/projects", json={"id": "birds", "labels": ["0", "1"]}, headers=admin).status_code == 201
    key = s.post(base + "/v1/projects/birds/keys", json={"role": "writer"}, headers=admin).json()["key"]
    writer = {"Authorization": f"Bearer {key}"}

    answers = rows(DATASETS / "bluebirds" / "answers.csv")
    gold = rows(DATASETS / "bluebirds" / "gold.csv")
    for i in range(0, len(answers), 1000):
        batch = [[r["task"], r["worker"], r["label"]] for r in answers[i : i + 1000]]
        assert s.post(base + "/v1/projects/birds/labels", json={"labels": batch}, headers=writer).status_code == 200
    assert s.post(base + "/v1/projects/birds/gold", json={"gold": gold}, headers=writer).status_code == 200
    r = s.post(base + "/v1/projects/birds/aggregations", json={"params": {"gold": "evaluate"}}, headers=writer)
    assert r.status_code == 202
    job_url = base + r.headers["Location"]
    job = wait_until(lambda: (j := s.get(job_url, headers=writer).json()["job"])["status"] in ("finished", "failed") and j,
                     60, 0.2, "the aggregation job")
    assert job["status"] == "finished", job

    consensus, cursor = {}, None
    while True:
        page = s.get(base + "/v1/projects/birds/consensus", params={"limit": 50, **({"cursor": cursor} if cursor else {})},
                     headers=writer).json()
        consensus.update((it["task"], it["label"]) for it in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    truth = {g["task"]: g["label"] for g in gold}
    over_http = sum(consensus[t] == truth[t] for t in truth) / len(truth)

    out = tmp_path / "offline"
    subprocess.run([str(BIN / "crowdqc"), "aggregate", str(DATASETS / "bluebirds" / "answers.csv"), "--gold",
                    str(DATASETS / "bluebirds" / "gold.csv"), "--out", str(out), "-q"], check=True)
    offline = {r["task"]: r["label"] for r in rows(out / "consensus.csv")}
    assert consensus == offline
    assert over_http == pytest.approx(json.loads((out / "summary.json").read_text())["accuracy"]["method"], abs=1e-12)
    assert over_http == pytest.approx(0.8981, abs=1e-4)  # Dawid-Skene on bluebirds, datasets README

    # SIGTERM (what a service manager sends) stops the API, its processes and the worker.
    serve.popen.send_signal(signal.SIGTERM)
    assert serve.popen.wait(30) == 0
    wait_until(lambda: not group_alive(serve.pid), 15, 0.1, "every process of crowdqc serve to exit")
