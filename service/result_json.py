"""The stored JSON text of a consensus: one compact JSON object per task, built from whole
columns (:mod:`service.columnar`) rather than one ``json.dumps`` per task.

Each object is what :meth:`service.analysis.Analysis.consensus_rows` yields, with the
labels (``label``, ``mv_label``, ``gold``) given as the project declared them (integers
stay integers); the tests hold the two equal.
"""

from __future__ import annotations

import numpy as np

from . import columnar as col
from .analysis import MAX_LISTED_CLASSES, MIN_LISTED_PROBABILITY


def consensus_json_rows(analysis, declared_labels: list) -> list[str]:
    """JSON text per task, in task order; ``declared_labels[c]`` is class ``c`` as declared."""
    a = analysis.answers
    n, k = a.n_tasks, a.n_classes
    labels, probas = analysis.labels, analysis.probas
    literals = col.json_literals(list(declared_labels))
    keys = [f"{name}:" for name in col.json_literals([str(c) for c in a.classes])]
    if k <= MAX_LISTED_CLASSES:
        probabilities = col.dense_objects(probas, keys)
    else:
        # Many classes: only those that matter, and the consensus label always.
        listed = probas >= MIN_LISTED_PROBABILITY
        listed[np.arange(n), labels] = True
        rows, cols = np.nonzero(listed)
        indptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=n))))
        probabilities = col.sparse_objects(indptr, cols, col.numbers(probas[rows, cols]), keys)
    pieces = [
        '{"task":', col.json_strings(a.task_names),
        ',"label":', col.take(literals, labels),
        ',"confidence":', col.numbers(analysis.confidence),
        ',"probabilities":', probabilities,
        ',"n_labels":', col.numbers(a.answers_per_task),
        ',"tie":', col.booleans(analysis.ties),
        ',"mv_label":', col.take(literals, analysis.mv_labels),
        ',"mv_tie":', col.booleans(analysis.mv_ties),
    ]
    if analysis.gold is not None:
        codes = analysis.gold.codes
        pieces += [',"gold":', col.take(literals + ["null"], np.where(codes >= 0, codes, k))]
    return col.joined(pieces, end="}").to_pylist()
