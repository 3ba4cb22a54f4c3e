"""Wawa: worker weights from agreement with majority vote, then weighted majority vote."""

from __future__ import annotations

import numpy as np

from ._base import check_answers
from .encoding import Answers
from .majority_vote import MajorityVote


class Wawa:
    """Worker Agreement With Aggregate.

    Each worker's weight is the share of their answers that match the plain majority
    vote; the consensus is the majority vote weighted by those shares.

    Attributes
    ----------
    skills_ : (n_workers,) agreement of each worker with the plain majority vote
    probas_, labels_, ties_ : as in :class:`MajorityVote`, for the weighted vote
    """

    def fit(self, answers: Answers) -> "Wawa":
        answers = check_answers(answers)
        plain = MajorityVote().fit(answers)
        agree = (plain.labels_[answers.task] == answers.label).astype(float)
        n = np.bincount(answers.worker, minlength=answers.n_workers)
        self.skills_ = np.bincount(answers.worker, weights=agree, minlength=answers.n_workers) / np.maximum(n, 1)
        weighted = MajorityVote(weights=self.skills_).fit(answers)
        self.probas_, self.labels_, self.ties_ = weighted.probas_, weighted.labels_, weighted.ties_
        self.scores_ = weighted.scores_
        return self
