import csv
import json
from itertools import combinations

import numpy as np
import pytest

from aggregation import MajorityVote, WorkerReliability, encode, encode_gold, wilson_interval
from aggregation import reliability
from aggregation.reliability import spammer_scores

from cases import DATASETS, columns, load_case

Z = 1.959963984540054


def tiny():
    """Four workers, classes x/y, hand-made posteriors.

    t1: a x, b x, c y      P = [0.8, 0.2]  label x  gold x
    t2: a y, b y, c x      P = [0.1, 0.9]  label y  gold x
    t3: a x, c x           P = [1.0, 0.0]  label x  no gold
    t4: b y                P = [0.3, 0.7]  label y  gold y   (only b)
    t5: d x                P = [0.6, 0.4]  label x  no gold  (d answers nothing shared)
    """
    rows = [
        ("t1", "a", "x"), ("t1", "b", "x"), ("t1", "c", "y"),
        ("t2", "a", "y"), ("t2", "b", "y"), ("t2", "c", "x"),
        ("t3", "a", "x"), ("t3", "c", "x"),
        ("t4", "b", "y"),
        ("t5", "d", "x"),
    ]  # fmt: skip
    answers = encode(*columns(rows))
    probas = np.array([[0.8, 0.2], [0.1, 0.9], [1.0, 0.0], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 1, 0, 1, 0])
    gold = np.array([0, 0, -1, 1, -1])
    return answers, probas, labels, gold


def reference_confusion(answers, probas):
    """Slow, obvious posterior-weighted confusion: a loop over answers."""
    W, K = answers.n_workers, answers.n_classes
    counts = np.zeros((W, K, K))
    for t, w, l in zip(answers.task, answers.worker, answers.label):
        for c in range(K):
            counts[w, c, l] += probas[t, c]
    return counts


def reference_spammer(rows):
    """Raykar & Yu's definition as written: 1/(K(K-1)) sum over pairs of rows."""
    K = len(rows)
    return sum(np.sum((rows[c] - rows[d]) ** 2) for c, d in combinations(range(K), 2)) / (K * (K - 1))


def assert_finite_outputs(rel):
    for name in ("accuracy_", "agreement_", "spammer_score_", "gold_accuracy_", "gold_ci_low_", "gold_ci_high_"):
        value = getattr(rel, name)
        assert np.all(np.isfinite(value.data)), name
    if rel.confusion_ is not None:
        assert np.all(np.isfinite(rel.confusion_))


def test_hand_computed_figures_on_a_tiny_example():
    answers, probas, labels, gold = tiny()
    rel = WorkerReliability().fit(answers, probas, labels, gold)
    assert list(answers.worker_names) == ["a", "b", "c", "d"]
    assert rel.n_answers_.tolist() == [3, 3, 3, 1]
    assert rel.n_shared_.tolist() == [3, 2, 3, 0]
    assert rel.estimable_.tolist() == [True, True, True, False]
    # a: posteriors of its answers .8 + .9 + 1.0 = 2.7 over 3; b: .8 + .9 + .7; c: .2 + .1 + 1.0
    assert np.allclose(rel.accuracy_.data[:3], [0.9, 0.8, 1.3 / 3])
    # agreement with labels x y x / x y y / (y x x vs x y x)
    assert np.allclose(rel.agreement_.data[:3], [1.0, 1.0, 1 / 3])
    assert rel.accuracy_.mask.tolist() == [False, False, False, True]
    assert rel.agreement_.mask[3]
    # gold: a right on t1, wrong on t2; b right t1, t4, wrong t2; c wrong t1, right t2
    assert rel.gold_n_.tolist() == [2, 3, 2, 0]
    assert rel.gold_correct_.tolist() == [1, 2, 1, 0]
    assert np.allclose(rel.gold_accuracy_.data[:3], [0.5, 2 / 3, 0.5])
    assert rel.gold_accuracy_.mask.tolist() == [False, False, False, True]
    # Wilson bounds are the roots of (n + z^2) p^2 - (2x + z^2) p + x^2 / n = 0, i.e. of
    # (x/n - p)^2 = z^2 p (1 - p) / n; numpy.roots gave 1/2 -> [0.09453121, 0.90546879]
    # and 2/3 -> [0.2076596, 0.93850806].
    assert rel.gold_ci_low_.data[0] == pytest.approx(0.09453121, abs=1e-6)
    assert rel.gold_ci_high_.data[0] == pytest.approx(0.90546879, abs=1e-6)
    assert rel.gold_ci_low_.data[1] == pytest.approx(0.2076596, abs=1e-6)
    assert rel.gold_ci_high_.data[1] == pytest.approx(0.93850806, abs=1e-6)
    # confusion of a: true x mass .8 + .1 + 1.0 = 1.9 (given x: .8 + 1.0, given y: .1);
    # true y mass .2 + .9 = 1.1 (given x: .2, given y: .9)
    assert np.allclose(rel.confusion_[0], [[1.8 / 1.9, 0.1 / 1.9], [0.2 / 1.1, 0.9 / 1.1]])
    # binary: (sensitivity + specificity - 1)^2 = (0.9/1.1 + 1.8/1.9 - 1)^2
    assert rel.spammer_score_.data[0] == pytest.approx((0.9 / 1.1 + 1.8 / 1.9 - 1) ** 2, abs=1e-12)
    assert rel.spammer_score_.mask.tolist() == [False, False, False, True]
    assert rel.flags_["not_estimable"].tolist() == [False, False, False, True]
    assert_finite_outputs(rel)


def test_confusion_and_spammer_score_match_a_slow_reference():
    answers, probas, labels, gold = tiny()
    rel = WorkerReliability().fit(answers, probas, labels, gold)
    counts = reference_confusion(answers, probas)
    for w in range(3):
        rows = counts[w] / counts[w].sum(axis=1, keepdims=True)
        assert np.allclose(rel.confusion_[w], rows)
        assert rel.spammer_score_.data[w] == pytest.approx(reference_spammer(rows), abs=1e-12)
    # d is not estimable: no row of its matrix is known, and nothing is made up
    assert not rel.confusion_known_[3].any()
    assert not rel.confusion_[3].any()


def test_wilson_interval_formula():
    # closed form: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n); 0 of 10 gives
    # [0, z^2/n / (1 + z^2/n)] = [0, 0.3841459/1.3841459] = [0, 0.2775328]
    low, high = wilson_interval([0, 1, 0, 5], [10, 2, 0, 5])
    assert low[0] == 0.0 and high[0] == pytest.approx(0.2775328, abs=1e-6)
    assert (low[1], high[1]) == pytest.approx((0.09453121, 0.90546879), abs=1e-6)
    assert (low[2], high[2]) == (0.0, 1.0)  # no trials: the whole range, no 0/0
    # 5 of 5: upper 1, lower n / (n + z^2) = 5 / 8.8414588 = 0.5655175
    assert low[3] == pytest.approx(5 / (5 + Z * Z), abs=1e-9) and high[3] == pytest.approx(1.0)


def one_hot_answers(pairs, classes=None):
    """Answers where every task's true class is known (posterior one-hot).

    ``pairs``: (true class, given label) for worker "w"; a second worker "ref" always
    answers the truth so that every task is shared.
    """
    tasks, workers, labels, truth = [], [], [], {}
    for i, (true, given) in enumerate(pairs):
        task = f"t{i:03d}"
        tasks += [task, task]
        workers += ["w", "ref"]
        labels += [given, true]
        truth[task] = true
    answers = encode(tasks, workers, labels, classes=classes)
    true_codes = answers.class_index([truth[name] for name in answers.task_names])
    probas = np.eye(answers.n_classes)[true_codes]
    return answers, probas, true_codes.astype(np.int64)


def test_spammer_score_perfect_random_constant_and_binary_workers():
    # perfect worker over three classes: rows e_c, every pair at squared distance 2 -> 1
    answers, probas, labels = one_hot_answers([(c, c) for c in "abc" * 3])
    rel = WorkerReliability().fit(answers, probas, labels)
    w = list(answers.worker_names).index("w")
    assert rel.spammer_score_.data[w] == pytest.approx(1.0)
    # random clicker: half x, half y whatever the truth -> identical rows -> 0
    answers, probas, labels = one_hot_answers([("x", "x"), ("x", "y"), ("y", "x"), ("y", "y")] * 3)
    rel = WorkerReliability().fit(answers, probas, labels)
    assert rel.spammer_score_.data[list(answers.worker_names).index("w")] == pytest.approx(0.0, abs=1e-12)
    # constant clicker: always x -> rows [1, 0] twice -> 0
    answers, probas, labels = one_hot_answers([("x", "x"), ("y", "x")] * 6)
    rel = WorkerReliability().fit(answers, probas, labels)
    assert rel.spammer_score_.data[list(answers.worker_names).index("w")] == pytest.approx(0.0, abs=1e-12)
    # binary: sensitivity 3/4 (true y), specificity 2/3 (true x) -> (3/4 + 2/3 - 1)^2 = (5/12)^2
    pairs = [("y", "y")] * 3 + [("y", "x")] + [("x", "x")] * 2 + [("x", "y")]
    answers, probas, labels = one_hot_answers(pairs)
    rel = WorkerReliability().fit(answers, probas, labels)
    w = list(answers.worker_names).index("w")
    assert rel.spammer_score_.data[w] == pytest.approx((5 / 12) ** 2, abs=1e-12)
    assert np.allclose(rel.confusion_[w], [[2 / 3, 1 / 3], [1 / 4, 3 / 4]])


def test_spammer_scores_of_given_matrices():
    known = np.ones((3, 3), dtype=bool)
    # one-coin worker right with p = 0.7, errors spread evenly: ((K p - 1) / (K - 1))^2 = 0.55^2
    one_coin = np.full((3, 3), 0.15) + np.eye(3) * 0.55
    identical = np.tile([0.2, 0.5, 0.3], (3, 1))
    adversarial = np.roll(np.eye(3), 1, axis=1)  # always a wrong, but informative, label
    score, defined = spammer_scores(np.stack([one_coin, identical, adversarial]), known)
    assert defined.all()
    assert score == pytest.approx([0.3025, 0.0, 1.0])
    # with one row unknown, the score is over the two known rows, as for K = 2
    binary = np.array([[0.7, 0.3, 0.0], [0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
    score, defined = spammer_scores(binary[None], np.array([[True, True, False]]))
    assert score[0] == pytest.approx((0.7 + 0.8 - 1) ** 2)
    # a single known row cannot separate classes: undefined, not 0 or 1
    score, defined = spammer_scores(binary[None], np.array([[True, False, False]]))
    assert not defined[0] and score[0] == 0.0


def test_model_confusion_is_used_when_given():
    answers, probas, labels, gold = tiny()
    model = np.tile(np.array([[0.7, 0.3], [0.2, 0.8]]), (4, 1, 1))
    rel = WorkerReliability().fit(answers, probas, labels, gold, confusion=model)
    assert rel.spammer_score_.data[:3] == pytest.approx([0.25] * 3)  # (0.7 + 0.8 - 1)^2
    assert rel.spammer_score_.mask[3]  # d: the model's numbers for d measure nothing
    assert np.allclose(rel.confusion_[0], model[0])
    assert not rel.confusion_known_[3].any()
    with pytest.raises(ValueError, match="shape"):
        WorkerReliability().fit(answers, probas, labels, confusion=model[:2])
    with pytest.raises(ValueError, match="sum to one"):
        WorkerReliability().fit(answers, probas, labels, confusion=model * 2)


def test_single_worker_is_not_estimable_rather_than_perfect():
    case = load_case("single-worker-only")
    answers = encode(*columns(case["answers"]))
    mv = MajorityVote().fit(answers)
    rel = WorkerReliability().fit(answers, mv.probas_, mv.labels_)
    (row,) = list(rel.to_rows())
    assert row["worker"] == "w1" and row["n_answers"] == 4
    assert row["accuracy"] is None and row["agreement"] is None and row["spammer_score"] is None
    assert row["gold_accuracy"] is None and row["estimable"] is False
    assert row["flags"] == ["not_estimable"]
    assert row["confusion"] == {}
    json.dumps(row, allow_nan=False)
    assert_finite_outputs(rel)


def test_gold_makes_an_isolated_worker_measurable():
    case = load_case("single-worker-only")
    answers = encode(*columns(case["answers"]))
    mv = MajorityVote().fit(answers)
    gold, _ = encode_gold(answers, ["t1", "t2"], ["cat", "cat"])
    rel = WorkerReliability().fit(answers, mv.probas_, mv.labels_, gold)
    (row,) = list(rel.to_rows())
    assert row["gold_n"] == 2 and row["gold_correct"] == 1 and row["gold_accuracy"] == 0.5
    assert "not_estimable" not in row["flags"]
    assert row["accuracy"] is None  # still no other worker to compare with


def test_unused_declared_class_leaves_its_row_unknown():
    pairs = [("y", "y")] * 3 + [("y", "x")] + [("x", "x")] * 2 + [("x", "y")]
    answers, probas, labels = one_hot_answers(pairs, classes=["x", "y", "z"])
    assert list(answers.classes) == ["x", "y", "z"]
    rel = WorkerReliability().fit(answers, probas, labels)
    w = list(answers.worker_names).index("w")
    assert rel.confusion_known_[w].tolist() == [True, True, False]
    assert rel.spammer_score_.data[w] == pytest.approx((5 / 12) ** 2)  # as without z
    row = list(rel.to_rows())[w]
    assert set(row["confusion"]) == {"x", "y"}
    assert row["confusion"]["x"] == pytest.approx({"x": 2 / 3, "y": 1 / 3, "z": 0.0})
    assert_finite_outputs(rel)


def test_dense_confusion_is_skipped_above_the_cell_limit():
    answers, probas, labels, gold = tiny()
    full = WorkerReliability().fit(answers, probas, labels, gold)
    small = WorkerReliability(max_confusion_cells=15).fit(answers, probas, labels, gold)  # 4*2*2 = 16
    assert small.confusion_ is None and small.confusion_known_ is None
    assert "16 cells" in small.confusion_note_
    assert full.confusion_note_ is None
    assert np.array_equal(small.spammer_score_.mask, full.spammer_score_.mask)
    assert small.spammer_score_.data == pytest.approx(full.spammer_score_.data, abs=1e-12)
    assert all(row["confusion"] is None for row in small.to_rows())


def test_many_classes_do_not_build_dense_matrices():
    case = load_case("many-classes-dense-confusion")
    answers = encode(*columns(case["answers"]))
    assert answers.n_classes == 3000
    # both answers of task t<i> are c<i>: the consensus is certain (built directly, as
    # majority vote over 3000 classes is not what this test is about)
    labels = answers.class_index(["c" + name[1:] for name in answers.task_names]).astype(np.int64)
    probas = np.zeros((answers.n_tasks, answers.n_classes))
    probas[np.arange(answers.n_tasks), labels] = 1.0
    rel = WorkerReliability().fit(answers, probas, labels)
    assert rel.confusion_ is None and rel.confusion_note_
    # everybody agrees with the other answer on every task: perfect workers
    assert rel.spammer_score_.data == pytest.approx(np.ones(answers.n_workers))
    assert rel.accuracy_.data == pytest.approx(np.ones(answers.n_workers))


def test_flags_follow_their_thresholds():
    # "bad" is wrong on all 12 gold tasks and always says x; "ok" is always right.
    tasks, workers, labels = [], [], []
    for i in range(12):
        truth = "xy"[i % 2]
        for worker, label in (("ok", truth), ("ok2", truth), ("bad", "x" if truth == "y" else "y")):
            tasks.append(f"t{i:02d}")
            workers.append(worker)
            labels.append(label)
    tasks.append("solo")
    workers.append("lone")
    labels.append("x")
    answers = encode(tasks, workers, labels)
    mv = MajorityVote().fit(answers)
    gold = mv.labels_.copy()
    gold[list(answers.task_names).index("solo")] = -1
    rel = WorkerReliability().fit(answers, mv.probas_, mv.labels_, gold)
    flagged = {name: {answers.worker_names[w] for w in np.flatnonzero(f)} for name, f in rel.flags_.items()}
    # bad: 0 of 12, Wilson upper = z^2/12 / (1 + z^2/12) = 0.2425 < 0.6; agreement 0 < 0.5
    assert flagged["low_gold_accuracy"] == {"bad"}
    assert flagged["low_agreement"] == {"bad"}
    # bad always contradicts the truth: informative (score 1), not a spammer
    assert flagged["suspected_spammer"] == set()
    assert flagged["not_estimable"] == {"lone"}
    # below min_answers no agreement flag; one wrong gold answer is no evidence
    rel = WorkerReliability(min_answers=13).fit(answers, mv.probas_, mv.labels_, gold)
    assert not rel.flags_["low_agreement"].any()
    lo, hi = wilson_interval(0, 1)
    assert hi == pytest.approx(0.79345069, abs=1e-6)  # > 0.6: not flagged on one answer


def test_duplicate_votes_count_as_answers_not_tasks():
    tasks = ["t1", "t1", "t1", "t2", "t2"]
    answers = encode(tasks, ["a", "a", "b", "c", "c"], ["x", "y", "x", "x", "y"], duplicates="all")
    mv = MajorityVote().fit(answers)
    rel = WorkerReliability().fit(answers, mv.probas_, mv.labels_)
    assert rel.n_answers_.tolist() == [2, 1, 2] and rel.n_tasks_.tolist() == [1, 1, 1]
    # c answered t2 twice and nobody else did: two answers, still nobody to compare with
    assert rel.n_shared_.tolist() == [2, 1, 0]
    assert rel.flags_["not_estimable"].tolist() == [False, False, True]


def test_input_validation():
    answers, probas, labels, gold = tiny()
    with pytest.raises(ValueError, match="shape"):
        WorkerReliability().fit(answers, probas[:3], labels)
    with pytest.raises(ValueError, match="sum to one"):
        WorkerReliability().fit(answers, probas * 2, labels)
    bad = probas.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        WorkerReliability().fit(answers, bad, labels)
    with pytest.raises(ValueError, match="codes"):
        WorkerReliability().fit(answers, probas, labels + 5)
    with pytest.raises(ValueError, match="codes"):
        WorkerReliability().fit(answers, probas, labels, gold=gold - 5)
    with pytest.raises(TypeError):
        WorkerReliability().fit([("t", "w", "x")], probas, labels)


def load_dataset(name):
    with open(DATASETS / name / "answers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(DATASETS / name / "gold.csv", newline="") as f:
        gold_rows = list(csv.DictReader(f))
    return rows, gold_rows


@pytest.mark.parametrize("count_path", ["per-class bincount", "sparse product"])
def test_bluebirds_gold_accuracy_matches_a_plain_loop(count_path, monkeypatch):
    if count_path == "sparse product":
        monkeypatch.setattr(reliability, "_DENSE_COUNT_CLASSES", 0)
    rows, gold_rows = load_dataset("bluebirds")
    answers = encode([r["task"] for r in rows], [r["worker"] for r in rows], [r["label"] for r in rows])
    gold, _ = encode_gold(answers, [r["task"] for r in gold_rows], [r["label"] for r in gold_rows])
    mv = MajorityVote().fit(answers)
    rel = WorkerReliability().fit(answers, mv.probas_, mv.labels_, gold)

    truth = {r["task"]: r["label"] for r in gold_rows}
    right, seen, agree = {}, {}, {}
    votes = {}
    for r in rows:
        votes.setdefault(r["task"], []).append(r["label"])
    for r in rows:
        w = r["worker"]
        seen[w] = seen.get(w, 0) + 1
        right[w] = right.get(w, 0) + (r["label"] == truth[r["task"]])
        task_votes = votes[r["task"]]
        agree[w] = agree.get(w, 0) + task_votes.count(r["label"]) / len(task_votes)
    by_name = {row["worker"]: row for row in rel.to_rows()}
    assert set(by_name) == set(seen)
    for w in seen:
        assert by_name[w]["gold_n"] == seen[w]
        assert by_name[w]["gold_correct"] == right[w]
        assert by_name[w]["gold_accuracy"] == pytest.approx(right[w] / seen[w], abs=1e-12)
        # with majority-vote shares as posteriors, accuracy_ is the mean vote share of the answer
        assert by_name[w]["accuracy"] == pytest.approx(agree[w] / seen[w], abs=1e-12)
    # and the sparse spammer scores equal the dense reference, worker by worker
    counts = reference_confusion(answers, mv.probas_)
    for w in range(answers.n_workers):
        rows_w = counts[w] / counts[w].sum(axis=1, keepdims=True)
        assert rel.spammer_score_.data[w] == pytest.approx(reference_spammer(rows_w), abs=1e-12)
    json.dumps(list(rel.to_rows()), allow_nan=False)
    assert_finite_outputs(rel)


def test_class_a_worker_never_met_leaves_that_row_unknown():
    case = load_case("ds-unseen-class-zero-confusion")
    answers = encode(*columns(case["answers"]))
    mv = MajorityVote().fit(answers)
    rel = WorkerReliability().fit(answers, mv.probas_, mv.labels_)
    w2 = list(answers.worker_names).index("w2")
    # w2 answered t1..t6 only, none of which can be c: rows a and b known, row c unknown
    assert rel.confusion_known_[w2].tolist() == [True, True, False]
    assert not rel.confusion_[w2, 2].any()
    counts = reference_confusion(answers, mv.probas_)[w2, :2]
    rows = counts / counts.sum(axis=1, keepdims=True)
    assert rel.spammer_score_.data[w2] == pytest.approx(reference_spammer(rows), abs=1e-12)
    row = list(rel.to_rows())[w2]
    assert set(row["confusion"]) == {"a", "b"}
    json.dumps(list(rel.to_rows()), allow_nan=False)
    assert_finite_outputs(rel)
