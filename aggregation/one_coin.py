"""One-coin Dawid-Skene: one accuracy per worker, errors spread evenly over the other classes.

Worker ``w`` answers the true class with probability ``s_w`` and each of the ``K - 1``
other classes with probability ``r_w = (1 - s_w) / (K - 1)``.  A task's log-posterior is
then ``log prior[c] + sum_answers log r_w + sum_{answers with label c} log(s_w / r_w)``:
classes nobody gave to the task differ only by their prior.  EM therefore works on the
answered (task, class) cells alone plus one number per task for "every other class", so
time and memory are O(answers + tasks + K) per iteration, never ``tasks x K`` or ``K^2``
(free-text label sets with thousands of classes run fine).  Only the final ``probas_`` is
materialised densely.
"""

from __future__ import annotations

import numpy as np

from ._base import argmax_with_ties, check_answers
from .dawid_skene import CLIP, LOG_FLOOR, check_callback, check_em_params, check_gold, smoothed_priors
from .encoding import Answers


class OneCoinDawidSkene:
    """Dawid-Skene with a single skill (accuracy) per worker.

    Parameters
    ----------
    max_iter, tol : as in :class:`DawidSkene` (``tol`` on the mean log-likelihood per
        answer; ``tol=0`` runs every iteration).
    smoothing : float, default 0.01
        Beta pseudo-count added to both the correct and the wrong side of each worker's
        accuracy: ``s = (expected correct + smoothing) / (answers + 2 * smoothing)``.
    prior_smoothing : float, default 0.01
        Pseudo-count added to every class when the priors are re-estimated.
    init_skills : array (n_workers,), optional
        Warm start: the first iteration starts with an E-step using these accuracies.
    init_priors : array (K,), optional
        Class priors for a warm start; defaults to the mean majority-vote vote fractions.

    Attributes
    ----------
    probas_, labels_, ties_, priors_, log_likelihood_, n_iter_, converged_ :
        as in :class:`DawidSkene`
    skills_ : (n_workers,) accuracy of each worker, in [1e-10, 1 - 1e-10]

    Use :meth:`confusion` for the equivalent confusion matrices.
    """

    def __init__(
        self,
        max_iter: int = 100,
        tol: float = 1e-7,
        smoothing: float = 0.01,
        prior_smoothing: float = 0.01,
        init_skills=None,
        init_priors=None,
    ):
        self.max_iter = max_iter
        self.tol = tol
        self.smoothing = smoothing
        self.prior_smoothing = prior_smoothing
        self.init_skills = init_skills
        self.init_priors = init_priors

    def validate_params(self) -> None:
        """Check the hyperparameters alone (no data): ValueError naming the bad one."""
        check_em_params(self.max_iter, self.tol, self.smoothing, self.prior_smoothing)

    def fit(self, answers: Answers, gold=None, callback=None) -> "OneCoinDawidSkene":
        """Fit by EM; ``gold`` and ``callback`` as in :meth:`DawidSkene.fit`."""
        answers = check_answers(answers)
        self.validate_params()
        check_callback(callback)
        gold_rows, gold_labels = check_gold(gold, answers)
        cells = _Cells(answers, gold_rows, gold_labels)
        self._k = answers.n_classes

        if self.init_skills is None:
            post, u = cells.vote_fractions()
            skills = self._m_step(cells, answers, post)
            priors = self._priors(cells, post, u, np.zeros(answers.n_classes))
        else:
            skills = np.array(self.init_skills, dtype=float)
            if skills.shape != (answers.n_workers,) or not np.all((skills >= 0) & (skills <= 1)):
                raise ValueError(f"init_skills must be {answers.n_workers} accuracies in [0, 1]")
            skills = np.clip(skills, CLIP, 1 - CLIP)
            if self.init_priors is None:
                post, u = cells.vote_fractions()
                priors = self._priors(cells, post, u, np.zeros(answers.n_classes), pseudo=0.0)
            else:
                priors = _checked_priors(self.init_priors, answers.n_classes)

        self.log_likelihood_ = []
        self.converged_ = False
        for iteration in range(1, self.max_iter + 1):
            post, u, log_u, ll = cells.e_step(self._log_rates(skills), priors)
            old_priors = priors
            skills = self._m_step(cells, answers, post)
            priors = self._priors(cells, post, u, old_priors)
            self.log_likelihood_.append(ll)
            if callback is not None:
                callback(iteration, ll)
            if iteration > 1 and abs(ll - self.log_likelihood_[-2]) < self.tol * answers.n_answers:
                self.converged_ = True
                break

        self.n_iter_ = iteration
        self.skills_ = skills
        self.priors_ = priors
        self.probas_ = cells.dense(post, log_u, old_priors)
        self.labels_, self.ties_ = argmax_with_ties(self.probas_, answers.tie_rank)
        return self

    def confusion(self, worker_codes) -> np.ndarray:
        """``(len(worker_codes), K, K)`` confusion matrices (rows = true class) of those workers."""
        s = self.skills_[np.asarray(worker_codes, dtype=np.int64)]
        k = self._k
        if k == 1:
            return np.ones((s.size, 1, 1))
        out = np.repeat(((1 - s) / (k - 1))[:, None, None], k * k, axis=1).reshape(s.size, k, k)
        idx = np.arange(k)
        out[:, idx, idx] = s[:, None]
        return out

    def _log_rates(self, skills):
        """log s_w and log r_w (the probability of each particular wrong label)."""
        if self._k == 1:  # the only label is always right: the model has nothing to learn
            zero = np.zeros_like(skills)
            return zero, zero
        return np.log(skills), np.log(np.maximum((1 - skills) / (self._k - 1), LOG_FLOOR))

    def _m_step(self, cells, answers, post):
        correct = np.bincount(answers.worker, weights=post[cells.answer_cell], minlength=answers.n_workers)
        n = np.bincount(answers.worker, minlength=answers.n_workers)
        skills = (correct + self.smoothing) / np.maximum(n + 2 * self.smoothing, LOG_FLOOR)
        return np.clip(skills, CLIP, 1 - CLIP)

    def _priors(self, cells, post, u, old_priors, pseudo=None):
        mass = cells.class_mass(post, u, old_priors)
        pseudo = self.prior_smoothing if pseudo is None else pseudo
        priors = smoothed_priors(mass, cells.n_tasks, pseudo)
        # floored so that "all the classes nobody gave" keeps a representable mass
        priors = np.maximum(priors, CLIP)
        return priors / priors.sum()


class _Cells:
    """The answered (task, class) cells, sorted by task, plus gold cells."""

    def __init__(self, answers: Answers, gold_rows, gold_labels):
        k = answers.n_classes
        self.k = k
        self.n_tasks = answers.n_tasks
        self.task_of_answer = answers.task
        self.worker_of_answer = answers.worker
        keys = answers.task.astype(np.int64) * k + answers.label
        gold_keys = gold_rows * k + gold_labels
        unique, inverse = np.unique(np.concatenate([keys, gold_keys]), return_inverse=True)
        inverse = inverse.reshape(-1)
        self.answer_cell = inverse[: keys.size]
        self.task = (unique // k).astype(np.int64)
        self.cls = (unique % k).astype(np.int64)
        self.n_cells = unique.size
        # every task has an answer, hence at least one cell
        self.start = np.searchsorted(self.task, np.arange(self.n_tasks))
        per_task = np.diff(np.append(self.start, self.n_cells))
        self.full = per_task == k  # no class left outside the cells
        self.n_answers_cell = np.bincount(self.answer_cell, minlength=self.n_cells).astype(float)
        self.gold_rows = gold_rows
        self.gold_cell = inverse[keys.size :]
        self.is_gold_task = np.zeros(self.n_tasks, dtype=bool)
        self.is_gold_task[gold_rows] = True

    def vote_fractions(self):
        per_task = np.bincount(self.task, weights=self.n_answers_cell, minlength=self.n_tasks)
        post = self.n_answers_cell / per_task[self.task]
        u = np.zeros(self.n_tasks)
        self._clamp(post, u)
        return post, u

    def _clamp(self, post, u):
        if self.gold_rows.size:
            post[self.is_gold_task[self.task]] = 0.0
            post[self.gold_cell] = 1.0
            u[self.gold_rows] = 0.0

    def e_step(self, log_rates, priors):
        """Cell posteriors, ``u`` with ``P(class c) = priors[c] * u[t]`` for classes outside
        task t's cells, ``log u`` (``-inf`` where no such class), and the log-likelihood."""
        log_s, log_r = log_rates
        w = self.worker_of_answer
        d = np.bincount(self.answer_cell, weights=(log_s - log_r)[w], minlength=self.n_cells)
        base = np.bincount(self.task_of_answer, weights=log_r[w], minlength=self.n_tasks)
        v = np.log(priors)[self.cls] + d
        rest = np.maximum(1.0 - np.bincount(self.task, weights=priors[self.cls], minlength=self.n_tasks), 0.0)
        rest[self.full] = 0.0
        log_rest = np.full(self.n_tasks, -np.inf)
        np.log(rest, out=log_rest, where=rest > 0)
        top = np.maximum(np.maximum.reduceat(v, self.start), log_rest)
        ev = np.exp(v - top[self.task])
        z = np.bincount(self.task, weights=ev, minlength=self.n_tasks) + np.exp(log_rest - top)
        post = ev / z[self.task]
        log_u = np.where(rest > 0, -top - np.log(z), -np.inf)
        task_ll = base + top + np.log(z)
        ll = float(task_ll.sum())
        if self.gold_rows.size:
            ll += float((base[self.gold_rows] + v[self.gold_cell]).sum() - task_ll[self.gold_rows].sum())
            log_u[self.gold_rows] = -np.inf
        u = np.exp(log_u)
        self._clamp(post, u)
        return post, u, log_u, ll

    def class_mass(self, post, u, priors):
        """Expected number of tasks of each class: cells plus the spread-out remainder."""
        mass = np.bincount(self.cls, weights=post, minlength=self.k)
        outside = u.sum() - np.bincount(self.cls, weights=u[self.task], minlength=self.k)
        return mass + priors * np.maximum(outside, 0.0)

    def dense(self, post, log_u, priors):
        out = np.exp(np.log(priors)[None, :] + log_u[:, None])
        out[self.task, self.cls] = post
        return out


def _checked_priors(init_priors, k: int) -> np.ndarray:
    priors = np.array(init_priors, dtype=float)
    if priors.shape != (k,) or not np.all(np.isfinite(priors)) or (priors < 0).any() or priors.sum() <= 0:
        raise ValueError(f"init_priors must be {k} finite non-negative numbers with a positive sum")
    priors = np.maximum(priors / priors.sum(), CLIP)
    return priors / priors.sum()
