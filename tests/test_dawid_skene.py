import math
import tracemalloc
from collections import defaultdict
from fractions import Fraction

import numpy as np
import pytest

from aggregation import AnswersError, DawidSkene, encode

from cases import columns, load_case


def consensus(model, answers):
    return {answers.task_names[t]: answers.classes[k] for t, k in enumerate(model.labels_)}


def assert_sane(model, answers):
    p = model.probas_
    assert p.shape == (answers.n_tasks, answers.n_classes)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1)
    assert np.all(np.isfinite(model.confusion_)) and np.allclose(model.confusion_.sum(axis=2), 1)
    assert np.all(np.isfinite(model.priors_)) and math.isclose(model.priors_.sum(), 1)
    assert all(math.isfinite(v) for v in model.log_likelihood_)


def test_one_em_step_by_hand():
    # t1: w1 a, w2 a; t2: w1 a, w2 b; t3: w1 b, w2 b. No smoothing, one iteration.
    # Majority-vote start: t1 [1, 0], t2 [.5, .5], t3 [0, 1]; priors [.5, .5].
    # Soft counts (true class x given label):
    #   w1: true a -> a 1.5, b 0 (clipped to 1e-10); true b -> a .5, b 1
    #       confusion w1 = [[1, ~6.7e-11], [1/3, 2/3]]
    #   w2: true a -> a 1, b .5; true b -> a 0 (clipped), b 1.5
    #       confusion w2 = [[2/3, 1/3], [~6.7e-11, 1]]
    # E-step: t1 a: .5*1*2/3 = 1/3, b: .5*(1/3)*6.7e-11 ~ 0  -> [1, 0]
    #         t2 a: .5*1*1/3 = 1/6, b: .5*(1/3)*1 = 1/6      -> [.5, .5], a tie
    #         t3 -> [0, 1] by symmetry.  Log-likelihood = 3 log(1/3) (+1e-10 terms).
    # The M-step on these posteriors reproduces the same confusion and priors.
    a = encode(["t1", "t1", "t2", "t2", "t3", "t3"], ["w1", "w2"] * 3, ["a", "a", "a", "b", "b", "b"])
    ds = DawidSkene(max_iter=1, tol=0, smoothing=0, prior_smoothing=0).fit(a)
    assert np.allclose(ds.probas_, [[1, 0], [0.5, 0.5], [0, 1]], atol=1e-9)
    assert np.allclose(ds.confusion_[0], [[1, 0], [1 / 3, 2 / 3]], atol=1e-9)
    assert np.allclose(ds.confusion_[1], [[2 / 3, 1 / 3], [0, 1]], atol=1e-9)
    assert ds.confusion_.min() > 0  # the clip, not a hard zero
    assert np.allclose(ds.priors_, [0.5, 0.5])
    assert ds.log_likelihood_ == pytest.approx([3 * math.log(1 / 3)], abs=1e-8)
    assert ds.n_iter_ == 1 and not ds.converged_
    assert ds.ties_.tolist() == [False, True, False]


def test_one_em_step_by_hand_with_smoothing_moves_the_posteriors():
    # t1: w1 a, w2 a; t2: w1 a, w2 b.  Add-one smoothing (confusion and priors), one iteration.
    # Start (majority vote): t1 [1, 0], t2 [1/2, 1/2]; class mass a 3/2, b 1/2
    #   priors = (mass + 1) / (2 tasks + 2) = [5/8, 3/8]
    # M-step (soft counts + 1, rows normalised over the given label):
    #   w1 true a: given a 1 + 1/2 + 1 = 5/2, given b 0 + 1 = 1      -> [5/7, 2/7]
    #      true b: given a 1/2 + 1 = 3/2, given b 1                  -> [3/5, 2/5]
    #   w2 true a: given a 1 + 1 = 2, given b 1/2 + 1 = 3/2          -> [4/7, 3/7]
    #      true b: given a 0 (clipped to 1e-10) + 1, given b 3/2     -> [2/5, 3/5]
    # E-step: t1 a: 5/8 * 5/7 * 4/7 = 25/98, b: 3/8 * 3/5 * 2/5 = 9/100
    #           -> a = 2500/3382 = 1250/1691, b = 441/1691
    #         t2 a: 5/8 * 5/7 * 3/7 = 75/392, b: 3/8 * 3/5 * 3/5 = 27/200
    #           -> a = 1875/3198 = 625/1066, b = 441/1066
    #   log-likelihood = log(25/98 + 9/100) + log(75/392 + 27/200) = log(3382/9800) + log(3198/9800)
    # Then the M-step on those posteriors gives the reported priors and confusion:
    #   priors = (mass + 1) / 4; w1 true c: given a = p1c + p2c + 1, given b = 1;
    #   w2 true c: given a = p1c + 1, given b = p2c + 1 (c in a, b; the clip is 1e-10 only)
    a1, b1 = Fraction(1250, 1691), Fraction(441, 1691)
    a2, b2 = Fraction(625, 1066), Fraction(441, 1066)
    answers = encode(["t1", "t1", "t2", "t2"], ["w1", "w2", "w1", "w2"], ["a", "a", "a", "b"])
    ds = DawidSkene(max_iter=1, tol=0, smoothing=1, prior_smoothing=1).fit(answers)
    assert np.allclose(ds.probas_, [[float(a1), float(b1)], [float(a2), float(b2)]], atol=1e-9)
    assert ds.log_likelihood_ == pytest.approx([math.log(3382 / 9800) + math.log(3198 / 9800)], abs=1e-9)
    assert np.allclose(ds.priors_, [float((a1 + a2 + 1) / 4), float((b1 + b2 + 1) / 4)], atol=1e-12)

    def row(given_a, given_b):
        return [float(given_a / (given_a + given_b)), float(given_b / (given_a + given_b))]

    assert np.allclose(ds.confusion_[0], [row(a1 + a2 + 1, 1), row(b1 + b2 + 1, 1)], atol=1e-9)
    assert np.allclose(ds.confusion_[1], [row(a1 + 1, a2 + 1), row(b1 + 1, b2 + 1)], atol=1e-9)
    assert ds.labels_.tolist() == [0, 0] and not ds.ties_.any()


def reference_ds(triples, classes, n_iter, smoothing, prior_smoothing, gold=None):
    """Plain-Python Dawid-Skene, one answer at a time, for cross-checking."""
    gold = gold or {}
    tasks = sorted({t for t, _, _ in triples})
    workers = sorted({w for _, w, _ in triples})
    used = {(w, l) for _, w, l in triples}
    post = {}
    for t in tasks:
        votes = [l for tt, _, l in triples if tt == t]
        post[t] = {c: votes.count(c) / len(votes) for c in classes}
        if t in gold:
            post[t] = {c: float(c == gold[t]) for c in classes}

    def m_step(post):
        priors = {c: (sum(post[t][c] for t in tasks) + prior_smoothing) / (len(tasks) + prior_smoothing * len(classes)) for c in classes}
        conf = {}
        for w in workers:
            counts = defaultdict(float)
            for t, ww, l in triples:
                if ww == w:
                    for c in classes:
                        counts[c, l] += post[t][c]
            for c in classes:
                cells = {}
                for l in classes:
                    x = counts[c, l]
                    if (w, l) in used:
                        x = max(x, 1e-10)
                    cells[l] = x + smoothing
                total = sum(cells.values())
                for l in classes:
                    conf[w, c, l] = cells[l] / total
        return priors, conf

    priors, conf = m_step(post)
    lls = []
    for _ in range(n_iter):
        ll = 0.0
        new = {}
        for t in tasks:
            like = {c: max(priors[c], 1e-10) for c in classes}
            for tt, w, l in triples:
                if tt == t:
                    for c in classes:
                        like[c] *= conf[w, c, l]
            z = sum(like.values())
            new[t] = {c: like[c] / z for c in classes}
            if t in gold:
                ll += math.log(like[gold[t]])
                new[t] = {c: float(c == gold[t]) for c in classes}
            else:
                ll += math.log(z)
        post = new
        priors, conf = m_step(post)
        lls.append(ll)
    return tasks, workers, post, priors, conf, lls


def test_matches_plain_python_reference_with_smoothing_gold_and_duplicates():
    rng = np.random.default_rng(7)
    classes = ["x", "y", "z"]
    triples = []
    for t in range(12):
        for w in rng.choice(5, size=rng.integers(1, 5), replace=False):
            triples.append((f"t{t:02d}", f"w{w}", classes[rng.integers(0, 3)]))
    triples.append(triples[0])  # a repeated answer, counted twice under "all"
    gold = {"t03": "z", "t07": "x"}
    a = encode(*columns(triples), duplicates="all")
    tasks, workers, post, priors, conf, lls = reference_ds(triples, classes, 4, 0.3, 0.2, gold)
    g = np.full(a.n_tasks, -1)
    g[[tasks.index(t) for t in gold]] = [classes.index(c) for c in gold.values()]
    ds = DawidSkene(max_iter=4, tol=0, smoothing=0.3, prior_smoothing=0.2).fit(a, gold=g)
    want_post = np.array([[post[t][c] for c in classes] for t in tasks])
    want_conf = np.array([[[conf[w, c, l] for l in classes] for c in classes] for w in workers])
    assert np.allclose(ds.probas_, want_post, atol=1e-12)
    assert np.allclose(ds.confusion_, want_conf, atol=1e-12)
    assert np.allclose(ds.priors_, [priors[c] for c in classes], atol=1e-12)
    assert np.allclose(ds.log_likelihood_, lls, atol=1e-9)


def test_unseen_class_zero_confusion_case():
    case = load_case("ds-unseen-class-zero-confusion")
    a = encode(*columns(case["answers"]))
    c = list(a.classes).index("c")
    t78 = [list(a.task_names).index("t7"), list(a.task_names).index("t8")]
    light = DawidSkene().fit(a)
    assert consensus(light, a) == case["expected"]["dawid_skene"]
    assert_sane(light, a)
    assert np.all(light.probas_[t78, c] > 0.99)  # "about 1.0 with light smoothing"
    add_one = DawidSkene(smoothing=1.0, prior_smoothing=1.0).fit(a)
    assert consensus(add_one, a) == case["expected"]["dawid_skene"]
    assert_sane(add_one, a)
    assert np.allclose(add_one.probas_[t78, c], 0.48, atol=0.01)  # "about 0.48 with add-one"
    # unsmoothed: w2 never met class c; the row must still be a distribution, not 0/0
    raw = DawidSkene(smoothing=0, prior_smoothing=0).fit(a)
    assert_sane(raw, a)
    assert consensus(raw, a) == case["expected"]["dawid_skene"]


def test_single_worker_gets_own_labels_not_half():
    case = load_case("single-worker-only")
    a = encode(*columns(case["answers"]))
    for ds in (DawidSkene().fit(a), DawidSkene(smoothing=0, prior_smoothing=0).fit(a)):
        assert consensus(ds, a) == case["expected"]["majority_vote"]
        assert ds.probas_.max(axis=1).min() > 0.9
        assert_sane(ds, a)


def test_many_classes_refused_fast_with_clear_message():
    case = load_case("many-classes-dense-confusion")
    a = encode(*columns(case["answers"]))
    tracemalloc.start()
    with pytest.raises(ValueError) as err:
        DawidSkene().fit(a)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # refused before building anything sized by the answers or by K x K
    assert peak < 1_000_000, peak
    msg = str(err.value)
    assert "3000 classes" in msg and "50 workers" in msg and "one_coin_dawid_skene" in msg


def test_max_confusion_cells_is_the_limit():
    a = encode(["t1", "t1"], ["w1", "w2"], ["a", "b"])  # 2 workers x 2 x 2 = 8 cells
    DawidSkene(max_confusion_cells=8).fit(a)
    with pytest.raises(ValueError):
        DawidSkene(max_confusion_cells=7).fit(a)


def test_ties_case_is_independent_of_input_and_class_order():
    case = load_case("majority-vote-ties")
    rows = case["answers"]
    base = encode(*columns(rows))
    want = DawidSkene().fit(base)
    rng = np.random.default_rng(3)
    for _ in range(5):
        perm = [rows[i] for i in rng.permutation(len(rows))]
        classes = list(rng.permutation(["bird", "cat", "dog"]))
        a = encode(*columns(perm), classes=classes)
        got = DawidSkene().fit(a)
        assert consensus(got, a) == consensus(want, base)
        order = [list(a.classes).index(c) for c in base.classes]
        assert np.allclose(got.probas_[:, order], want.probas_, atol=1e-12)
    assert consensus(want, base)["t2"] == "dog"


def test_integer_ids_and_labels_case():
    case = load_case("integer-ids-and-labels")
    want = {k: str(v) for k, v in case["expected"]["dawid_skene"].items()}
    a = encode(*columns(case["answers"]))
    s = encode(*columns([[str(x) for x in row] for row in case["answers"]]))
    assert consensus(DawidSkene().fit(a), a) == want
    assert consensus(DawidSkene().fit(s), s) == want


@pytest.mark.parametrize("policy", ["latest", "first"])
def test_duplicate_worker_answers_case(policy):
    case = load_case("duplicate-worker-answers")
    a = encode(*columns(case["answers"]), duplicates=policy)
    ds = DawidSkene().fit(a)
    assert consensus(ds, a)["t1"] == "ham"  # the invariant under every acceptable policy
    assert_sane(ds, a)


def test_empty_input_is_refused_by_encode():
    case = load_case("empty-input")
    with pytest.raises(AnswersError, match="at least one"):
        encode(*columns(case["answers"]))


def test_perfect_agreement_case_finite_and_symmetric():
    case = load_case("glad-perfect-agreement-divergence")
    a = encode(*columns(case["answers"]))
    ds = DawidSkene().fit(a)
    assert consensus(ds, a) == case["expected"]["glad"]
    assert_sane(ds, a)
    assert np.allclose(ds.confusion_[0], ds.confusion_[1]) and np.allclose(ds.confusion_[0], ds.confusion_[2])


def test_degenerate_inputs_stay_finite():
    one_class = encode(["t1", "t2", "t2"], ["w1", "w1", "w2"], ["a", "a", "a"])
    ds = DawidSkene(smoothing=0, prior_smoothing=0).fit(one_class)
    assert_sane(ds, one_class)
    assert ds.probas_.tolist() == [[1.0], [1.0]]
    unused = encode(["t1", "t1", "t2"], ["w1", "w2", "w1"], ["a", "b", "a"], classes=["a", "b", "never"])
    for smoothing in (0, 0.001):
        ds = DawidSkene(smoothing=smoothing, prior_smoothing=smoothing).fit(unused)
        assert_sane(ds, unused)
        # smoothing leaves it a sliver of mass, never the consensus
        assert ds.probas_[:, 2].max() < 0.01 and (ds.labels_ != 2).all()
    lone = encode(["t1", "t1", "t2", "t2", "t3"], ["w1", "w2", "w1", "w2", "w3"], ["a", "a", "b", "b", "b"])
    assert_sane(DawidSkene(smoothing=0, prior_smoothing=0).fit(lone), lone)


def test_tol_zero_runs_every_iteration_and_callback_sees_each():
    a = encode(*columns(load_case("ds-unseen-class-zero-confusion")["answers"]))
    seen = []
    ds = DawidSkene(max_iter=37, tol=0).fit(a, callback=lambda i, ll: seen.append((i, ll)))
    assert ds.n_iter_ == 37 and not ds.converged_
    assert [i for i, _ in seen] == list(range(1, 38))
    assert [ll for _, ll in seen] == ds.log_likelihood_


def test_bad_parameters_are_refused():
    a = encode(["t1"], ["w1"], ["a"])
    for kwargs in ({"max_iter": 0}, {"tol": -1}, {"smoothing": float("nan")}, {"prior_smoothing": -0.1}):
        with pytest.raises(ValueError):
            DawidSkene(**kwargs).fit(a)
    with pytest.raises(ValueError):
        DawidSkene().fit(a, gold=np.array([5]))
    with pytest.raises(ValueError):
        DawidSkene(init_confusion=np.ones((2, 1, 1))).fit(a)
    with pytest.raises(TypeError):
        DawidSkene().fit(a, callback=3)


def test_a_declared_class_nobody_gave_never_absorbs_tasks():
    # Found by tests/test_properties.py: t1 has one answer ("9" by w0), t2 one answer ("dog"
    # by w1).  With "never" declared but unused, default smoothing used to let EM move both
    # tasks into "never" at 0.998 (a spare latent class is free likelihood).  Nothing names
    # that class, so it gets 0, and each lone answer is its task's consensus.
    rows = [("t0", "w0", "dog"), ("t0", "w1", "9"), ("t1", "w0", "9"), ("t2", "w1", "dog")]
    a = encode(*columns(rows), classes=["9", "dog", "never"])
    for ds in (DawidSkene().fit(a), DawidSkene(smoothing=1, prior_smoothing=1).fit(a)):
        assert_sane(ds, a)
        assert ds.probas_[:, 2].tolist() == [0.0, 0.0, 0.0] and ds.priors_[2] == 0.0
        got = consensus(ds, a)
        assert (got["t1"], got["t2"]) == ("9", "dog")
    # a gold label does name it: then it is a class like any other
    gold = np.array([-1, 2, -1])
    ds = DawidSkene().fit(a, gold=gold)
    assert ds.labels_[1] == 2 and ds.priors_[2] > 0
