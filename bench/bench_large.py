"""crowdqc alone on 10,000,000 answers (2,000,000 tasks x 5, 10,000 workers, 4 classes).

    .venv/bin/python bench/bench_large.py            # generates bench/data/ on first run (~1 GB... see README)

Measures, each in a fresh process:

* reading the CSV into ``Answers`` with ``service.readers.read_answers`` (the path the
  CLI and the API use);
* Dawid-Skene, 50 EM iterations, no early stop (targets: < 60 s, < 4 GB peak RSS),
  with the default model (smoothing 0.01) - the crowd-kit-identical model costs the same;
* majority vote (target: < 2 s);
* the whole ``crowdqc aggregate`` command on the file, if ``service/cli.py`` exists.

crowd-kit is not run here: at 500,000 answers it already takes minutes (see
bench_dawid_skene.py).  Results go to ``bench/results/large_<answers>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import DATA, ROOT, machine, measure_command, run_child, save  # noqa: E402
from bench_dawid_skene import ensure_csv  # noqa: E402


def summarise(rep):
    return {
        "read_s": rep["read_s"],
        "fit_s": rep["fit_s"],
        "fit_s_median": statistics.median(rep["fit_s"]),
        "fit_cpu_s": rep["fit_cpu_s"],
        "loadavg": [rep.get("loadavg_start"), rep.get("loadavg_end")],
        "n_iter": rep.get("n_iter"),
        "peak_rss_mb": rep["rss_peak_kb"] / 1024,
        "loaded_rss_mb": rep["rss_loaded_kb"] / 1024,
        "import_rss_mb": rep["rss_import_kb"] / 1024,
        "start_rss_mb": rep["rss_start_kb"] / 1024,
        # VmHWM reset just before fitting: the fit's own peak, and its growth over the
        # resident data (RSS just before the fit)
        "fit_phase_peak_mb": rep["fit_phase_peak_kb"] / 1024 if rep.get("fit_phase_peak_kb") else None,
        "fit_extra_mb": (rep["fit_phase_peak_kb"] - rep["rss_before_fit_kb"]) / 1024
        if rep.get("fit_phase_peak_kb") and rep.get("rss_before_fit_kb") else None,
        "n_answers": rep["n_answers"],
        "n_tasks": rep["n_tasks"],
        "process_wall_s": rep["process_wall_s"],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=2_000_000)
    ap.add_argument("--per-task", type=int, default=5)
    ap.add_argument("--workers", type=int, default=10_000)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--repeats-mv", type=int, default=3)
    ap.add_argument("--skip-cli", action="store_true")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    csv_path, truth_path = ensure_csv(args.tasks, args.per_task, args.workers, args.classes, args.seed)
    gen_s = time.perf_counter() - t0
    n = args.tasks * args.per_task
    print(f"data: {csv_path} ({n:,} answers, {os.path.getsize(csv_path) / 1e6:.0f} MB; ready in {gen_s:.0f} s)",
          flush=True)
    res = {"machine": machine(), "args": vars(args), "csv_mb": os.path.getsize(csv_path) / 1e6, "results": {}}
    common = ["--csv", csv_path, "--reader", "service", "--duplicates", "latest"]

    print("Dawid-Skene ...", flush=True)
    ds = summarise(run_child("crowdqc", "--method", "ds-fixed", "--iters", str(args.iters), *common))
    res["results"]["ds"] = ds
    print(f"  read {ds['read_s']:.1f} s, fit {ds['fit_s_median']:.1f} s ({ds['n_iter']} iterations), "
          f"peak RSS {ds['peak_rss_mb']:.0f} MB (after read {ds['loaded_rss_mb']:.0f} MB); "
          f"fit phase peak {ds['fit_phase_peak_mb']:.0f} MB, +{ds['fit_extra_mb']:.0f} MB over the resident data", flush=True)

    print("majority vote ...", flush=True)
    mv = summarise(run_child("crowdqc", "--method", "mv", "--repeats", str(args.repeats_mv), *common))
    res["results"]["mv"] = mv
    print(f"  read {mv['read_s']:.1f} s, fit {mv['fit_s_median']:.2f} s (runs {np.round(mv['fit_s'], 2).tolist()}), "
          f"peak RSS {mv['peak_rss_mb']:.0f} MB", flush=True)

    cli = os.path.join(ROOT, ".venv", "bin", "crowdqc")
    if args.skip_cli:
        # keep the last measured CLI figures rather than dropping them from the results file
        prev = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"large_{n}.json")
        if os.path.exists(prev):
            with open(prev) as fh:
                old = json.load(fh)["results"].get("cli_aggregate")
            if old:
                res["results"]["cli_aggregate"] = dict(old, from_previous_run=True)
    elif os.path.exists(os.path.join(ROOT, "service", "cli.py")) and os.path.exists(cli):
        out_dir = os.path.join(DATA, "large_out")
        shutil.rmtree(out_dir, ignore_errors=True)
        cmd = [cli, "aggregate", csv_path, "--out", out_dir]
        print("crowdqc aggregate (defaults) ...", flush=True)
        r = measure_command(cmd)
        r["cmd"] = " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd)
        if r["rc"] == 0:  # the command's own stage timings (summary.json)
            with open(os.path.join(out_dir, "summary.json")) as fh:
                r["stage_timings_s"] = json.load(fh)["timings"]
        res["results"]["cli_aggregate"] = r
        print(f"  rc {r['rc']}, wall {r['wall_s']:.1f} s, peak RSS {r['peak_rss_kb'] / 1024:.0f} MB", flush=True)
        if r["rc"] != 0:
            print(r["stderr_tail"])
    else:
        print("service/cli.py not there yet: skipping the crowdqc aggregate timing")

    path = save(f"large_{n}.json", res)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
