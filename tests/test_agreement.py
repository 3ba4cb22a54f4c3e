"""Agreement statistics: shared bug-report cases, hand-worked and published examples, and
property tests against slow plain-Python reference implementations written below."""

import itertools
import json
import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from aggregation import (
    AgreementResult,
    agreement_statistics,
    cohen_kappa,
    encode,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
)

from cases import columns, load_case

TOL = 1e-6
STATUSES = {"ok", "undefined_no_variation", "insufficient_data", "not_computed"}


def stats_of(rows, **kw):
    return agreement_statistics(encode(*columns(rows), **kw))


def assert_strict_json(result: AgreementResult):
    text = json.dumps(result.to_dict(), allow_nan=False)  # raises on NaN / inf
    back = json.loads(text)
    assert back["status"] in STATUSES
    assert set(back) >= {"value", "status", "reason", "details"}


# ---------------------------------------------------------------- slow references
# Plain Python over dicts of {task: {worker: label}}; deliberately no numpy.


def units_of(rows):
    """{task: {worker: label}}, the last row of a (task, worker) pair winning."""
    units = defaultdict(dict)
    for t, w, y in rows:
        units[t][w] = y
    return units


def ref_alpha(rows):
    """Krippendorff's alpha (nominal) through the coincidence matrix, as in Krippendorff
    (2011) "Computing Krippendorff's alpha-reliability"."""
    coincidence = defaultdict(float)
    for values in units_of(rows).values():
        vals = list(values.values())
        m = len(vals)
        if m < 2:
            continue
        for i in range(m):
            for j in range(m):
                if i != j:
                    coincidence[(vals[i], vals[j])] += 1.0 / (m - 1)
    n_c = defaultdict(float)
    for (c, _k), o in coincidence.items():
        n_c[c] += o
    n = sum(n_c.values())
    if n == 0:
        return None
    d_o = sum(o for (c, k), o in coincidence.items() if c != k) / n
    d_e = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k) / (n * (n - 1))
    if d_e == 0:
        return None
    return 1 - d_o / d_e


def ref_fleiss(rows):
    """Fleiss' kappa over tasks with >= 2 answers: P_i per task, P_bar their mean, p_j the
    share of category j among those tasks' answers."""
    units = [list(u.values()) for u in units_of(rows).values() if len(u) >= 2]
    if not units:
        return None, {}
    p_i = []
    for vals in units:
        m = len(vals)
        p_i.append(sum(c * (c - 1) for c in Counter(vals).values()) / (m * (m - 1)))
    p_bar = sum(p_i) / len(p_i)
    total = Counter(v for vals in units for v in vals)
    n = sum(total.values())
    p = {c: total[c] / n for c in total}
    p_e = sum(x * x for x in p.values())
    kappa = None if p_e == 1 else (p_bar - p_e) / (1 - p_e)
    per_cat = {}
    for c, pc in p.items():
        if pc * (1 - pc) == 0:
            per_cat[c] = None
            continue
        dis = 0.0
        for vals in units:
            m, n_ij = len(vals), vals.count(c)
            dis += n_ij * (m - n_ij) / (m * (m - 1))
        per_cat[c] = 1 - dis / len(units) / (pc * (1 - pc))
    return kappa, per_cat


def ref_cohen_pair(a, b):
    """Cohen's kappa of two equal-length label lists, from the contingency table."""
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[c] * cb[c] for c in ca) / (n * n)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def ref_light(rows, min_common=2):
    """Mean Cohen's kappa over worker pairs with >= min_common shared tasks (pairs whose
    kappa is undefined are left out). Returns (value, n_pairs_defined, n_pairs_undefined)."""
    by_worker = defaultdict(dict)
    for t, labels in units_of(rows).items():
        for w, y in labels.items():
            by_worker[w][t] = y
    kappas, undefined = [], 0
    for w1, w2 in itertools.combinations(sorted(by_worker), 2):
        common = sorted(set(by_worker[w1]) & set(by_worker[w2]))
        if len(common) < min_common:
            continue
        k = ref_cohen_pair([by_worker[w1][t] for t in common], [by_worker[w2][t] for t in common])
        if k is None:
            undefined += 1
        else:
            kappas.append(k)
    return (sum(kappas) / len(kappas) if kappas else None), len(kappas), undefined


def ref_percent(rows):
    shares = []
    for labels in units_of(rows).values():
        vals = list(labels.values())
        pairs = list(itertools.combinations(vals, 2))
        if pairs:
            shares.append(sum(x == y for x, y in pairs) / len(pairs))
    return sum(shares) / len(shares) if shares else None


# ---------------------------------------------------------------- shared cases


def test_case_fleiss_unused_category():
    case = load_case("fleiss-unused-category")
    exp = case["expected"]
    a = encode(*columns(case["answers"]), classes=case["params"]["categories"])
    r = fleiss_kappa(a)
    assert r.status == "ok"
    assert r.value == pytest.approx(exp["fleiss_kappa"], abs=TOL)
    assert r.details["P_bar"] == pytest.approx(exp["P_bar"], abs=TOL)
    assert r.details["P_e"] == pytest.approx(exp["P_e"], abs=TOL)
    per_cat = r.details["per_category_kappa"]
    assert set(per_cat) == set(exp["per_category_kappa"])
    for label, value in exp["per_category_kappa"].items():
        if value is None:
            assert per_cat[label] is None
        else:
            assert per_cat[label] == pytest.approx(value, abs=TOL)
    # the unused declared category changes nothing
    without = fleiss_kappa(encode(*columns(case["answers"])))
    assert exp["fleiss_kappa_same_as_without_unused_category"]
    assert without.value == pytest.approx(r.value, abs=1e-12)
    assert_strict_json(r)


def test_case_fleiss_unused_category_variant_everyone_says_yes():
    var = load_case("fleiss-unused-category")["variants"][0]
    s = stats_of(var["answers"], classes=var["params"]["categories"])
    assert var["expected"]["fleiss_kappa"] is None
    assert s["fleiss_kappa"].value is None
    assert s["fleiss_kappa"].status == "undefined_no_variation"
    assert "P_e = 1" in s["fleiss_kappa"].reason
    assert s["percent_agreement"].value == pytest.approx(var["expected"]["percent_agreement"], abs=TOL)
    assert s["percent_agreement"].status == "ok"
    # both categories undefined on their own: 'no' unused, 'yes' used by everyone
    assert s["fleiss_kappa"].details["per_category_kappa"] == {"yes": None, "no": None}
    for r in s.values():
        assert_strict_json(r)


def test_case_kappa_single_class_undefined():
    case = load_case("kappa-single-class-undefined")
    exp = case["expected"]
    s = stats_of(case["answers"])
    assert s["percent_agreement"].value == pytest.approx(exp["percent_agreement"], abs=TOL)
    assert s["percent_agreement"].status == "ok"
    assert exp["cohen_kappa"] is None and exp["fleiss_kappa"] is None and exp["krippendorff_alpha_nominal"] is None
    for key in ("cohen_kappa", "fleiss_kappa", "krippendorff_alpha"):
        assert s[key].value is None, key
        assert s[key].status == "undefined_no_variation", key
        assert s[key].reason
    assert s["cohen_kappa"].details["n_pairs_undefined"] == 1
    for r in s.values():
        assert_strict_json(r)


def test_case_kripp_single_rated_unit():
    case = load_case("kripp-single-rated-unit")
    exp = case["expected"]
    r = krippendorff_alpha(encode(*columns(case["answers"])))
    assert r.status == "ok"
    assert r.value == pytest.approx(exp["krippendorff_alpha_nominal"], abs=TOL)
    assert r.details["D_o"] == pytest.approx(exp["D_o"], abs=TOL)
    assert r.details["D_e"] == pytest.approx(exp["D_e"], abs=TOL)
    assert r.details["pairable_values"] == exp["pairable_values"]
    assert r.details["n_units_dropped"] == 1
    # with u3 kept (the nltk bug) alpha would be 0.333; ours is not
    assert abs(r.value - exp["naive_value_if_u3_is_not_dropped"]) > 0.3


def test_case_kripp_single_rated_unit_variant_is_undefined_not_a_crash():
    var = load_case("kripp-single-rated-unit")["variants"][0]
    r = krippendorff_alpha(encode(*columns(var["answers"])))
    # Our documented choice: no convention of 1.0 for D_o = D_e = 0; report it undefined.
    assert var["expected"]["krippendorff_alpha_nominal"] is None
    assert r.value is None
    assert r.status == "undefined_no_variation"
    assert r.details["pairable_values"] == 2
    assert_strict_json(r)


def test_case_negative_agreement_not_clamped():
    case = load_case("negative-agreement-not-clamped")
    exp = case["expected"]
    s = stats_of(case["answers"])
    assert s["krippendorff_alpha"].value == pytest.approx(exp["krippendorff_alpha_nominal"], abs=TOL)
    assert s["cohen_kappa"].value == pytest.approx(exp["cohen_kappa"], abs=TOL)
    assert s["fleiss_kappa"].value == pytest.approx(exp["fleiss_kappa"], abs=TOL)
    assert s["percent_agreement"].value == pytest.approx(exp["percent_agreement"], abs=TOL)
    assert all(r.status == "ok" for r in s.values())


def test_case_unicode_whitespace_labels():
    case = load_case("unicode-whitespace-labels")
    a = encode(*columns(case["answers"]))
    assert list(a.classes) == case["expected"]["distinct_labels_after_normalisation"]
    r = krippendorff_alpha(a)
    assert r.value == pytest.approx(case["expected"]["krippendorff_alpha_nominal"], abs=TOL)


def test_case_single_worker_only():
    case = load_case("single-worker-only")
    s = stats_of(case["answers"])
    assert set(s) == {"krippendorff_alpha", "fleiss_kappa", "cohen_kappa", "percent_agreement"}
    for r in s.values():
        assert r.value is None
        assert r.status == "insufficient_data"
        assert "2 workers" in r.reason
        assert_strict_json(r)


# ---------------------------------------------------------------- hand-worked examples


def test_alpha_by_hand():
    # t1: a a b   t2: b b   t3: a (single -> dropped)
    # pairable values n = 5; n_a = 2, n_b = 3
    # matches o_cc: t1 -> a: 2*1/(3-1) = 1, b: 0; t2 -> b: 2*1/(2-1) = 2; sum = 3
    # D_o = (n - sum o_cc) / n = 2/5
    # D_e = (n^2 - sum n_c^2) / (n (n-1)) = (25 - 4 - 9) / 20 = 12/20 = 3/5
    # alpha = 1 - (2/5)/(3/5) = 1/3
    rows = [("t1", "w1", "a"), ("t1", "w2", "a"), ("t1", "w3", "b"), ("t2", "w1", "b"), ("t2", "w2", "b"), ("t3", "w1", "a")]
    r = krippendorff_alpha(encode(*columns(rows)))
    assert r.value == pytest.approx(1 / 3, abs=1e-12)
    assert r.details["D_o"] == pytest.approx(0.4)
    assert r.details["D_e"] == pytest.approx(0.6)
    assert r.details["pairable_values"] == 5
    assert r.details["n_units"] == 2


def test_fleiss_by_hand_with_unequal_answer_counts():
    # t1: a a b   t2: b b   t3: a (one answer -> left out of everything)
    # P_1 = (2*1 + 0) / (3*2) = 1/3; P_2 = (2*1) / (2*1) = 1; P_bar = 2/3
    # p_a = 2/5, p_b = 3/5 (answers of t1, t2); P_e = 4/25 + 9/25 = 13/25
    # kappa = (2/3 - 13/25) / (12/25) = (50/75 - 39/75) / (36/75) = 11/36
    # per category a: disagreement share mean over tasks = (2*1/6 + 0) / 2 = 1/6;
    #   p q = 6/25 -> kappa_a = 1 - (1/6)/(6/25) = 1 - 25/36 = 11/36; same for b (2 categories)
    rows = [("t1", "w1", "a"), ("t1", "w2", "a"), ("t1", "w3", "b"), ("t2", "w1", "b"), ("t2", "w2", "b"), ("t3", "w1", "a")]
    r = fleiss_kappa(encode(*columns(rows)))
    assert r.value == pytest.approx(11 / 36, abs=1e-12)
    assert r.details["P_bar"] == pytest.approx(2 / 3)
    assert r.details["P_e"] == pytest.approx(13 / 25)
    assert r.details["per_category_kappa"] == pytest.approx({"a": 11 / 36, "b": 11 / 36})
    assert r.details["n_tasks"] == 2
    assert r.details["n_tasks_dropped"] == 1


def test_cohen_by_hand_two_pairs_and_min_common():
    # w1, w2 share t1..t4: w1 = a a b b, w2 = a b b b
    #   p_o = 3/4; w1 marginals a 1/2 b 1/2; w2 a 1/4 b 3/4
    #   p_e = 1/2*1/4 + 1/2*3/4 = 1/2 -> kappa = (3/4 - 1/2)/(1/2) = 1/2
    # w1, w3 share t1..t4: w3 = b b a a -> they never agree, p_o = 0; both marginals 1/2 1/2
    #   p_e = 1/2 -> kappa = (0 - 1/2)/(1/2) = -1
    # w2, w3: a/b, b/b, b/a, b/a -> p_o = 1/4; p_e = 1/4*1/2 + 3/4*1/2 = 1/2 -> kappa = -1/2
    # w4 shares only t0 with everyone -> below min_common=2, not used
    # Light's kappa = (1/2 - 1 - 1/2) / 3 = -1/3
    w1, w2, w3 = "aabb", "abbb", "bbaa"
    rows = []
    for i in range(4):
        rows += [(f"t{i}", "w1", w1[i]), (f"t{i}", "w2", w2[i]), (f"t{i}", "w3", w3[i])]
    rows.append(("t0", "w4", "a"))
    r = cohen_kappa(encode(*columns(rows)))
    assert r.value == pytest.approx(-1 / 3, abs=1e-12)
    assert r.details["n_pairs"] == 3
    assert r.details["n_pairs_below_min_common"] == 3
    # with min_common=1 the three w4 pairs count too: w4-w1 and w4-w2 agree on their single task
    # ("a"), so p_o = p_e = 1 -> undefined, left out; w4-w3 (a vs b): p_o = 0, p_e = 0 -> kappa 0
    # mean over the 4 defined pairs = (1/2 - 1 - 1/2 + 0) / 4 = -1/4
    r1 = cohen_kappa(encode(*columns(rows)), min_common=1)
    assert r1.details["n_pairs"] == 4
    assert r1.details["n_pairs_undefined"] == 2
    assert r1.value == pytest.approx(-1 / 4, abs=1e-12)


def test_percent_agreement_by_hand():
    # t1: a a b -> pairs (a,a) (a,b) (a,b): 1/3;  t2: b b -> 1;  t3: one answer -> left out
    # mean = (1/3 + 1) / 2 = 2/3
    rows = [("t1", "w1", "a"), ("t1", "w2", "a"), ("t1", "w3", "b"), ("t2", "w1", "b"), ("t2", "w2", "b"), ("t3", "w1", "a")]
    r = percent_agreement(encode(*columns(rows)))
    assert r.value == pytest.approx(2 / 3, abs=1e-12)
    assert r.details["n_tasks"] == 2


# ---------------------------------------------------------------- published figures


def test_fleiss_wikipedia_example():
    # Fleiss' kappa article on Wikipedia (after Fleiss 1971 style): 10 subjects x 14 raters,
    # 5 categories; P_bar = 0.378, P_e = 0.213, kappa = 0.210 (rounded to 3 places).
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]
    rows = []
    for i, counts in enumerate(table):
        labels = [str(c + 1) for c, k in enumerate(counts) for _ in range(k)]
        rows += [(f"s{i}", f"r{j}", y) for j, y in enumerate(labels)]
    r = fleiss_kappa(encode(*columns(rows)))
    assert r.details["P_bar"] == pytest.approx(0.378, abs=5e-4)
    assert r.details["P_e"] == pytest.approx(0.213, abs=5e-4)
    assert r.value == pytest.approx(0.210, abs=5e-4)


def test_alpha_krippendorff_2011_nominal_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", example C:
    # 4 observers, 12 units, missing values; nominal alpha = 0.743. Unit 12 has one value.
    data = [
        "1 2 3 3 2 1 4 1 2 . . .",
        "1 2 3 3 2 2 4 1 2 5 . 3",
        ". 3 3 3 2 3 4 2 2 5 1 .",
        "1 2 3 3 2 4 4 1 2 5 1 .",
    ]
    rows = [
        (f"u{u}", f"o{o}", v)
        for o, line in enumerate(data)
        for u, v in enumerate(line.split())
        if v != "."
    ]
    r = krippendorff_alpha(encode(*columns(rows)))
    assert r.value == pytest.approx(0.743, abs=5e-4)
    assert r.details["n_units_dropped"] == 1
    assert r.value == pytest.approx(ref_alpha(rows), abs=1e-12)


def test_cohen_wikipedia_example():
    # Wikipedia's Cohen's kappa example: 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15
    # p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.4
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    rows = []
    for i, (x, y) in enumerate(pairs):
        rows += [(f"t{i}", "A", x), (f"t{i}", "B", y)]
    r = cohen_kappa(encode(*columns(rows)))
    assert r.value == pytest.approx(0.4, abs=1e-12)
    assert r.details["n_pairs"] == 1


# ---------------------------------------------------------------- duplicates and statuses


def test_duplicates_all_keeps_the_last_row_of_each_task_worker_pair():
    # w1 answers t1 "b" then "a": with duplicates="all" the statistics still see one answer
    # per (task, worker), the last one ("a"), exactly as with duplicates="latest".
    rows = [("t1", "w1", "b"), ("t1", "w2", "a"), ("t1", "w1", "a"), ("t2", "w1", "a"), ("t2", "w2", "b"),
            ("t3", "w1", "b"), ("t3", "w2", "b")]
    s_all = stats_of(rows, duplicates="all")
    s_latest = stats_of(rows, duplicates="latest")
    for key in s_all:
        assert s_all[key].value == pytest.approx(s_latest[key].value, abs=1e-12), key
    assert s_all["percent_agreement"].value == pytest.approx(ref_percent(rows), abs=1e-12)
    assert s_all["krippendorff_alpha"].details["n_duplicate_rows_ignored"] == 1


def test_no_task_with_two_answers_but_several_workers():
    rows = [("t1", "w1", "a"), ("t2", "w2", "b"), ("t3", "w3", "a")]
    for r in stats_of(rows).values():
        assert r.value is None and r.status == "insufficient_data"
        assert_strict_json(r)


def test_no_worker_pair_shares_min_common_tasks():
    # two workers meet on one task only: kappa needs two shared tasks by default
    rows = [("t1", "w1", "a"), ("t1", "w2", "b"), ("t2", "w1", "a"), ("t3", "w2", "b")]
    r = cohen_kappa(encode(*columns(rows)))
    assert r.value is None and r.status == "insufficient_data"
    assert r.details["n_pairs"] == 0
    with pytest.raises(ValueError):
        cohen_kappa(encode(*columns(rows)), min_common=0)


def test_result_to_dict_is_plain_json():
    r = fleiss_kappa(encode(*columns(load_case("fleiss-unused-category")["answers"])))
    d = r.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert isinstance(d["value"], float)
    assert all(type(v) in (int, float, str, dict, type(None)) for v in d["details"].values())


def test_cohen_with_fewer_pairable_tasks_than_min_common():
    # one task, three workers: alpha/Fleiss/percent are defined, no worker pair shares 2 tasks
    rows = [("t1", "w1", "a"), ("t1", "w2", "a"), ("t1", "w3", "b")]
    s = stats_of(rows)
    assert s["cohen_kappa"].status == "insufficient_data" and s["cohen_kappa"].value is None
    assert s["percent_agreement"].value == pytest.approx(1 / 3)  # pairs aa, ab, ab
    assert_strict_json(s["cohen_kappa"])


def test_cohen_is_not_computed_for_designs_with_too_many_worker_pairs(monkeypatch):
    from aggregation import agreement

    rows = [(f"t{t}", f"w{w}", "ab"[(t + w) % 2]) for t in range(3) for w in range(6)]  # 15 pairs
    monkeypatch.setattr(agreement, "MAX_WORKER_PAIRS", 10)
    s = stats_of(rows)  # the other statistics still come back: the pipeline must not fail
    assert s["cohen_kappa"].status == "not_computed" and s["cohen_kappa"].value is None
    assert "too many co-occurring worker pairs" in s["cohen_kappa"].reason
    assert_strict_json(s["cohen_kappa"])
    assert s["fleiss_kappa"].status == "ok"


def test_larger_random_design_matches_references():
    # beyond the hypothesis sizes: many workers and classes, tasks with up to 25 answers
    rng = np.random.default_rng(7)
    rows = []
    for t in range(60):
        for w in rng.choice(40, size=int(rng.integers(1, 26)), replace=False):
            rows.append((f"t{t}", f"w{w}", f"c{int(rng.integers(0, 2 + t % 7))}"))
    s = stats_of(rows)
    assert s["krippendorff_alpha"].value == pytest.approx(ref_alpha(rows), abs=1e-9)
    assert s["fleiss_kappa"].value == pytest.approx(ref_fleiss(rows)[0], abs=1e-9)
    light, n_pairs, n_undefined = ref_light(rows)
    assert s["cohen_kappa"].value == pytest.approx(light, abs=1e-9)
    assert (s["cohen_kappa"].details["n_pairs"], s["cohen_kappa"].details["n_pairs_undefined"]) == (n_pairs, n_undefined)
    assert s["percent_agreement"].value == pytest.approx(ref_percent(rows), abs=1e-9)


# ---------------------------------------------------------------- properties

answer_sets = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=40
)


def as_rows(triples):
    return [(f"t{t}", f"w{w}", f"c{c}") for t, w, c in triples]


def assert_close(result, expected):
    if expected is None:
        assert result.value is None
        assert result.status in {"undefined_no_variation", "insufficient_data"}
    else:
        assert result.status == "ok"
        assert result.value == pytest.approx(expected, abs=1e-9)
        assert math.isfinite(result.value)


@settings(max_examples=300, deadline=None)
@given(answer_sets)
def test_matches_slow_references(triples):
    rows = as_rows(triples)
    s = agreement_statistics(encode(*columns(rows), duplicates="all"))
    assert_close(s["krippendorff_alpha"], ref_alpha(rows))
    kappa, per_cat = ref_fleiss(rows)
    assert_close(s["fleiss_kappa"], kappa)
    if s["fleiss_kappa"].status != "insufficient_data":
        got = s["fleiss_kappa"].details["per_category_kappa"]
        for label, value in per_cat.items():
            assert (got[label] is None) == (value is None)
            if value is not None:
                assert got[label] == pytest.approx(value, abs=1e-9)
    light, n_pairs, n_undefined = ref_light(rows)
    assert_close(s["cohen_kappa"], light)
    assert s["cohen_kappa"].details.get("n_pairs", 0) == n_pairs
    assert s["cohen_kappa"].details.get("n_pairs_undefined", 0) == n_undefined
    assert_close(s["percent_agreement"], ref_percent(rows))
    for r in s.values():
        assert_strict_json(r)


@settings(max_examples=100, deadline=None)
@given(answer_sets, st.randoms(use_true_random=False))
def test_invariant_to_row_order_and_renaming(triples, rnd):
    rows = as_rows(triples)
    # keep one row per (task, worker) so that shuffling cannot change which duplicate wins
    rows = list({(t, w): (t, w, y) for t, w, y in rows}.values())
    base = agreement_statistics(encode(*columns(rows)))
    shuffled = list(rows)
    rnd.shuffle(shuffled)
    perm_t, perm_w, perm_c = (rnd.sample(range(10), 10) for _ in range(3))
    renamed = [
        (f"T{perm_t[int(t[1:])]}", f"W{perm_w[int(w[1:])]}", f"C{perm_c[int(c[1:])]}") for t, w, c in shuffled
    ]
    other = agreement_statistics(encode(*columns(renamed)))
    for key in base:
        assert other[key].status == base[key].status, key
        if base[key].value is None:
            assert other[key].value is None
        else:
            assert other[key].value == pytest.approx(base[key].value, abs=1e-12), key


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 9), st.integers(0, 60)), min_size=1, max_size=80),
       st.sampled_from([2, 3, 40]))
def test_both_ways_of_building_cohen_pair_tables_agree_exactly(triples, n_classes):
    """Listed answer pairs (the usual design; dense per-class counts, or the sparse cells
    when classes outnumber pairs) and sparse products (many answers per task) must give
    the same integer tables."""
    from aggregation import agreement

    rows = [(f"t{t}", f"w{w}", f"c{c % n_classes}") for t, w, c in triples]
    p = agreement._pairable(encode(*columns(rows)))
    listed = agreement._pair_tables_listed(p, np.bincount(p.task).astype(np.int64))
    sparse = agreement._pair_tables_sparse(p)
    for got, want in zip(listed, sparse):
        assert got.dtype.kind == want.dtype.kind == "i"
        assert got.tolist() == want.tolist()


def test_designs_with_many_answers_per_task_use_the_sparse_tables(monkeypatch):
    from aggregation import agreement

    rng = np.random.default_rng(3)
    rows = [(f"t{t}", f"w{w}", f"c{int(rng.integers(0, 3))}") for t in range(30) for w in range(12) if rng.random() < 0.7]
    listed = stats_of(rows)["cohen_kappa"]
    monkeypatch.setattr(agreement, "MAX_LISTED_ANSWER_PAIRS", 0)
    monkeypatch.setattr(agreement, "_pair_tables_listed", None)  # would fail if called
    sparse = stats_of(rows)["cohen_kappa"]
    assert sparse.value == pytest.approx(ref_light(rows)[0], abs=1e-12) and sparse.value == pytest.approx(listed.value, abs=1e-12)
