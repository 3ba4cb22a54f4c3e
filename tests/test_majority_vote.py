import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from aggregation import MajorityVote, Wawa, encode

from cases import columns, load_case


def consensus(model, answers):
    return {answers.task_names[t]: answers.classes[k] for t, k in enumerate(model.labels_)}


def test_vote_counts_shares_and_label_by_hand():
    a = encode(["t1", "t1", "t1", "t2"], ["w1", "w2", "w3", "w1"], ["x", "y", "x", "y"])
    mv = MajorityVote().fit(a)
    assert mv.counts_.tolist() == [[2, 1], [0, 1]]
    assert np.allclose(mv.probas_, [[2 / 3, 1 / 3], [0, 1]])
    assert consensus(mv, a) == {"t1": "x", "t2": "y"}
    assert not mv.ties_.any()


def test_ties_are_reported_and_broken_by_the_documented_rule():
    case = load_case("majority-vote-ties")
    a = encode(*columns(case["answers"]))
    mv = MajorityVote().fit(a)
    tied = {a.task_names[t] for t in np.flatnonzero(mv.ties_)}
    assert tied == set(case["expected"]["ties"])
    # overall counts: dog 6, cat 5, bird 1 -> every tie goes to dog, the empirical prior's mode
    assert consensus(mv, a) == {"t1": "dog", "t2": "dog", "t3": "dog", "t4": "dog"}
    for task, candidates in case["expected"]["ties"].items():
        assert consensus(mv, a)[task] in candidates


@settings(max_examples=30, deadline=None)
@given(st.randoms(use_true_random=False))
def test_tie_breaking_is_independent_of_input_order_and_declared_order(rnd):
    case = load_case("majority-vote-ties")
    rows = list(case["answers"])
    rnd.shuffle(rows)
    classes = ["bird", "cat", "dog"]
    rnd.shuffle(classes)
    a = encode(*columns(rows), classes=classes)
    assert consensus(MajorityVote().fit(a), a) == {"t1": "dog", "t2": "dog", "t3": "dog", "t4": "dog"}


def test_duplicate_case_under_each_policy():
    case = load_case("duplicate-worker-answers")
    for policy, key in [("latest", "policy_B_keep_last"), ("first", "policy_C_keep_first")]:
        a = encode(*columns(case["answers"]), duplicates=policy)
        assert consensus(MajorityVote().fit(a), a) == case["expected"][key]["majority_vote"]


def test_integer_case():
    case = load_case("integer-ids-and-labels")
    a = encode(*columns(case["answers"]))
    want = {k: str(v) for k, v in case["expected"]["majority_vote"].items()}
    assert consensus(MajorityVote().fit(a), a) == want


def test_single_worker_case():
    case = load_case("single-worker-only")
    a = encode(*columns(case["answers"]))
    assert consensus(MajorityVote().fit(a), a) == case["expected"]["majority_vote"]


def test_many_classes_case_is_fast_and_right():
    case = load_case("many-classes-dense-confusion")
    a = encode(*columns(case["answers"]))
    mv = MajorityVote().fit(a)
    got = consensus(mv, a)
    assert all(got[f"t{i}"] == f"c{i}" for i in range(3000))


def test_weighted_vote_by_hand():
    # t1: w1 says a (weight 3), w2 and w3 say b (weights 1 + 1) -> a wins 3 to 2
    a = encode(["t1"] * 3, ["w1", "w2", "w3"], ["a", "b", "b"])
    mv = MajorityVote(weights=np.array([3.0, 1.0, 1.0])).fit(a)
    assert consensus(mv, a) == {"t1": "a"}
    assert np.allclose(mv.probas_, [[0.6, 0.4]])
    with pytest.raises(ValueError, match="one value per worker"):
        MajorityVote(weights=[1.0]).fit(a)
    with pytest.raises(ValueError, match="finite and non-negative"):
        MajorityVote(weights=[1.0, -1.0, 1.0]).fit(a)


def test_wawa_by_hand():
    # MV: t1 -> a (2:1), t2 -> a (2:1), t3 -> b (2:1), t4: w1 a vs w3 b tie -> a (a is most common)
    rows = [
        ("t1", "w1", "a"), ("t1", "w2", "a"), ("t1", "w3", "b"),
        ("t2", "w1", "a"), ("t2", "w2", "a"), ("t2", "w3", "b"),
        ("t3", "w1", "b"), ("t3", "w2", "b"), ("t3", "w3", "a"),
        ("t4", "w1", "a"), ("t4", "w3", "b"),
    ]
    a = encode(*zip(*rows))
    w = Wawa().fit(a)
    # w1 agrees 4/4, w2 3/3, w3 0/4
    assert np.allclose(w.skills_, [1.0, 1.0, 0.0])
    assert consensus(w, a) == {"t1": "a", "t2": "a", "t3": "b", "t4": "a"}
    assert not w.ties_[3]  # the weighted vote separates w1 (1.0) from w3 (0.0)


answers = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=50
)


@settings(max_examples=60, deadline=None)
@given(answers)
def test_matches_plain_python_counting(rows):
    a = encode(*zip(*[(f"t{t}", f"w{w}", f"c{l}") for t, w, l in rows]), duplicates="all")
    mv = MajorityVote().fit(a)
    for t, name in enumerate(a.task_names):
        votes = {}
        for tt, _, l in rows:
            if f"t{tt}" == name:
                votes[f"c{l}"] = votes.get(f"c{l}", 0) + 1
        top = max(votes.values())
        winners = sorted(k for k, v in votes.items() if v == top)
        assert a.classes[mv.labels_[t]] in winners
        assert bool(mv.ties_[t]) == (len(winners) > 1)
        assert np.isclose(mv.probas_[t].sum(), 1.0)
