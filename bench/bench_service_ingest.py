"""Ingestion over HTTP under gunicorn: POST /v1/projects/{id}/labels in batches.

gunicorn runs with deploy/gunicorn.conf.py (processes/threads from its defaults or
--processes/--threads) on a free loopback port, against a dedicated Redis database and a
throwaway key prefix.  Several client processes, each with one keep-alive connection,
send pre-encoded batches of synthetic answers (arriving in time order, so every batch
touches ~1,000 different tasks) as fast as they are answered.  The answers/s figure is
over the whole run: first request sent to last response received.

    .venv/bin/python bench/bench_service_ingest.py                  # 300,000 answers, 4 clients
    .venv/bin/python bench/bench_service_ingest.py --clients 2,4,8 --answers 200000
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import service_common as sc
from synthetic import generate


def make_batches(n_answers: int, batch: int, form: str, seed: int, tag: str) -> list[bytes]:
    per_task = 5
    data = generate(n_tasks=n_answers // per_task, per_task=per_task, n_workers=max(100, n_answers // 200), n_classes=4, seed=seed)
    tn, wn, cn = data.task_names(), data.worker_names(), data.class_names()
    t, w, c = tn[data.task].tolist(), wn[data.worker].tolist(), cn[data.label].tolist()
    out = []
    for s in range(0, len(t), batch):
        rows = zip(t[s : s + batch], w[s : s + batch], c[s : s + batch])
        if form == "array":
            items = [[a, b, l] for a, b, l in rows]
        else:  # objects with an idempotency id each (costs one HSETNX per answer)
            items = [{"task": a, "worker": b, "label": l, "id": f"{tag}{s + i}"} for i, (a, b, l) in enumerate(rows)]
        out.append(json.dumps({"labels": items}, separators=(",", ":")).encode())
    return out


def run_one(server, http, r, n_answers, batch, clients, form, seed, run_no) -> dict:
    pid = f"ingest-{form}-{clients}c-{run_no}"
    keys = sc.create_project(http, server.admin, pid, ["c0", "c1", "c2", "c3"])
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {keys['writer']}"}
    path = f"/v1/projects/{pid}/labels"
    # Warm-up (not timed): every gunicorn thread gets its Redis connection, the Lua script is loaded.
    warm = make_batches(2 * clients * batch, batch, form, seed + 1000, "warm")
    sc.run_clients(server.port, [[("POST", path, b, headers) for b in warm[i::clients]] for i in range(clients)])
    before = http.json("GET", f"/v1/projects/{pid}", token=keys["reader"])[1]["counts"]["answers"]

    bodies = make_batches(n_answers, batch, form, seed, "a")
    jobs = [[("POST", path, b, headers) for b in bodies[i::clients]] for i in range(clients)]
    spids, rpid = server.pids, sc.redis_pid(r)
    cpu0 = (sc.cpu_seconds(spids), sc.cpu_seconds([rpid]), _children_cpu())
    res = sc.run_clients(server.port, jobs)
    cpu1 = (sc.cpu_seconds(spids), sc.cpu_seconds([rpid]), _children_cpu())
    after = http.json("GET", f"/v1/projects/{pid}", token=keys["reader"])[1]["counts"]["answers"]
    stored = after - before
    wall = res["wall_s"]
    return {
        "form": form,
        "clients": clients,
        "batch": batch,
        "answers_sent": n_answers,
        "answers_stored": stored,
        "batches": res["requests"],
        "statuses": res["statuses"],
        "wall_s": wall,
        "answers_per_s": n_answers / wall,
        "batch_latency": res["latency"],
        "body_mb": sum(len(b) for b in bodies) / 1e6,
        "cpu_s": {"gunicorn": cpu1[0] - cpu0[0], "redis": cpu1[1] - cpu0[1], "clients": cpu1[2] - cpu0[2]},
        "loadavg": sc.loadavg(),
    }


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--answers", type=int, default=300_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--clients", default="4", help="comma-separated client process counts to run")
    ap.add_argument("--forms", default="array,object-id", help="array ([task, worker, label]) and/or object-id ({task, worker, label, id})")
    ap.add_argument("--processes", type=int, help="gunicorn workers (default: deploy/gunicorn.conf.py's)")
    ap.add_argument("--threads", type=int, help="gunicorn threads per worker (default: the config's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="service_ingest.json")
    args = ap.parse_args(argv)

    r = sc.redis_client()
    ns = sc.namespace("ingest")
    runs = []
    try:
        with sc.Server(ns, args.processes, args.threads) as server:
            gconf = server.config()
            http = sc.Http("127.0.0.1", server.port)
            n = 0
            for form in args.forms.split(","):
                for clients in (int(c) for c in args.clients.split(",")):
                    n += 1
                    runs.append(run_one(server, http, r, args.answers, args.batch, clients, form, args.seed, n))
    finally:
        mem, nkeys = sc.memory_usage(r, f"{ns['key_prefix']}*")
        removed = sc.cleanup(r, ns)
    # the warm-up answers are stored too
    total_stored = sum(x["answers_stored"] + 2 * x["clients"] * args.batch for x in runs)

    rows = [
        [x["form"], x["clients"], x["answers_stored"], x["wall_s"], x["answers_per_s"], x["batch_latency"]["p50_ms"],
         x["batch_latency"]["p99_ms"], x["cpu_s"]["gunicorn"], x["cpu_s"]["redis"], x["cpu_s"]["clients"],
         ",".join(f"{k}:{v}" for k, v in sorted(x["statuses"].items()))]
        for x in runs
    ]
    print(f"gunicorn: {gconf['workers']} workers x {gconf['threads']} threads ({gconf['worker_class']}); "
          f"batches of {args.batch}; machine {sc.machine()['nproc']} cores")
    print(sc.table(["form", "clients", "answers", "wall s", "answers/s", "p50 ms", "p99 ms", "cpu gunicorn", "cpu redis",
                    "cpu clients", "status"], rows))
    print(f"Redis memory of all ingested projects: {mem / max(total_stored, 1):.1f} bytes/answer "
          f"({mem / 1e6:.1f} MB, {nkeys} keys; includes the warm-up answers); {removed} keys removed")
    path = sc.save(args.out, {
        "machine": sc.machine(), "args": vars(args), "gunicorn": gconf, "runs": runs,
        "redis_bytes_all_projects": mem, "redis_keys": nkeys,
    })
    print("wrote", path)


if __name__ == "__main__":
    main()
