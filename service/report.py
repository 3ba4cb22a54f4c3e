"""Write an :class:`~service.analysis.Analysis` into a directory of CSV and JSON files.

* ``consensus.csv``: ``task,label,confidence,n_labels,tie,mv_label``, then one
  ``p:<label>`` column per class when there are at most ``MAX_PROBABILITY_COLUMNS``
  classes, then ``gold`` when gold labels were given.  One row per task, by task name.
* ``workers.csv``: ``worker,`` then the reliability figures, ``flags`` (``;``-separated)
  and ``confusion`` (compact JSON ``{true label: {given label: p}}``).  By worker name.
* ``disagreements.csv``: every task, most uncertain first; ``votes`` is compact JSON.
* ``summary.json``: :meth:`Analysis.summary` plus input file names and timings (seconds).

Empty cells mean "unknown" (never NaN); booleans are ``true``/``false``.  Files are
streamed row by row and each appears under its final name only once complete.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

MAX_PROBABILITY_COLUMNS = 50
FILES = ("consensus.csv", "workers.csv", "disagreements.csv", "summary.json")

WORKER_COLUMNS = (
    "worker", "n_answers", "n_tasks", "n_shared_answers", "estimable", "accuracy", "agreement",
    "spammer_score", "gold_n", "gold_correct", "gold_accuracy", "gold_ci_low", "gold_ci_high",
    "flags", "confusion",
)
DISAGREEMENT_COLUMNS = (
    "rank", "task", "label", "confidence", "entropy", "margin", "n_answers", "votes", "tie",
    "mv_label", "mv_disagrees", "gold", "contradicts_gold",
)


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return value


class _Atomic:
    """Open ``path.tmp`` for writing; rename over ``path`` on success, remove on failure."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")

    def __enter__(self):
        self.f = open(self.tmp, "w", encoding="utf-8", newline="")
        return self.f

    def __exit__(self, exc_type, exc, tb):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
        return False


def write_consensus(analysis, path: Path) -> None:
    a = analysis.answers
    classes = [str(c) for c in a.classes]
    with_p = a.n_classes <= MAX_PROBABILITY_COLUMNS
    has_gold = analysis.gold is not None
    header = ["task", "label", "confidence", "n_labels", "tie", "mv_label"]
    if with_p:
        header += [f"p:{c}" for c in classes]
    if has_gold:
        header.append("gold")
    labels = analysis.labels.tolist()
    mv = analysis.mv_labels.tolist()
    ties = ["true" if t else "false" for t in analysis.ties.tolist()]
    columns = [a.task_names.tolist(), [classes[c] for c in labels], analysis.confidence.tolist(),
               a.answers_per_task.tolist(), ties, [classes[c] for c in mv]]
    with _Atomic(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        probas = analysis.probas
        gold = [classes[g] if g >= 0 else "" for g in analysis.gold.codes.tolist()] if has_gold else None
        # Chunks keep the per-row Python lists short-lived on millions of tasks.
        step = 65536
        for lo in range(0, a.n_tasks, step):
            hi = min(lo + step, a.n_tasks)
            fixed = zip(*(col[lo:hi] for col in columns))
            probs = probas[lo:hi].tolist() if with_p else None
            golds = gold[lo:hi] if has_gold else None
            if with_p and has_gold:
                rows = ([*f_, *p, g] for f_, p, g in zip(fixed, probs, golds))
            elif with_p:
                rows = ([*f_, *p] for f_, p in zip(fixed, probs))
            elif has_gold:
                rows = ([*f_, g] for f_, g in zip(fixed, golds))
            else:
                rows = fixed
            writer.writerows(rows)


def write_workers(analysis, path: Path) -> None:
    with _Atomic(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(WORKER_COLUMNS)
        for row in analysis.worker_rows():
            row["flags"] = ";".join(row["flags"])
            writer.writerow([_cell(row.get(col)) for col in WORKER_COLUMNS])


def write_disagreements(analysis, path: Path, limit: int | None = None) -> None:
    with _Atomic(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(DISAGREEMENT_COLUMNS)
        for row in analysis.disagreement_rows(limit=limit):
            writer.writerow([_cell(row.get(col)) for col in DISAGREEMENT_COLUMNS])


def write_summary(summary: dict, path: Path) -> None:
    with _Atomic(path) as f:
        json.dump(summary, f, indent=2, ensure_ascii=False, allow_nan=False)
        f.write("\n")


def write_tables(analysis, out_dir, disagreements_limit: int | None = None) -> dict:
    """Write the three CSV files into ``out_dir`` (created); returns every output path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FILES}
    write_consensus(analysis, paths["consensus.csv"])
    write_workers(analysis, paths["workers.csv"])
    write_disagreements(analysis, paths["disagreements.csv"], disagreements_limit)
    return paths


def write_report(analysis, out_dir, summary: dict | None = None, disagreements_limit: int | None = None) -> dict:
    """Write the three CSV files, then ``summary.json`` (``summary`` defaults to
    ``analysis.summary()``; give one to add inputs or timings).  Returns the paths."""
    paths = write_tables(analysis, out_dir, disagreements_limit)
    write_summary(analysis.summary() if summary is None else summary, paths["summary.json"])
    return paths
