"""(task, worker, label) string triples to integer-coded arrays, and back.

Rules (the same for the command line, the API and every method):

* Labels are compared as strings after Unicode NFC normalisation and stripping of
  leading/trailing white space (U+00A0 included); case is kept, and ``"1"`` and ``"01"``
  stay different labels.  Look-alike labels from annotation tools ("tea " vs "tea", NFD vs
  NFC "café") would otherwise split one class in two.
* Task and worker ids are kept exactly as given: ids must round-trip unchanged.
* Integers are accepted for any field and turned into their decimal string, so ``1`` and
  ``"1"`` are the same id or label.  Other types (floats, booleans, null, lists) are errors.
* Codes are canonical: tasks, workers and (undeclared) classes are numbered in sorted
  order of their names, so the codes - and every result - do not depend on input order.
* Duplicate answers by one worker on one task follow ``duplicates``:
  ``latest`` (default) keeps the last one in input order, ``first`` the first one, and
  ``all`` keeps every row as an independent vote (only for designs where a worker's
  repeats are independent judgements: otherwise one worker's retried submissions outvote
  everybody else, which is why it is never the default).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
from scipy import sparse

DUPLICATE_POLICIES = ("latest", "first", "all")


class AnswersError(ValueError):
    """Input that cannot be encoded; the message names the offending values."""


def normalize_label(value) -> str:
    """The canonical string form of one label (see the module rules)."""
    return unicodedata.normalize("NFC", to_text(value, "label")).strip()


def to_text(value, what: str = "value") -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return str(int(value))
    raise AnswersError(f"{what} must be a string or an integer, got {type(value).__name__}: {value!r}")


def _as_text_array(values, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=object) if not isinstance(values, np.ndarray) else values
    if arr.dtype.kind in "iu":
        return arr.astype(str).astype(object)
    if arr.dtype.kind == "U":
        return arr.astype(object)
    arr = arr.astype(object, copy=False).reshape(-1)
    # set(map(type, ...)) runs in C: the common all-string column costs no Python per value
    if arr.size and set(map(type, arr)) != {str}:
        arr = np.fromiter((to_text(v, what) for v in arr), dtype=object, count=arr.size)
    return arr


# Fixed-width unicode arrays sort ~3x faster than Python strings, at 4 bytes per
# character of the longest value for every value: above this size, sort the objects.
_FIXED_WIDTH_BUDGET = 1 << 28


def factorize(values, what: str = "value") -> tuple[np.ndarray, np.ndarray]:
    """Codes and sorted unique names of a sequence of strings (or integers)."""
    arr = _as_text_array(values, what)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=object)
    lengths = np.fromiter(map(len, arr), dtype=np.int64, count=arr.size)
    width = max(int(lengths.max()), 1)
    if arr.size * width * 4 <= _FIXED_WIDTH_BUDGET:
        fixed = arr.astype(f"U{width}")
        # numpy's unicode type drops trailing NULs: such values must keep their identity
        if np.array_equal(np.char.str_len(fixed), lengths):
            uniques, codes = np.unique(fixed, return_inverse=True)
            return codes.astype(np.int32, copy=False).reshape(-1), uniques.astype(object)
    uniques, codes = np.unique(arr, return_inverse=True)
    return codes.astype(np.int32, copy=False).reshape(-1), uniques.astype(object)


@dataclass(frozen=True, eq=False)
class Answers:
    """Integer-coded answers: ``task[i]``, ``worker[i]``, ``label[i]`` are codes into
    ``task_names``, ``worker_names`` and ``classes``."""

    task: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    task_names: np.ndarray
    worker_names: np.ndarray
    classes: np.ndarray
    duplicates: str = "latest"
    n_rows: int = 0  # input rows before the duplicate policy
    n_duplicate_rows: int = 0  # rows dropped by the duplicate policy
    n_conflicting_pairs: int = 0  # (task, worker) pairs whose repeats disagree
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_answers(self) -> int:
        return int(self.task.size)

    @property
    def n_tasks(self) -> int:
        return int(self.task_names.size)

    @property
    def n_workers(self) -> int:
        return int(self.worker_names.size)

    @property
    def n_classes(self) -> int:
        return int(self.classes.size)

    @cached_property
    def task_class_counts(self) -> sparse.csr_matrix:
        """Votes per (task, class) as a sparse ``n_tasks x n_classes`` matrix."""
        ones = np.ones(self.n_answers)
        return sparse.csr_matrix(
            (ones, (self.task, self.label)), shape=(self.n_tasks, self.n_classes)
        )

    @cached_property
    def class_counts(self) -> np.ndarray:
        return np.bincount(self.label, minlength=self.n_classes)

    @cached_property
    def tie_rank(self) -> np.ndarray:
        """Preference among tied classes: rank 0 wins.

        The most frequent class in the whole data set wins a tie (the empirical prior,
        the best guess with nothing else to go on); equal counts fall back to the
        label's string order.  Neither depends on input order, column order or ids.
        """
        # classes are numbered in declared order or by name; rank names explicitly so
        # that a declared order never decides.
        name_rank = np.argsort(np.argsort(self.classes.astype(str), kind="stable"), kind="stable")
        order = np.lexsort((name_rank, -self.class_counts))
        rank = np.empty(self.n_classes, dtype=np.int64)
        rank[order] = np.arange(self.n_classes)
        return rank

    @cached_property
    def answers_per_task(self) -> np.ndarray:
        return np.bincount(self.task, minlength=self.n_tasks)

    def class_index(self, labels) -> np.ndarray:
        """Codes of class names; unknown names raise with the offending values."""
        names = np.asarray([normalize_label(v) for v in labels], dtype=object)
        return _lookup(names, self.classes, "label")

    def task_index(self, tasks, missing: int | None = None) -> np.ndarray:
        names = _as_text_array(tasks, "task")
        return _lookup(names, self.task_names, "task", missing=missing)


def _lookup(names: np.ndarray, table: np.ndarray, what: str, missing: int | None = None):
    if names.size == 0:
        return np.zeros(0, dtype=np.int32)
    pos = np.searchsorted(table, names) if _is_sorted(table) else None
    if pos is None:
        index = {v: i for i, v in enumerate(table)}
        codes = np.fromiter((index.get(v, -1) for v in names), dtype=np.int64, count=names.size)
    else:
        pos = np.minimum(pos, max(table.size - 1, 0))
        found = table[pos] == names if table.size else np.zeros(names.size, dtype=bool)
        codes = np.where(found, pos, -1)
    bad = codes < 0
    if bad.any():
        if missing is not None:
            codes[bad] = missing
        else:
            raise AnswersError(
                f"{what} not in the class set {_preview(table)}: {_preview(np.unique(names[bad]))}"
            )
    return codes.astype(np.int32)


def _is_sorted(arr: np.ndarray) -> bool:
    return arr.size < 2 or bool(np.all(arr[:-1] < arr[1:]))


def _preview(values, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    more = f", ... ({len(values) - limit} more)" if len(values) > limit else ""
    return f"[{shown}{more}]"


def _normalized_uniques(uniques: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalise label names; returns (new sorted names, remap old code -> new code)."""
    normed = np.asarray([normalize_label(v) for v in uniques], dtype=object)
    if normed.size == 0:
        return normed, np.zeros(0, dtype=np.int32)
    names, remap = np.unique(normed, return_inverse=True)
    return names.astype(object), remap.astype(np.int32).reshape(-1)


def _canonical(codes: np.ndarray, uniques: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber codes so that names are in sorted order (input-order independence)."""
    uniques = _as_text_array(uniques, "id")
    if _is_sorted(uniques):
        return codes.astype(np.int32, copy=False), uniques
    names, remap = np.unique(uniques, return_inverse=True)
    if names.size != uniques.size:
        raise AnswersError("the names given with pre-coded values are not unique")
    return remap.astype(np.int32)[codes], names.astype(object)


def encode(task, worker, label, classes=None, duplicates: str = "latest") -> Answers:
    """Encode parallel sequences of task ids, worker ids and labels."""
    t_codes, t_names = factorize(task, "task")
    w_codes, w_names = factorize(worker, "worker")
    l_codes, l_names = factorize(label, "label")
    return from_codes(t_codes, t_names, w_codes, w_names, l_codes, l_names, classes, duplicates)


def from_codes(
    task_codes,
    task_names,
    worker_codes,
    worker_names,
    label_codes,
    label_names,
    classes=None,
    duplicates: str = "latest",
) -> Answers:
    """Build :class:`Answers` from already factorised columns (e.g. from a CSV reader).

    ``*_names`` need not be sorted; codes are renumbered canonically.
    """
    if duplicates not in DUPLICATE_POLICIES:
        raise AnswersError(f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}, got {duplicates!r}")
    task_codes = np.asarray(task_codes)
    worker_codes = np.asarray(worker_codes)
    label_codes = np.asarray(label_codes)
    n = task_codes.size
    if not (worker_codes.size == n and label_codes.size == n):
        raise AnswersError("task, worker and label columns have different lengths")
    if n == 0:
        raise AnswersError("answers must contain at least one [task, worker, label] row")

    task_codes, task_names = _canonical(task_codes, task_names)
    worker_codes, worker_names = _canonical(worker_codes, worker_names)
    label_names, remap = _normalized_uniques(_as_text_array(label_names, "label"))
    label_codes = remap[label_codes]

    if classes is not None:
        declared = [normalize_label(c) for c in classes]
        if len(set(declared)) != len(declared):
            raise AnswersError(f"the declared classes repeat a label: {_preview(declared)}")
        declared_arr = np.asarray(declared, dtype=object)
        used = np.unique(label_codes)
        index = {v: i for i, v in enumerate(declared)}
        outside = [label_names[c] for c in used if label_names[c] not in index]
        if outside:
            raise AnswersError(
                f"label not in the declared classes {_preview(declared)}: {_preview(sorted(outside))}"
            )
        to_declared = np.fromiter((index.get(v, -1) for v in label_names), dtype=np.int32, count=label_names.size)
        label_codes = to_declared[label_codes]
        label_names = declared_arr

    keep, n_conflicting = _apply_duplicates(task_codes, worker_codes, label_codes, worker_names.size, duplicates)
    warnings: list[str] = []
    n_dropped = 0
    if keep is not None:
        n_dropped = n - int(keep.size)
        task_codes, worker_codes, label_codes = task_codes[keep], worker_codes[keep], label_codes[keep]
        if n_dropped:
            warnings.append(
                f"{n_dropped} duplicate (task, worker) rows collapsed (policy {duplicates!r}); "
                f"{n_conflicting} of the repeated pairs had conflicting labels"
            )
    elif n_conflicting:
        warnings.append(
            f"{n_conflicting} (task, worker) pairs answered more than once, counted as separate votes "
            "(policy 'all'): one worker's repeats can outvote the others"
        )

    # Pre-coded input may carry names no row uses (e.g. a dictionary built over a larger
    # file); a task or worker without answers has no consensus or score, so drop them.
    task_codes, task_names = _drop_unused(task_codes, task_names)
    worker_codes, worker_names = _drop_unused(worker_codes, worker_names)
    if classes is None:
        label_codes, label_names = _drop_unused(label_codes, label_names)
    return Answers(
        task=task_codes.astype(np.int32, copy=False),
        worker=worker_codes.astype(np.int32, copy=False),
        label=label_codes.astype(np.int32, copy=False),
        task_names=task_names,
        worker_names=worker_names,
        classes=label_names,
        duplicates=duplicates,
        n_rows=n,
        n_duplicate_rows=n_dropped,
        n_conflicting_pairs=n_conflicting,
        warnings=tuple(warnings),
    )


def _drop_unused(codes: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used = np.bincount(codes, minlength=names.size) > 0
    if used.all():
        return codes, names
    renumber = np.cumsum(used, dtype=np.int64) - 1
    return renumber[codes].astype(np.int32), names[used]


def _apply_duplicates(task, worker, label, n_workers, policy):
    """Indices of the rows to keep (in input order), or None to keep all; and the number
    of repeated (task, worker) pairs (all repeats for ``all``; conflicting ones otherwise)."""
    key = task.astype(np.int64) * max(n_workers, 1) + worker
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    run_start = np.ones(key.size, dtype=bool)
    run_start[1:] = sorted_key[1:] != sorted_key[:-1]
    if run_start.all():
        return None, 0
    run_id = np.cumsum(run_start) - 1
    sorted_label = label[order]
    first_label = sorted_label[run_start][run_id]
    conflicting = np.zeros(run_start.sum(), dtype=bool)
    np.logical_or.at(conflicting, run_id, sorted_label != first_label)
    n_conflicting = int(conflicting.sum())
    if policy == "all":
        run_len = np.bincount(run_id)
        return None, int((run_len > 1).sum())
    if policy == "first":
        chosen = order[run_start]
    else:  # latest: the last row of each run in the stable order is the last in input order
        run_end = np.ones(key.size, dtype=bool)
        run_end[:-1] = sorted_key[1:] != sorted_key[:-1]
        chosen = order[run_end]
    return np.sort(chosen), n_conflicting


def decode(codes, names) -> np.ndarray:
    """Names of codes (``-1`` becomes ``None``)."""
    codes = np.asarray(codes)
    out = np.asarray(names, dtype=object)[np.clip(codes, 0, None)] if len(names) else np.full(codes.shape, None)
    if (codes < 0).any():
        out = out.copy()
        out[codes < 0] = None
    return out


def encode_gold(answers: Answers, tasks, labels) -> tuple[np.ndarray, int]:
    """Known answers as an ``(n_tasks,)`` array of class codes, ``-1`` where unknown.

    Gold labels follow the label rules and must be in the class set (the error lists the
    offending values). Gold for tasks nobody answered cannot be used; their number is
    returned so callers can report it.  A task given twice with different labels is an
    error.
    """
    task_arr = _as_text_array(tasks, "gold task")
    label_arr = _as_text_array(labels, "gold label")
    if task_arr.size != label_arr.size:
        raise AnswersError("gold task and label columns have different lengths")
    gold = np.full(answers.n_tasks, -1, dtype=np.int32)
    if task_arr.size == 0:
        return gold, 0
    tasks_idx = answers.task_index(task_arr, missing=-1)
    known = tasks_idx >= 0
    # labels of unanswered tasks are not checked: project-wide gold files score a batch
    t, c = tasks_idx[known], answers.class_index(label_arr[known])
    order = np.lexsort((c, t))
    t, c = t[order], c[order]
    clash = (t[1:] == t[:-1]) & (c[1:] != c[:-1])
    if clash.any():
        bad = np.unique(answers.task_names[t[1:][clash]])
        raise AnswersError(f"gold gives more than one label for task {_preview(bad)}")
    gold[t] = c
    return gold, int(np.unique(task_arr[~known]).size)


def add_classes(answers: Answers, labels) -> Answers:
    """``answers`` with the (normalised) ``labels`` it lacks added to its class set.

    For gold labels no worker gave: the known answer is still the truth, and a consensus
    that misses it must count as wrong rather than the gold being refused.  Sorted class
    sets stay sorted (codes stay canonical); a declared order keeps its classes first.
    """
    names = np.unique(np.asarray([normalize_label(v) for v in labels], dtype=object))
    new = names[~np.isin(names, answers.classes)] if names.size else names
    if new.size == 0:
        return answers
    if _is_sorted(answers.classes):
        classes = np.union1d(answers.classes, new).astype(object)
        remap = np.searchsorted(classes, answers.classes).astype(np.int32)
    else:
        classes = np.concatenate([answers.classes, new]).astype(object)
        remap = np.arange(answers.n_classes, dtype=np.int32)
    return replace(answers, label=remap[answers.label], classes=classes)
