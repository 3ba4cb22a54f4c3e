import csv
import json
import math
import random

import numpy as np
import pytest

from aggregation import Disagreements, MajorityVote, encode, encode_gold

from cases import DATASETS, columns

ROWS = [
    ("t0", "w1", "b"), ("t0", "w2", "a"),
    ("t1", "w1", "a"), ("t1", "w2", "a"), ("t1", "w3", "b"),
    ("t2", "w1", "a"), ("t2", "w3", "b"),
    ("t3", "w1", "c"), ("t3", "w2", "c"), ("t3", "w3", "c"),
    ("t4", "w1", "b"), ("t4", "w2", "b"), ("t4", "w3", "a"),
]  # fmt: skip

# Hand-made posteriors (classes a, b, c), consensus labels and gold:
#   t0 [.5 .5 0]     label b  entropy ln 2 = 0.693147             margin 0
#   t1 [.5 .25 .25]  label a  entropy 1.5 ln 2 = 1.039721          margin .25
#   t2 [.5 .5 0]     label a  entropy ln 2                         margin 0
#   t3 [0 0 1]       label c  entropy 0                            margin 1
#   t4 [.2 .8 0]     label b  entropy -(.2 ln .2 + .8 ln .8) = 0.500402  margin .6
PROBAS = np.array([[0.5, 0.5, 0], [0.5, 0.25, 0.25], [0.5, 0.5, 0], [0, 0, 1], [0.2, 0.8, 0]])
LABELS = np.array([1, 0, 0, 2, 1])


def fit_hand_example(**kwargs):
    answers = encode(*columns(ROWS))
    gold, _ = encode_gold(answers, ["t1", "t4"], ["a", "a"])
    return answers, Disagreements().fit(answers, PROBAS, LABELS, gold=gold, **kwargs)


def test_confidence_entropy_margin_by_hand():
    answers, dis = fit_hand_example()
    assert dis.n_answers_.tolist() == [2, 3, 2, 3, 3]
    assert dis.votes_.toarray().tolist() == [[1, 1, 0], [2, 1, 0], [1, 1, 0], [0, 0, 3], [1, 2, 0]]
    assert dis.confidence_ == pytest.approx([0.5, 0.5, 0.5, 1.0, 0.8])
    ln2 = math.log(2)
    assert dis.entropy_ == pytest.approx([ln2, 1.5 * ln2, ln2, 0.0, 0.5004024235], abs=1e-9)
    assert dis.margin_ == pytest.approx([0.0, 0.25, 0.0, 1.0, 0.6])


def test_order_is_confidence_then_entropy_then_name():
    answers, dis = fit_hand_example()
    # confidence .5: t1 has the highest entropy, then t0 and t2 are equal and go by name
    assert [answers.task_names[t] for t in dis.order_] == ["t1", "t0", "t2", "t4", "t3"]


def test_order_does_not_depend_on_input_order():
    rows = list(ROWS)
    random.Random(3).shuffle(rows)
    answers = encode(*columns(rows))
    dis = Disagreements().fit(answers, PROBAS, LABELS)  # codes follow names: same rows
    assert [answers.task_names[t] for t in dis.order_] == ["t1", "t0", "t2", "t4", "t3"]


def test_majority_vote_ties_and_gold_flags():
    answers, dis = fit_hand_example()
    # overall votes a 5, b 5, c 3: majority-vote ties go to a (equal counts -> name order),
    # so MV says a on t0 where the consensus says b
    assert dis.mv_label_.tolist() == [0, 0, 0, 2, 1]
    assert dis.mv_disagrees_.tolist() == [True, False, False, False, False]
    # ties from the posteriors: t0 and t2 have two classes at 0.5
    assert dis.tie_.tolist() == [True, False, True, False, False]
    assert dis.has_gold_.tolist() == [False, True, False, False, True]
    assert dis.contradicts_gold_.tolist() == [False, False, False, False, True]
    # given arrays take precedence
    _, dis = fit_hand_example(mv_labels=LABELS, ties=np.zeros(5, dtype=bool))
    assert not dis.mv_disagrees_.any() and not dis.tie_.any()


def test_rows_are_json_safe_and_list_only_given_votes():
    answers, dis = fit_hand_example()
    rows = list(dis.to_rows(limit=3))
    assert [r["task"] for r in rows] == ["t1", "t0", "t2"]
    assert [r["rank"] for r in rows] == [0, 1, 2]
    assert rows[0]["votes"] == {"a": 2, "b": 1}
    assert rows[0]["gold"] == "a" and rows[0]["contradicts_gold"] is False
    assert rows[1]["gold"] is None and rows[1]["contradicts_gold"] is None
    assert rows[1]["label"] == "b" and rows[1]["mv_label"] == "a" and rows[1]["mv_disagrees"] is True
    every = list(dis.to_rows())
    assert len(every) == 5 and every[-1]["votes"] == {"c": 3}
    json.dumps(every, allow_nan=False)
    assert list(dis.to_rows(limit=0)) == []


def test_one_class_is_certain_and_finite():
    answers = encode(["t1", "t1", "t2"], ["a", "b", "a"], ["x", "x", "x"])
    mv = MajorityVote().fit(answers)
    dis = Disagreements().fit(answers, mv.probas_, mv.labels_)
    assert dis.confidence_.tolist() == [1.0, 1.0]
    assert dis.entropy_.tolist() == [0.0, 0.0]
    assert dis.margin_.tolist() == [1.0, 1.0]
    assert not dis.tie_.any()


def test_uniform_posterior_has_entropy_log_k_and_zero_margin():
    answers = encode(["t"] * 4, ["a", "b", "c", "d"], ["w", "x", "y", "z"])
    mv = MajorityVote().fit(answers)
    dis = Disagreements().fit(answers, mv.probas_, mv.labels_)
    assert dis.entropy_[0] == pytest.approx(math.log(4))
    assert dis.margin_[0] == 0.0 and dis.tie_[0]


def test_validation():
    answers = encode(*columns(ROWS))
    with pytest.raises(ValueError, match="sum to one"):
        Disagreements().fit(answers, PROBAS * 2, LABELS)
    with pytest.raises(ValueError, match="codes"):
        Disagreements().fit(answers, PROBAS, LABELS, mv_labels=LABELS + 3)
    with pytest.raises(ValueError, match="one value per task"):
        Disagreements().fit(answers, PROBAS, LABELS, ties=[True])


def test_bluebirds_against_a_plain_loop():
    with open(DATASETS / "bluebirds" / "answers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(DATASETS / "bluebirds" / "gold.csv", newline="") as f:
        truth = {r["task"]: r["label"] for r in csv.DictReader(f)}
    answers = encode([r["task"] for r in rows], [r["worker"] for r in rows], [r["label"] for r in rows])
    gold, _ = encode_gold(answers, list(truth), list(truth.values()))
    mv = MajorityVote().fit(answers)
    dis = Disagreements().fit(answers, mv.probas_, mv.labels_, gold=gold)

    votes = {}
    for r in rows:
        votes.setdefault(r["task"], {}).setdefault(r["label"], 0)
        votes[r["task"]][r["label"]] += 1
    by_task = {row["task"]: row for row in dis.to_rows()}
    contradictions = 0
    for task, counts in votes.items():
        n = sum(counts.values())
        row = by_task[task]
        assert row["votes"] == counts
        assert row["confidence"] == pytest.approx(counts[row["label"]] / n)
        assert row["entropy"] == pytest.approx(-sum(c / n * math.log(c / n) for c in counts.values()))
        contradictions += row["label"] != truth[task]
        assert row["contradicts_gold"] == (row["label"] != truth[task])
    assert int(dis.contradicts_gold_.sum()) == contradictions
    confidences = [by_task[answers.task_names[t]]["confidence"] for t in dis.order_]
    assert confidences == sorted(confidences)
