"""The CSV files of `crowdqc aggregate` hold exactly what the engine's row generators
(Analysis.consensus_rows, disagreement_rows) say, whatever characters the names contain.

The files are built column-wise for speed (service.columnar); the generators build one
dict per row in plain Python, which makes them an independent reference."""

from __future__ import annotations

import csv
import json

import pytest

from aggregation import encode
from service.analysis import analyse
from service.report import write_tables

TRICKY_TASKS = ["plain", "with,comma", 'with "quotes"', "two\nlines", "ünïcødé ✓", "tab\there", " spaced ", "=1+1"]
TRICKY_CLASSES = ["yes", "no, really", 'the "third"']


def tricky_answers():
    tasks, workers, labels = [], [], []
    for i, task in enumerate(TRICKY_TASKS):
        for w in range(3):
            tasks.append(task)
            workers.append(f"w{w}" if w else 'worker,"0"')
            labels.append(TRICKY_CLASSES[(i + (w == 2)) % 3])
    return encode(tasks, workers, labels)


def number(text):
    return float(text) if text != "" else None


def boolean(text):
    return {"true": True, "false": False, "": None}[text]


@pytest.mark.parametrize("with_gold", [False, True])
def test_consensus_and_disagreements_csv_match_the_row_generators(tmp_path, with_gold):
    answers = tricky_answers()
    gold = ([TRICKY_TASKS[1], TRICKY_TASKS[4]], [TRICKY_CLASSES[1], TRICKY_CLASSES[0]]) if with_gold else None
    analysis = analyse(answers, "dawid_skene", {}, gold=gold)
    paths = write_tables(analysis, tmp_path)

    with open(paths["consensus.csv"], newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    expected = list(analysis.consensus_rows())
    assert [r["task"] for r in got] == [e["task"] for e in expected] and len(got) == len(TRICKY_TASKS)
    for row, exp in zip(got, expected):
        assert row["label"] == exp["label"] and row["mv_label"] == exp["mv_label"]
        assert number(row["confidence"]) == exp["confidence"]  # exact: shortest round-trip form
        assert int(row["n_labels"]) == exp["n_labels"] and boolean(row["tie"]) == exp["tie"]
        assert {c: number(row[f"p:{c}"]) for c in TRICKY_CLASSES} == exp["probabilities"]
        if with_gold:
            assert (row["gold"] or None) == exp["gold"]
        else:
            assert "gold" not in row

    with open(paths["disagreements.csv"], newline="", encoding="utf-8") as f:
        got = list(csv.DictReader(f))
    expected = list(analysis.disagreement_rows())
    assert len(got) == len(expected)
    for row, exp in zip(got, expected):
        assert int(row["rank"]) == exp["rank"] and row["task"] == exp["task"]
        assert row["label"] == exp["label"] and row["mv_label"] == exp["mv_label"]
        for key in ("confidence", "entropy", "margin"):
            assert number(row[key]) == exp[key], key
        assert int(row["n_answers"]) == exp["n_answers"] and json.loads(row["votes"]) == exp["votes"]
        assert boolean(row["tie"]) == exp["tie"] and boolean(row["mv_disagrees"]) == exp["mv_disagrees"]
        assert (row["gold"] or None) == exp["gold"] and boolean(row["contradicts_gold"]) == exp["contradicts_gold"]


def test_header_is_written_plainly(tmp_path):
    paths = write_tables(analyse(tricky_answers(), "majority_vote"), tmp_path)
    first = paths["consensus.csv"].read_text(encoding="utf-8").splitlines()[0]
    # classes in string order; Python's csv quoting rules
    assert first == 'task,label,confidence,n_labels,tie,mv_label,mv_tie,"p:no, really","p:the ""third""",p:yes'
