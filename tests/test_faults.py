"""Faults: Redis SIGKILLed under a stream of acknowledged writes (appendfsync always), a
worker SIGKILLed in the middle of an aggregation, Redis going away and coming back, and
concurrent writers.  Each test runs its own redis-server (port and directory of its own)
except the concurrency test, which uses the shared test Redis under its own namespace."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest

from conftest import ADMIN_TOKEN, bearer
from procs import BIN, free_port, kill_pids, pids_with_env, proc_stat, processes, wait_until  # noqa: F401 - fixture

ADMIN = bearer(ADMIN_TOKEN)


def app_on(redis_url: str, **overrides):
    from service.app import create_app

    return create_app(
        {"REDIS_URL": redis_url, "TESTING": True, "admin_token": ADMIN_TOKEN,
         "redis_timeout_seconds": 1.0, "redis_connect_timeout_seconds": 1.0, **overrides}
    )


def make_project(client, pid="p", labels=("a", "b", "c")) -> tuple[dict, dict]:
    r = client.post("/v1/projects", json={"id": pid, "labels": list(labels)}, headers=ADMIN)
    assert r.status_code == 201, r.get_json()
    keys = [client.post(f"/v1/projects/{pid}/keys", json={"role": role}, headers=ADMIN).get_json()["key"] for role in ("writer", "reader")]
    return bearer(keys[0]), bearer(keys[1])


def assert_error_shape(resp, status):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    body = resp.get_json()
    assert set(body) == {"error"}
    assert body["error"]["status"] == status and isinstance(body["error"]["message"], str)


# -- (a) durability --------------------------------------------------------------------------


@pytest.mark.slow
def test_acknowledged_answers_survive_sigkill_of_redis_with_fsync_always(processes):
    redis = processes.redis(appendfsync="always")
    assert redis.client().config_get("appendfsync")["appendfsync"] == "always"
    app = app_on(redis.url)
    client = app.test_client()
    writer, _ = make_project(client)

    acked: list[tuple[str, str, str]] = []
    sent: set[tuple[str, str, str]] = set()
    refused = []
    stop = threading.Event()
    labels = ("a", "b", "c")

    def stream():
        c = app.test_client()
        for b in range(100_000):
            if stop.is_set():
                return
            batch = [(f"t{b}-{i}", f"w{i % 7}", labels[(b + i) % 3]) for i in range(40)]
            sent.update(batch)
            body = {"labels": [{"task": t, "worker": w, "label": lab, "id": f"{b}-{i}"} for i, (t, w, lab) in enumerate(batch)]}
            r = c.post("/v1/projects/p/labels", json=body, headers=writer)
            if r.status_code == 200:
                assert r.get_json()["accepted"] == 40
                acked.extend(batch)
            else:
                refused.append(r.status_code)
                if len(refused) > 5:
                    return

    t = threading.Thread(target=stream, daemon=True)
    t.start()
    wait_until(lambda: len(acked) >= 4000, 60, what="4,000 acknowledged answers")
    redis.proc.kill_group(signal.SIGKILL)  # mid-stream: no shutdown, no final fsync
    redis.proc.popen.wait(5)
    t.join(20)
    stop.set()
    assert not t.is_alive()
    n_acked = len(acked)
    assert refused and set(refused) == {503}, refused

    again = processes.redis(port=redis.port, data_dir=redis.data_dir, appendfsync="always")
    from service.store import Store

    snap = Store(again.client(), "crowdqc:").snapshot("p")
    stored = {(snap.task_names[t], snap.worker_names[w], labels[lab]) for t, w, lab in zip(snap.task, snap.worker, snap.label)}
    pairs = set(zip(snap.task.tolist(), snap.worker.tolist()))
    assert len(pairs) == snap.n_answers, "an answer is stored twice"
    assert len(stored) == snap.n_answers
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged answers lost"
    # At most the one batch in flight at the kill may be stored without a reply.
    assert stored <= sent and len(stored) - n_acked in (0, 40)
    assert again.client().hlen("crowdqc:p:p:ids") == snap.n_answers


# -- (b) worker killed mid-job ---------------------------------------------------------------


def _noisy_labels(n_tasks=3000, n_workers=40, per_task=7, seed=5):
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n_tasks):
        truth = int(rng.integers(3))
        for w in rng.choice(n_workers, size=per_task, replace=False):
            lab = truth if rng.random() < 0.7 else int(rng.integers(3))
            out.append([f"t{t}", f"w{w}", "abc"[lab]])
    return out


def _wait_job(client, location, headers, timeout, states=("finished", "failed")):
    def done():
        job = client.get(location, headers=headers).get_json()["job"]
        return job if job["status"] in states else None

    return wait_until(done, timeout, 0.1, f"job {location} to reach {states}")


def _all_consensus(client, headers):
    rows, cursor = [], None
    while True:
        page = client.get("/v1/projects/p/consensus", query_string={"limit": 1000, **({"cursor": cursor} if cursor else {})}, headers=headers).get_json()
        rows += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return rows, page["version"]


@pytest.mark.slow
def test_worker_killed_mid_aggregation(processes):
    redis = processes.redis()
    app = app_on(redis.url, job_lost_seconds=3.0)
    client = app.test_client()
    writer, reader = make_project(client)
    labels = _noisy_labels()
    for i in range(0, len(labels), 10_000):
        assert client.post("/v1/projects/p/labels", json={"labels": labels[i : i + 10_000]}, headers=writer).status_code == 200
    env = {**os.environ, "REDIS_URL": redis.url, "CROWDQC_JOB_HEARTBEAT_SECONDS": "1"}
    worker = processes.start("worker", [str(BIN / "crowdqc"), "worker"], env=env)

    r = client.post("/v1/projects/p/aggregations", json={"method": "majority_vote"}, headers=writer)
    assert _wait_job(client, r.headers["Location"], reader, 60)["status"] == "finished"
    before, v1 = _all_consensus(client, reader)
    assert len(before) == 3000

    # Dawid-Skene with tol=0 runs every one of its million iterations: minutes of work.
    r = client.post("/v1/projects/p/aggregations", json={"method": "dawid_skene", "params": {"max_iter": 1_000_000, "tol": 0}}, headers=writer)
    assert r.status_code == 202
    slow = r.headers["Location"]
    running = _wait_job(client, slow, reader, 60, states=("running",))
    wait_until(lambda: client.get(slow, headers=reader).get_json()["job"].get("progress"), 30, 0.1, "progress of the slow job")
    # The work horse: a child of the worker in a process group of its own (RQ calls
    # setpgrp() in it), which is why killing the worker's group does not reach it.  The
    # scheduler, the worker's other child, stays in the worker's group.
    horses = [p for p in pids_with_env([f"REDIS_URL={redis.url}"]) if (st := proc_stat(p)) and st[1] == worker.pid and st[2] == p]
    assert len(horses) == 1, horses
    horse = horses[0]
    worker.kill_group(signal.SIGKILL)  # as an OOM kill or `docker kill` of the worker would
    worker.popen.wait(5)
    t0 = time.monotonic()
    try:
        # The horse notices its worker is gone (PDEATHSIG) and stops on its own: no orphan
        # burning a core on a job nobody waits for, and no late result.
        wait_until(lambda: proc_stat(horse) is None, 5, 0.05, f"the orphaned work horse {horse} to stop by itself")
    finally:
        kill_pids([horse])
    assert pids_with_env([f"REDIS_URL={redis.url}"]) == []
    job = _wait_job(client, slow, reader, 30)
    assert job["status"] == "failed" and "worker" in job["reason"], job
    assert time.monotonic() - t0 < 20
    assert running["id"] == job["id"]

    after, version = _all_consensus(client, reader)
    assert version == v1 and after == before

    processes.start("worker2", [str(BIN / "crowdqc"), "worker"], env=env)
    r = client.post("/v1/projects/p/aggregations", json={"method": "dawid_skene", "params": {"max_iter": 20}}, headers=writer)
    assert r.status_code == 202
    assert _wait_job(client, r.headers["Location"], reader, 60)["status"] == "finished"
    rows, v3 = _all_consensus(client, reader)
    assert v3 > v1 and len(rows) == 3000

    text = client.get("/metrics", headers=bearer(ADMIN_TOKEN)).get_data(as_text=True)
    assert 'crowdqc_jobs_total{kind="aggregation",outcome="lost"} 1.0' in text
    assert 'crowdqc_jobs_total{kind="aggregation",outcome="finished"} 2.0' in text

    # RQ's own abandoned-job handling later finds the same job; it must not count it twice
    # nor change the reason already reported.
    from rq.registry import StartedJobRegistry

    StartedJobRegistry(queue=app.extensions["crowdqc_jobs"].queue).cleanup(timestamp=time.time() + 3600)
    assert client.get(slow, headers=reader).get_json()["job"]["reason"] == job["reason"]
    assert 'crowdqc_jobs_total{kind="aggregation",outcome="lost"} 1.0' in client.get("/metrics", headers=bearer(ADMIN_TOKEN)).get_data(as_text=True)


@pytest.mark.slow
def test_scheduler_stops_with_its_worker_and_frees_the_lock(processes):
    """RQ forks the scheduler from the worker; a worker killed with SIGKILL used to leave it
    running for ever, holding the scheduler lock."""
    redis = processes.redis(conf=None, save="", appendonly="no")
    worker = processes.start("worker", [str(BIN / "crowdqc"), "worker"], env={**os.environ, "REDIS_URL": redis.url})
    lock = "rq:scheduler-lock:crowdqc"
    wait_until(lambda: redis.client().exists(lock), 20, 0.1, "the scheduler lock")
    scheduler = wait_until(lambda: [p for p in pids_with_env([f"REDIS_URL={redis.url}"]) if (st := proc_stat(p)) and st[1] == worker.pid],
                           10, 0.1, "the scheduler process")
    assert len(scheduler) == 1
    os.kill(worker.pid, signal.SIGKILL)  # the worker alone, not its group
    worker.popen.wait(5)
    try:
        wait_until(lambda: proc_stat(scheduler[0]) is None, 10, 0.05, "the scheduler to stop with its worker")
    finally:
        kill_pids(scheduler)
    # SIGTERM, not SIGKILL: it released the lock, so another worker's scheduler takes over
    # at once instead of after the lock's 61 s expiry.
    assert not redis.client().exists(lock)


@pytest.mark.slow
def test_a_job_of_another_kind_abandoned_by_a_killed_worker_is_counted_lost(processes):
    """A webhook delivery hangs on a receiver that never answers; its worker is killed.  RQ's
    registry cleanup (any worker's maintenance) finds the job abandoned, and the worker
    class's handler counts it as a lost webhook delivery."""
    import socket

    from rq.registry import StartedJobRegistry
    from rq.serializers import JSONSerializer

    from service.worker import CrowdqcWorker

    redis = processes.redis(conf=None, save="", appendonly="no")
    app = app_on(redis.url, webhook_retry_intervals=(), webhook_timeout_seconds=60.0)
    client = app.test_client()
    writer, _ = make_project(client)
    with socket.socket() as silent:  # connections complete in the backlog; nothing is ever read
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        r = client.post("/v1/projects/p/webhooks", json={"url": url, "events": ["aggregation.finished"]}, headers=writer)
        assert r.status_code == 201, r.get_json()
        assert client.post("/v1/projects/p/labels", json={"labels": [["t1", "w1", "a"]]}, headers=writer).status_code == 200
        r = client.post("/v1/projects/p/aggregations", json={"method": "majority_vote"}, headers=writer)
        worker = processes.start("worker", [str(BIN / "crowdqc"), "worker", "--no-scheduler"], env={**os.environ, "REDIS_URL": redis.url})
        assert _wait_job(client, r.headers["Location"], writer, 60)["status"] == "finished"
        queue = app.extensions["crowdqc_jobs"].queue
        started = StartedJobRegistry(queue=queue)
        delivery = wait_until(lambda: started.get_job_ids(), 20, 0.1, "the delivery to start")
        worker.kill_group(signal.SIGKILL)
        worker.popen.wait(5)
        cleaner = CrowdqcWorker([queue], connection=queue.connection, serializer=JSONSerializer, key_prefix="crowdqc:")
        started.cleanup(timestamp=time.time() + 3600, exception_handlers=cleaner._exc_handlers)
    text = client.get("/metrics", headers=bearer(ADMIN_TOKEN)).get_data(as_text=True)
    assert 'crowdqc_jobs_total{kind="webhook_delivery",outcome="lost"} 1.0' in text, delivery
    assert 'crowdqc_jobs_total{kind="aggregation",outcome="finished"} 1.0' in text
    assert 'crowdqc_jobs_total{kind="webhook_delivery",outcome="failed"} 0.0' in text


@pytest.mark.parametrize("where", ["during EM", "before publishing"])
def test_orphaned_work_horse_fails_its_job_and_never_publishes(client, project, run_jobs, monkeypatch, where):
    """Where PDEATHSIG is unavailable, a horse whose worker died must still stop at its next
    EM iteration, and at the latest just before it would publish."""
    import service.jobs
    import service.worker

    p = project("orph", labels=("a", "b", "c"))
    rows = _noisy_labels(n_tasks=200, n_workers=10, per_task=3)
    assert client.post("/v1/projects/orph/labels", json={"labels": rows}, headers=p["writer"]).status_code == 200
    r = client.post("/v1/projects/orph/aggregations", json={"method": "majority_vote"}, headers=p["writer"])
    run_jobs()
    assert client.get(r.headers["Location"], headers=p["reader"]).get_json()["job"]["status"] == "finished"
    before = client.get("/v1/projects/orph/consensus", query_string={"limit": 1000}, headers=p["reader"]).get_json()

    # This process plays the horse; -1 is never its parent's pid: the worker "died".
    monkeypatch.setattr(service.worker, "_horse_parent", -1)
    if where == "before publishing":
        monkeypatch.setattr(service.jobs, "_progress_saver", lambda job: None)
    r = client.post("/v1/projects/orph/aggregations", json={"method": "dawid_skene", "params": {"max_iter": 50}}, headers=p["writer"])
    run_jobs()
    job = client.get(r.headers["Location"], headers=p["reader"]).get_json()["job"]
    assert job["status"] == "failed" and "worker running this job stopped" in job["reason"], job
    after = client.get("/v1/projects/orph/consensus", query_string={"limit": 1000}, headers=p["reader"]).get_json()
    assert after == before and after["version"] == 1
    text = client.get("/metrics", headers=bearer(ADMIN_TOKEN)).get_data(as_text=True)
    assert 'crowdqc_jobs_total{kind="aggregation",outcome="lost"} 1.0' in text and 'crowdqc_jobs_total{kind="aggregation",outcome="finished"} 1.0' in text


# -- (c) Redis outage ------------------------------------------------------------------------


@pytest.mark.slow
def test_redis_outage_gives_503_and_recovers_without_restart(processes):
    redis = processes.redis()
    app = app_on(redis.url, redis_timeout_seconds=0.5, redis_connect_timeout_seconds=0.5)
    client = app.test_client()
    writer, reader = make_project(client)
    body = {"labels": [["t1", "w1", "a"], ["t1", "w2", "b"]]}
    assert client.post("/v1/projects/p/labels", json=body, headers=writer).status_code == 200

    probes = {
        "labels": lambda: client.post("/v1/projects/p/labels", json={"labels": [["t2", "w1", "a"]]}, headers=writer),
        "consensus": lambda: client.get("/v1/projects/p/consensus", headers=reader),
        "project": lambda: client.get("/v1/projects/p", headers=reader),
        "aggregate": lambda: client.post("/v1/projects/p/aggregations", headers=writer),
        "admin": lambda: client.get("/v1/projects", headers=ADMIN),
    }

    def probe_all(names):
        t0 = time.monotonic()
        out = {name: probes[name]() for name in names}
        return out, (time.monotonic() - t0) / len(names)

    # Down (connection refused) and stalled (SIGSTOP: connections hang): both 503 within
    # the client's short timeouts.
    # (A stalled Redis costs each request timeout x 3 tries: probe fewer endpoints there.)
    for sig, resume, names in ((signal.SIGSTOP, signal.SIGCONT, ["labels", "consensus"]), (signal.SIGKILL, None, list(probes))):
        redis.proc.kill_group(sig)
        out, per_request = probe_all(names)
        for name, resp in out.items():
            assert_error_shape(resp, 503)
            assert "Redis" in resp.get_json()["error"]["message"], name
            assert resp.headers.get("Retry-After")
        # timeouts of 0.5 s, 3 tries, short backoff: well under 5 s per request
        assert per_request < 5, f"{per_request:.1f} s per request"
        assert_error_shape(client.get("/readyz"), 503)
        assert client.get("/healthz").status_code == 200
        metrics = client.get("/metrics", headers=bearer(ADMIN_TOKEN))
        assert metrics.status_code == 200 and "crowdqc_redis_up 0.0" in metrics.get_data(as_text=True)
        if resume:
            redis.proc.kill_group(resume)
            wait_until(lambda: client.get("/readyz").status_code == 200, 10, what="recovery after SIGCONT")
    redis.proc.popen.wait(5)

    # Back on the same port and data (deploy/redis.conf: append-only file): same app object.
    processes.redis(port=redis.port, data_dir=redis.data_dir)
    wait_until(lambda: client.get("/readyz").status_code == 200, 10, what="readiness after Redis restart")
    r = client.post("/v1/projects/p/labels", json={"labels": [["t2", "w1", "a"]]}, headers=writer)
    assert r.status_code == 200 and r.get_json()["accepted"] == 1
    counts = client.get("/v1/projects/p", headers=reader).get_json()["counts"]
    assert counts["answers"] == 3  # the two from before the outage survived


def _timed(fn):
    t0 = time.monotonic()
    try:
        resp = fn()
    except Exception as exc:  # noqa: BLE001 - a client timeout is a result here
        resp = exc
    return resp, time.monotonic() - t0


def _is_json_503(resp) -> bool:
    if getattr(resp, "status_code", None) != 503:
        return False
    err = resp.json()["error"]
    return err["status"] == 503 and err["code"] == "service_unavailable" and "Redis" in err["message"]


@pytest.mark.slow
def test_breaker_lets_one_request_at_a_time_try_a_stalled_redis(processes):
    """At the default timeouts, in one process: the first request waits out the timeout,
    the next ones fail at once; when the breaker's interval is over, one request tries Redis
    while the others go on failing fast; Redis resuming closes it."""
    from concurrent.futures import ThreadPoolExecutor

    from service.config import Settings

    redis = processes.redis(conf=None, save="", appendonly="no")
    app = app_on(redis.url, redis_timeout_seconds=Settings().redis_timeout_seconds,
                 redis_connect_timeout_seconds=Settings().redis_connect_timeout_seconds)
    breaker = app.extensions["crowdqc_redis"].breaker

    def get(_=None):
        return _timed(lambda: app.test_client().get("/v1/projects", headers=ADMIN))

    assert get()[0].status_code == 200
    redis.proc.kill_group(signal.SIGSTOP)
    try:
        first, waited = get()
        assert first.status_code == 503 and 1.9 < waited < 2.5, waited  # one socket timeout, no retry
        assert breaker.is_open
        after = [get() for _ in range(20)]
        assert all(r.status_code == 503 and s < 0.05 for r, s in after), [round(s, 3) for _, s in after]
        time.sleep(breaker.open_seconds)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(get, range(8)))
        waits = sorted(s for _, s in results)
        assert all(r.status_code == 503 for r, _ in results)
        assert waits[-1] > 1.9 and waits[-2] < 0.05, waits  # exactly one tried Redis
    finally:
        redis.proc.kill_group(signal.SIGCONT)
    wait_until(lambda: get()[0].status_code == 200, 5, 0.05, "the breaker to close after SIGCONT")
    assert not breaker.is_open


@pytest.mark.slow
def test_stalled_redis_fails_fast_under_gunicorn_at_default_settings(processes, tmp_path):
    """Redis stopped with SIGSTOP accepts connections and never answers.  With the shipped
    defaults (timeouts, API processes and threads) and more requests in flight than
    gunicorn has threads, every request gets its JSON 503 quickly, /healthz answers at once
    (a liveness probe must not restart API processes for Redis's sake), and the same
    processes serve again once Redis resumes."""
    requests = pytest.importorskip("requests")
    from concurrent.futures import ThreadPoolExecutor

    redis = processes.redis()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROWDQC_")}
    env.update(REDIS_URL=redis.url, CROWDQC_ADMIN_TOKEN=ADMIN_TOKEN, CROWDQC_BIND=f"127.0.0.1:{port}",
               PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"))
    api = processes.start("api", [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "service.app:create_app()"], env=env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(base + "/readyz", timeout=2).status_code == 200, 30, 0.2, "the API under gunicorn")
    def api_processes():
        return sorted(p for p in pids_with_env([processes.mark]) if (st := proc_stat(p)) and st[1] == api.pid)

    # CROWDQC_API_PROCESSES's default: the number of CPUs, at least 2 (docs/operations.md)
    booted = wait_until(lambda: len(pids := api_processes()) == max(2, os.cpu_count()) and pids, 30, 0.1, "every API process")
    threads = 4  # CROWDQC_API_THREADS's default (docs/operations.md, checked against the code)

    r = requests.post(base + "/v1/projects", json={"id": "p", "labels": ["a", "b"]}, headers=ADMIN, timeout=10)
    assert r.status_code == 201, r.text
    writer = bearer(requests.post(base + "/v1/projects/p/keys", json={"role": "writer"}, headers=ADMIN, timeout=10).json()["key"])
    assert requests.post(base + "/v1/projects/p/labels", json={"labels": [["t1", "w1", "a"]]}, headers=writer, timeout=10).status_code == 200

    # Each call opens a connection of its own, so the requests spread over the processes.
    calls = [
        lambda: requests.get(base + "/v1/projects/p/consensus", headers=writer, timeout=60),
        lambda: requests.post(base + "/v1/projects/p/labels", json={"labels": [["t2", "w1", "b"]]}, headers=writer, timeout=60),
        lambda: requests.get(base + "/v1/projects", headers=ADMIN, timeout=60),
        lambda: requests.get(base + "/v1/projects/p", headers=writer, timeout=60),
    ]
    in_flight = 2 * len(booted) * threads  # twice what the thread pools hold
    pool = ThreadPoolExecutor(in_flight + 1)
    redis.proc.kill_group(signal.SIGSTOP)
    try:
        for round_ in ("stalled", "still stalled"):
            futures = [pool.submit(_timed, calls[i % len(calls)]) for i in range(in_flight)]
            time.sleep(0.2)  # they are in gunicorn's hands (or its queue) now
            health, health_s = _timed(lambda: requests.get(base + "/healthz", timeout=30))
            results = [f.result() for f in futures]
            assert getattr(health, "status_code", health) == 200, (round_, health)
            assert health_s < 1.0, f"{round_}: /healthz took {health_s:.2f} s"
            bad = [(resp, round(s, 2)) for resp, s in results if not _is_json_503(resp)]
            assert not bad, (round_, bad[:3])
            times = sorted(s for _, s in results)
            slowest = times[-1]
            assert slowest < 3, f"{round_}: the slowest request got its 503 after {slowest:.2f} s"
            if round_ == "still stalled":
                # Redis is known to be down: the breaker answers, no timeout is waited out
                # (but by the one request per process that tries Redis again).
                assert times[-3] < 0.5, times
            print(f"{round_}: {len(results)} requests, slowest 503 after {slowest:.2f} s, /healthz {health_s:.3f} s")
        ready, ready_s = _timed(lambda: requests.get(base + "/readyz", timeout=30))
        assert ready.status_code == 503 and ready_s < 3
    finally:
        redis.proc.kill_group(signal.SIGCONT)
        pool.shutdown()
    # Same processes, no restart: ready again, and writes go through.
    wait_until(lambda: requests.get(base + "/readyz", timeout=5).status_code == 200, 10, 0.1, "readiness after SIGCONT")
    r = requests.post(base + "/v1/projects/p/labels", json={"labels": [["t3", "w1", "a"]]}, headers=writer, timeout=10)
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert api.alive()
    assert api_processes() == booted


def test_redis_out_of_memory_gives_503_stores_nothing_and_recovers(processes):
    """deploy/redis.conf's noeviction: at maxmemory Redis refuses writes.  That is a 503
    naming the cause (not a 500), the refused batch leaves no trace (the ingestion script is
    refused at its first write), the published consensus is still served, and raising the
    limit is enough to recover."""
    from rq import SimpleWorker
    from rq.serializers import JSONSerializer

    redis = processes.redis(maxmemory="3mb")
    app = app_on(redis.url)
    client = app.test_client()
    writer, reader = make_project(client)
    first = [[f"s{i}", f"w{j}", "abc"[(i + j) % 3]] for i in range(50) for j in range(3)]
    stored = client.post("/v1/projects/p/labels", json={"labels": first}, headers=writer).get_json()["accepted"]
    client.post("/v1/projects/p/aggregations", json={"method": "majority_vote"}, headers=writer)
    queue = app.extensions["crowdqc_jobs"].queue
    SimpleWorker([queue], connection=queue.connection, serializer=JSONSerializer).work(burst=True)
    consensus = client.get("/v1/projects/p/consensus", headers=reader).get_json()
    assert len(consensus["items"]) == 50
    refused = None
    for b in range(200):
        batch = [[f"t{b}-{i}-" + "x" * 40, f"w{i % 9}", "a"] for i in range(1000)]
        r = client.post("/v1/projects/p/labels", json={"labels": batch}, headers=writer)
        if r.status_code != 200:
            refused = (r, batch)
            break
        stored += r.get_json()["accepted"]
    assert refused is not None and stored > 0, "maxmemory was never reached"
    r, batch = refused
    assert_error_shape(r, 503)
    assert "out of memory" in r.get_json()["error"]["message"] and r.headers["Retry-After"]
    # (Redis refuses every MULTI at maxmemory, so the project view is a 503 too: count the
    # packed label array directly, 2 bytes per answer.)
    assert redis.client().strlen("crowdqc:p:p:lab") // 2 == stored
    assert client.get("/v1/projects/p/consensus", headers=reader).get_json() == consensus

    redis.client().config_set("maxmemory", "0")
    r = client.post("/v1/projects/p/labels", json={"labels": batch}, headers=writer)
    assert r.status_code == 200 and r.get_json()["accepted"] == 1000
    assert client.get("/v1/projects/p", headers=reader).get_json()["counts"]["answers"] == stored + 1000


# -- (d) concurrent writers ------------------------------------------------------------------


def test_concurrent_writers_store_exact_counts(client, project):
    p = project("cw", labels=("a", "b", "c"))
    n_threads, n_batches, batch = 8, 12, 150
    rng = np.random.default_rng(11)
    # 400 tasks x 30 workers; every thread draws from the same pairs, so batches overlap.
    # A pair's label is a function of the pair: overlaps are duplicates, never conflicts.
    def label_of(t, w):
        return "abc"[(t * 7 + w * 3) % 3]

    plans = []
    for _ in range(n_threads):
        batches = []
        for _ in range(n_batches):
            ts = rng.integers(400, size=batch)
            ws = rng.integers(30, size=batch)
            batches.append([{"task": f"task-{t}", "worker": f"wk-{w}", "label": label_of(t, w)} for t, w in zip(ts, ws)])
        plans.append(batches)
    expected = {(it["task"], it["worker"], it["label"]) for batches in plans for b in batches for it in b}
    totals = {"accepted": 0, "duplicates": 0, "replaced": 0, "received": 0}
    lock = threading.Lock()
    errors = []
    barrier = threading.Barrier(n_threads)

    def run(batches):
        c = client.application.test_client()
        barrier.wait()
        for b in batches:
            r = c.post("/v1/projects/cw/labels", json={"labels": b}, headers=p["writer"])
            if r.status_code != 200:
                errors.append(r.get_json())
                continue
            with lock:
                for k in totals:
                    totals[k] += r.get_json()[k]

    threads = [threading.Thread(target=run, args=(b,)) for b in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert totals["received"] == n_threads * n_batches * batch
    assert totals["accepted"] == len(expected)
    assert totals["replaced"] == 0
    assert totals["accepted"] + totals["duplicates"] == totals["received"]

    store = client.application.extensions["crowdqc_store"]
    snap = store.snapshot("cw")
    stored = [(snap.task_names[t], snap.worker_names[w], "abc"[lab]) for t, w, lab in zip(snap.task, snap.worker, snap.label)]
    assert len(stored) == len(set(stored)) == len(expected)
    assert set(stored) == expected
    counts = client.get("/v1/projects/cw", headers=p["reader"]).get_json()["counts"]
    assert counts["answers"] == len(expected)
    assert counts["tasks"] == len({t for t, _, _ in expected})
    assert counts["workers"] == len({w for _, w, _ in expected})
