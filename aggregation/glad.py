"""GLAD: worker ability times task easiness (Whitehill et al., NIPS 2009).

Worker ``w`` answers task ``t`` correctly with probability ``sigmoid(alpha_w * beta_t)``
and otherwise picks one of the other ``K - 1`` classes uniformly.  ``alpha`` (ability) is
any real (negative means adversarial), ``beta = exp(log_beta) > 0`` (inverse difficulty).

Fitting is EM on the penalised log-likelihood: Gaussian priors on ``alpha`` and
``log_beta`` keep the optimum finite even when every worker agrees (the unregularised MLE
then runs off to infinity), and box bounds in the M-step keep it finite even with flat
priors.  All sigmoids are taken in log space from ``exp(-|x|)``, so nothing overflows.
"""

from __future__ import annotations


import numpy as np

from threadpoolctl import threadpool_limits

from ._base import argmax_with_ties, check_answers, softmax_rows
from .encoding import Answers
from .majority_vote import MajorityVote

# Box for the M-step.  |alpha * beta| <= 100 * e^10 is far past where sigmoid saturates,
# so the bounds only bite when a prior is flat, and keep every value finite then.
ALPHA_BOUND = 100.0
LOG_BETA_BOUND = 10.0
_TINY = np.finfo(float).tiny


def _single_threaded_blas():
    """scipy >= 1.15's L-BFGS-B makes many tiny BLAS/LAPACK calls; a multi-threaded
    OpenBLAS turns each into a thread hand-off, 5-10x slower overall on a busy machine
    (scipy/scipy#22438).  One thread is also what a worker process wants anyway."""
    return threadpool_limits(limits=1, user_api="blas")


def _sigmoid_parts(x: np.ndarray):
    """``log sigmoid(x)`` and ``sigmoid(x)`` without overflow for any finite x.

    Same value as ``-np.logaddexp(0, -x)``, but sharing one ``exp(-|x|)`` (which never
    overflows) makes it about 8x faster, and this is the M-step's inner loop.
    """
    e = np.exp(-np.abs(x))
    log_sig = np.minimum(x, 0.0) - np.log1p(e)
    sig = np.where(x >= 0, 1.0, e) / (1.0 + e)
    return log_sig, sig


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(1 / (1 + exp(-x))) without overflow for any finite x."""
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


class GLAD:
    """Generative model of Labels, Abilities and Difficulties.

    Parameters
    ----------
    max_iter : int
        Maximum number of EM iterations.
    tol : float
        Stop when the penalised log-likelihood improves by less than
        ``tol * max(1, |log-likelihood|)`` (relative, so large and small data sets stop
        at the same precision).
    m_step_iter : int
        L-BFGS-B iterations per M-step (a partial M-step is still a valid
        generalised EM step: it never lowers the objective).
    m_step_tol : float
        L-BFGS-B stops when the largest projected gradient component is below this.
        scipy's defaults (1e-5, and a relative decrease of 2e-9) stall EM about 1e-3 away
        from the fixed point in posterior probability; these settings get within 1e-4
        for about 1.5x the time.
    alpha_prior_mean, alpha_prior_var : float
        Gaussian prior on worker ability; mean 1 says "better than chance" a priori.
        ``var = inf`` means a flat prior (the box bounds then keep values finite).
    log_beta_prior_mean, log_beta_prior_var : float
        Gaussian prior on log task easiness.
    class_priors : None, array of shape (n_classes,), or "learn"
        Prior over the true class.  ``None`` (default) is uniform and fixed, as in the
        paper (and crowd-kit).  ``"learn"`` re-estimates it from the posteriors at every
        M-step; beware that this lets EM explain hard tasks by the prior alone, and on
        bluebirds it collapses to 95% / 5% (accuracy 0.57 instead of 0.72).

    Attributes
    ----------
    probas_ : (n_tasks, n_classes) posterior over the true class (gold tasks one-hot)
    labels_ : (n_tasks,) class code of the most probable class
    ties_ : (n_tasks,) whether more than one class had the top posterior
    alphas_ : (n_workers,) worker ability
    betas_ : (n_tasks,) task inverse difficulty, > 0
    priors_ : (n_classes,) class prior used (fixed or learnt)
    log_likelihood_ : float, log P(answers | params) minus the Gaussian prior penalties
        (the quantity EM increases; prior normalising constants are left out)
    n_iter_ : number of EM iterations run
    converged_ : whether the tolerance was reached before ``max_iter``
    """

    def __init__(
        self,
        max_iter: int = 100,
        tol: float = 1e-9,
        m_step_iter: int = 25,
        m_step_tol: float = 1e-8,
        alpha_prior_mean: float = 1.0,
        alpha_prior_var: float = 1.0,
        log_beta_prior_mean: float = 0.0,
        log_beta_prior_var: float = 1.0,
        class_priors=None,
    ):
        self.max_iter = max_iter
        self.tol = tol
        self.m_step_iter = m_step_iter
        self.m_step_tol = m_step_tol
        self.alpha_prior_mean = alpha_prior_mean
        self.alpha_prior_var = alpha_prior_var
        self.log_beta_prior_mean = log_beta_prior_mean
        self.log_beta_prior_var = log_beta_prior_var
        self.class_priors = class_priors

    # ------------------------------------------------------------------ checks
    def validate_params(self) -> None:
        """Check the hyperparameters alone (no data): ValueError naming the bad one."""
        for name in ("max_iter", "m_step_iter"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("tol", "m_step_tol"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
        for name in ("alpha_prior_mean", "log_beta_prior_mean"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be finite, got {getattr(self, name)!r}")
        for name in ("alpha_prior_var", "log_beta_prior_var"):
            value = getattr(self, name)
            if not (value > 0):  # also rejects NaN
                raise ValueError(f"{name} must be > 0 (inf for a flat prior), got {value!r}")

    def _initial_priors(self, n_classes: int):
        """Fixed class prior, or None when it is learnt."""
        if self.class_priors is None:
            return np.full(n_classes, 1.0 / n_classes)
        if isinstance(self.class_priors, str):
            if self.class_priors != "learn":
                raise ValueError(f'class_priors must be None, "learn" or an array, got {self.class_priors!r}')
            return None
        priors = np.asarray(self.class_priors, dtype=float)
        if priors.shape != (n_classes,) or not np.all(np.isfinite(priors)) or (priors < 0).any() or priors.sum() <= 0:
            raise ValueError(f"class_priors must be {n_classes} finite non-negative numbers with a positive sum")
        return priors / priors.sum()

    @staticmethod
    def _check_gold(gold, answers: Answers):
        if gold is None:
            return None
        gold = np.asarray(gold)
        if gold.shape != (answers.n_tasks,) or gold.dtype.kind not in "iu":
            raise ValueError(f"gold must be an integer array of shape ({answers.n_tasks},), got {gold.dtype} {gold.shape}")
        if ((gold < -1) | (gold >= answers.n_classes)).any():
            raise ValueError(f"gold codes must be -1 (unknown) or in [0, {answers.n_classes})")
        return gold.astype(np.int64)

    # ------------------------------------------------------------------ model pieces
    def _penalty(self, alphas, log_betas):
        """Negative log prior (up to constants) and its gradients."""
        inv_a = 1.0 / self.alpha_prior_var  # 0 for a flat prior
        inv_b = 1.0 / self.log_beta_prior_var
        da = alphas - self.alpha_prior_mean
        db = log_betas - self.log_beta_prior_mean
        # Elementwise sums, not BLAS dot products: a threaded BLAS call on a busy machine
        # costs milliseconds where this costs microseconds.
        value = 0.5 * inv_a * float(np.sum(da * da)) + 0.5 * inv_b * float(np.sum(db * db))
        return value, inv_a * da, inv_b * db

    def _m_objective(self, params, answers: Answers, p_correct):
        """Negative expected complete log-likelihood (terms that depend on alpha and
        log beta) plus the prior penalty, and its analytic gradient."""
        n_w = answers.n_workers
        alphas, log_betas = params[:n_w], params[n_w:]
        betas = np.exp(log_betas)
        x = alphas[answers.worker] * betas[answers.task]
        # E[log P(answer)] = p log s(x) + (1 - p) log s(-x), dropping the constant
        # -(1 - p) log(K - 1); with log s(-x) = log s(x) - x that is log s(x) - (1 - p) x.
        log_sig, sig = _sigmoid_parts(x)
        q = float(np.sum(log_sig - (1.0 - p_correct) * x))
        resid = p_correct - sig  # d/dx of the expected log-likelihood
        penalty, g_pen_a, g_pen_b = self._penalty(alphas, log_betas)
        grad_a = np.bincount(answers.worker, weights=resid * betas[answers.task], minlength=n_w)
        grad_b = np.bincount(answers.task, weights=resid * x, minlength=answers.n_tasks)
        grad = np.concatenate([g_pen_a - grad_a, g_pen_b - grad_b])
        return penalty - q, grad

    @staticmethod
    def _log_joint(answers: Answers, alphas, log_betas, priors):
        """log P(true class = k, answers of task t) for every (t, k)."""
        k = answers.n_classes
        # With one class every answer is correct and log(K-1) cancels; 0 avoids log(0).
        log_wrong = np.log(k - 1) if k > 1 else 0.0
        x = alphas[answers.worker] * np.exp(log_betas[answers.task])
        # Every answer contributes log s(-x) - log(K-1) as if wrong; the class it names
        # gains log s(x) - log s(-x) + log(K-1) = x + log(K-1).
        base = np.bincount(answers.task, weights=log_sigmoid(-x) - log_wrong, minlength=answers.n_tasks)
        cell = answers.task.astype(np.int64) * k + answers.label
        gain = np.bincount(cell, weights=x + log_wrong, minlength=answers.n_tasks * k).reshape(-1, k)
        return base[:, None] + gain + np.log(np.maximum(priors, _TINY))[None, :]

    def _e_step(self, answers, alphas, log_betas, priors, gold):
        log_joint = self._log_joint(answers, alphas, log_betas, priors)
        probas = softmax_rows(log_joint.copy())
        from scipy.special import logsumexp  # lazily, like scipy.optimize below

        per_task = logsumexp(log_joint, axis=1)
        if gold is not None:
            known = np.flatnonzero(gold >= 0)
            probas[known] = 0.0
            probas[known, gold[known]] = 1.0
            per_task[known] = log_joint[known, gold[known]]
        penalty = self._penalty(alphas, log_betas)[0]
        return probas, float(per_task.sum()) - penalty

    def _m_step(self, answers, probas, alphas, log_betas):
        # imported here: scipy.optimize and scipy.special are a third of a second of
        # start-up that every `crowdqc` invocation would pay, and only GLAD needs them
        from scipy.optimize import Bounds, minimize

        p_correct = probas[answers.task, answers.label]
        start = np.concatenate([alphas, log_betas])
        # Array bounds rather than a list of per-variable tuples: building that list in
        # Python costs as much as several objective evaluations on large data sets.
        limit = np.concatenate([np.full(answers.n_workers, ALPHA_BOUND), np.full(answers.n_tasks, LOG_BETA_BOUND)])
        bounds = Bounds(-limit, limit)
        result = minimize(
            self._m_objective,
            start,
            args=(answers, p_correct),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": self.m_step_iter, "gtol": self.m_step_tol, "ftol": 1e-12},
        )
        params = result.x
        # L-BFGS-B only accepts points that lower the objective, but guard anyway: a
        # non-finite point must never leave the M-step.
        if not np.all(np.isfinite(params)):
            params = start
        return params[: answers.n_workers], params[answers.n_workers :]

    # ------------------------------------------------------------------ fit
    def fit(self, answers: Answers, gold=None, callback=None) -> "GLAD":
        """Fit on ``answers``; ``gold`` ((n_tasks,) class codes, -1 unknown) is clamped.

        ``callback(iteration, log_likelihood)`` is called after every EM iteration
        (iterations count from 1).
        """
        answers = check_answers(answers)
        self.validate_params()
        gold = self._check_gold(gold, answers)
        fixed_priors = self._initial_priors(answers.n_classes)
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable")

        # Deterministic start: vote shares as posteriors, alpha = 1, beta = 1.
        probas = MajorityVote().fit(answers).probas_.copy()
        if gold is not None:
            known = np.flatnonzero(gold >= 0)
            probas[known] = 0.0
            probas[known, gold[known]] = 1.0
        alphas = np.ones(answers.n_workers)
        log_betas = np.zeros(answers.n_tasks)

        log_lik = -np.inf
        self.converged_ = False
        with _single_threaded_blas():
            for iteration in range(1, self.max_iter + 1):
                priors = probas.mean(axis=0) if fixed_priors is None else fixed_priors
                alphas, log_betas = self._m_step(answers, probas, alphas, log_betas)
                probas, new_log_lik = self._e_step(answers, alphas, log_betas, priors, gold)
                if callback is not None:
                    callback(iteration, new_log_lik)
                done = abs(new_log_lik - log_lik) <= self.tol * max(1.0, abs(new_log_lik))
                log_lik = new_log_lik
                if done:
                    self.converged_ = True
                    break

        self.n_iter_ = iteration
        self.priors_ = priors
        self.alphas_ = alphas
        self.betas_ = np.exp(log_betas)
        self.log_likelihood_ = log_lik
        self.probas_ = probas
        self.labels_, self.ties_ = argmax_with_ties(probas, answers.tie_rank)
        return self
