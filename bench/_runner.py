"""Child process of the benchmarks: one library, one method, one CSV.

    python bench/_runner.py {crowdqc|crowdkit} --method {mv,ds,wawa,onecoin} --csv FILE
        [--iters N] [--duplicates all|latest] [--repeats R] [--out FILE.npz]

Imports only the library under test (so the post-import RSS is that library's own
baseline), reads the CSV, fits, and prints one JSON line: times, ``ru_maxrss`` after
imports / after loading / at the end, and optionally saves task names, class names,
posteriors and labels to ``--out`` for the parent to align and compare.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset VmHWM (Linux >= 4.0) so the fit's own peak can be read afterwards: the CSV
    reader's transient peak would otherwise hide the fit's.  getrusage's ru_maxrss follows
    VmHWM down, so callers keep the pre-reset high-water mark themselves."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def timed_fits(make, data, repeats, report):
    report["rss_before_fit_kb"] = _status_kb("VmRSS")
    report["peak_reset_ok"] = reset_peak()
    """Wall and CPU seconds of each fit.  CPU time (user + system of this process) is the
    steadier figure on a shared machine: it does not count time spent waiting for a core."""
    walls, cpus, est = [], [], None
    for _ in range(repeats):
        est = make()
        c0, t0 = time.process_time(), time.perf_counter()
        est.fit(data)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    report["fit_phase_peak_kb"] = _status_kb("VmHWM") if report["peak_reset_ok"] else None
    return walls, cpus, est


def run_crowdqc(args, report):
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    import aggregation as agg

    if args.reader == "service":
        from service.readers import read_answers

        report["rss_import_kb"] = maxrss_kb()
        t0 = time.perf_counter()
        answers, _ = read_answers(args.csv, duplicates=args.duplicates)
        report["read_s"] = time.perf_counter() - t0
        report["encode_s"] = 0.0  # included in read_s
    else:
        report["rss_import_kb"] = maxrss_kb()
        answers = _arrow_answers(args, report, agg, np, pa, pacsv)
    report["rss_loaded_kb"] = maxrss_kb()
    report["n_answers"] = answers.n_answers
    report["n_tasks"] = answers.n_tasks
    fit_and_save(args, report, answers, agg, np)


def _arrow_answers(args, report, agg, np, pa, pacsv):
    t0 = time.perf_counter()
    table = pacsv.read_csv(
        args.csv,
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in ("task", "worker", "label")},
            strings_can_be_null=False,
        ),
    )
    report["read_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cols = []
    for name in ("task", "worker", "label"):
        d = table.column(name).combine_chunks().dictionary_encode()
        cols += [d.indices.to_numpy(zero_copy_only=False), np.asarray(d.dictionary.to_pylist(), dtype=object)]
    del table, d
    answers = agg.from_codes(*cols, duplicates=args.duplicates)
    del cols
    report["encode_s"] = time.perf_counter() - t0
    return answers


def fit_and_save(args, report, answers, agg, np):
    def make():
        if args.method == "mv":
            return agg.MajorityVote()
        if args.method == "wawa":
            return agg.Wawa()
        if args.method == "ds":
            from aggregation.dawid_skene import DawidSkene

            # smoothing=0, prior_smoothing=0 is crowd-kit 1.4.2's model (see the module
            # docstring); tol=0 runs every iteration, as crowd-kit's tol=-inf does.
            return DawidSkene(max_iter=args.iters, tol=0.0, smoothing=0.0, prior_smoothing=0.0)
        if args.method == "ds-default":
            from aggregation.dawid_skene import DawidSkene

            return DawidSkene()
        if args.method == "ds-fixed":
            # the product's default model (smoothing 0.01), all iterations run
            from aggregation.dawid_skene import DawidSkene

            return DawidSkene(max_iter=args.iters, tol=0.0)
        if args.method == "onecoin":
            from aggregation.one_coin import OneCoinDawidSkene

            return OneCoinDawidSkene()
        raise SystemExit(f"unknown method {args.method}")

    report["fit_s"], report["fit_cpu_s"], est = timed_fits(make, answers, args.repeats, report)
    report["n_iter"] = getattr(est, "n_iter_", None)
    report["rss_peak_kb"] = max(report["rss_loaded_kb"], maxrss_kb())  # see reset_peak
    if args.out:
        np.savez(
            args.out,
            tasks=answers.task_names.astype(str),
            classes=answers.classes.astype(str),
            probas=np.asarray(est.probas_, dtype=float),
            labels=answers.classes.astype(str)[est.labels_],
            ties=np.asarray(getattr(est, "ties_", np.zeros(answers.n_tasks, bool))),
        )


def run_crowdkit(args, report):
    import numpy as np
    import pandas as pd
    from crowdkit.aggregation import DawidSkene, MajorityVote, OneCoinDawidSkene, Wawa

    report["rss_import_kb"] = maxrss_kb()
    t0 = time.perf_counter()
    # strings as given: "1" and "01" stay different labels, as in crowdqc
    df = pd.read_csv(args.csv, dtype=str, keep_default_na=False)
    report["read_s"] = time.perf_counter() - t0
    report["encode_s"] = 0.0
    report["rss_loaded_kb"] = maxrss_kb()
    report["n_answers"] = len(df)

    def make():
        if args.method == "mv":
            return MajorityVote()
        if args.method == "wawa":
            return Wawa()
        if args.method == "ds":
            # fit() breaks when new_loss - loss < tol; nothing is below -inf (and a NaN
            # comparison is False), so all n_iter iterations run
            return DawidSkene(n_iter=args.iters, tol=-np.inf)
        if args.method == "ds-default":
            return DawidSkene()
        if args.method == "onecoin":
            return OneCoinDawidSkene()
        raise SystemExit(f"unknown method {args.method}")

    report["fit_s"], report["fit_cpu_s"], est = timed_fits(make, df, args.repeats, report)
    report["n_iter"] = len(getattr(est, "loss_history_", [])) or None
    report["rss_peak_kb"] = max(report["rss_loaded_kb"], maxrss_kb())  # see reset_peak
    if args.out:
        probas = est.probas_
        np.savez(
            args.out,
            tasks=probas.index.to_numpy().astype(str),
            classes=probas.columns.to_numpy().astype(str),
            probas=probas.to_numpy(dtype=float),
            labels=est.labels_.reindex(probas.index).to_numpy().astype(str),
        )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib", choices=["crowdqc", "crowdkit"])
    ap.add_argument("--method", required=True)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--duplicates", default="all")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--reader", choices=["arrow", "service"], default="arrow",
                    help="crowdqc only: plain pyarrow + from_codes, or service.readers.read_answers")
    args = ap.parse_args()
    report = {"lib": args.lib, "method": args.method, "rss_start_kb": maxrss_kb(), "loadavg_start": os.getloadavg()}
    (run_crowdqc if args.lib == "crowdqc" else run_crowdkit)(args, report)
    report["loadavg_end"] = os.getloadavg()
    sys.stdout.write("\n" + json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
