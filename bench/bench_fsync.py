"""Ingestion throughput under each AOF fsync policy (appendfsync always / everysec / no).

For each policy, a scratch ``redis-server`` with ``deploy/redis.conf`` (append-only file
on, in a temporary directory on the local disk) and ``--appendfsync <policy>``; client
threads post batches of new answers through ``Store.ingest`` (the Lua script behind
``POST .../labels``) for a fixed time.  HTTP and gunicorn are left out on purpose: they
cost the same under every policy and would hide the difference on a 2-core machine.

    .venv/bin/python bench/bench_fsync.py                       # batches of 1,000 and of 10, 4 threads, 10 s each
    .venv/bin/python bench/bench_fsync.py --batches 1000 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [p for p in (ROOT, BENCH) if p not in sys.path]

from _harness import machine, save  # noqa: E402
from bench_memory import ScratchRedis, project_meta  # noqa: E402


def run(policy: str, batch: int, threads: int, seconds: float) -> dict:
    import redis

    from service.store import Store

    srv = ScratchRedis("--appendfsync", policy, conf=os.path.join(ROOT, "deploy", "redis.conf"))
    try:
        assert srv.client.config_get("appendfsync")["appendfsync"] == policy
        assert srv.client.config_get("appendonly")["appendonly"] == "yes"
        Store(srv.client, "crowdqc:").create_project(project_meta("p", ["a", "b", "c"]))
        stop = threading.Event()
        lat: list[list[float]] = [[] for _ in range(threads)]
        sent = [0] * threads
        barrier = threading.Barrier(threads + 1)

        def client(k: int):
            store = Store(redis.Redis(host="127.0.0.1", port=srv.port), "crowdqc:")
            workers = [f"w{k}-{i % 50}" for i in range(batch)]
            labels = [i % 3 for i in range(batch)]
            ids = [""] * batch
            b = 0
            barrier.wait()
            while not stop.is_set():
                tasks = [f"t{k}-{b}-{i}" for i in range(batch)]  # all new: every batch is written
                t0 = time.perf_counter()
                out = store.ingest("p", tasks, workers, labels, ids)
                lat[k].append(time.perf_counter() - t0)
                assert out["accepted"] == batch
                sent[k] += batch
                b += 1

        ts = [threading.Thread(target=client, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        barrier.wait()
        t0 = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        info = srv.client.info("persistence")
        all_lat = np.array([x for xs in lat for x in xs]) * 1000
        stored = Store(srv.client, "crowdqc:").counts("p")["answers"]
        assert stored == sum(sent)
        return {
            "policy": policy,
            "batch": batch,
            "threads": threads,
            "answers": stored,
            "batches": int(all_lat.size),
            "seconds": round(wall, 2),
            "answers_per_s": round(stored / wall),
            "batches_per_s": round(all_lat.size / wall),
            "batch_ms_p50": round(float(np.percentile(all_lat, 50)), 2),
            "batch_ms_p99": round(float(np.percentile(all_lat, 99)), 2),
            "aof_bytes": int(info.get("aof_current_size", 0)),
            "aof_delayed_fsync": int(info.get("aof_delayed_fsync", 0)),
        }
    finally:
        srv.close()


def disk_fsync_ms(n: int = 200) -> dict:
    """write(4 KiB) + fsync latency in the directory type the scratch Redis uses."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix="crowdqc-fsync-")
    try:
        times = []
        for _ in range(n):
            os.write(fd, b"x" * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - t0) * 1000)
        return {"n": n, "p50": round(float(np.percentile(times, 50)), 3), "p99": round(float(np.percentile(times, 99)), 3)}
    finally:
        os.close(fd)
        os.unlink(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", default="always,everysec,no")
    ap.add_argument("--batches", default="1000,10", help="batch sizes, comma-separated")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--out", default="fsync.json")
    args = ap.parse_args(argv)
    runs = []
    disk = disk_fsync_ms()
    print(f"fsync of a 4 KiB write on this disk: p50 {disk['p50']} ms, p99 {disk['p99']} ms")
    print(f"{'policy':9} {'batch':>6} {'answers/s':>10} {'batches/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for batch in (int(b) for b in args.batches.split(",")):
        for policy in args.policies.split(","):
            r = run(policy, batch, args.threads, args.seconds)
            runs.append(r)
            print(f"{policy:9} {batch:>6} {r['answers_per_s']:>10,} {r['batches_per_s']:>10,} {r['batch_ms_p50']:>8} {r['batch_ms_p99']:>8}")
    print("saved", save(args.out, {"machine": machine(), "args": vars(args), "disk_fsync_ms": disk, "runs": runs}))


if __name__ == "__main__":
    main()
