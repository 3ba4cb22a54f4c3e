"""Accuracy against gold on the ten real data sets in ../shared/datasets (beside the project).

    .venv/bin/python bench/bench_datasets.py [--datasets DIR] [--no-crowdkit]

crowdqc (in this process): majority vote, Wawa, Dawid-Skene (defaults, and crowd-kit's
model: smoothing 0) and one-coin Dawid-Skene, each with duplicate policies ``all`` and
``latest``.  crowd-kit 1.4.2 (in a child process from bench/.venv, defaults,
every row counted): majority vote and Dawid-Skene.  Accuracy is over gold tasks with at
least one answer, labels compared as strings, as in the data sets' README.  Results go
to ``bench/results/datasets.json``.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _harness import ROOT, machine, run_child, save  # noqa: E402

import aggregation as agg  # noqa: E402

DATASETS = os.path.join(os.path.dirname(ROOT), "shared", "datasets")


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return rows


def reference_figures(readme):
    """{dataset: (mv, ds)} from the README table."""
    out = {}
    with open(readme, encoding="utf-8") as fh:
        for line in fh:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 4 and re.fullmatch(r"0\.\d+", cells[-2]) and re.fullmatch(r"0\.\d+", cells[-1] or ""):
                out[cells[0]] = (float(cells[-2]), float(cells[-1]))
    return out


def accuracy(pred: dict, gold: dict) -> tuple[float, int]:
    """Share of gold tasks with a prediction whose predicted label equals gold."""
    hits = [pred[t] == g for t, g in gold.items() if t in pred]
    return (float(np.mean(hits)) if hits else float("nan")), len(hits)


def crowdqc_methods():
    from aggregation.dawid_skene import DawidSkene

    methods = {
        "MV": agg.MajorityVote,
        "Wawa": agg.Wawa,
        "DS": DawidSkene,
        "DS-ck": lambda: DawidSkene(smoothing=0.0, prior_smoothing=0.0, tol=1e-7),
    }
    try:
        from aggregation.one_coin import OneCoinDawidSkene

        methods["1coin"] = OneCoinDawidSkene
    except ImportError:  # written by another helper; the table says n/a until it exists
        pass
    return methods


def run_crowdqc(rows, gold_rows):
    task = [r["task"] for r in rows]
    worker = [r["worker"] for r in rows]
    label = [r["label"] for r in rows]
    out = {}
    for dup in ("all", "latest"):
        answers = agg.encode(task, worker, label, duplicates=dup)
        gold_codes, _ = agg.encode_gold(answers, [g["task"] for g in gold_rows], [g["label"] for g in gold_rows])
        known = gold_codes >= 0
        for name, make in crowdqc_methods().items():
            est = make()
            t0 = time.perf_counter()
            est.fit(answers)
            dt = time.perf_counter() - t0
            acc = float((est.labels_[known] == gold_codes[known]).mean())
            out[f"{name}/{dup}"] = {"acc": acc, "fit_s": dt, "n_gold": int(known.sum()),
                                   "n_iter": getattr(est, "n_iter_", None),
                                   "ties": int(np.asarray(getattr(est, "ties_", [])).sum())}
    return out


def run_crowdkit(answers_csv, gold, tmp):
    out = {}
    for method, key in (("mv", "MV"), ("ds-default", "DS"), ("onecoin", "1coin")):
        npz = os.path.join(tmp, f"ck_{method}.npz")
        rep = run_child("crowdkit", "--method", method, "--csv", answers_csv, "--out", npz)
        with np.load(npz) as z:
            pred = dict(zip(z["tasks"].tolist(), z["labels"].tolist()))
        acc, n = accuracy(pred, gold)
        out[key] = {"acc": acc, "fit_s": rep["fit_s"][0], "n_gold": n, "n_iter": rep.get("n_iter")}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=DATASETS)
    ap.add_argument("--no-crowdkit", action="store_true")
    args = ap.parse_args(argv)

    refs = reference_figures(os.path.join(args.datasets, "README.md"))
    names = sorted(d for d in os.listdir(args.datasets) if os.path.exists(os.path.join(args.datasets, d, "gold.csv")))
    # README order is more readable than alphabetical
    names = [n for n in refs if n in names] + [n for n in names if n not in refs]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            base = os.path.join(args.datasets, name)
            rows = read_csv(os.path.join(base, "answers.csv"))
            gold_rows = read_csv(os.path.join(base, "gold.csv"))
            gold = {g["task"]: g["label"] for g in gold_rows}
            r = {"n_answers": len(rows), "reference": refs.get(name)}
            r["crowdqc"] = run_crowdqc(rows, gold_rows)
            if not args.no_crowdkit:
                r["crowdkit"] = run_crowdkit(os.path.join(base, "answers.csv"), gold, tmp)
            results[name] = r
            qc = r["crowdqc"]
            line = " ".join(f"{k}={v['acc']:.4f}" for k, v in qc.items() if k.endswith("/all"))
            ck = r.get("crowdkit", {})
            print(f"{name:22} {line}  ck MV={ck.get('MV', {}).get('acc', float('nan')):.4f} "
                  f"DS={ck.get('DS', {}).get('acc', float('nan')):.4f} 1coin={ck.get('1coin', {}).get('acc', float('nan')):.4f}  ref={r['reference']}", flush=True)
    path = save("datasets.json", {"machine": machine(), "results": results})
    print_tables(results)
    print(f"\nsaved {path}")


def print_tables(results):
    methods = [m for m in ("MV", "Wawa", "DS", "DS-ck", "1coin")
               if any(f"{m}/all" in r["crowdqc"] for r in results.values())]
    head = "| data set | " + " | ".join(f"{m} all | {m} latest" for m in methods)
    head += " | ck MV | ck DS | ck 1coin | ref MV | ref DS |"
    print("\n" + head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, r in results.items():
        qc, ck, ref = r["crowdqc"], r.get("crowdkit", {}), r["reference"] or (None, None)
        cells = []
        for m in methods:
            for dup in ("all", "latest"):
                v = qc.get(f"{m}/{dup}")
                cells.append(f"{v['acc']:.4f}" if v else "n/a")
        cells += [f"{ck[k]['acc']:.4f}" if k in ck else "n/a" for k in ("MV", "DS", "1coin")]
        cells += [f"{x:.4f}" if x is not None else "n/a" for x in ref]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| data set | answers | crowdqc MV s | crowdqc DS s (iters) | crowd-kit MV s | crowd-kit DS s (iters) |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        qc, ck = r["crowdqc"], r.get("crowdkit", {})
        ds, ckds = qc["DS/all"], ck.get("DS")
        print(f"| {name} | {r['n_answers']} | {qc['MV/all']['fit_s']:.4f} | {ds['fit_s']:.4f} ({ds['n_iter']}) | "
              + (f"{ck['MV']['fit_s']:.4f} | {ckds['fit_s']:.3f} ({ckds['n_iter']}) |" if ckds else "n/a | n/a |"))


if __name__ == "__main__":
    main()
