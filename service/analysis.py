"""The one analysis pipeline behind ``crowdqc aggregate`` and the service's background jobs.

``analyse(answers, method, params, gold, progress)`` fits the chosen consensus method,
always also the plain majority vote (to report where the model overrules it), then worker
reliability, the disagreement ranking and the agreement statistics, timing every stage.
The :class:`Analysis` it returns holds the arrays and yields strict-JSON-safe rows.

Gold labels are used in one of two ways, chosen by the ``gold`` parameter:

* ``evaluate`` (the command line's default): only to measure (accuracy, worker gold
  accuracy, gold contradictions); the model never sees them, so its accuracy is honest.
* ``clamp`` (the service's default): methods that model gold (Dawid-Skene, one-coin,
  GLAD) clamp the known tasks to their label in every E-step, which sharpens every
  worker's confusion estimate; the method's accuracy on those tasks would then be 1 by
  construction, so it is reported as null with a note (majority vote's stays honest).
  Majority vote and Wawa do not model gold: for them gold is evaluation only.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field

import numpy as np

from aggregation import AnswersError, encode_gold
from aggregation.agreement import agreement_statistics
from aggregation.dawid_skene import DawidSkene
from aggregation.disagreements import Disagreements
from aggregation.majority_vote import MajorityVote
from aggregation.one_coin import OneCoinDawidSkene
from aggregation.reliability import FLAGS, WorkerReliability
from aggregation.wawa import Wawa

METHODS = {
    "majority_vote": MajorityVote,
    "wawa": Wawa,
    "dawid_skene": DawidSkene,
    "one_coin_dawid_skene": OneCoinDawidSkene,
}
try:  # GLAD is optional: the pipeline works without it
    from aggregation.glad import GLAD

    METHODS["glad"] = GLAD
except ImportError:  # pragma: no cover
    pass

# Array-valued constructor arguments (warm starts, vote weights) are for library users;
# parameters coming from a command line or a JSON request are numbers.
_NOT_PUBLIC = {"weights", "init_confusion", "init_priors", "init_skills", "init_alphas", "init_betas"}
GOLD_MODES = ("evaluate", "clamp")

# Posteriors, vote counts and shares are dense (tasks x classes) arrays, several alive at
# once: 100 million cells is 800 MB each.  Past it, free-text-like labels (one class per
# task) would exhaust memory, so the input is refused up front with the way out.
MAX_POSTERIOR_CELLS = 100_000_000

# Above this many classes a consensus row lists only the probabilities that matter.
MAX_LISTED_CLASSES = 50
MIN_LISTED_PROBABILITY = 1e-4


# Worker-flag thresholds: parameters of every aggregation, whatever the method.
RELIABILITY_PARAMS = ("spammer_threshold", "agreement_threshold", "gold_accuracy_threshold", "min_answers")


def _public_params(cls) -> dict:
    sig = inspect.signature(cls.__init__)
    return {
        name: p.default
        for name, p in sig.parameters.items()
        if name != "self" and name not in _NOT_PUBLIC and p.kind is p.POSITIONAL_OR_KEYWORD
    }


def method_params(method: str) -> dict:
    """Public hyperparameters of ``method`` and their defaults."""
    return _public_params(_method_class(method))


def reliability_params() -> dict:
    """The worker-flag thresholds and their defaults (see WorkerReliability)."""
    defaults = _public_params(WorkerReliability)
    return {name: defaults[name] for name in RELIABILITY_PARAMS}


def _method_class(method: str):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (use one of {', '.join(METHODS)})")
    return METHODS[method]


def check_params(method: str, params: dict | None) -> dict:
    """Validated parameters: unknown names, non-numbers and values out of range (the
    estimators' own ``validate_params``) raise ValueError naming them, before any data
    is read: a request is refused at once, not by a job that fails later."""
    allowed = {**method_params(method), **reliability_params()}
    params = dict(params or {})
    for name, value in params.items():
        if name == "gold":  # how gold is used, for every method (see the module docstring)
            if value not in GOLD_MODES:
                raise ValueError(f"parameter 'gold' must be one of {', '.join(GOLD_MODES)}, got {value!r}")
            continue
        if name not in allowed:
            known = ", ".join([*allowed, "gold"])
            raise ValueError(f"unknown parameter {name!r} for method {method!r} (parameters: {known})")
        default = allowed[name]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"parameter {name!r} must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, (float, np.floating)):
                if not float(value).is_integer():
                    raise ValueError(f"parameter {name!r} must be an integer, got {value!r}")
                value = int(value)
            params[name] = int(value)
        else:
            params[name] = float(value)
        if not math.isfinite(params[name]):
            raise ValueError(f"parameter {name!r} must be finite, got {value!r}")
    model_params, flag_params = split_params(params)
    model_params.pop("gold", None)
    for estimator in (METHODS[method](**model_params), WorkerReliability(**flag_params)):
        validate = getattr(estimator, "validate_params", None)
        if validate is not None:
            try:
                validate()
            except (TypeError, ValueError) as exc:
                raise ValueError(f"parameter {exc}") from None
    return params


def split_params(params: dict) -> tuple[dict, dict]:
    """(the method's parameters, the worker-flag thresholds)."""
    flags = {k: v for k, v in params.items() if k in RELIABILITY_PARAMS}
    return {k: v for k, v in params.items() if k not in RELIABILITY_PARAMS}, flags


@dataclass
class Gold:
    """Known labels as class codes per task (-1 unknown), with what could not be used."""

    codes: np.ndarray
    n_given: int  # distinct tasks in the gold input
    n_unanswered: int  # of those, tasks nobody answered

    @classmethod
    def from_labels(cls, answers, gold) -> "Gold":
        """From ``{task: label}`` or a ``(tasks, labels)`` pair; unknown labels raise AnswersError."""
        if isinstance(gold, dict):
            tasks, labels = list(gold.keys()), list(gold.values())
        else:
            tasks, labels = gold
            tasks, labels = list(tasks), list(labels)
        codes, n_unanswered = encode_gold(answers, tasks, labels)
        return cls(codes, len({str(t) for t in tasks}), n_unanswered)


def _as_gold(answers, gold) -> Gold | None:
    if gold is None or isinstance(gold, Gold):
        return gold
    if isinstance(gold, np.ndarray) and gold.dtype.kind in "iu":
        if gold.shape != (answers.n_tasks,) or ((gold < -1) | (gold >= answers.n_classes)).any():
            raise AnswersError(f"gold codes must be an array of {answers.n_tasks} codes in [-1, {answers.n_classes})")
        return Gold(gold.astype(np.int32), int((gold >= 0).sum()), 0)
    return Gold.from_labels(answers, gold)


@dataclass
class Analysis:
    answers: object
    method: str
    params: dict  # effective hyperparameters (defaults filled in)
    model: object
    mv: MajorityVote
    reliability: WorkerReliability
    disagreements: Disagreements
    agreement: dict
    gold: Gold | None
    gold_mode: str = "evaluate"
    timings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)

    # -- arrays ------------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        return self.model.labels_

    @property
    def probas(self) -> np.ndarray:
        return self.model.probas_

    @property
    def ties(self) -> np.ndarray:
        return np.asarray(self.model.ties_, dtype=bool)

    @property
    def confidence(self) -> np.ndarray:
        return self.probas[np.arange(self.answers.n_tasks), self.labels]

    @property
    def mv_labels(self) -> np.ndarray:
        return self.mv.labels_

    @property
    def mv_ties(self) -> np.ndarray:
        return np.asarray(self.mv.ties_, dtype=bool)

    @property
    def gold_codes(self) -> np.ndarray | None:
        return None if self.gold is None else self.gold.codes

    # -- rows --------------------------------------------------------------------
    def consensus_rows(self):
        """One dict per task, in task-name order.

        ``probabilities`` lists every class when there are at most
        :data:`MAX_LISTED_CLASSES`, otherwise the classes with probability >=
        :data:`MIN_LISTED_PROBABILITY` (the consensus label always).
        """
        a = self.answers
        classes = [str(c) for c in a.classes]
        probas = self.probas
        few = a.n_classes <= MAX_LISTED_CLASSES
        columns = zip(
            a.task_names.tolist(), self.labels.tolist(), self.confidence.tolist(),
            a.answers_per_task.tolist(), self.ties.tolist(), self.mv_labels.tolist(), self.mv_ties.tolist(),
        )
        gold = None if self.gold is None else self.gold.codes.tolist()
        for i, (task, label, conf, n, tie, mv, mv_tie) in enumerate(columns):
            row_p = probas[i]
            if few:
                probs = dict(zip(classes, row_p.tolist()))
            else:
                keep = np.flatnonzero(row_p >= MIN_LISTED_PROBABILITY)
                if label not in keep:
                    keep = np.sort(np.append(keep, label))
                probs = {classes[c]: float(row_p[c]) for c in keep}
            row = {
                "task": str(task), "label": classes[label], "confidence": float(conf),
                "probabilities": probs, "n_labels": int(n), "tie": bool(tie), "mv_label": classes[mv],
                "mv_tie": bool(mv_tie),
            }
            if gold is not None:
                row["gold"] = classes[gold[i]] if gold[i] >= 0 else None
            yield row

    def worker_rows(self, include_confusion: bool = True):
        """One dict per worker, in worker-name order (see WorkerReliability.to_rows)."""
        return self.reliability.to_rows(include_confusion=include_confusion)

    def disagreement_rows(self, limit: int | None = None):
        """Tasks most worth a second look first (see Disagreements.to_rows)."""
        return self.disagreements.to_rows(limit=limit)

    # -- summary -----------------------------------------------------------------
    def summary(self) -> dict:
        a, model = self.answers, self.model
        ll = getattr(model, "log_likelihood_", None)
        if isinstance(ll, (list, tuple, np.ndarray)):
            ll = ll[-1] if len(ll) else None
        labels, mv = self.labels, self.mv_labels
        out = {
            "method": self.method,
            "params": _json_safe(self.params),
            "gold_mode": self.gold_mode,
            "iterations": _int_or_none(getattr(model, "n_iter_", None)),
            "converged": None if not hasattr(model, "converged_") else bool(model.converged_),
            "log_likelihood": _finite_or_none(ll),
            "counts": {
                "answers": a.n_answers,
                "rows": int(a.n_rows or a.n_answers),
                "tasks": a.n_tasks,
                "workers": a.n_workers,
                "classes": a.n_classes,
                "duplicate_rows_collapsed": int(a.n_duplicate_rows),
                "conflicting_pairs": int(a.n_conflicting_pairs),
                "duplicate_policy": a.duplicates,
                "tied_tasks": int(self.ties.sum()),
                "majority_vote_tied_tasks": int(self.mv_ties.sum()),
                "tasks_where_model_overrules_majority_vote": int((labels != mv).sum()),
                "flagged_workers": {flag: int(self.reliability.flags_[flag].sum()) for flag in FLAGS},
            },
            "classes": [str(c) for c in a.classes],
            "warnings": list(self.warnings),
            "agreement": {name: result.to_dict() for name, result in self.agreement.items()},
        }
        if self.gold is not None:
            out["accuracy"] = self._accuracy()
        out["timings"] = {k: round(float(v), 6) for k, v in self.timings.items()}
        return out

    def _accuracy(self) -> dict:
        codes = self.gold.codes
        known = codes >= 0
        n = int(known.sum())
        result = {
            "gold_tasks_given": int(self.gold.n_given),
            "gold_tasks_used": n,
            "gold_tasks_not_answered": int(self.gold.n_unanswered),
            "method": None,
            "majority_vote": None,
        }
        if n:
            if self.gold_mode == "clamp":
                result["method_note"] = (
                    "gold tasks were clamped to their known labels, so the method's accuracy on them "
                    "is 1 by construction; aggregate with gold 'evaluate' to measure it"
                )
            else:
                result["method"] = float((self.labels[known] == codes[known]).mean())
            result["majority_vote"] = float((self.mv_labels[known] == codes[known]).mean())
        return result


def analyse(answers, method: str = "dawid_skene", params: dict | None = None, gold=None, progress=None) -> Analysis:
    """Fit ``method`` and every report on ``answers`` (an :class:`aggregation.Answers`).

    ``gold``: None, a :class:`Gold`, ``{task: label}``, a ``(tasks, labels)`` pair, or an
    int array of class codes per task (-1 unknown).  ``progress``, if given, is called as
    ``progress({"stage": name, ...})`` when a stage starts and, during EM, after every
    iteration with ``iteration``, ``max_iter`` and ``log_likelihood``.
    Raises ValueError (AnswersError included) for bad parameters or gold.
    """
    cls = _method_class(method)
    params, flag_params = split_params(check_params(method, params))
    gold_mode = params.pop("gold", "evaluate")
    gold = _as_gold(answers, gold)
    timings: dict[str, float] = {}
    notify = progress if progress is not None else (lambda event: None)

    def stage(name, fn):
        notify({"stage": name})
        start = time.perf_counter()
        result = fn()
        timings[name] = time.perf_counter() - start
        return result

    model = cls(**params)
    judge = WorkerReliability(**flag_params)
    effective = {name: getattr(model, name, default) for name, default in method_params(method).items()}
    effective.update({name: getattr(judge, name) for name in RELIABILITY_PARAMS})
    fit_args = {}
    if "callback" in inspect.signature(cls.fit).parameters:
        max_iter = effective.get("max_iter")

        def callback(iteration, log_likelihood):
            notify({"stage": "fit", "iteration": int(iteration), "max_iter": max_iter,
                    "log_likelihood": _finite_or_none(log_likelihood)})

        fit_args["callback"] = callback
    models_gold = "gold" in inspect.signature(cls.fit).parameters
    if gold_mode == "clamp" and not models_gold:
        gold_mode = "evaluate"  # nothing to clamp: the method ignores gold when fitting
    if gold_mode == "clamp" and gold is not None:
        fit_args["gold"] = gold.codes
    check_size(answers, model)
    mv = stage("majority_vote", lambda: MajorityVote().fit(answers))
    if method == "majority_vote":
        model = mv
        timings["fit"] = timings["majority_vote"]
    else:
        stage("fit", lambda: model.fit(answers, **fit_args))
    gold_codes = None if gold is None else gold.codes
    confusion = getattr(model, "confusion_", None)
    if confusion is not None and not isinstance(confusion, np.ndarray):
        confusion = None  # e.g. a method offering confusion() as a method, not an array
    reliability = stage(
        "reliability",
        lambda: judge.fit(answers, model.probas_, model.labels_, gold=gold_codes, confusion=confusion),
    )
    disagreements = stage(
        "disagreements",
        lambda: Disagreements().fit(answers, model.probas_, model.labels_, mv.labels_, model.ties_, gold_codes,
                                    mv_ties=mv.ties_),
    )
    agreement = stage("agreement", lambda: agreement_statistics(answers))

    warnings = list(answers.warnings)
    if hasattr(model, "converged_") and not bool(model.converged_) and effective.get("tol", 0) > 0:
        warnings.append(f"{method} stopped at max_iter={effective.get('max_iter')} before converging (tol={effective['tol']})")
    if answers.n_workers == 1:
        warnings.append("only one worker: the consensus is that worker's own answers, and reliability is not estimable")
    if reliability.confusion_note_:
        warnings.append(reliability.confusion_note_)
    if gold is not None and gold.n_unanswered:
        warnings.append(f"{gold.n_unanswered} gold tasks have no answers and were not used")
    return Analysis(answers, method, effective, model, mv, reliability, disagreements, agreement, gold, gold_mode, timings, warnings)


def check_size(answers, model) -> None:
    """Refuse inputs too large for the dense per-task arrays, or for ``model``, before any fit."""
    cells = answers.n_tasks * answers.n_classes
    if cells > MAX_POSTERIOR_CELLS:
        raise ValueError(
            f"{answers.n_tasks:,} tasks x {answers.n_classes:,} classes = {cells:,} posterior cells, over the "
            f"limit of {MAX_POSTERIOR_CELLS:,}: labels this varied look like free text or ids; merge rare "
            f"labels, or split the tasks into several projects"
        )
    precheck = getattr(model, "check_size", None)
    if precheck is not None:
        precheck(answers)


def _finite_or_none(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int_or_none(value):
    return None if value is None else int(value)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _finite_or_none(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)
