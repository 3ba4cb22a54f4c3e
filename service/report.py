"""Write an :class:`~service.analysis.Analysis` into a directory of CSV and JSON files.

* ``consensus.csv``: ``task,label,confidence,n_labels,tie,mv_label,mv_tie``, then one
  ``p:<label>`` column per class when there are at most ``MAX_PROBABILITY_COLUMNS``
  classes, then ``gold`` when gold labels were given.  One row per task, by task name.
* ``workers.csv``: ``worker,`` then the reliability figures, ``flags`` (``;``-separated)
  and ``confusion`` (compact JSON ``{true label: {given label: p}}``).  By worker name.
* ``disagreements.csv``: every task, most uncertain first; ``votes`` is compact JSON.
* ``summary.json``: :meth:`Analysis.summary` plus input file names and timings (seconds).

Empty cells mean "unknown" (never NaN); booleans are ``true``/``false``; numbers are in
their shortest exact form (``1`` for 1.0).  The large tables are built a chunk of rows at
a time from whole columns (:mod:`service.columnar`), and each file appears under its
final name only once complete.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from . import columnar as col

MAX_PROBABILITY_COLUMNS = 50
FILES = ("consensus.csv", "workers.csv", "disagreements.csv", "summary.json")

WORKER_COLUMNS = (
    "worker", "n_answers", "n_tasks", "n_shared_answers", "estimable", "accuracy", "agreement",
    "spammer_score", "gold_n", "gold_correct", "gold_accuracy", "gold_ci_low", "gold_ci_high",
    "flags", "confusion",
)
DISAGREEMENT_COLUMNS = (
    "rank", "task", "label", "confidence", "entropy", "margin", "n_answers", "votes", "tie",
    "mv_label", "mv_tie", "mv_disagrees", "gold", "contradicts_gold",
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
    header = ["task", "label", "confidence", "n_labels", "tie", "mv_label", "mv_tie"]
    if with_p:
        header += [f"p:{c}" for c in classes]
    if has_gold:
        header.append("gold")
    fields = _class_fields(classes)
    labels, confidence, mv, ties, probas = analysis.labels, analysis.confidence, analysis.mv_labels, analysis.ties, analysis.probas
    mv_ties = analysis.mv_ties
    gold = _gold_codes(analysis, len(classes))

    def lines(lo, hi):
        pieces = [col.csv_fields(a.task_names[lo:hi]), col.take(fields, labels[lo:hi]), col.numbers(confidence[lo:hi]),
                  col.numbers(a.answers_per_task[lo:hi]), col.booleans(ties[lo:hi]), col.take(fields, mv[lo:hi]),
                  col.booleans(mv_ties[lo:hi])]
        if with_p:
            pieces += [col.numbers(probas[lo:hi, c]) for c in range(len(classes))]
        if has_gold:
            pieces.append(col.take(fields + [""], gold[lo:hi]))
        return col.joined(pieces, ",")

    _write_csv(path, header, a.n_tasks, lines)


def write_workers(analysis, path: Path) -> None:
    with _Atomic(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(WORKER_COLUMNS)
        for row in analysis.worker_rows():
            row["flags"] = ";".join(row["flags"])
            writer.writerow([_cell(row.get(col)) for col in WORKER_COLUMNS])


def write_disagreements(analysis, path: Path, limit: int | None = None) -> None:
    d = analysis.disagreements
    classes = [str(c) for c in d.classes_]
    fields = _class_fields(classes)
    keys = [f"{k}:" for k in col.json_literals(classes)]
    order = d.order_ if limit is None else d.order_[: max(int(limit), 0)]
    gold = np.where(d.has_gold_, d.gold_, len(classes))

    def lines(lo, hi):
        rows = order[lo:hi]
        votes = d.votes_[rows]
        votes.eliminate_zeros()
        votes.sort_indices()
        has_gold = col.strings(np.where(d.has_gold_[rows], "", None)).is_null()
        pieces = [
            col.numbers(np.arange(lo, hi)), col.csv_fields(d.task_names_[rows]), col.take(fields, d.label_[rows]),
            col.numbers(d.confidence_[rows]), col.numbers(d.entropy_[rows]), col.numbers(d.margin_[rows]),
            col.numbers(d.n_answers_[rows]),
            col.csv_fields(col.sparse_objects(votes.indptr, votes.indices, col.numbers(votes.data.astype(np.int64)), keys)),
            col.booleans(d.tie_[rows]), col.take(fields, d.mv_label_[rows]), col.booleans(d.mv_tie_[rows]),
            col.booleans(d.mv_disagrees_[rows]),
            col.take(fields + [""], gold[rows]),
            pc.if_else(has_gold, "", col.booleans(d.contradicts_gold_[rows])),
        ]
        return col.joined(pieces, ",")

    _write_csv(path, DISAGREEMENT_COLUMNS, len(order), lines)


def _class_fields(classes: list[str]) -> list[str]:
    return col.csv_fields(classes).to_pylist()


def _gold_codes(analysis, n_classes: int):
    """Gold class codes with 'unknown' as ``n_classes`` (an extra, empty fragment)."""
    if analysis.gold is None:
        return None
    codes = analysis.gold.codes
    return np.where(codes >= 0, codes, n_classes)


# Rows per chunk: bounds the memory of the text being built (and keeps pyarrow's 32-bit
# string offsets far from their 2 GB limit).
CHUNK_ROWS = 262_144


def _write_csv(path: Path, header, n_rows: int, lines) -> None:
    """Header (Python's csv rules) then ``lines(lo, hi)`` text for every chunk of rows."""
    with _Atomic(path) as f:
        csv.writer(f, lineterminator="\n").writerow(header)
        f.flush()
        raw = f.buffer
        for lo in range(0, n_rows, CHUNK_ROWS):
            raw.write(col.text_bytes(lines(lo, min(lo + CHUNK_ROWS, n_rows))))
            raw.flush()


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
