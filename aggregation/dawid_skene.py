"""Dawid-Skene: one full confusion matrix per worker, fitted by EM (Dawid & Skene 1979).

The answers become a sparse matrix ``A`` (tasks x worker-label pairs, ``p = worker*K +
label``) holding answer counts, built once.  Each EM iteration is then two sparse-dense
products and a few ``(n_tasks, K)`` array operations:

* E-step: ``log posterior = log prior + A @ logT`` with ``logT[p, k] = log confusion[w, k, l]``;
* M-step: soft counts ``A.T @ posterior`` reshaped to ``(worker, given label, true class)``.

Nothing loops over answers, tasks or workers in Python.

With ``smoothing=0`` and ``prior_smoothing=0`` the model is crowd-kit 1.4.2's
``DawidSkene`` step for step: the same majority-vote initialisation, the same M-step
(soft counts of the (worker, label) pairs the worker used, clipped below at 1e-10, then
normalised over those labels), the same E-step.  Differences: crowd-kit stops on its
evidence lower bound and ``tol=1e-5``; we stop on the observed-data log-likelihood (see
``tol``), so compare posteriors at a fixed iteration count (``tol=0`` here, ``tol=-inf``
there).  Ties go to ``answers.tie_rank`` here, to column order there; crowd-kit's returned
``probas_`` are clipped below at 1e-10 without renormalising, ours are not.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._base import argmax_with_ties, check_answers
from .encoding import Answers

# crowd-kit clips soft counts of used (worker, label) pairs at this value, which keeps a
# class the worker has never been seen to answer correctly possible instead of log(0).
CLIP = 1e-10
# Floor inside logarithms that must stay finite but are otherwise never meant to bite.
LOG_FLOOR = 1e-300

DEFAULT_MAX_CONFUSION_CELLS = 20_000_000


class DawidSkene:
    """Classic Dawid-Skene EM with a full ``K x K`` confusion matrix per worker.

    Parameters
    ----------
    max_iter : int, default 100
        Maximum number of EM iterations (each is one E-step then one M-step). At least 1.
    tol : float, default 1e-7
        Convergence threshold on the mean log-likelihood per answer: the fit stops after
        iteration ``i > 1`` when ``|LL_i - LL_{i-1}| / n_answers < tol``, where ``LL_i`` is
        ``log_likelihood_[i-1]``.  Per answer so that the threshold means the same for 10
        and 10 million answers.  ``tol=0`` runs all ``max_iter`` iterations.
    smoothing : float, default 0.001
        Dirichlet pseudo-count added to every confusion cell before normalising (MAP
        instead of maximum-likelihood EM).  Keeps a true class a worker never met from
        being 0/0 and a label never given for a class from being impossible.  Kept this
        light because it is added per worker: on trec_rf10 (766 workers, most with few
        answers) 0.01 already costs half a point of accuracy against unsmoothed DS.
    prior_smoothing : float, default 0.01
        Pseudo-count added to every class when the class priors are re-estimated.
    init_confusion : array (n_workers, K, K), optional
        Warm start (e.g. ``confusion_`` of an earlier fit on the same workers and
        classes): the first iteration starts with an E-step using it instead of the
        majority-vote initialisation.  Rows are renormalised.
    init_priors : array (K,), optional
        Class priors for a warm start; defaults to the mean majority-vote vote fractions.
    max_confusion_cells : int, default 20,000,000
        ``fit`` refuses inputs where ``n_workers * K * K`` exceeds this (memory and time
        grow with it; 20 million cells is 160 MB per copy).

    Attributes
    ----------
    probas_ : (n_tasks, K) posterior class probabilities from the last E-step; exactly 0
        for a declared class that no answer and no gold label names (see
        :func:`silent_classes`: the data cannot identify such a class)
    labels_ : (n_tasks,) class codes (argmax of ``probas_``, ties by ``answers.tie_rank``)
    ties_ : (n_tasks,) whether the top posterior was shared by several classes
    priors_ : (K,) class priors after the last M-step
    confusion_ : (n_workers, K, K) ``confusion_[w, k, l] = P(worker w answers l | true
        class k)``; rows sum to one
    log_likelihood_ : list of float, one per iteration: log-likelihood of the answers
        (and of the gold labels, for clamped tasks) under the parameters that iteration's
        E-step used; with smoothing > 0 this is MAP EM, so it may move slightly
        non-monotonically but its changes vanish at convergence
    n_iter_ : int, iterations run
    converged_ : bool, whether ``tol`` stopped the fit before ``max_iter``
    """

    def __init__(
        self,
        max_iter: int = 100,
        tol: float = 1e-7,
        smoothing: float = 0.001,
        prior_smoothing: float = 0.01,
        init_confusion=None,
        init_priors=None,
        max_confusion_cells: int = DEFAULT_MAX_CONFUSION_CELLS,
    ):
        self.max_iter = max_iter
        self.tol = tol
        self.smoothing = smoothing
        self.prior_smoothing = prior_smoothing
        self.init_confusion = init_confusion
        self.init_priors = init_priors
        self.max_confusion_cells = max_confusion_cells

    def fit(self, answers: Answers, gold=None, callback=None) -> "DawidSkene":
        """Fit by EM.

        ``gold``: int array (n_tasks,) of class codes, -1 where unknown (see
        :func:`aggregation.encode_gold`); known tasks have their posterior clamped to
        their label in every E-step.  ``callback(iteration, log_likelihood)`` is called
        after every iteration (iterations count from 1).
        """
        answers = check_answers(answers)
        self.validate_params()
        check_callback(callback)
        self.check_size(answers)
        n_workers, k = answers.n_workers, answers.n_classes
        gold_rows, gold_labels = check_gold(gold, answers)
        self._silent = silent_classes(answers, gold_labels)

        pair = answers.worker.astype(np.int64) * k + answers.label
        ones = np.ones(answers.n_answers)
        shape = (answers.n_tasks, n_workers * k)
        a = sparse.csr_matrix((ones, (answers.task, pair)), shape=shape)
        # a CSC view, not a CSR copy: the product then walks the posteriors in task
        # order and scatters into the small pair table, instead of gathering posterior
        # rows at random (5x faster on 10 million answers, and no second matrix)
        a_t = a.T
        used = np.bincount(pair, minlength=shape[1]) > 0  # (worker, label) pairs given
        del ones, pair

        if self.init_confusion is None:
            post = vote_fractions(answers)
            clamp(post, gold_rows, gold_labels)
            priors = self._priors(post)
            # keep (worker, given label, true class) layout: it is logT's layout
            given = self._m_step(a_t, post, used, n_workers, k)
        else:
            given = self._checked_init_confusion(n_workers, k).transpose(0, 2, 1)
            priors = without_silent(check_init_priors(self.init_priors, k, answers), self._silent)

        n_answers = answers.n_answers
        self.log_likelihood_ = []
        self.converged_ = False
        for iteration in range(1, self.max_iter + 1):
            log_t = np.log(np.maximum(given, LOG_FLOOR)).reshape(n_workers * k, k)
            post, ll = e_step(a @ log_t, log_priors(priors, self._silent), gold_rows, gold_labels)
            del log_t
            priors = self._priors(post)
            given = self._m_step(a_t, post, used, n_workers, k)
            self.log_likelihood_.append(ll)
            if callback is not None:
                callback(iteration, ll)
            if iteration > 1 and abs(ll - self.log_likelihood_[-2]) < self.tol * n_answers:
                self.converged_ = True
                break

        self.n_iter_ = iteration
        self.probas_ = post
        self.priors_ = priors
        self.confusion_ = np.ascontiguousarray(given.transpose(0, 2, 1))
        self.labels_, self.ties_ = argmax_with_ties(post, answers.tie_rank)
        return self

    def validate_params(self) -> None:
        """Check the hyperparameters alone (no data): ValueError naming the bad one."""
        check_em_params(self.max_iter, self.tol, self.smoothing, self.prior_smoothing)
        check_positive_int("max_confusion_cells", self.max_confusion_cells)

    def check_size(self, answers: Answers) -> None:
        """Refuse, before any work, an input whose confusion matrices would not fit."""
        n_workers, k = answers.n_workers, answers.n_classes
        cells = n_workers * k * k
        if cells > self.max_confusion_cells:
            raise ValueError(
                f"Dawid-Skene keeps a dense {k} x {k} confusion matrix per worker: {k} classes and "
                f"{n_workers} workers need {cells:,} cells, over max_confusion_cells="
                f"{self.max_confusion_cells:,}. Use one_coin_dawid_skene (OneCoinDawidSkene), whose "
                f"memory grows linearly with the number of classes, or merge rare labels."
            )

    def _priors(self, post: np.ndarray) -> np.ndarray:
        return without_silent(smoothed_priors(post.sum(axis=0), post.shape[0], self.prior_smoothing), self._silent)

    def _m_step(self, a_t, post, used, n_workers, k) -> np.ndarray:
        """Confusion in (worker, given label, true class) layout, normalised over labels."""
        counts = a_t @ post  # (W*K, K): row w*K+l, column true class
        # crowd-kit's clip: only pairs the worker used (the others never enter an E-step)
        np.maximum(counts, CLIP, out=counts, where=used[:, None])
        counts = counts.reshape(n_workers, k, k)
        if self.smoothing:
            counts += self.smoothing
        total = counts.sum(axis=1, keepdims=True)
        # every worker used some label, so total >= CLIP > 0; the guard is for safety only
        np.divide(counts, total, out=counts, where=total > 0)
        return counts

    def _checked_init_confusion(self, n_workers, k) -> np.ndarray:
        conf = np.array(self.init_confusion, dtype=float)
        if conf.shape != (n_workers, k, k):
            raise ValueError(f"init_confusion must have shape {(n_workers, k, k)}, got {conf.shape}")
        if not np.all(np.isfinite(conf)) or (conf < 0).any():
            raise ValueError("init_confusion must be finite and non-negative")
        total = conf.sum(axis=2, keepdims=True)
        return np.divide(conf, total, out=np.full_like(conf, 1.0 / k), where=total > 0)


# ---------------------------------------------------------------- shared EM pieces


def check_em_params(max_iter, tol, smoothing, prior_smoothing) -> None:
    check_positive_int("max_iter", max_iter)
    for name, value in (("tol", tol), ("smoothing", smoothing), ("prior_smoothing", prior_smoothing)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


def check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def check_callback(callback) -> None:
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable as callback(iteration, log_likelihood)")


def check_gold(gold, answers: Answers) -> tuple[np.ndarray, np.ndarray]:
    """Rows and class codes of the known tasks."""
    if gold is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    gold = np.asarray(gold)
    if gold.shape != (answers.n_tasks,) or gold.dtype.kind not in "iu":
        raise ValueError(f"gold must be an integer array of shape ({answers.n_tasks},), see encode_gold")
    if ((gold < -1) | (gold >= answers.n_classes)).any():
        raise ValueError(f"gold codes must be -1 (unknown) or a class code below {answers.n_classes}")
    rows = np.flatnonzero(gold >= 0)
    return rows, gold[rows].astype(np.int64)


def check_init_priors(init_priors, k: int, answers: Answers) -> np.ndarray:
    if init_priors is None:
        return vote_fractions(answers).mean(axis=0)
    priors = np.array(init_priors, dtype=float)
    if priors.shape != (k,) or not np.all(np.isfinite(priors)) or (priors < 0).any() or priors.sum() <= 0:
        raise ValueError(f"init_priors must be {k} finite non-negative numbers with a positive sum")
    return priors / priors.sum()


def vote_fractions(answers: Answers) -> np.ndarray:
    """(n_tasks, K) share of each task's answers (all kept rows) given to each class."""
    k = answers.n_classes
    cell = answers.task.astype(np.int64) * k + answers.label
    counts = np.bincount(cell, minlength=answers.n_tasks * k).reshape(answers.n_tasks, k).astype(float)
    counts /= counts.sum(axis=1, keepdims=True)  # every task has at least one answer
    return counts


def silent_classes(answers: Answers, gold_labels: np.ndarray) -> np.ndarray:
    """(K,) bool: declared classes that no answer and no gold label names.

    Nothing in the data tells such a class apart from any other, so Dawid-Skene cannot
    identify it: its confusion rows are pure smoothing (uniform), and a small prior lets
    EM pour tasks into it (label switching: a spare latent class always raises the
    likelihood).  Default smoothing turned single-answer tasks into 99.8% "a label nobody
    gave".  These classes get prior and posterior 0 instead.
    """
    silent = answers.class_counts == 0
    silent[gold_labels] = False
    return silent


def without_silent(priors: np.ndarray, silent: np.ndarray) -> np.ndarray:
    if not silent.any():
        return priors
    priors = np.where(silent, 0.0, priors)
    return priors / priors.sum()


def log_priors(priors: np.ndarray, silent: np.ndarray) -> np.ndarray:
    # crowd-kit clips priors at 1e-10 (an emptied class stays reachable); a silent class
    # must stay unreachable, hence -inf (e_step's row maximum is always finite, since
    # every task has an answer and so a class that is not silent)
    out = np.log(np.maximum(priors, CLIP))
    out[silent] = -np.inf
    return out


def smoothed_priors(class_mass: np.ndarray, n_tasks: int, pseudo: float) -> np.ndarray:
    return (class_mass + pseudo) / (n_tasks + pseudo * class_mass.size)


def clamp(post: np.ndarray, rows: np.ndarray, labels: np.ndarray) -> None:
    if rows.size:
        post[rows] = 0.0
        post[rows, labels] = 1.0


def e_step(scores: np.ndarray, log_prior: np.ndarray, gold_rows, gold_labels):
    """Posteriors (computed in place in ``scores``) and the log-likelihood.

    ``scores`` holds each task's summed log-likelihood of its answers under every class.
    """
    scores += log_prior
    gold_ll = scores[gold_rows, gold_labels].sum() if gold_rows.size else 0.0
    top = row_max(scores)
    scores -= top[:, None]
    np.exp(scores, out=scores)
    total = scores @ np.ones(scores.shape[1])  # >= 1: the top class gives exp(0)
    scores /= total[:, None]
    task_ll = top + np.log(total)
    ll = float(task_ll.sum())
    if gold_rows.size:
        ll += float(gold_ll - task_ll[gold_rows].sum())
        clamp(scores, gold_rows, gold_labels)
    return scores, ll


def row_max(matrix: np.ndarray) -> np.ndarray:
    """``matrix.max(axis=1)`` for a few columns: numpy reduces short rows ~10x slower
    than it takes the maximum of whole columns."""
    top = matrix[:, 0].copy()
    for k in range(1, matrix.shape[1]):
        np.maximum(top, matrix[:, k], out=top)
    return top
