"""Inter-worker agreement: Krippendorff's alpha (nominal), Fleiss' kappa, mean pairwise
Cohen's kappa (Light's kappa) and raw percent agreement.

Conventions shared by every statistic:

* Agreement is between workers, so each (task, worker) pair counts once.  Answers encoded
  with ``duplicates="all"`` keep every row; here only the last row of each pair in array
  order (= input order, the encoder never reorders rows) is used, which is what
  ``duplicates="latest"`` would have kept.  The number of rows ignored is in ``details``.
* A task answered by fewer than two workers carries no information about agreement and is
  dropped before anything is computed (Krippendorff's rule for unpairable units; applied to
  every statistic so that they all describe the same tasks).
* Results are never NaN, never clamped (negative values mean systematic disagreement).
  ``status`` says why a value is missing:
  ``insufficient_data`` - no task with two answers (e.g. one worker only), or no worker pair
  sharing ``min_common`` tasks; ``undefined_no_variation`` - chance agreement is total
  (a single category among the pairable answers), so the statistic is 0/0.  We report that as
  undefined rather than adopting a 1.0 convention: perfect agreement on one category tells
  nothing about the workers' ability to tell categories apart.  ``not_computed`` is used by
  Cohen's kappa alone, when more than ``MAX_WORKER_PAIRS`` worker pairs co-occur (its cost
  grows with the square of the workers per task); the other statistics stay linear.

Fleiss' kappa for tasks with different numbers of answers: ``P_i = sum_j n_ij (n_ij - 1) /
(n_i (n_i - 1))`` for each task with ``n_i >= 2``, ``P_bar`` their unweighted mean (each
task counts once, whatever its number of answers), ``p_j`` the share of category ``j`` among
all answers of those tasks, ``P_e = sum_j p_j^2``, ``kappa = (P_bar - P_e) / (1 - P_e)``.
With equal ``n_i`` this is Fleiss (1971) exactly.  Per-category kappa is
``1 - mean_i[n_ij (n_i - n_ij) / (n_i (n_i - 1))] / (p_j (1 - p_j))``, ``None`` where
``p_j`` is 0 or 1; the overall kappa is the ``p_j (1 - p_j)``-weighted mean of these.

Percent agreement is ``P_bar``: the mean over tasks with two or more answers of the share of
agreeing answer pairs.  Krippendorff's alpha pools pairable values instead, weighting each
unit by its number of values, and applies the ``n / (n - 1)`` small-sample correction, so on
the same data it legitimately differs from Fleiss' kappa.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from ._base import check_answers
from .encoding import Answers

OK = "ok"
UNDEFINED = "undefined_no_variation"
INSUFFICIENT = "insufficient_data"
NOT_COMPUTED = "not_computed"
STATUSES = (OK, UNDEFINED, INSUFFICIENT, NOT_COMPUTED)

_NO_PAIRS = "need at least 2 workers labelling the same task: no task has answers from two different workers"
# Cohen's kappa keeps a few numbers per co-occurring worker pair; past this many pairs (about
# 1 GB of working memory) it reports ``not_computed`` rather than exhaust the worker's memory.
MAX_WORKER_PAIRS = 20_000_000
# Up to this many within-task answer pairs (a few int64 arrays of this length), Cohen's pair
# tables are built from the listed pairs; past it, by sparse products (memory bounded by the
# worker pairs, however many answers a task has).
MAX_LISTED_ANSWER_PAIRS = 30_000_000


@dataclass(frozen=True)
class AgreementResult:
    """One agreement statistic: ``value`` is a finite float or ``None`` (see ``status`` and
    ``reason``); ``details`` holds the intermediate quantities, JSON-ready."""

    value: float | None
    status: str
    reason: str = ""
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.value is not None:
            value = float(self.value)
            if not math.isfinite(value):
                raise ValueError(f"agreement value must be finite, got {value}")
            object.__setattr__(self, "value", value)
        if (self.value is None) == (self.status == OK):
            raise ValueError("a value is given exactly when the status is 'ok'")

    def to_dict(self) -> dict:
        """Plain, strict-JSON-safe dict (no NaN/inf, no numpy types)."""
        return {
            "value": self.value,
            "status": self.status,
            "reason": self.reason,
            "details": _json_safe(self.details),
        }


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


@dataclass(frozen=True)
class _Pairable:
    """One answer per (task, worker), rows sorted by (task, worker), plus the sparse
    task x class counts (COO triplets) restricted to tasks with >= 2 answers."""

    task: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    n_workers: int
    classes: np.ndarray
    n_ignored: int  # duplicate rows ignored
    n_tasks: int  # tasks with >= 2 answers
    n_tasks_dropped: int  # tasks with exactly one answer
    cell_task: np.ndarray  # per nonzero cell: answers on its task (n_i)
    cell_class: np.ndarray
    cell_count: np.ndarray  # n_ij
    class_totals: np.ndarray  # answers per class over the kept tasks (int64)

    @property
    def n_values(self) -> int:
        return int(self.class_totals.sum())

    def base_details(self) -> dict:
        return {
            "n_tasks": self.n_tasks,
            "n_tasks_dropped": self.n_tasks_dropped,
            "n_duplicate_rows_ignored": self.n_ignored,
        }


def _pairable(answers: Answers) -> _Pairable:
    answers = check_answers(answers)
    n_workers, n_classes = max(answers.n_workers, 1), answers.n_classes
    key = answers.task.astype(np.int64) * n_workers + answers.worker
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    # the stable sort keeps input order within a (task, worker) run: its end is the last row
    last = np.ones(key.size, dtype=bool)
    last[:-1] = sorted_key[1:] != sorted_key[:-1]
    rows = order[last]
    task, worker, label = answers.task[rows], answers.worker[rows], answers.label[rows]

    per_task = np.bincount(task, minlength=answers.n_tasks)
    counts = _count_matrix(task, label, (answers.n_tasks, n_classes))
    cell_task_id = np.repeat(np.arange(answers.n_tasks), np.diff(counts.indptr))
    n_i = per_task[cell_task_id]
    kept = n_i >= 2
    cell_class = counts.indices[kept]
    cell_count = counts.data[kept]
    return _Pairable(
        task=task,
        worker=worker,
        label=label,
        n_workers=n_workers,
        classes=answers.classes,
        n_ignored=int(key.size - rows.size),
        n_tasks=int((per_task >= 2).sum()),
        n_tasks_dropped=int((per_task == 1).sum()),
        cell_task=n_i[kept].astype(np.int64),
        cell_class=cell_class,
        cell_count=cell_count,
        class_totals=np.bincount(cell_class, weights=cell_count, minlength=n_classes).astype(np.int64),
    )


def _count_matrix(rows, cols, shape) -> sparse.csr_matrix:
    """Sparse count of (row, col) occurrences, canonical (summed, sorted indices)."""
    # int32 indices: scipy inspects int64 index arrays element-wise to pick a dtype (slow)
    index = np.int32 if max(shape) < np.iinfo(np.int32).max else np.int64
    ones = np.ones(rows.size, dtype=np.int64)
    matrix = sparse.csr_matrix((ones, (rows.astype(index), cols.astype(index))), shape=shape)
    matrix.sum_duplicates()
    return matrix


def _only_value(p: _Pairable) -> str:
    used = np.flatnonzero(p.class_totals)
    return repr(str(p.classes[used[0]])) if used.size else "?"


def _insufficient(p: _Pairable, reason: str = _NO_PAIRS, **extra) -> AgreementResult:
    return AgreementResult(None, INSUFFICIENT, reason, {**p.base_details(), **extra})


# ---------------------------------------------------------------- statistics


def _alpha(p: _Pairable) -> AgreementResult:
    if p.n_tasks == 0:
        return _insufficient(p, n_units=0, n_units_dropped=p.n_tasks_dropped, pairable_values=0)
    n = p.n_values
    # matches within units: o_cc summed over c; each unit's pairs weigh 1 / (m_u - 1)
    matches = float(np.sum(p.cell_count * (p.cell_count - 1) / (p.cell_task - 1)))
    expected_mismatch = n * n - int(np.sum(p.class_totals**2))  # n^2 - sum n_c^2, exact
    d_o = (n - matches) / n
    d_e = expected_mismatch / (n * (n - 1))
    details = {
        **p.base_details(),
        "n_units": p.n_tasks,
        "n_units_dropped": p.n_tasks_dropped,
        "pairable_values": n,
        "D_o": d_o,
        "D_e": d_e,
    }
    if expected_mismatch == 0:
        reason = (
            f"undefined: after dropping single-rated units only value {_only_value(p)} remains "
            "(D_o = D_e = 0)"
        )
        return AgreementResult(None, UNDEFINED, reason, details)
    # 1 - D_o / D_e, written to divide once
    value = 1.0 - (n - 1) * (n - matches) / expected_mismatch
    return AgreementResult(value, OK, "", details)


def _task_shares(p: _Pairable):
    """Per nonzero cell: its share of agreeing pairs and of (j, not j) pairs in its task."""
    pairs_in_task = p.cell_task * (p.cell_task - 1)
    agree = p.cell_count * (p.cell_count - 1) / pairs_in_task
    split = p.cell_count * (p.cell_task - p.cell_count) / pairs_in_task
    return agree, split


def _fleiss(p: _Pairable) -> AgreementResult:
    if p.n_tasks == 0:
        return _insufficient(p)
    agree, split = _task_shares(p)
    p_bar = float(agree.sum()) / p.n_tasks
    n = p.n_values
    share = p.class_totals / n
    p_e = float(np.sum(share**2))
    per_class_split = np.bincount(p.cell_class, weights=split, minlength=share.size) / p.n_tasks
    varies = (p.class_totals > 0) & (p.class_totals < n)
    spread = share * (1.0 - share)
    per_category = {
        str(name): (float(1.0 - per_class_split[j] / spread[j]) if varies[j] else None)
        for j, name in enumerate(p.classes)
    }
    details = {**p.base_details(), "P_bar": p_bar, "P_e": p_e, "per_category_kappa": per_category}
    if not varies.any():  # a single category among the answers: P_e = 1 exactly
        reason = f"undefined: every rating is {_only_value(p)} (P_e = 1), kappa is 0/0"
        return AgreementResult(None, UNDEFINED, reason, details)
    # 1 - P_e from the integer counts: no cancellation when one category dominates
    one_minus_p_e = (n * n - int(np.sum(p.class_totals**2))) / (n * n)
    return AgreementResult((p_bar - p_e) / one_minus_p_e, OK, "", details)


def _percent(p: _Pairable) -> AgreementResult:
    if p.n_tasks == 0:
        return _insufficient(p)
    agree, _ = _task_shares(p)
    return AgreementResult(float(agree.sum()) / p.n_tasks, OK, "", p.base_details())


def _pair_tables(p: _Pairable):
    """Per worker pair (a < b) over their shared tasks: pair keys ``a * W + b`` (sorted),
    shared tasks, agreements, and ``sum_c A_c B_c`` (``A_c``, ``B_c``: how often a resp. b
    said c on those tasks) - the integer parts of Cohen's kappa.

    With few answers per task (the usual design) the answer pairs within tasks are listed
    outright; otherwise sparse products bound the memory by the distinct worker pairs.
    """
    m = np.bincount(p.task).astype(np.int64)
    if int(np.sum(m * (m - 1) // 2)) <= MAX_LISTED_ANSWER_PAIRS:
        return _pair_tables_listed(p, m)
    return _pair_tables_sparse(p)


def _pair_tables_listed(p: _Pairable, per_task: np.ndarray):
    """:func:`_pair_tables` from every within-task answer pair: one sort of their worker
    pair keys, then counts (7x faster than the sparse products on 10 million answers)."""
    w, k = p.n_workers, max(p.classes.size, 1)
    first, second = _answer_pairs(per_task)
    # rows are sorted by (task, worker): the first answer of a pair has the smaller worker
    a, b = p.worker[first].astype(np.int64), p.worker[second].astype(np.int64)
    la, lb = p.label[first].astype(np.int64), p.label[second].astype(np.int64)
    del first, second
    pair_keys, pair_of = _compact(a * w + b)
    del a, b
    n_pairs = pair_keys.size
    common = np.bincount(pair_of, minlength=n_pairs)
    agree = np.bincount(pair_of, weights=la == lb, minlength=n_pairs)
    if n_pairs * k <= 4 * pair_of.size:
        # per pair and class: how often each of the two workers said it
        a_c = np.bincount(pair_of * k + la, minlength=n_pairs * k).reshape(n_pairs, k)
        b_c = np.bincount(pair_of * k + lb, minlength=n_pairs * k).reshape(n_pairs, k)
        chance = np.einsum("pc,pc->p", a_c, b_c)
    else:  # many classes: only the (pair, class) cells that occur
        a_keys, a_n = np.unique(pair_of * k + la, return_counts=True)
        b_keys, b_n = np.unique(pair_of * k + lb, return_counts=True)
        at = np.minimum(np.searchsorted(b_keys, a_keys), b_keys.size - 1)
        both = b_keys[at] == a_keys
        chance = np.bincount(a_keys[both] // k, weights=a_n[both] * b_n[at[both]], minlength=n_pairs)
    return pair_keys, common.astype(np.int64), np.rint(agree).astype(np.int64), np.rint(chance).astype(np.int64)


def _answer_pairs(per_task: np.ndarray):
    """Row indices (first, second) of every pair of answers on one task, for rows grouped
    by task; one step per distinct number of answers per task, not per task."""
    starts = np.cumsum(per_task) - per_task
    firsts, seconds = [], []
    for size in np.unique(per_task[per_task >= 2]):
        iu, iv = np.triu_indices(int(size), k=1)
        begin = starts[per_task == size][:, None]
        firsts.append((begin + iu).ravel())
        seconds.append((begin + iv).ravel())
    if not firsts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(firsts), np.concatenate(seconds)


def _pair_tables_sparse(p: _Pairable):
    """:func:`_pair_tables` by sparse products, for designs with many answers per task.

    Sparse products count the within-task answer pairs per worker pair in compiled code,
    with memory bounded by the number of distinct worker pairs rather than of answer pairs
    (which grows with the square of answers per task):
    ``X`` task x worker gives shared tasks ``X^T X``; ``R`` (task, class) x worker gives
    agreements ``R^T R``; ``Y`` task x (worker, class) gives ``M = Y^T X`` with
    ``M[(a, c), b] = A_c`` for the pair (a, b) and ``M[(b, c), a] = B_c``.
    """
    w, k = p.n_workers, max(p.classes.size, 1)
    per_task = np.bincount(p.task)
    kept = per_task[p.task] >= 2
    task_id = np.cumsum(per_task >= 2) - 1  # compact ids of the tasks that can pair
    task, worker, label = task_id[p.task[kept]], p.worker[kept].astype(np.int64), p.label[kept]
    n_tasks = int(task.max()) + 1 if task.size else 0

    x = _count_matrix(task, worker, (n_tasks, w))
    pair_keys, common = _upper(x.T @ x, w)

    cell_keys, cell_of = _compact(task.astype(np.int64) * k + label)
    r = _count_matrix(cell_of, worker, (cell_keys.size, w))
    keys, values = _upper(r.T @ r, w)
    agree = np.bincount(np.searchsorted(pair_keys, keys), weights=values, minlength=pair_keys.size)

    wc_keys, wc_of = _compact(worker * k + label)
    m = _count_matrix(wc_of, task, (wc_keys.size, n_tasks)) @ x
    m = sparse.csr_matrix(m)
    m.sum_duplicates()  # sorts the column indices: entry keys below come out sorted
    row = np.repeat(np.arange(wc_keys.size, dtype=np.int64), np.diff(m.indptr))
    a, c, b = wc_keys[row] // k, wc_keys[row] % k, m.indices.astype(np.int64)
    upper = a < b
    a, c, b, a_c = a[upper], c[upper], b[upper], m.data[upper]
    # B_c sits at M[(b, c), a]; absent when b never said c on a shared task (then B_c = 0)
    entry_keys = row * w + m.indices
    partner_row = np.minimum(np.searchsorted(wc_keys, b * k + c), wc_keys.size - 1)
    found = wc_keys[partner_row] == b * k + c
    partner_key = partner_row * w + a
    at = np.minimum(np.searchsorted(entry_keys, partner_key), entry_keys.size - 1)
    found &= entry_keys[at] == partner_key
    b_c = np.where(found, m.data[at], 0)
    chance = np.bincount(np.searchsorted(pair_keys, a * w + b), weights=a_c * b_c, minlength=pair_keys.size)
    return pair_keys, common, np.rint(agree).astype(np.int64), np.rint(chance).astype(np.int64)


def _compact(keys: np.ndarray):
    """Sorted distinct keys and each key's index among them."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    new = np.ones(keys.size, dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    index = np.empty(keys.size, dtype=np.int64)
    index[order] = np.cumsum(new) - 1
    return sorted_keys[new], index


def _upper(matrix, w: int):
    """Strictly upper-triangle entries of a worker x worker matrix: (sorted keys a*W+b, values)."""
    matrix = sparse.csr_matrix(matrix)
    matrix.sum_duplicates()  # also sorts indices, so that keys come out sorted
    row = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    upper = matrix.indices > row
    keys = row[upper] * w + matrix.indices[upper]
    return keys, np.rint(matrix.data[upper]).astype(np.int64)


def _cohen(p: _Pairable, min_common: int) -> AgreementResult:
    base = {"min_common": min_common, "n_pairs": 0, "n_pairs_undefined": 0, "n_pairs_below_min_common": 0}
    if p.n_tasks == 0:
        return _insufficient(p, **base)
    if p.n_tasks < min_common:  # no pair can share min_common tasks; skip the pair tables
        reason = f"no pair of workers shares at least {min_common} tasks: only {p.n_tasks} task(s) have 2 answers"
        return _insufficient(p, reason, **{**base, "n_pairs_below_min_common": None})
    m = np.bincount(p.task).astype(np.int64)
    n_pairs_bound = min(int(np.sum(m * (m - 1) // 2)), p.n_workers * (p.n_workers - 1) // 2)
    if n_pairs_bound > MAX_WORKER_PAIRS:
        reason = (
            f"not computed: too many co-occurring worker pairs for pairwise Cohen's kappa (up to "
            f"{n_pairs_bound}, limit {MAX_WORKER_PAIRS}); see Fleiss' kappa or Krippendorff's alpha"
        )
        return AgreementResult(None, NOT_COMPUTED, reason, {**p.base_details(), **base, "n_pairs": None})
    _, common, agree, chance = _pair_tables(p)
    eligible = common >= min_common
    n = common[eligible]
    # kappa = (p_o - p_e) / (1 - p_e) with p_o = agree / n, p_e = chance / n^2
    numerator = agree[eligible] * n - chance[eligible]
    denominator = n * n - chance[eligible]
    defined = denominator > 0
    kappas = numerator[defined] / denominator[defined]
    details = {
        **p.base_details(),
        "min_common": min_common,
        "n_pairs": int(defined.sum()),
        "n_pairs_undefined": int((~defined).sum()),
        "n_pairs_below_min_common": int((~eligible).sum()),
    }
    if n.size == 0:
        return AgreementResult(None, INSUFFICIENT, f"no pair of workers shares at least {min_common} tasks", details)
    if kappas.size == 0:
        reason = (
            "undefined: every worker pair used a single, common category on its shared tasks "
            "(expected agreement p_e = 1), kappa is 0/0"
        )
        return AgreementResult(None, UNDEFINED, reason, details)
    reason = ""
    if details["n_pairs_undefined"]:
        reason = f"{details['n_pairs_undefined']} pair(s) with p_e = 1 (kappa 0/0) left out of the mean"
    return AgreementResult(float(kappas.mean()), OK, reason, details)


# ---------------------------------------------------------------- public API


def krippendorff_alpha(answers: Answers) -> AgreementResult:
    """Krippendorff's alpha for nominal data; tasks with one answer are dropped first."""
    return _alpha(_pairable(answers))


def fleiss_kappa(answers: Answers) -> AgreementResult:
    """Fleiss' kappa generalised to unequal answers per task (see the module docstring);
    ``details["per_category_kappa"]`` maps each class name to its kappa or ``None``."""
    return _fleiss(_pairable(answers))


def cohen_kappa(answers: Answers, min_common: int = 2) -> AgreementResult:
    """Light's kappa: mean Cohen's kappa over worker pairs sharing >= ``min_common`` tasks.

    Pairs whose kappa is 0/0 (both used one and the same category throughout) are left out
    of the mean and counted in ``details["n_pairs_undefined"]``.
    """
    return _cohen(_pairable(answers), _check_min_common(min_common))


def percent_agreement(answers: Answers) -> AgreementResult:
    """Mean over tasks with >= 2 answers of the share of agreeing answer pairs."""
    return _percent(_pairable(answers))


def agreement_statistics(answers: Answers, min_common: int = 2) -> dict[str, AgreementResult]:
    """All four statistics, sharing one pass over the answers."""
    min_common = _check_min_common(min_common)
    p = _pairable(answers)
    return {
        "krippendorff_alpha": _alpha(p),
        "fleiss_kappa": _fleiss(p),
        "cohen_kappa": _cohen(p, min_common),
        "percent_agreement": _percent(p),
    }


def _check_min_common(min_common) -> int:
    if isinstance(min_common, bool) or not isinstance(min_common, (int, np.integer)) or min_common < 1:
        raise ValueError(f"min_common must be an integer >= 1, got {min_common!r}")
    return int(min_common)
