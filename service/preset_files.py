"""A labeling tool's native export, read for ``crowdqc aggregate --preset``.

The parsing is the import API's (``service.formats``), so a file means the same thing
offline and in the service; this module only applies the command line's rules on top:
declared classes (``--classes``), gold labels that must be among the answers' classes, and
the duplicate policy, each error naming its file and line.
"""

from __future__ import annotations

from aggregation import encode
from aggregation.encoding import normalize_label

from .formats import Answer, FormatError, parse
from .readers import open_input, with_gold_classes
from .text_rules import bad_char_message

# Counts of parsed items that are not left out.
_KEPT = ("answers", "gold", "tasks")


def read_preset(path, preset: str, *, field=None, task_key=None, include_rejected=False, classes=None,
                duplicates: str = "latest"):
    """``(answers, gold, warnings)``: gold is a ``(tasks, labels)`` pair, or None when the
    file has none.  Raises :class:`FormatError` (or ``ReadError`` when the file cannot be opened)."""
    name = str(path)
    declared = None if classes is None else {normalize_label(c) for c in classes}
    tasks, workers, labels = [], [], []
    gold: dict[str, tuple[str, int]] = {}
    stats: dict = {}
    with open_input(path, name) as stream:
        for item in parse(preset, stream, name, field=field, task_key=task_key,
                          include_rejected=include_rejected, stats=stats):
            label = normalize_label(item.label)
            _check_text(item, name)
            if isinstance(item, Answer):
                if declared is not None and label not in declared:
                    raise FormatError(name, item.line, f"label {item.label!r} is not one of the declared classes "
                                      f"({', '.join(sorted(declared))})")
                tasks.append(item.task)
                workers.append(item.worker)
                labels.append(label)
                continue
            # Two different gold labels for one task are the parser's error (the import API's too).
            gold.setdefault(item.task, (label, item.line))
    left_out = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in stats.items() if k not in _KEPT and v)
    if not tasks:
        raise FormatError(name, None, "no answers in the file" + (f" (left out: {left_out})" if left_out else ""))
    answers = encode(tasks, workers, labels, classes=classes, duplicates=duplicates)
    warnings = [f"{name}: left out {left_out}"] if left_out else []
    pair = None
    if gold:
        pair = (list(gold), [g for g, _ in gold.values()])
        if classes is None:  # the rule of a --gold file: a label no worker gave is a class
            answers, added = with_gold_classes(answers, *pair)
            warnings += added
        known = set(answers.classes.tolist())
        answered = set(answers.task_names.tolist())
        for task, (label, line) in gold.items():
            if task in answered and label not in known:
                raise FormatError(name, line, f"gold label {label!r} of task {task!r} is not one of the declared "
                                  f"classes ({', '.join(sorted(known))})")
    return answers, pair, warnings


def _check_text(item, name: str) -> None:
    values = (("task", item.task), ("worker", item.worker), ("label", item.label)) if isinstance(item, Answer) \
        else (("task", item.task), ("gold label", item.label))
    for what, value in values:
        problem = bad_char_message(value)
        if problem:
            raise FormatError(name, item.line, f"the {what} {problem}")
