"""`crowdqc serve` as a newcomer runs it: one command starts the API (gunicorn) and a job
worker; a real data set posted over HTTP comes back with the accuracy that `crowdqc
aggregate` gives on the same file; stopping the command stops everything it started."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess

import pytest
from cases import DATASETS

from procs import BIN, free_port, proc_stat, processes, wait_until  # noqa: F401 - fixture

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


# -- when a part of the service dies ---------------------------------------------------------


def serve_env(processes, tmp_path, redis) -> dict:
    env = {**os.environ, "REDIS_URL": redis.url, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
           "CROWDQC_ADMIN_TOKEN": "serve-test-token"}
    return env


def children(pid: int, processes) -> list[int]:
    return [p for p in processes.strays() if (st := proc_stat(p)) and st[1] == pid]


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode(errors="replace")


def started_serve(processes, tmp_path, *extra, host="127.0.0.1"):
    """crowdqc serve on a scratch Redis, up and ready, with its API master and its worker
    (the worker once its scheduler process runs)."""
    redis = processes.redis(conf=None, save="", appendonly="no")
    port = free_port()
    serve = processes.start("serve", [str(BIN / "crowdqc"), "serve", "--host", host, "--port", str(port), *extra],
                            env=serve_env(processes, tmp_path, redis))
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    wait_until(lambda: requests.get(base + "/readyz", timeout=2).status_code == 200, 30, 0.2, "crowdqc serve")

    def parts():
        kids = children(serve.pid, processes)
        api = [p for p in kids if "gunicorn" in cmdline(p)]
        worker = [p for p in kids if "service.worker" in cmdline(p)]
        # RQ forks the scheduler from the worker once it holds the scheduler lock.
        if len(api) == 1 and len(worker) == 1 and children(worker[0], processes):
            return {"api": api[0], "worker": worker[0]}
        return None

    return serve, redis, base, wait_until(parts, 20, 0.1, "the API master and the worker with its scheduler")


def others_of(processes, redis) -> list[int]:
    """Processes of this test still running, but its Redis."""
    return [p for p in processes.strays() if p != redis.proc.pid]


@pytest.mark.slow
@pytest.mark.parametrize("part, name", [("worker", "job worker"), ("api", "API")])
def test_a_part_killed_stops_serve_with_its_name_and_status(processes, tmp_path, part, name):
    serve, redis, base, pids = started_serve(processes, tmp_path)
    before = others_of(processes, redis)
    assert len(before) >= 5  # serve, gunicorn master and 2 processes, worker, scheduler
    os.kill(pids[part], signal.SIGKILL)  # only that process: its children stay behind
    rc = serve.popen.wait(30)
    assert rc == 128 + signal.SIGKILL, serve.output()[-3000:]
    said = [line for line in serve.output().splitlines() if line.startswith("crowdqc: ") and "signal" in line]
    assert said and name in said[-1] and f"pid {pids[part]}" in said[-1] and "SIGKILL" in said[-1], said
    # Everything serve started is gone, grandchildren included (the worker's scheduler, the
    # gunicorn processes of a killed master).
    wait_until(lambda: not others_of(processes, redis), 20, 0.1, "every process of crowdqc serve to exit")
    assert redis.proc.alive()


@pytest.mark.slow
def test_gunicorn_failing_to_start_fails_serve(processes, tmp_path):
    redis = processes.redis(conf=None, save="", appendonly="no")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        serve = processes.start("serve", [str(BIN / "crowdqc"), "serve", "--port", str(port)],
                                env=serve_env(processes, tmp_path, redis))
        rc = serve.popen.wait(60)
    out = serve.output()
    assert rc == 1, out[-3000:]
    assert re.search(r"^crowdqc: the API \(gunicorn, pid \d+\) exited with status 1; stopping", out, flags=re.M), out[-3000:]
    wait_until(lambda: not others_of(processes, redis), 20, 0.1, "the worker to stop too")


@pytest.mark.slow
def test_serve_on_an_ipv6_host(processes, tmp_path):
    serve, redis, base, _ = started_serve(processes, tmp_path, host="::1")
    assert base.startswith("http://[::1]:")
    assert requests.get(base + "/healthz", timeout=5).json() == {"status": "ok"}
    assert f"API on {base}" in serve.output()
    serve.popen.send_signal(signal.SIGTERM)
    assert serve.popen.wait(30) == 0
    wait_until(lambda: not others_of(processes, redis), 20, 0.1, "every process of crowdqc serve to exit")


@pytest.mark.slow
def test_serve_killed_takes_everything_it_started_with_it(processes, tmp_path):
    serve, redis, base, _ = started_serve(processes, tmp_path)
    serve.popen.kill()  # SIGKILL: serve runs no cleanup at all
    serve.popen.wait(5)
    wait_until(lambda: not others_of(processes, redis), 30, 0.1, "the processes of a SIGKILLed crowdqc serve to exit")
