"""The aggregation job end to end on a 1,000,000-answer project.

The answers (200,000 tasks x 5, 2,000 workers, 4 classes, short ids such as ``t012345``
and ``w0123``) are stored with the service's own ingestion (``Store.ingest``, the Lua
script, batches of 10,000) in a dedicated Redis database under a throwaway prefix.  Then:

* bytes per stored answer: ``MEMORY USAGE`` summed over the project's keys;
* the snapshot load alone (``Store.snapshot``: one MULTI of GETs + ``numpy.frombuffer``);
* the job function ``service.jobs.aggregate_project`` (load snapshot, Dawid-Skene 50
  iterations with ``tol=0`` so all 50 run, worker reliability, disagreements, agreement,
  building and storing the result version), called directly, several times; then once
  more split into its stages to show where the time goes;
* once through a real RQ worker (``python -m service.worker --burst``, a fresh process
  that forks a work horse): from enqueue to the job's record saying finished.

Everything is deleted afterwards.

    .venv/bin/python bench/bench_service_job.py
    .venv/bin/python bench/bench_service_job.py --tasks 20000 --repeat 1    # smoke test
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import numpy as np

import service_common as sc
from synthetic import generate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=200_000)
    ap.add_argument("--per-task", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2_000)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3, help="direct runs of the job function")
    ap.add_argument("--no-rq", action="store_true", help="skip the run through an RQ worker")
    ap.add_argument("--out", default="service_job.json")
    args = ap.parse_args(argv)

    from service.app import create_app
    from service.jobs import Jobs, aggregate_project, build_parts, run_analysis
    from service.store import Store

    r = sc.redis_client()
    ns = sc.namespace("job")
    pid = "big"
    method, params = "dawid_skene", {"max_iter": args.iterations, "tol": 0}
    out = {"machine": sc.machine(), "args": vars(args), "method": method, "params": params}
    try:
        data = generate(n_tasks=args.tasks, per_task=args.per_task, n_workers=args.workers, n_classes=args.classes, seed=0)
        tn, wn, cn = data.task_names(), data.worker_names(), data.class_names()
        labels = cn.tolist()
        n = data.n_answers
        settings_cfg = {"REDIS_URL": sc.REDIS_URL, "admin_token": "x", **ns}
        app = create_app(settings_cfg)
        store = Store(r, ns["key_prefix"])
        client = app.test_client()
        resp = client.post("/v1/projects", json={"id": pid, "labels": labels}, headers={"Authorization": "Bearer x"})
        assert resp.status_code == 201, resp.get_json()

        # -- ingestion through the Lua script, batches of 10,000 ------------------------------
        t_names, w_names = tn[data.task].tolist(), wn[data.worker].tolist()
        lab = data.label.astype(np.uint16)
        t0 = time.perf_counter()
        batch = 10_000
        for s in range(0, n, batch):
            e = min(n, s + batch)
            store.ingest(pid, t_names[s:e], w_names[s:e], lab[s:e], [""] * (e - s))
        ingest_s = time.perf_counter() - t0
        counts = store.counts(pid)
        assert counts["answers"] == n, counts
        out["ingest"] = {"answers": n, "seconds": ingest_s, "answers_per_s": n / ingest_s, "batch": batch,
                         "note": "Store.ingest (Lua) in-process, no HTTP"}

        # -- memory -------------------------------------------------------------------------
        mem, nkeys = sc.memory_usage(r, store.pkey(pid, "*"))
        sizes = {}
        for part in ("pairs", "lab", "tn", "tl", "wn", "wl", "tnb", "wnb"):
            sizes[part] = int(r.memory_usage(store.pkey(pid, part), samples=0) or 0)
        ix_bytes = mem - sum(sizes.values()) - int(r.memory_usage(store.pkey(pid, "meta"), samples=0) or 0)
        sizes["ix:* (ingestion index buckets, plus small keys)"] = ix_bytes
        out["memory"] = {"bytes": mem, "keys": nkeys, "bytes_per_answer": mem / n, "by_key": sizes,
                         "mean_task_id_len": float(np.mean([len(x) for x in tn[:1000]])),
                         "mean_worker_id_len": float(np.mean([len(x) for x in wn[:1000]]))}

        # -- snapshot load alone -------------------------------------------------------------
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            snap = store.snapshot(pid)
            loads.append(time.perf_counter() - t0)
        assert snap.n_answers == n
        out["load_s"] = {"runs": loads, "median": float(np.median(loads))}

        # -- the job function, directly --------------------------------------------------------
        meta = store.get_project(pid)
        runs = []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            res = aggregate_project(store, pid, method, params)
            runs.append({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "version": res["version"]})
        out["job_direct"] = {"runs": runs, "median_wall_s": float(np.median([x["wall_s"] for x in runs]))}

        # the same steps, timed one by one (mirrors aggregate_project)
        stages = {}
        t = time.perf_counter()
        snap = store.snapshot(pid)
        stages["load snapshot"] = time.perf_counter() - t
        t = time.perf_counter()
        analysis = run_analysis(meta, snap, method, params)
        stages["analyse (encode, DS, reliability, disagreements, agreement)"] = time.perf_counter() - t
        timings = getattr(analysis, "timings", None)
        t = time.perf_counter()
        parts, _summary = build_parts(meta, snap, analysis)
        stages["build result parts (JSON rows)"] = time.perf_counter() - t
        t = time.perf_counter()
        store.write_result(pid, snap.rev, {"job": None}, parts)
        stages["write result version"] = time.perf_counter() - t
        out["stages_s"] = stages
        if isinstance(timings, dict):
            out["analysis_timings"] = timings
        res_mem, res_keys = sc.memory_usage(r, store.result_prefix(pid) + "*")
        out["result_memory_bytes_all_versions"] = res_mem

        # -- once through an RQ worker ----------------------------------------------------------
        if not args.no_rq:
            jobs = app.extensions["crowdqc_jobs"]
            env = dict(os.environ, REDIS_URL=sc.REDIS_URL, CROWDQC_KEY_PREFIX=ns["key_prefix"], CROWDQC_QUEUE=ns["queue_name"],
                       CROWDQC_LOG_LEVEL="WARNING", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
            t0 = time.perf_counter()
            job_id, _joined = jobs.request(pid, method, params)
            proc = subprocess.run([sc.PYTHON, "-m", "service.worker", "--burst", "--log-level", "WARNING"], cwd=sc.ROOT,
                                  env=env, capture_output=True, text=True, timeout=600)
            total = time.perf_counter() - t0
            status = jobs.status(job_id)
            if proc.returncode != 0 or status["status"] != "finished":
                print(proc.stdout[-2000:], proc.stderr[-2000:])
            job = jobs.rq_job(job_id)
            horse = None
            if job is not None and job.started_at and job.ended_at:
                horse = (job.ended_at - job.started_at).total_seconds()
            out["job_rq"] = {"status": status["status"], "enqueue_to_worker_exit_s": total, "rq_started_to_ended_s": horse,
                             "worker_returncode": proc.returncode}
    finally:
        out["keys_removed"] = sc.cleanup(r, ns)

    print(f"{n:,} answers ({args.tasks:,} tasks x {args.per_task}, {args.workers:,} workers, {args.classes} classes); "
          f"{method} {params}; machine {out['machine']['nproc']} cores")
    rows = [
        ["ingest (Store.ingest Lua, batches of 10,000)", ingest_s, f"{n / ingest_s:,.0f} answers/s"],
        ["Redis memory of the answers", mem / 1e6, f"{mem / n:.1f} bytes/answer ({nkeys} keys), MB"],
        ["load snapshot (median of 5)", out["load_s"]["median"], "target well under 2 s"],
        ["job function, direct (median)", out["job_direct"]["median_wall_s"], f"target < 15 s; runs: " +
         ", ".join(f"{x['wall_s']:.2f}" for x in runs)],
    ]
    for k, v in stages.items():
        rows.append([f"  stage: {k}", v, ""])
    if "job_rq" in out:
        jr = out["job_rq"]
        rows.append(["through RQ: enqueue -> worker exit", jr["enqueue_to_worker_exit_s"], f"status {jr['status']}"])
        if jr["rq_started_to_ended_s"] is not None:
            rows.append(["through RQ: job started -> ended", jr["rq_started_to_ended_s"], ""])
    print(sc.table(["what", "seconds", "note"], rows))
    print(f"{out['keys_removed']} keys removed")
    print("wrote", sc.save(args.out, out))


if __name__ == "__main__":
    main()
