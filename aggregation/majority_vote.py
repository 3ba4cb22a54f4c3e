"""Majority vote, optionally weighted by worker."""

from __future__ import annotations

import numpy as np

from ._base import argmax_with_ties, check_answers
from .encoding import Answers


class MajorityVote:
    """The label most workers gave; ties go to the data set's most common class.

    Parameters
    ----------
    weights : array of shape (n_workers,), optional
        Vote weight of each worker (weighted majority vote). Must be finite and >= 0.

    Attributes
    ----------
    counts_ : (n_tasks, n_classes) unweighted vote counts
    scores_ : (n_tasks, n_classes) weighted votes (equal to ``counts_`` without weights)
    probas_ : (n_tasks, n_classes) vote shares, rows sum to one
    labels_ : (n_tasks,) class code of the consensus
    ties_ : (n_tasks,) whether more than one class had the top score
    """

    def __init__(self, weights=None):
        self.weights = weights

    def fit(self, answers: Answers) -> "MajorityVote":
        answers = check_answers(answers)
        shape = (answers.n_tasks, answers.n_classes)
        cell = answers.task.astype(np.int64) * answers.n_classes + answers.label
        self.counts_ = np.bincount(cell, minlength=shape[0] * shape[1]).reshape(shape).astype(float)
        if self.weights is None:
            self.scores_ = self.counts_
        else:
            weights = np.asarray(self.weights, dtype=float)
            if weights.shape != (answers.n_workers,):
                raise ValueError(f"weights must have one value per worker ({answers.n_workers}), got shape {weights.shape}")
            if not np.all(np.isfinite(weights)) or (weights < 0).any():
                raise ValueError("weights must be finite and non-negative")
            self.scores_ = np.bincount(cell, weights=weights[answers.worker], minlength=shape[0] * shape[1]).reshape(shape)
        # A task whose workers all weigh zero falls back to plain counts rather than 0/0.
        total = self.scores_.sum(axis=1, keepdims=True)
        basis = np.where(total > 0, self.scores_, self.counts_)
        self.probas_ = basis / basis.sum(axis=1, keepdims=True)
        self.labels_, self.ties_ = argmax_with_ties(basis, answers.tie_rank)
        return self
