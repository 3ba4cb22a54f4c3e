import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from aggregation import AnswersError, decode, encode, encode_gold
from aggregation.encoding import add_classes

from cases import columns, load_case


def test_codes_follow_sorted_names_whatever_the_input_order():
    a = encode(["t2", "t1", "t2"], ["w9", "w1", "w1"], ["b", "a", "a"])
    assert list(a.task_names) == ["t1", "t2"]
    assert list(a.worker_names) == ["w1", "w9"]
    assert list(a.classes) == ["a", "b"]
    assert list(decode(a.task, a.task_names)) == ["t2", "t1", "t2"]
    assert list(decode(a.label, a.classes)) == ["b", "a", "a"]


def test_labels_compare_as_strings_one_and_zero_one_differ():
    a = encode(["t1", "t1"], ["w1", "w2"], ["1", "01"])
    assert list(a.classes) == ["01", "1"]


def test_integers_are_their_decimal_strings():
    case = load_case("integer-ids-and-labels")
    ints = encode(*columns(case["answers"]))
    mixed = encode(*columns(case["variants"][0]["answers"]))
    assert list(ints.classes) == ["0", "1"]
    # 1 and "1" are one class, never two
    assert list(mixed.classes) == ["0", "1"]
    assert np.array_equal(ints.label, mixed.label)
    assert list(ints.task_names) == ["1", "2", "3", "4", "5"]


@pytest.mark.parametrize("bad", [1.5, None, True, ["a"], {"a": 1}])
def test_other_types_are_rejected_naming_the_field(bad):
    with pytest.raises(AnswersError, match="label must be a string or an integer"):
        encode(["t1", "t2"], ["w1", "w1"], ["a", bad])


def test_unicode_and_whitespace_variants_are_one_label():
    case = load_case("unicode-whitespace-labels")
    a = encode(*columns(case["answers"]))
    assert list(a.classes) == case["expected"]["distinct_labels_after_normalisation"]


def test_ids_are_kept_exactly():
    a = encode(["t 1", "t\u00a01", "caf\u0065\u0301"], ["w", "w", "w"], ["a", "a", "a"])
    assert set(a.task_names) == {"t 1", "t\u00a01", "caf\u0065\u0301"}


def test_declared_classes_keep_their_order_and_unused_ones():
    a = encode(["t1", "t2"], ["w1", "w1"], ["no", "yes"], classes=["yes", "no", "unsure"])
    assert list(a.classes) == ["yes", "no", "unsure"]
    assert list(a.label) == [1, 0]


def test_answer_outside_declared_classes_lists_offenders():
    with pytest.raises(AnswersError) as err:
        encode(["t1", "t2", "t3"], ["w1", "w1", "w1"], ["yes", "maybe", "perhaps"], classes=["yes", "no"])
    assert "'maybe'" in str(err.value) and "'perhaps'" in str(err.value) and "'yes'" not in str(err.value).split(":")[-1]


def test_empty_input_is_a_clear_error():
    case = load_case("empty-input")
    with pytest.raises(AnswersError, match=case["expected"]["error_mentions"].replace("[", r"\[").replace("]", r"\]")):
        encode(*columns(case["answers"]) if case["answers"] else ([], [], []))


@pytest.mark.parametrize(
    "policy, kept",
    [
        # rows: 0 t1w1a, 1 t1w1b, 2 t1w2a, 3 t1w1c
        ("latest", [2, 3]),
        ("first", [0, 2]),
        ("all", [0, 1, 2, 3]),
    ],
)
def test_duplicate_policies(policy, kept):
    rows = [("t1", "w1", "a"), ("t1", "w1", "b"), ("t1", "w2", "a"), ("t1", "w1", "c")]
    a = encode(*zip(*rows), duplicates=policy)
    assert sorted(zip(decode(a.worker, a.worker_names), decode(a.label, a.classes))) == sorted(
        (rows[i][1], rows[i][2]) for i in kept
    )
    assert a.n_rows == 4
    assert a.n_duplicate_rows == (0 if policy == "all" else 2)
    assert a.warnings


def test_duplicate_case_counts_and_warning():
    case = load_case("duplicate-worker-answers")
    a = encode(*columns(case["answers"]))
    assert a.n_duplicate_rows == 3
    assert a.n_conflicting_pairs == 1
    assert a.warnings[0].startswith(case["expected"]["policy_B_keep_last"]["warnings"][0])


def test_duplicate_case_under_all_is_the_opt_in_it_warns_about():
    """'all' is for designs where one worker's repeats are independent judgements; on the
    bug report's input it gives exactly what the case forbids for the default, so the
    warning says so and the default never does it."""
    from aggregation import MajorityVote

    case = load_case("duplicate-worker-answers")
    a = encode(*columns(case["answers"]), duplicates="all")
    labels = dict(zip(a.task_names, decode(MajorityVote().fit(a).labels_, a.classes)))
    assert labels["t1"] == "spam"  # w1's three copies outvote w2 and w3
    assert a.warnings == ("2 (task, worker) pairs answered more than once, counted as separate votes "
                          "(policy 'all'): one worker's repeats can outvote the others",)
    default = encode(*columns(case["answers"]))
    assert dict(zip(default.task_names, decode(MajorityVote().fit(default).labels_, default.classes)))["t1"] == "ham"


def test_unknown_duplicate_policy():
    with pytest.raises(AnswersError, match="duplicates must be one of latest, first, all"):
        encode(["t"], ["w"], ["a"], duplicates="newest")


def test_gold_codes_unknown_tasks_and_conflicts():
    a = encode(["t1", "t2"], ["w1", "w1"], ["a", "b"])
    gold, unanswered = encode_gold(a, ["t2", "t9", "t1"], ["a", "b", " a "])
    assert list(gold) == [0, 0] and unanswered == 1
    with pytest.raises(AnswersError, match="not in the class set"):
        encode_gold(a, ["t1"], ["zzz"])
    with pytest.raises(AnswersError, match="more than one label for task \\['t1'\\]"):
        encode_gold(a, ["t1", "t1"], ["a", "b"])


def test_gold_of_unanswered_tasks_is_counted_not_checked():
    a = encode(["t1", "t2"], ["w1", "w1"], ["a", "b"])
    # t9 and t8 nobody answered: their labels (even one outside the classes) cannot be used
    gold, unanswered = encode_gold(a, ["t9", "t1", "t8", "t9"], ["zzz", "b", "a", "zzz"])
    assert list(gold) == [1, -1] and unanswered == 2


def test_add_classes_keeps_codes_canonical_and_declared_order_first():
    a = encode(["t1", "t2", "t3"], ["w1", "w1", "w2"], ["b", "d", "b"])
    wider = add_classes(a, ["c", " a", "b"])
    assert wider.classes.tolist() == ["a", "b", "c", "d"]
    assert decode(wider.label, wider.classes).tolist() == ["b", "d", "b"]
    assert add_classes(a, ["b"]) is a
    declared = encode(["t1"], ["w1"], ["y"], classes=["y", "x"])
    wider = add_classes(declared, ["a"])
    assert wider.classes.tolist() == ["y", "x", "a"] and wider.label.tolist() == [0]


def test_tie_rank_prefers_the_most_common_class_then_the_name():
    # counts: b=2, a=1, c=1 -> b first, then a before c by name
    a = encode(["t1", "t2", "t3", "t4"], ["w"] * 4, ["b", "c", "b", "a"], classes=["c", "b", "a"])
    assert [a.classes[k] for k in np.argsort(a.tie_rank)] == ["b", "a", "c"]


rows = st.lists(
    st.tuples(st.sampled_from("abcdef"), st.sampled_from("uvwxyz"), st.sampled_from(["0", "1", "2"])),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(rows, st.randoms(use_true_random=False), st.sampled_from(["latest", "first", "all"]))
def test_policies_agree_with_a_plain_python_reference(data, rnd, policy):
    shuffled = list(data)
    rnd.shuffle(shuffled)
    a = encode(*zip(*shuffled), duplicates=policy)
    got = sorted(zip(decode(a.task, a.task_names), decode(a.worker, a.worker_names), decode(a.label, a.classes)))
    if policy == "all":
        want = sorted(shuffled)
    else:
        chosen = {}
        for t, w, l in shuffled:
            if policy == "latest" or (t, w) not in chosen:
                chosen[(t, w)] = l
        want = sorted((t, w, l) for (t, w), l in chosen.items())
    assert got == want


def test_pre_coded_names_nobody_used_are_dropped():
    from aggregation import from_codes

    a = from_codes([2, 0], ["tc", "ta", "tb"], [1, 1], ["wx", "wy"], [0, 0], ["z", "unused"])
    assert list(a.task_names) == ["tb", "tc"]  # "ta" (code 1) had no answers
    assert list(a.worker_names) == ["wy"]
    assert list(a.classes) == ["z"]
    assert list(decode(a.task, a.task_names)) == ["tb", "tc"]


def test_ids_differing_only_by_trailing_nul_stay_distinct(monkeypatch):
    """Fixed-width numpy strings drop trailing NULs; the fast factorisation must not merge
    't' and 't\\x00', and the object fallback (long values) must agree with it."""
    import aggregation.encoding as enc

    args = (["t\x00", "t", "t", "u"], ["w", "w", "w2", "w"], ["a", "b", "a", "a"])
    fast = encode(*args)
    monkeypatch.setattr(enc, "_FIXED_WIDTH_BUDGET", 0)
    slow = encode(*args)
    for a in (fast, slow):
        assert a.task_names.tolist() == ["t", "t\x00", "u"]
        assert decode(a.task, a.task_names).tolist() == ["t\x00", "t", "t", "u"]
