"""The stored JSON of a consensus (built column-wise) equals the engine's row generator
(one dict per task, plain Python) with the labels as the project declared them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aggregation import encode
from service.analysis import analyse
from service.result_json import consensus_json_rows


def reference(analysis, declared):
    table = dict(zip([str(c) for c in analysis.answers.classes], declared))
    out = []
    for row in analysis.consensus_rows():
        for key in ("label", "mv_label", "gold"):
            if key in row and row[key] is not None:
                row[key] = table[row[key]]
        out.append(row)
    return out


@pytest.mark.parametrize("n_classes", [2, 5, 80])
def test_json_rows_equal_the_row_generator(n_classes):
    rng = np.random.default_rng(n_classes)
    n = 300
    tasks = [f"t{i}" if i % 7 else f'task "{i}"\\ ünï\n' for i in rng.integers(0, 60, n)]
    workers = [f"w{i}" for i in rng.integers(0, 12, n)]
    labels = [str(i) for i in rng.integers(0, n_classes, n)]
    answers = encode(tasks, workers, labels)
    gold = ([tasks[0], tasks[5]], [labels[0], labels[5]])
    analysis = analyse(answers, "dawid_skene", {}, gold=gold)
    declared = [int(c) for c in answers.classes]  # an integer-labelled project
    got = [json.loads(text) for text in consensus_json_rows(analysis, declared)]
    assert got == reference(analysis, declared)
    assert all(isinstance(r["label"], int) for r in got)
    if n_classes > 50:  # only the probabilities that matter are listed
        assert any(len(r["probabilities"]) < n_classes for r in got)
