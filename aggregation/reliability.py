"""Worker reliability from the output of any fitted consensus method.

Every figure is per worker.  Values that cannot be measured are *masked* (numpy masked
arrays whose hidden data is 0.0), never NaN and never a made-up 0.5 or 1.0; ``to_rows``
turns them into ``None``.

Estimability
    A worker is *estimable* when at least one of their answers sits on a task that another
    worker also answered.  On a task only they answered, the consensus is their own answer,
    so the model-based figures (``accuracy_``, ``agreement_``, ``confusion_``,
    ``spammer_score_``) would measure the worker against themselves: they are masked for
    non-estimable workers.  Gold figures only need gold answers.  A worker with neither
    shared tasks nor gold answers gets the ``not_estimable`` flag: nothing about them is
    known.

Flags (thresholds are parameters)
    ``suspected_spammer``  spammer score < ``spammer_threshold`` and >= ``min_answers`` answers;
    ``low_agreement``      agreement < ``agreement_threshold`` and >= ``min_answers`` answers;
    ``low_gold_accuracy``  the upper end of the 95% Wilson interval of the gold accuracy is
                           below ``gold_accuracy_threshold``: we are confident the worker is
                           worse than the threshold, so one unlucky gold answer never flags
                           anybody (with 1 wrong answer out of 1 the upper bound is 0.79);
    ``not_estimable``      see above.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._base import check_answers
from .encoding import Answers

FLAGS = ("suspected_spammer", "low_agreement", "low_gold_accuracy", "not_estimable")

# Above this many classes, posterior-weighted counts go through a sparse product.
_DENSE_COUNT_CLASSES = 32

# Two-sided 95% normal quantile, scipy.stats.norm.ppf(0.975).
Z95 = 1.959963984540054


def check_outputs(answers: Answers, probas, labels, gold=None):
    """Validate a fitted method's outputs against ``answers``; returns numpy arrays."""
    answers = check_answers(answers)
    shape = (answers.n_tasks, answers.n_classes)
    probas = np.asarray(probas, dtype=float)
    if probas.shape != shape:
        raise ValueError(f"probas must have shape {shape} (tasks, classes), got {probas.shape}")
    if not np.all(np.isfinite(probas)) or (probas < 0).any():
        raise ValueError("probas must be finite and non-negative")
    if probas.size and not np.allclose(probas.sum(axis=1), 1.0, rtol=0, atol=1e-6):
        raise ValueError("every row of probas must sum to one")
    labels = check_codes(labels, answers, "labels")
    gold = None if gold is None else check_codes(gold, answers, "gold", allow_unknown=True)
    return answers, probas, labels, gold


def check_codes(values, answers: Answers, what: str, allow_unknown: bool = False) -> np.ndarray:
    """One class code per task (``-1`` allowed for unknown when ``allow_unknown``)."""
    arr = np.asarray(values)
    if arr.shape != (answers.n_tasks,):
        raise ValueError(f"{what} must have one class code per task ({answers.n_tasks}), got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{what} must be integer class codes")
    low = -1 if allow_unknown else 0
    if arr.size and (arr.min() < low or arr.max() >= answers.n_classes):
        raise ValueError(f"{what} codes must lie in [{low}, {answers.n_classes})")
    return arr.astype(np.int64)


def wilson_interval(successes, n, z: float = Z95):
    """Wilson score interval for a binomial proportion; (0, 1) where ``n`` is 0."""
    x = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    safe_n = np.maximum(n, 1.0)
    p = x / safe_n
    z2 = z * z
    denom = 1.0 + z2 / safe_n
    centre = (p + z2 / (2 * safe_n)) / denom
    half = z / denom * np.sqrt(np.maximum(p * (1 - p) / safe_n + z2 / (4 * safe_n**2), 0.0))
    low = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), 1.0)
    return low, high


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values; np.unique's hash path is several times slower on
    millions of integer keys."""
    keys = np.sort(keys)
    keep = np.ones(keys.size, dtype=bool)
    keep[1:] = keys[1:] != keys[:-1]
    return keys[keep]


def _masked(values, known) -> np.ma.MaskedArray:
    known = np.asarray(known, dtype=bool)
    return np.ma.MaskedArray(np.where(known, values, 0.0), mask=~known)


def spammer_scores(rows: np.ndarray, known: np.ndarray):
    """Raykar & Yu (2012) spammer score of dense confusion matrices ``(W, K, K)``.

    S = 1/(k(k-1)) * sum_{c<c'} ||a_c - a_c'||^2 over the ``known`` rows ``(W, K)`` only,
    k being their number (the paper's K when every row is known): a worker who never met
    a class is scored on the classes they did meet, and a perfect one still scores 1.
    Returns ``(score, defined)``; a score needs two known rows.
    """
    a = np.where(known[..., None], rows, 0.0)
    k = known.sum(axis=1)
    sum_sq = np.einsum("wcl,wcl->w", a, a)
    col = a.sum(axis=1)
    return _score(k, sum_sq, np.einsum("wl,wl->w", col, col))


def _score(k, sum_sq, total_sq):
    # sum_{c<c'} ||a_c - a_c'||^2 = k * sum_c ||a_c||^2 - ||sum_c a_c||^2, over k known rows
    k = np.asarray(k, dtype=float)
    defined = k >= 2
    pairs = np.where(defined, k * (k - 1), 1.0)
    score = np.clip((k * sum_sq - total_sq) / pairs, 0.0, 1.0)
    return np.where(defined, score, 0.0), defined


class WorkerReliability:
    """Per-worker accuracy, agreement, confusion, gold accuracy and spammer score.

    Parameters
    ----------
    spammer_threshold : float, default 0.05
        Flag ``suspected_spammer`` below this Raykar-Yu score.  For a binary worker the
        score is (sensitivity + specificity - 1)^2, so 0.05 is sensitivity = specificity
        of about 0.61; for a K-class worker right with probability p and wrong uniformly
        it is ((K p - 1) / (K - 1))^2.
        Scores follow the sharpness of ``probas``: majority-vote shares as posteriors
        blur every confusion row towards the others and lower everybody's score (on
        bluebirds, 28 of 39 workers fall below 0.05 with vote shares, 19 with the gold
        labels as posteriors), so prefer a model's posteriors (Dawid-Skene) here.
    agreement_threshold : float, default 0.5
        Flag ``low_agreement`` when fewer than this share of answers match the consensus.
    gold_accuracy_threshold : float, default 0.6
        Flag ``low_gold_accuracy`` when the 95% Wilson upper bound is below this.
    min_answers : int, default 10
        Answers a worker needs before the spammer and agreement flags apply.
    min_row_mass : float, default 1e-6
        Posterior mass (effective number of answers) a worker needs on tasks of true
        class c for row c of their confusion matrix to be known.
    max_confusion_cells : int, default 5_000_000
        Above ``W * K * K`` cells (40 MB of float64) the dense ``confusion_`` is not built
        (``confusion_ = None``, see ``confusion_note_``); every other figure, the spammer
        score included, is computed sparsely and is still available.

    Attributes (one entry per worker code)
    ----------
    n_answers_, n_tasks_ : answers and distinct tasks
    n_shared_ : answers on tasks that another worker also answered
    estimable_ : bool, see the module notes
    accuracy_ : masked; mean over the worker's answers of the posterior of their answer
    agreement_ : masked; share of answers equal to the consensus label
    confusion_ : (W, K, K) rows = true class, or None; unknown rows are all zero
    confusion_known_ : (W, K) bool, which rows of ``confusion_`` are known, or None
    spammer_score_ : masked; needs two known confusion rows
    gold_n_, gold_correct_ : answers on gold tasks and how many match the gold
    gold_accuracy_, gold_ci_low_, gold_ci_high_ : masked where ``gold_n_`` is 0
    flags_ : dict flag name -> (W,) bool, names in :data:`FLAGS`
    """

    def __init__(
        self,
        spammer_threshold: float = 0.05,
        agreement_threshold: float = 0.5,
        gold_accuracy_threshold: float = 0.6,
        min_answers: int = 10,
        min_row_mass: float = 1e-6,
        max_confusion_cells: int = 5_000_000,
    ):
        self.spammer_threshold = spammer_threshold
        self.agreement_threshold = agreement_threshold
        self.gold_accuracy_threshold = gold_accuracy_threshold
        self.min_answers = min_answers
        self.min_row_mass = min_row_mass
        self.max_confusion_cells = max_confusion_cells

    def validate_params(self) -> None:
        """Check the thresholds alone (no data): ValueError naming the bad one."""
        for name in ("spammer_threshold", "agreement_threshold", "gold_accuracy_threshold"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):  # NaN fails too
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        for name in ("min_answers", "max_confusion_cells"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not (np.isfinite(self.min_row_mass) and self.min_row_mass >= 0):
            raise ValueError(f"min_row_mass must be finite and >= 0, got {self.min_row_mass!r}")

    def fit(self, answers: Answers, probas, labels, gold=None, confusion=None) -> "WorkerReliability":
        self.validate_params()
        answers, probas, labels, gold = check_outputs(answers, probas, labels, gold)
        n_workers = answers.n_workers
        w, t, lab = answers.worker.astype(np.int64), answers.task.astype(np.int64), answers.label
        self.worker_names_, self.classes_ = answers.worker_names, answers.classes

        def per_worker(weights=None):
            return np.bincount(w, weights=weights, minlength=n_workers)

        self.n_answers_ = per_worker()
        if answers.duplicates == "all":
            pair_worker = _distinct(w * answers.n_tasks + t) // answers.n_tasks
            self.n_tasks_ = np.bincount(pair_worker, minlength=n_workers)
            task_of_pair = _distinct(t * n_workers + w) // n_workers
            workers_on_task = np.bincount(task_of_pair, minlength=answers.n_tasks)
        else:  # the encoder kept one answer per (task, worker): no sort needed
            self.n_tasks_ = self.n_answers_.copy()
            workers_on_task = answers.answers_per_task
        self.n_shared_ = per_worker(workers_on_task[t] >= 2).astype(np.int64)
        self.estimable_ = self.n_shared_ > 0

        n = np.maximum(self.n_answers_, 1)
        self.accuracy_ = _masked(per_worker(probas[t, lab]) / n, self.estimable_)
        self.agreement_ = _masked(per_worker(labels[t] == lab) / n, self.estimable_)

        self._fit_confusion(answers, probas, confusion)
        self._fit_gold(answers, gold)
        self._fit_flags()
        return self

    def _fit_confusion(self, answers: Answers, probas, confusion):
        n_workers, n_classes = answers.n_workers, answers.n_classes
        cells = n_workers * n_classes * n_classes
        self.confusion_note_ = None
        posterior_counts = _posterior_counts(answers, probas)
        mass = posterior_counts[-1]
        if confusion is not None:
            confusion = np.asarray(confusion, dtype=float)
            if confusion.shape != (n_workers, n_classes, n_classes):
                raise ValueError(
                    f"confusion must have shape {(n_workers, n_classes, n_classes)}, got {confusion.shape}"
                )
            if not np.all(np.isfinite(confusion)) or (confusion < 0).any():
                raise ValueError("confusion must be finite and non-negative")
            known = (mass.toarray() >= self.min_row_mass) & self.estimable_[:, None]
            if not np.allclose(confusion.sum(axis=2)[known], 1.0, rtol=0, atol=1e-6):
                raise ValueError("every confusion row (true class) must sum to one")
            score, defined = spammer_scores(confusion, known)
            dense = np.where(known[..., None], confusion, 0.0) if cells <= self.max_confusion_cells else None
        else:
            score, defined, rows = _sparse_scores(posterior_counts, self.estimable_, self.min_row_mass, n_classes)
            dense, known = None, None
            if cells <= self.max_confusion_cells:
                p_worker, p_label, c, value = rows
                dense = np.zeros((n_workers, n_classes, n_classes))
                dense[p_worker, c, p_label] = value
                known = np.zeros((n_workers, n_classes), dtype=bool)
                m = mass.tocoo()
                ok = (m.data >= self.min_row_mass) & self.estimable_[m.row]
                known[m.row[ok], m.col[ok]] = True
        if cells > self.max_confusion_cells:
            dense, known = None, None
            self.confusion_note_ = (
                f"confusion matrices not kept: {n_workers} workers x {n_classes}^2 classes = {cells} cells "
                f"> max_confusion_cells={self.max_confusion_cells}"
            )
        self.confusion_, self.confusion_known_ = dense, known
        self.spammer_score_ = _masked(score, defined & self.estimable_)

    def _fit_gold(self, answers: Answers, gold):
        n_workers = answers.n_workers
        if gold is None:
            gold = np.full(answers.n_tasks, -1)
        task_gold = gold[answers.task]
        has = task_gold >= 0
        self.gold_n_ = np.bincount(answers.worker, weights=has, minlength=n_workers).astype(np.int64)
        right = has & (task_gold == answers.label)
        self.gold_correct_ = np.bincount(answers.worker, weights=right, minlength=n_workers).astype(np.int64)
        known = self.gold_n_ > 0
        low, high = wilson_interval(self.gold_correct_, self.gold_n_)
        self.gold_accuracy_ = _masked(self.gold_correct_ / np.maximum(self.gold_n_, 1), known)
        self.gold_ci_low_ = _masked(low, known)
        self.gold_ci_high_ = _masked(high, known)

    def _fit_flags(self):
        enough = self.n_answers_ >= self.min_answers

        def below(values, threshold):
            return values.filled(np.inf) < threshold

        self.flags_ = {
            "suspected_spammer": enough & below(self.spammer_score_, self.spammer_threshold),
            "low_agreement": enough & below(self.agreement_, self.agreement_threshold),
            "low_gold_accuracy": below(self.gold_ci_high_, self.gold_accuracy_threshold),
            "not_estimable": ~self.estimable_ & (self.gold_n_ == 0),
        }

    def to_rows(self, worker_names=None, classes=None, include_confusion: bool = True):
        """One JSON-safe dict per worker (in worker-code order); unknown values are None.

        ``confusion`` is ``{true label: {given label: p}}`` over the known rows, or None
        when the matrices were not kept.
        """
        names = self.worker_names_ if worker_names is None else worker_names
        classes = self.classes_ if classes is None else classes
        classes = [str(c) for c in classes]
        columns = {
            "accuracy": self.accuracy_,
            "agreement": self.agreement_,
            "spammer_score": self.spammer_score_,
            "gold_accuracy": self.gold_accuracy_,
            "gold_ci_low": self.gold_ci_low_,
            "gold_ci_high": self.gold_ci_high_,
        }
        plain = {key: col.filled(0.0).tolist() for key, col in columns.items()}
        masks = {key: np.ma.getmaskarray(col).tolist() for key, col in columns.items()}
        flags = {key: value.tolist() for key, value in self.flags_.items()}
        for i, name in enumerate(names):
            row = {
                "worker": str(name),
                "n_answers": int(self.n_answers_[i]),
                "n_tasks": int(self.n_tasks_[i]),
                "n_shared_answers": int(self.n_shared_[i]),
                "estimable": bool(self.estimable_[i]),
                "gold_n": int(self.gold_n_[i]),
                "gold_correct": int(self.gold_correct_[i]),
            }
            for key in columns:
                row[key] = None if masks[key][i] else float(plain[key][i])
            row["flags"] = [flag for flag in FLAGS if flags[flag][i]]
            if include_confusion:
                row["confusion"] = self._confusion_dict(i, classes)
            yield row

    def _confusion_dict(self, worker: int, classes):
        if self.confusion_ is None:
            return None
        matrix = self.confusion_[worker]
        return {
            classes[c]: dict(zip(classes, matrix[c].tolist()))
            for c in np.flatnonzero(self.confusion_known_[worker])
        }


def _posterior_counts(answers: Answers, probas):
    """Posterior-weighted counts, sparse.

    ``counts[p, c]`` sums P(true class c) over worker w's answers with label l, one row
    p per (worker, label) pair that occurs (``pair_worker[p]``, ``pair_label[p]``);
    ``mass[w, c]`` sums it over all of w's answers.  Memory follows the non-zeros, never W * K * K.
    """
    n_classes = answers.n_classes
    pair_key = answers.worker.astype(np.int64) * n_classes + answers.label
    if answers.n_workers * n_classes <= max(answers.n_answers, 1 << 16):
        # small key space: one (mostly used) row per possible pair beats sorting the keys
        keys, pair_of = np.arange(answers.n_workers * n_classes), pair_key
    else:
        keys, pair_of = np.unique(pair_key, return_inverse=True)
        pair_of = pair_of.reshape(-1)
    if n_classes <= _DENSE_COUNT_CLASSES and keys.size * n_classes <= max(answers.n_answers, 1 << 16):
        # few classes: one weighted bincount per class is ~4x faster than a sparse product
        dense = np.empty((keys.size, n_classes))
        for c in range(n_classes):
            dense[:, c] = np.bincount(pair_of, weights=probas[answers.task, c], minlength=keys.size)
        counts = sparse.csr_matrix(dense)
    else:
        pick = sparse.csr_matrix(
            (np.ones(answers.n_answers), (pair_of, answers.task)), shape=(keys.size, answers.n_tasks)
        )
        counts = (pick @ sparse.csr_matrix(probas)).tocsr()
    counts.eliminate_zeros()
    pair_worker, pair_label = keys // n_classes, keys % n_classes
    to_worker = sparse.csr_matrix(
        (np.ones(keys.size), (pair_worker, np.arange(keys.size))), shape=(answers.n_workers, keys.size)
    )
    mass = (to_worker @ counts).tocsr()
    return counts, pair_worker, pair_label, mass


def _sparse_scores(posterior_counts, estimable, min_row_mass, n_classes):
    """Spammer scores from the sparse counts, with the normalised confusion entries."""
    counts, worker_of_pair, label_of_pair, mass = posterior_counts
    n_workers = mass.shape[0]
    c = counts.tocoo()
    pair_worker = worker_of_pair[c.row]
    m = mass.tocoo()
    m_key = m.row.astype(np.int64) * n_classes + m.col
    order = np.argsort(m_key)
    where = order[np.searchsorted(m_key, pair_worker * n_classes + c.col, sorter=order)]
    row_mass = m.data[where]
    ok = (row_mass >= min_row_mass) & estimable[pair_worker]
    value = c.data[ok] / row_mass[ok]
    rows_kept, worker_kept = c.row[ok], pair_worker[ok]
    sum_sq = np.bincount(worker_kept, weights=value**2, minlength=n_workers)
    col_sum = np.bincount(rows_kept, weights=value, minlength=counts.shape[0])
    total_sq = np.bincount(worker_of_pair, weights=col_sum**2, minlength=n_workers)
    known_rows = (m.data >= min_row_mass) & estimable[m.row]
    k = np.bincount(m.row[known_rows], minlength=n_workers)
    score, defined = _score(k, sum_sq, total_sq)
    return score, defined, (worker_kept, label_of_pair[rows_kept], c.col[ok], value)
