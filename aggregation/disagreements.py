"""Per-task uncertainty report: which consensus labels deserve a second look."""

from __future__ import annotations

import numpy as np

from ._base import argmax_with_ties
from .majority_vote import MajorityVote
from .reliability import check_codes, check_outputs

# Confidence and entropy are rounded to this many decimals for ordering only, so tasks
# whose posteriors differ by rounding error fall back to the task name, never to the
# last bit of a floating-point sum.
_ORDER_DECIMALS = 12


class Disagreements:
    """Uncertainty of every task's consensus label.

    ``fit(answers, probas, labels, mv_labels=None, ties=None, gold=None, mv_ties=None)``
    takes the output of any fitted method.  Without ``mv_labels`` the plain majority vote
    (labels and ties) is computed here; without ``ties`` a tie is two or more classes
    sharing the top posterior (the rule of :func:`argmax_with_ties`).

    Attributes (one entry per task code)
    ----------
    n_answers_ : answers on the task
    votes_ : (n_tasks, n_classes) scipy CSR matrix of vote counts
    label_ : consensus class code
    confidence_ : posterior of the consensus label
    entropy_ : Shannon entropy of the posterior in nats (natural log; 0 log 0 = 0), so
        between 0 and log(K)
    margin_ : posterior of the consensus label minus the largest posterior of any other
        class (top minus second when the label is the argmax); with one class there is no
        other class and the margin is the full confidence, 1.  In [-1, 1], finite.
    mv_label_, mv_disagrees_ : plain majority vote label, and whether it differs
    tie_ : bool, the method's tie (top posterior shared)
    mv_tie_ : bool, the majority vote's tie (top vote count shared), whatever the method:
        a task the crowd split evenly is worth a look even when a model settled it
    has_gold_, contradicts_gold_ : gold known; gold known and different from the label
    order_ : task codes, most uncertain first: lowest confidence, then highest entropy,
        then task name (task codes follow name order)
    """

    def fit(self, answers, probas, labels, mv_labels=None, ties=None, gold=None, mv_ties=None) -> "Disagreements":
        answers, probas, labels, gold = check_outputs(answers, probas, labels, gold)
        n_tasks, n_classes = probas.shape
        self.task_names_, self.classes_ = answers.task_names, answers.classes
        self.n_answers_ = answers.answers_per_task
        self.votes_ = answers.task_class_counts.sorted_indices()
        self.label_ = labels
        rows = np.arange(n_tasks)
        self.confidence_ = probas[rows, labels]
        logs = np.log(probas, out=np.zeros_like(probas), where=probas > 0)
        self.entropy_ = np.maximum(-(probas * logs).sum(axis=1), 0.0)
        others = probas.copy()
        others[rows, labels] = -np.inf
        runner_up = others.max(axis=1) if n_classes > 1 else np.zeros(n_tasks)
        self.margin_ = self.confidence_ - runner_up

        if mv_labels is None or mv_ties is None:
            mv = MajorityVote().fit(answers)
            mv_labels = mv.labels_ if mv_labels is None else mv_labels
            mv_ties = mv.ties_ if mv_ties is None else mv_ties
        self.mv_label_ = check_codes(mv_labels, answers, "mv_labels")
        self.mv_tie_ = _task_array(mv_ties, n_tasks, "mv_ties").astype(bool)
        self.mv_disagrees_ = self.mv_label_ != labels
        if ties is None:
            ties = argmax_with_ties(probas, answers.tie_rank)[1]
        self.tie_ = _task_array(ties, n_tasks, "ties").astype(bool)

        self.gold_ = np.full(n_tasks, -1, dtype=np.int64) if gold is None else gold
        self.has_gold_ = self.gold_ >= 0
        self.contradicts_gold_ = self.has_gold_ & (self.gold_ != labels)

        confidence = np.round(self.confidence_, _ORDER_DECIMALS)
        entropy = np.round(self.entropy_, _ORDER_DECIMALS)
        self.order_ = np.lexsort((rows, -entropy, confidence))
        return self

    def to_rows(self, task_names=None, classes=None, limit=None):
        """JSON-safe dicts in ``order_`` (most uncertain first), at most ``limit`` of them.

        ``votes`` lists only the classes that received votes; ``gold`` and
        ``contradicts_gold`` are None for tasks without gold.
        """
        names = self.task_names_ if task_names is None else task_names
        classes = [str(c) for c in (self.classes_ if classes is None else classes)]
        chosen = self.order_ if limit is None else self.order_[: max(int(limit), 0)]
        votes = self.votes_
        cols, counts = votes.indices.tolist(), votes.data.tolist()
        for rank, task in enumerate(chosen.tolist()):
            start, end = votes.indptr[task], votes.indptr[task + 1]
            has_gold = bool(self.has_gold_[task])
            yield {
                "rank": rank,
                "task": str(names[task]),
                "label": classes[self.label_[task]],
                "confidence": float(self.confidence_[task]),
                "entropy": float(self.entropy_[task]),
                "margin": float(self.margin_[task]),
                "n_answers": int(self.n_answers_[task]),
                "votes": {classes[c]: int(n) for c, n in zip(cols[start:end], counts[start:end]) if n},
                "tie": bool(self.tie_[task]),
                "mv_label": classes[self.mv_label_[task]],
                "mv_tie": bool(self.mv_tie_[task]),
                "mv_disagrees": bool(self.mv_disagrees_[task]),
                "gold": classes[self.gold_[task]] if has_gold else None,
                "contradicts_gold": bool(self.contradicts_gold_[task]) if has_gold else None,
            }


def _task_array(values, n_tasks: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n_tasks,):
        raise ValueError(f"{what} must have one value per task ({n_tasks}), got shape {arr.shape}")
    return arr
