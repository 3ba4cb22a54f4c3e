"""Dashboards: 50 concurrent clients polling GET /v1/projects/{id}/consensus?limit=500.

A project of synthetic answers is ingested over HTTP and aggregated (the job function,
run in this process), then gunicorn (deploy/gunicorn.conf.py) is polled by 50 keep-alive
connections, as fast as it answers, with a reader key: once without a validator (200,
a full page of 500 rows) and once with ``If-None-Match`` set to the page's ETag (304, the
usual case of a dashboard polling a result that has not changed).

Two load shapes:

* saturating ("closed loop"): each connection sends its next request as soon as the
  previous one is answered; the load generator is wrk (C, so the cores go to the server),
  or 50 Python processes with ``--client python``.  This gives the throughput ceiling;
  latency is then just 50 / throughput (every connection always has a request queued).
* paced: 50 clients each poll every ``--interval`` seconds (random phase), like dashboards
  on a refresh timer; latency is measured per request and also from the moment the poll
  was due (so a server falling behind cannot hide it).

    .venv/bin/python bench/bench_service_dashboard.py
    .venv/bin/python bench/bench_service_dashboard.py --duration 30 --connections 50 --tasks 20000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile

import service_common as sc
from bench_service_ingest import make_batches

WRK_SCRIPT = r"""
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer %(token)s"
%(inm)s
done = function(summary, latency, requests)
  io.write(string.format(
    'JSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"err_status":%%d,"err_connect":%%d,"err_read":%%d,' ..
    '"err_write":%%d,"err_timeout":%%d,"mean_us":%%f,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"p999_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


def wrk_run(port, path, token, etag, connections, threads, duration) -> dict:
    inm = f"wrk.headers[\"If-None-Match\"] = '{etag}'" if etag else ""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(WRK_SCRIPT % {"token": token, "inm": inm})
        script = fh.name
    try:
        cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s", "-s", script,
               f"http://127.0.0.1:{port}{path}"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script)
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    w = json.loads(line[5:])
    secs = w["duration_us"] / 1e6
    errors = {k: w[k] for k in w if k.startswith("err_") and w[k]}
    return {
        "tool": "wrk",
        "requests": w["requests"],
        "wall_s": secs,
        "requests_per_s": w["requests"] / secs,
        "mb_per_s": w["bytes"] / secs / 1e6,
        "latency": {"mean_ms": w["mean_us"] / 1e3, "p50_ms": w["p50_us"] / 1e3, "p90_ms": w["p90_us"] / 1e3,
                    "p99_ms": w["p99_us"] / 1e3, "p999_ms": w["p999_us"] / 1e3, "max_ms": w["max_us"] / 1e3},
        "errors": errors,
    }


def python_run(port, path, token, etag, connections, per_client) -> dict:
    headers = {"Authorization": f"Bearer {token}"}
    if etag:
        headers["If-None-Match"] = etag
    res = sc.run_clients(port, [[("GET", path, None, headers)] * per_client for _ in range(connections)])
    ok = res["statuses"].get(304 if etag else 200, 0)
    return {
        "tool": "python",
        "requests": res["requests"],
        "wall_s": res["wall_s"],
        "requests_per_s": res["requests"] / res["wall_s"],
        "mb_per_s": res["bytes"] / res["wall_s"] / 1e6,
        "latency": res["latency"],
        "errors": {} if ok == res["requests"] else {"statuses": res["statuses"]},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    ap.add_argument("--client", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python")
    ap.add_argument("--per-client", type=int, default=40, help="requests per Python client")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between polls of one paced client")
    ap.add_argument("--paced-duration", type=float, default=20.0)
    ap.add_argument("--processes", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", default="service_dashboard.json")
    args = ap.parse_args(argv)

    from service.jobs import aggregate_project
    from service.store import Store

    r = sc.redis_client()
    ns = sc.namespace("dash")
    runs = []
    try:
        with sc.Server(ns, args.processes, args.threads) as server:
            gconf = server.config()
            http = sc.Http("127.0.0.1", server.port)
            pid = "dashboard"
            keys = sc.create_project(http, server.admin, pid, ["c0", "c1", "c2", "c3"])
            hdr = {"Content-Type": "application/json", "Authorization": f"Bearer {keys['writer']}"}
            for body in make_batches(args.tasks * 5, 10_000, "array", 0, "d"):
                status, _, data = http.request("POST", f"/v1/projects/{pid}/labels", body, hdr)
                assert status == 200, data
            agg = aggregate_project(Store(r, ns["key_prefix"]), pid, "dawid_skene", {"max_iter": 50})
            path = f"/v1/projects/{pid}/consensus?limit={args.limit}"
            reader = {"Authorization": f"Bearer {keys['reader']}"}
            status, headers, data = http.request("GET", path, None, reader)
            page = json.loads(data)
            assert status == 200 and len(page["items"]) == args.limit, (status, data[:200])
            etag = headers["ETag"]
            status, _, _ = http.request("GET", path, None, {**reader, "If-None-Match": etag})
            assert status == 304, status
            page_bytes = len(data)
            for label, tag in (("200 full page", None), ("304 If-None-Match", etag)):
                spids, rpid = server.pids, sc.redis_pid(r)
                cpu0 = (sc.cpu_seconds(spids), sc.cpu_seconds([rpid]))
                if args.client == "wrk":
                    res = wrk_run(server.port, path, keys["reader"], tag, args.connections, 2, args.duration)
                else:
                    res = python_run(server.port, path, keys["reader"], tag, args.connections, args.per_client)
                cpu1 = (sc.cpu_seconds(spids), sc.cpu_seconds([rpid]))
                res.update(case=label, load="saturating", connections=args.connections,
                           cpu_s={"gunicorn": cpu1[0] - cpu0[0], "redis": cpu1[1] - cpu0[1]}, loadavg=sc.loadavg())
                runs.append(res)
            for label, tag in (("200 full page", None), ("304 If-None-Match", etag)):
                h = dict(reader, **({"If-None-Match": tag} if tag else {}))
                cpu0 = (sc.cpu_seconds(spids), sc.cpu_seconds([rpid]))
                res = sc.run_paced(server.port, path, h, args.connections, args.interval, args.paced_duration)
                cpu1 = (sc.cpu_seconds(spids), sc.cpu_seconds([rpid]))
                want = 304 if tag else 200
                res.update(case=label, load=f"paced {args.interval:g}s", connections=args.connections, tool="python",
                           errors={} if res["statuses"].get(want) == res["requests"] else {"statuses": res["statuses"]},
                           cpu_s={"gunicorn": cpu1[0] - cpu0[0], "redis": cpu1[1] - cpu0[1]}, loadavg=sc.loadavg())
                runs.append(res)
    finally:
        removed = sc.cleanup(r, ns)

    print(f"gunicorn: {gconf['workers']} workers x {gconf['threads']} threads ({gconf['worker_class']}); "
          f"{args.connections} connections ({args.client}); project of {args.tasks:,} tasks, "
          f"page of {args.limit} rows = {page_bytes / 1e3:.0f} kB; machine {sc.machine()['nproc']} cores")
    rows = [[x["case"], x["load"], x["requests"], x["requests_per_s"], x["mb_per_s"], x["latency"]["p50_ms"], x["latency"]["p90_ms"],
             x["latency"]["p99_ms"], x["latency"]["max_ms"], x["cpu_s"]["gunicorn"] / x["wall_s"],
             x["cpu_s"]["redis"] / x["wall_s"], json.dumps(x["errors"]) if x["errors"] else "none"] for x in runs]
    print(sc.table(["case", "load", "requests", "req/s", "MB/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "gunicorn cores",
                    "redis cores", "errors"], rows))
    for x in runs:
        if "latency_from_due" in x:
            d = x["latency_from_due"]
            print(f"  {x['case']} ({x['load']}): latency from the due time p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms")
    print(f"{removed} keys removed")
    out = sc.save(args.out, {"machine": sc.machine(), "args": vars(args), "gunicorn": gconf, "page_bytes": page_bytes,
                             "aggregation": agg["summary"].get("method"), "runs": runs})
    print("wrote", out)


if __name__ == "__main__":
    main()
