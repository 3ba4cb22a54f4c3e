"""crowdqc vs crowd-kit 1.4.2 on the same synthetic answers: Dawid-Skene and majority vote.

    .venv/bin/python bench/bench_dawid_skene.py                 # 100,000 tasks x 5 = 500,000 answers
    .venv/bin/python bench/bench_dawid_skene.py --tasks 10000   # quick check

Both libraries read the same CSV, each in its own fresh process (see ``_harness.py``),
run the same model for the same number of EM iterations with no early stop, and save
their posteriors; this process aligns them by task name and class name and compares.
Results go to ``bench/results/dawid_skene_<answers>.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import DATA, machine, mb, run_child, save  # noqa: E402


def ensure_csv(n_tasks, per_task, n_workers, n_classes, seed) -> tuple[str, str]:
    stem = f"synth_t{n_tasks}_a{per_task}_w{n_workers}_k{n_classes}_s{seed}"
    path, truth = os.path.join(DATA, stem + ".csv"), os.path.join(DATA, stem + "_truth.csv")
    if not (os.path.exists(path) and os.path.exists(truth)):
        # In a child process: on Linux a child's ru_maxrss starts from its parent's
        # high-water mark at exec time, so a parent that held the generated arrays would
        # inflate every later measurement.
        subprocess.run(
            [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic.py"),
             "--tasks", str(n_tasks), "--per-task", str(per_task), "--workers", str(n_workers),
             "--classes", str(n_classes), "--seed", str(seed), "--out", path, "--truth", truth],
            check=True,
        )
    return path, truth


def load(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def align(a, b):
    """b's rows and columns reordered to a's tasks and classes (both must hold the same sets)."""
    if set(a["tasks"]) != set(b["tasks"]) or set(a["classes"]) != set(b["classes"]):
        raise RuntimeError("the two libraries returned different task or class sets")
    rows = {t: i for i, t in enumerate(b["tasks"])}
    ri = np.fromiter((rows[t] for t in a["tasks"]), dtype=np.int64, count=a["tasks"].size)
    cols = {c: i for i, c in enumerate(b["classes"])}
    ci = np.array([cols[c] for c in a["classes"]])
    return b["probas"][ri][:, ci], b["labels"][ri]


def compare(qc, ck, truth_path):
    ck_probas, ck_labels = align(qc, ck)
    diff = np.abs(qc["probas"] - ck_probas)
    per_task = diff.max(axis=1)
    same = qc["labels"] == ck_labels
    out = {
        "max_abs_posterior_diff": float(diff.max()),
        "mean_abs_posterior_diff": float(diff.mean()),
        "tasks_diff_over_1e-6": int((per_task > 1e-6).sum()),
        # crowd-kit's evidence-lower-bound step clips its posteriors in place at 1e-10
        # (and returns them unrenormalised); this is the difference once ours get the same floor
        "max_abs_posterior_diff_after_1e-10_floor": float(np.abs(np.maximum(qc["probas"], 1e-10) - ck_probas).max()),
        "label_agreement": float(same.mean()),
        "n_label_disagreements": int((~same).sum()),
    }
    ties = qc.get("ties")
    if ties is not None and ties.any():
        out["n_tied_tasks_crowdqc"] = int(ties.sum())
        out["label_agreement_untied"] = float(same[~ties].mean())
    worst = np.argsort(-per_task)[:5]
    out["worst_tasks"] = [
        {
            "task": str(qc["tasks"][i]),
            "crowdqc": np.round(qc["probas"][i], 9).tolist(),
            "crowdkit": np.round(ck_probas[i], 9).tolist(),
            "classes": qc["classes"].tolist(),
        }
        for i in worst
        if per_task[i] > 0
    ]
    if truth_path:
        import csv

        with open(truth_path) as fh:
            truth = {r["task"]: r["label"] for r in csv.DictReader(fh)}
        gold = np.array([truth[t] for t in qc["tasks"]])
        out["accuracy_crowdqc"] = float((qc["labels"] == gold).mean())
        out["accuracy_crowdkit"] = float((ck_labels == gold).mean())
    return out


def summarise(rep):
    fits = rep["fit_s"]
    return {
        "fit_s_first": fits[0],
        "fit_s_median": statistics.median(fits),
        "fit_cpu_s_median": statistics.median(rep["fit_cpu_s"]) if "fit_cpu_s" in rep else None,
        "fit_s_all": fits,
        "loadavg": [rep.get("loadavg_start"), rep.get("loadavg_end")],
        "encode_s": rep["encode_s"],
        "read_s": rep["read_s"],
        "peak_rss_mb": rep["rss_peak_kb"] / 1024,
        "import_rss_mb": rep["rss_import_kb"] / 1024,
        "start_rss_mb": rep["rss_start_kb"] / 1024,
        # VmHWM reset just before fitting: the fit's own peak, and its growth over the
        # resident data (RSS just before the fit)
        "fit_phase_peak_mb": rep["fit_phase_peak_kb"] / 1024 if rep.get("fit_phase_peak_kb") else None,
        "fit_extra_mb": (rep["fit_phase_peak_kb"] - rep["rss_before_fit_kb"]) / 1024
        if rep.get("fit_phase_peak_kb") and rep.get("rss_before_fit_kb") else None,
        "loaded_rss_mb": rep["rss_loaded_kb"] / 1024,
        "peak_over_import_mb": (rep["rss_peak_kb"] - rep["rss_import_kb"]) / 1024,
        "peak_over_loaded_mb": (rep["rss_peak_kb"] - rep["rss_loaded_kb"]) / 1024,
        "n_iter": rep.get("n_iter"),
        "repeats": len(fits),
    }


def bench_method(method, csv_path, truth_path, iters, repeats, repeats_crowdkit, tmp):
    res = {}
    files = {}
    for lib, reps in (("crowdqc", repeats), ("crowdkit", repeats_crowdkit)):
        files[lib] = os.path.join(tmp, f"{method}_{lib}.npz")
        print(f"  {method}: {lib} ...", flush=True)
        rep = run_child(lib, "--method", method, "--csv", csv_path, "--iters", str(iters),
                        "--repeats", str(reps), "--out", files[lib])
        res[lib] = summarise(rep)
    res["agreement"] = compare(load(files["crowdqc"]), load(files["crowdkit"]), truth_path)
    qc, ck = res["crowdqc"], res["crowdkit"]
    res["speed_ratio_fit"] = ck["fit_s_median"] / qc["fit_s_median"]
    # crowd-kit's fit takes the raw string frame; crowdqc's takes encoded Answers, so
    # also compare crowd-kit's fit against crowdqc's encode + fit
    res["speed_ratio_encode_plus_fit"] = ck["fit_s_median"] / (qc["fit_s_median"] + qc["encode_s"])
    if qc["fit_cpu_s_median"] and ck["fit_cpu_s_median"]:
        res["speed_ratio_fit_cpu"] = ck["fit_cpu_s_median"] / qc["fit_cpu_s_median"]
    res["peak_rss_ratio"] = qc["peak_rss_mb"] / ck["peak_rss_mb"]
    return res


def print_method(name, r):
    qc, ck, ag = r["crowdqc"], r["crowdkit"], r["agreement"]
    print(f"\n== {name}")
    print(f"{'':24}{'crowdqc':>14}{'crowd-kit':>14}")
    print(f"{'fit s (median)':24}{qc['fit_s_median']:>14.3f}{ck['fit_s_median']:>14.3f}")
    if qc["fit_cpu_s_median"] is not None:
        print(f"{'fit CPU s (median)':24}{qc['fit_cpu_s_median']:>14.3f}{ck['fit_cpu_s_median']:>14.3f}")
    print(f"{'encode s':24}{qc['encode_s']:>14.3f}{'-':>14}")
    print(f"{'peak RSS MB':24}{qc['peak_rss_mb']:>14.0f}{ck['peak_rss_mb']:>14.0f}")
    print(f"{'peak - imports MB':24}{qc['peak_over_import_mb']:>14.0f}{ck['peak_over_import_mb']:>14.0f}")
    print(f"{'peak - loaded MB':24}{qc['peak_over_loaded_mb']:>14.0f}{ck['peak_over_loaded_mb']:>14.0f}")
    if qc.get("fit_extra_mb") is not None and ck.get("fit_extra_mb") is not None:
        print(f"{'fit-phase peak MB':24}{qc['fit_phase_peak_mb']:>14.0f}{ck['fit_phase_peak_mb']:>14.0f}")
        print(f"{'fit growth MB':24}{qc['fit_extra_mb']:>14.0f}{ck['fit_extra_mb']:>14.0f}")
    print(f"{'iterations':24}{str(qc['n_iter']):>14}{str(ck['n_iter']):>14}")
    if "accuracy_crowdqc" in ag:
        print(f"{'accuracy vs truth':24}{ag['accuracy_crowdqc']:>14.4f}{ag['accuracy_crowdkit']:>14.4f}")
    print(f"speed ratio (fit): {r['speed_ratio_fit']:.1f}x; (encode+fit): {r['speed_ratio_encode_plus_fit']:.1f}x; "
          f"CPU-time ratio {r.get('speed_ratio_fit_cpu', float('nan')):.1f}x; "
          f"peak RSS crowdqc/crowd-kit: {r['peak_rss_ratio']:.2f}")
    print(f"max |posterior diff| {ag['max_abs_posterior_diff']:.3g} "
          f"({ag['max_abs_posterior_diff_after_1e-10_floor']:.3g} with crowd-kit's 1e-10 floor), tasks > 1e-6: {ag['tasks_diff_over_1e-6']}, "
          f"label agreement {ag['label_agreement']:.6f} ({ag['n_label_disagreements']} differ)"
          + (f", untied {ag['label_agreement_untied']:.6f}" if "label_agreement_untied" in ag else ""))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--per-task", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1_000)
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3, help="fits per crowdqc process (median reported)")
    ap.add_argument("--repeats-crowdkit", type=int, default=1)
    ap.add_argument("--methods", default="ds,mv")
    args = ap.parse_args(argv)

    csv_path, truth_path = ensure_csv(args.tasks, args.per_task, args.workers, args.classes, args.seed)
    n_answers = args.tasks * args.per_task
    print(f"data: {csv_path} ({n_answers:,} answers)")
    payload = {"machine": machine(), "args": vars(args), "csv": os.path.relpath(csv_path), "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            r = bench_method(method, csv_path, truth_path, args.iters, args.repeats, args.repeats_crowdkit, tmp)
            payload["results"][method] = r
            print_method(method, r)
    path = save(f"dawid_skene_{n_answers}.json", payload)
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
