"""Pieces every estimator shares: input checks and tie-aware argmax."""

from __future__ import annotations

import numpy as np

from .encoding import Answers, AnswersError


def check_answers(answers) -> Answers:
    if not isinstance(answers, Answers):
        raise TypeError(f"expected aggregation.Answers (see aggregation.encode), got {type(answers).__name__}")
    if answers.n_answers == 0:
        raise AnswersError("answers must contain at least one [task, worker, label] row")
    return answers


def argmax_with_ties(scores: np.ndarray, tie_rank: np.ndarray, rtol: float = 1e-9):
    """Row-wise argmax where equal maxima go to the class of lowest ``tie_rank``.

    Returns ``(labels, tied)``: ``tied[i]`` is true when row ``i`` had more than one
    maximal class.  ``rtol`` treats posteriors equal to rounding error as tied, so a tie
    never turns on the last bit of a floating-point sum.
    """
    scores = np.asarray(scores, dtype=float)
    top = scores.max(axis=1, keepdims=True)
    candidate = scores >= top - rtol * np.abs(top)
    ranked = np.where(candidate, tie_rank[None, :], np.iinfo(np.int64).max)
    labels = ranked.argmin(axis=1).astype(np.int32)
    tied = candidate.sum(axis=1) > 1
    return labels, tied


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to one; an all-zero row becomes uniform (no 0/0)."""
    total = matrix.sum(axis=-1, keepdims=True)
    k = matrix.shape[-1]
    return np.divide(matrix, total, out=np.full_like(matrix, 1.0 / k, dtype=float), where=total > 0)


def softmax_rows(log_scores: np.ndarray) -> np.ndarray:
    """Posterior probabilities from unnormalised log scores, computed stably."""
    shifted = log_scores - log_scores.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted
