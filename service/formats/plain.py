"""crowdqc's own answer files (CSV, TSV, JSON Lines: one answer per row), streamed.

The rules are those of ``service.readers`` (which reads whole files for the command
line): a header names the columns, extra columns are ignored, JSON values are strings or
integers (an integer is its decimal string), ids and labels must not be empty.  An
optional ``gold_column`` gives gold labels: a row whose gold value is non-empty sets its
task's gold (all rows of a task must agree).
"""

from __future__ import annotations

import json

from . import Answer, FormatError, Gold, decoded_lines
from ._tabular import count, new_gold, require, rows

PLAIN_FORMATS = ("csv", "tsv", "jsonl")


def parse(stream, name="<input>", *, fmt="csv", task_column="task", worker_column="worker", label_column="label",
          gold_column=None, stats=None):
    if fmt not in PLAIN_FORMATS:
        raise FormatError(name, None, f"unknown format {fmt!r} (one of {', '.join(PLAIN_FORMATS)})")
    cols = (task_column, worker_column, label_column)
    records = _jsonl(stream, name, cols, gold_column) if fmt == "jsonl" else _delimited(stream, name, fmt, cols, gold_column)
    gold_seen: dict = {}
    for line, task, worker, label, gold in records:
        for col, v in ((task_column, task), (worker_column, worker), (label_column, label.strip())):
            if v == "":
                raise FormatError(name, line, f"empty {col!r} value")
        if gold and new_gold(gold_seen, task, gold, name, line):
            count(stats, "gold")
            yield Gold(task, gold, line)
        count(stats, "answers")
        yield Answer(task, worker, label.strip(), line)


def _delimited(stream, name, fmt, cols, gold_column):
    it = rows(stream, name, "," if fmt == "csv" else "\t")
    header, _, _ = next(it)
    ix = [require(header, c, name) for c in cols]
    gix = require(header, gold_column, name) if gold_column else None
    for _, fields, line in it:
        t, w, lab = (fields[i] for i in ix)
        yield line, t, w, lab, fields[gix].strip() if gix is not None else ""


def _jsonl(stream, name, cols, gold_column):
    for line, text in enumerate(decoded_lines(stream, name), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(name, line, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise FormatError(name, line, "expected a JSON object")
        values = [_scalar(obj, c, name, line) for c in cols]
        gold = ""
        if gold_column and obj.get(gold_column) is not None:
            gold = _scalar(obj, gold_column, name, line).strip()
        yield (line, *values, gold)


def _scalar(obj, col, name, line) -> str:
    if col not in obj:
        raise FormatError(name, line, f"missing field {col!r}")
    v = obj[col]
    if isinstance(v, str):
        return v
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    got = "null" if v is None else json.dumps(v)[:40]
    raise FormatError(name, line, f"field {col!r} must be a string or an integer, got {got}")
