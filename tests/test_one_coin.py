import math
import tracemalloc

import numpy as np
import pytest

from aggregation import AnswersError, OneCoinDawidSkene, encode

from cases import columns, load_case


def consensus(model, answers):
    return {answers.task_names[t]: answers.classes[k] for t, k in enumerate(model.labels_)}


def assert_sane(model, answers):
    p = model.probas_
    assert p.shape == (answers.n_tasks, answers.n_classes)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1)
    assert np.all(np.isfinite(model.skills_)) and np.all((model.skills_ > 0) & (model.skills_ < 1))
    assert np.all(np.isfinite(model.priors_)) and math.isclose(model.priors_.sum(), 1)
    assert all(math.isfinite(v) for v in model.log_likelihood_)


def test_one_em_step_by_hand():
    # t1: w1 a, w2 a; t2: w1 a, w2 b; t3: w1 b, w2 b. No smoothing, one iteration.
    # Majority-vote start: t1 [1, 0], t2 [.5, .5], t3 [0, 1]; priors [.5, .5].
    # Skills = mean posterior of the label given: w1 (1 + .5 + 1) / 3 = 5/6, w2 the same.
    # K = 2, so a wrong label has probability 1/6.
    # E-step: t1 a: .5 (5/6)^2 = 25/72, b: .5 (1/6)^2 = 1/72 -> [25/26, 1/26]
    #         t2 a: .5 (5/6)(1/6) = b                          -> [.5, .5]
    #         t3 -> [1/26, 25/26].  LL = 2 log(26/72) + log(10/72).
    # M-step: skill w1 = (25/26 + 1/2 + 25/26) / 3 = 21/26 (w2 the same), priors [.5, .5].
    a = encode(["t1", "t1", "t2", "t2", "t3", "t3"], ["w1", "w2"] * 3, ["a", "a", "a", "b", "b", "b"])
    oc = OneCoinDawidSkene(max_iter=1, tol=0, smoothing=0, prior_smoothing=0).fit(a)
    assert np.allclose(oc.probas_, [[25 / 26, 1 / 26], [0.5, 0.5], [1 / 26, 25 / 26]], atol=1e-12)
    assert np.allclose(oc.skills_, [21 / 26, 21 / 26], atol=1e-12)
    assert np.allclose(oc.priors_, [0.5, 0.5], atol=1e-12)
    assert oc.log_likelihood_ == pytest.approx([2 * math.log(26 / 72) + math.log(10 / 72)], abs=1e-12)
    assert oc.ties_.tolist() == [False, True, False]
    conf = oc.confusion([0, 1])
    assert np.allclose(conf, [[[21 / 26, 5 / 26], [5 / 26, 21 / 26]]] * 2)


def reference_one_coin(triples, classes, n_iter, smoothing, prior_smoothing, gold=None):
    """Plain-Python one-coin EM over every (task, class) pair, for cross-checking the
    sparse bookkeeping of the real implementation."""
    gold = gold or {}
    k = len(classes)
    tasks = sorted({t for t, _, _ in triples})
    workers = sorted({w for _, w, _ in triples})
    post = {}
    for t in tasks:
        votes = [l for tt, _, l in triples if tt == t]
        post[t] = {c: votes.count(c) / len(votes) for c in classes}
        if t in gold:
            post[t] = {c: float(c == gold[t]) for c in classes}

    def m_step(post):
        skills = {}
        for w in workers:
            mine = [(t, l) for t, ww, l in triples if ww == w]
            s = (sum(post[t][l] for t, l in mine) + smoothing) / (len(mine) + 2 * smoothing)
            skills[w] = min(max(s, 1e-10), 1 - 1e-10)
        priors = {c: (sum(post[t][c] for t in tasks) + prior_smoothing) / (len(tasks) + k * prior_smoothing) for c in classes}
        priors = {c: max(p, 1e-10) for c, p in priors.items()}
        return skills, {c: p / sum(priors.values()) for c, p in priors.items()}

    skills, priors = m_step(post)
    lls = []
    for _ in range(n_iter):
        ll, new = 0.0, {}
        for t in tasks:
            like = dict(priors)
            for tt, w, l in triples:
                if tt == t:
                    for c in classes:
                        like[c] *= skills[w] if c == l else (1 - skills[w]) / (k - 1)
            z = sum(like.values())
            new[t] = {c: like[c] / z for c in classes}
            if t in gold:
                ll += math.log(like[gold[t]])
                new[t] = {c: float(c == gold[t]) for c in classes}
            else:
                ll += math.log(z)
        post = new
        skills, priors = m_step(post)
        lls.append(ll)
    return tasks, workers, post, skills, priors, lls


@pytest.mark.parametrize("n_classes", [2, 5])
def test_matches_plain_python_reference(n_classes):
    rng = np.random.default_rng(11 + n_classes)
    classes = [f"c{i}" for i in range(n_classes)]
    triples = []
    for t in range(15):
        for w in rng.choice(6, size=rng.integers(1, 5), replace=False):
            triples.append((f"t{t:02d}", f"w{w}", classes[rng.integers(0, n_classes)]))
    triples.append(triples[1])
    # t04's gold label may be one nobody gave it: the sparse cells must cover it
    gold = {"t04": classes[-1], "t09": classes[0]}
    a = encode(*columns(triples), classes=classes, duplicates="all")
    tasks, workers, post, skills, priors, lls = reference_one_coin(triples, classes, 5, 0.5, 0.25, gold)
    g = np.full(a.n_tasks, -1)
    g[[tasks.index(t) for t in gold]] = [classes.index(c) for c in gold.values()]
    oc = OneCoinDawidSkene(max_iter=5, tol=0, smoothing=0.5, prior_smoothing=0.25).fit(a, gold=g)
    assert np.allclose(oc.probas_, [[post[t][c] for c in classes] for t in tasks], atol=1e-12)
    assert np.allclose(oc.skills_, [skills[w] for w in workers], atol=1e-12)
    assert np.allclose(oc.priors_, [priors[c] for c in classes], atol=1e-12)
    assert np.allclose(oc.log_likelihood_, lls, atol=1e-9)


def test_many_classes_case_gives_majority_vote_without_quadratic_memory():
    case = load_case("many-classes-dense-confusion")
    a = encode(*columns(case["answers"]))
    tracemalloc.start()
    oc = OneCoinDawidSkene().fit(a)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # the posterior (3000 x 3000 float64, 72 MB) is the only K-squared-sized array; a dense
    # per-worker confusion would be 50 x 3000 x 3000 x 8 B = 3.6 GB
    assert peak < 4 * 3000 * 3000 * 8, peak
    got = consensus(oc, a)
    assert all(got[t] == "c" + t[1:] for t in got)
    for t, c in case["expected"]["majority_vote_sample"].items():
        assert got[t] == c
    assert np.all(np.isfinite(oc.probas_)) and not oc.ties_.any()


def test_unseen_class_case():
    case = load_case("ds-unseen-class-zero-confusion")
    a = encode(*columns(case["answers"]))
    for oc in (OneCoinDawidSkene().fit(a), OneCoinDawidSkene(smoothing=0, prior_smoothing=0).fit(a)):
        assert consensus(oc, a) == case["expected"]["dawid_skene"]
        assert_sane(oc, a)


def test_single_worker_gets_own_labels():
    case = load_case("single-worker-only")
    a = encode(*columns(case["answers"]))
    oc = OneCoinDawidSkene().fit(a)
    assert consensus(oc, a) == case["expected"]["majority_vote"]
    assert oc.probas_.max(axis=1).min() > 0.9
    assert_sane(oc, a)


def test_perfect_agreement_case_equal_finite_skills():
    case = load_case("glad-perfect-agreement-divergence")
    a = encode(*columns(case["answers"]))
    oc = OneCoinDawidSkene().fit(a)
    assert consensus(oc, a) == case["expected"]["glad"]
    assert_sane(oc, a)
    assert np.ptp(oc.skills_) == 0


def test_integer_ids_and_labels_case():
    case = load_case("integer-ids-and-labels")
    want = {k: str(v) for k, v in case["expected"]["dawid_skene"].items()}
    a = encode(*columns(case["answers"]))
    assert consensus(OneCoinDawidSkene().fit(a), a) == want


@pytest.mark.parametrize("policy", ["latest", "first"])
def test_duplicate_worker_answers_case(policy):
    case = load_case("duplicate-worker-answers")
    a = encode(*columns(case["answers"]), duplicates=policy)
    oc = OneCoinDawidSkene().fit(a)
    assert consensus(oc, a)["t1"] == "ham"
    assert_sane(oc, a)


def test_ties_case_is_independent_of_input_and_class_order():
    rows = load_case("majority-vote-ties")["answers"]
    base = encode(*columns(rows))
    want = OneCoinDawidSkene().fit(base)
    rng = np.random.default_rng(5)
    for _ in range(5):
        a = encode(*columns([rows[i] for i in rng.permutation(len(rows))]), classes=list(rng.permutation(["bird", "cat", "dog"])))
        got = OneCoinDawidSkene().fit(a)
        assert consensus(got, a) == consensus(want, base)


def test_empty_input_is_refused_by_encode():
    with pytest.raises(AnswersError):
        encode(*columns(load_case("empty-input")["answers"]))


def test_one_class_and_unused_class():
    one = encode(["t1", "t2", "t2"], ["w1", "w1", "w2"], ["a", "a", "a"])
    oc = OneCoinDawidSkene(smoothing=0, prior_smoothing=0).fit(one)
    assert oc.probas_.tolist() == [[1.0], [1.0]]
    assert oc.confusion([0]).tolist() == [[[1.0]]]
    unused = encode(["t1", "t1", "t2"], ["w1", "w2", "w1"], ["a", "b", "a"], classes=["a", "b", "never"])
    oc = OneCoinDawidSkene(smoothing=0, prior_smoothing=0).fit(unused)
    assert_sane(oc, unused)
    assert (oc.labels_ != 2).all()


def test_confusion_rows_sum_to_one_with_skill_on_the_diagonal():
    a = encode(*columns(load_case("majority-vote-ties")["answers"]))
    oc = OneCoinDawidSkene().fit(a)
    conf = oc.confusion(np.arange(a.n_workers))
    assert conf.shape == (a.n_workers, 3, 3)
    assert np.allclose(conf.sum(axis=2), 1)
    assert np.allclose(np.diagonal(conf, axis1=1, axis2=2), oc.skills_[:, None])


def test_warm_start_and_tol_zero():
    a = encode(*columns(load_case("ds-unseen-class-zero-confusion")["answers"]))
    fitted = OneCoinDawidSkene(tol=1e-10).fit(a)
    warm = OneCoinDawidSkene(init_skills=fitted.skills_, init_priors=fitted.priors_).fit(a)
    assert warm.n_iter_ <= 3 and np.allclose(warm.probas_, fitted.probas_, atol=1e-6)
    seen = []
    oc = OneCoinDawidSkene(max_iter=25, tol=0).fit(a, callback=lambda i, ll: seen.append(i))
    assert oc.n_iter_ == 25 and seen == list(range(1, 26)) and not oc.converged_
