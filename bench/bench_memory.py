"""Redis memory per stored answer, and per stored aggregation result.

Starts a scratch ``redis-server`` of its own (free loopback port, temporary directory,
no persistence: memory does not depend on it) so that ``INFO memory`` counts nothing but
this project, then:

1. creates a project and ingests answers with short ids (``t123456``, ``w1234``) in
   batches of 10,000 through ``Store.ingest``, the Lua script behind
   ``POST /v1/projects/{id}/labels`` (HTTP would only be slower, not store anything else);
2. publishes a Dawid-Skene result the way the job does (``jobs.aggregate_project``), then
   a second one: while the first is inside its grace period both are held.

Reports ``used_memory`` deltas (what Redis allocated), ``MEMORY USAGE`` summed over the
project's keys (where it went), and ``used_memory_rss``.

    .venv/bin/python bench/bench_memory.py                        # 1,000,000 answers: 200,000 tasks x 5, 2,000 workers
    .venv/bin/python bench/bench_memory.py --answer-ids           # the same, each answer with an idempotency id
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [p for p in (ROOT, BENCH) if p not in sys.path]

from _harness import machine, save  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ScratchRedis:
    """redis-server on a free port in a temporary directory; ``conf`` (a file) and
    ``extra`` ("--name", "value" pairs) override the no-persistence defaults."""

    def __init__(self, *extra: str, conf: str | None = None):
        import redis

        self.dir = tempfile.mkdtemp(prefix="crowdqc-bench-redis-")
        self.port = free_port()
        argv = ["redis-server"] + ([conf] if conf else ["--save", "", "--appendonly", "no"])
        argv += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--daemonize", "no", *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=60)
        deadline = time.monotonic() + 15
        while True:
            try:
                self.client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def project_meta(pid: str, labels: list[str]) -> dict:
    from aggregation.encoding import normalize_label

    return {
        "id": pid, "name": pid, "labels": labels, "labels_normalized": [normalize_label(v) for v in labels],
        "label_type": "string", "aggregation": {"method": "dawid_skene", "params": {}, "auto": False},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def memory(r) -> dict:
    info = r.info("memory")
    return {k: int(info[k]) for k in ("used_memory", "used_memory_rss", "used_memory_peak")}


def key_usage(r, pattern: str) -> dict:
    out = {}
    for k in r.scan_iter(match=pattern, count=5000):
        out[k.decode()] = int(r.memory_usage(k, samples=0) or 0)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--per-task", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2_000)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--answer-ids", action="store_true", help="give every answer an idempotency id (a0, a1, ...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    from service.jobs import aggregate_project
    from service.store import Store

    rng = np.random.default_rng(args.seed)
    n = args.tasks * args.per_task
    task = np.repeat(np.arange(args.tasks), args.per_task)
    # per_task distinct workers per task: consecutive ids from a random start
    start = rng.integers(0, args.workers, args.tasks).repeat(args.per_task)
    worker = (start + np.tile(np.arange(args.per_task), args.tasks)) % args.workers
    label = rng.integers(0, args.classes, n)
    task_names = [f"t{i}" for i in task]
    worker_names = [f"w{i}" for i in worker]
    ids = [f"a{i}" for i in range(n)] if args.answer_ids else [""] * n
    labels = [f"c{i}" for i in range(args.classes)]

    redis_srv = ScratchRedis()
    try:
        r = redis_srv.client
        store = Store(r, "crowdqc:")
        store.set_grace(600)
        m_empty = memory(r)
        store.create_project(project_meta("p", labels))
        m0 = memory(r)
        t0 = time.perf_counter()
        for i in range(0, n, args.batch):
            j = i + args.batch
            out = store.ingest("p", task_names[i:j], worker_names[i:j], label[i:j].tolist(), ids[i:j])
            assert out["accepted"] == min(j, n) - i, out
        ingest_s = time.perf_counter() - t0
        m1 = memory(r)
        keys1 = key_usage(r, "crowdqc:p:p:*")
        assert store.counts("p")["answers"] == n

        t0 = time.perf_counter()
        res1 = aggregate_project(store, "p", "dawid_skene", {"max_iter": 50})
        agg_s = time.perf_counter() - t0
        m2 = memory(r)
        res2 = aggregate_project(store, "p", "dawid_skene", {"max_iter": 50})
        m3 = memory(r)
        keys3 = key_usage(r, "crowdqc:p:*")
        assert res2["version"] == res1["version"] + 1
    finally:
        redis_srv.close()

    per_answer = (m1["used_memory"] - m0["used_memory"]) / n
    result_bytes = m2["used_memory"] - m1["used_memory"]
    two_results = m3["used_memory"] - m1["used_memory"]
    answers_keys = {k.rsplit(":", 1)[1]: v for k, v in keys1.items()}
    payload = {
        "machine": machine(),
        "args": vars(args),
        "redis": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
        "answers": n,
        "ingest_seconds": round(ingest_s, 2),
        "memory": {"empty": m_empty, "project_created": m0, "after_ingest": m1, "after_result_1": m2, "after_result_2": m3},
        "answers_bytes_per_answer": round(per_answer, 1),
        "answers_mb_per_million": round(per_answer * 1e6 / 2**20, 1),
        "answer_keys_memory_usage": answers_keys,
        "answer_keys_bytes_per_answer": round(sum(keys1.values()) / n, 1),
        "result_bytes": result_bytes,
        "result_bytes_per_task": round(result_bytes / args.tasks, 1),
        "two_results_bytes": two_results,
        "aggregation_seconds": round(agg_s, 2),
        "all_keys_after_two_results": sum(keys3.values()),
    }
    mib = 2**20
    print(f"{n:,} answers ({args.tasks:,} tasks x {args.per_task}, {args.workers:,} workers, answer ids: {args.answer_ids})")
    print(f"  used_memory: empty project {m0['used_memory'] / mib:.1f} MiB -> after ingest {m1['used_memory'] / mib:.1f} MiB "
          f"= {per_answer:.1f} bytes/answer = {per_answer * 1e6 / mib:.1f} MiB per million answers")
    print(f"  MEMORY USAGE of the project's answer keys: {sum(keys1.values()) / n:.1f} bytes/answer; "
          + ", ".join(f"{k} {v / mib:.1f} MiB" for k, v in sorted(answers_keys.items(), key=lambda kv: -kv[1]) if v > mib))
    print(f"  one Dawid-Skene result: +{result_bytes / mib:.1f} MiB ({result_bytes / args.tasks:.0f} bytes/task); "
          f"two held during the grace period: +{two_results / mib:.1f} MiB")
    print(f"  used_memory_rss after everything: {m3['used_memory_rss'] / mib:.1f} MiB, peak used_memory {m3['used_memory_peak'] / mib:.1f} MiB")
    print(f"  ingest {ingest_s:.1f} s (direct to Redis, batches of {args.batch:,}); one aggregation {agg_s:.1f} s")
    name = args.out or f"memory_{n}{'_ids' if args.answer_ids else ''}.json"
    print("saved", save(name, payload))
    return payload


if __name__ == "__main__":
    main()
