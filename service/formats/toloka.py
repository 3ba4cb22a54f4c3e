"""Toloka results TSV (the pool's "Download results" file).

Columns: ``INPUT:<name>`` (the task's input data), ``OUTPUT:<field>`` (the worker's
answer), ``GOLDEN:<field>`` (the control answer, filled on control tasks),
``ASSIGNMENT:worker_id``, ``ASSIGNMENT:status`` and other ``ASSIGNMENT:``/``HINT:``/
``ACCEPT:`` columns, which are ignored.

* task: by default every ``INPUT:*`` column together (one column is its value, several a
  canonical JSON object: Toloka's own task id is not in the file, and the same inputs are
  the same task); ``task_key`` names one column instead (``INPUT:url``, ``url`` or e.g.
  ``ASSIGNMENT:task_id``).
* label: ``OUTPUT:<field>``; worker: ``ASSIGNMENT:worker_id``.
* status (toloka-kit's assignment statuses): ``REJECTED`` rows are left out unless
  ``include_rejected``; rows without an answer are always left out, counted as
  ``no_answer``: ``SKIPPED``, ``EXPIRED`` and ``ACTIVE`` (still being done: a download
  taken while the pool runs has them); other statuses (``SUBMITTED``, ``APPROVED``, and
  ``ACCEPTED`` of older files) and files without a status column are answers.
* gold: a non-empty ``GOLDEN:<field>`` gives the task's gold label (once per task; two
  different control answers for one task are an error).  The worker's answer on a control
  task is still an answer.
"""

from __future__ import annotations

from . import Answer, FormatError, Gold, option
from ._tabular import count, joined_key, new_gold, pick_field, require, rows

WORKER = "ASSIGNMENT:worker_id"
STATUS = "ASSIGNMENT:status"
NO_ANSWER = {"SKIPPED", "EXPIRED", "ACTIVE"}


def parse(stream, name: str = "<input>", *, field=None, task_key=None, include_rejected=False, stats=None):
    it = rows(stream, name, "\t")
    header, _, _ = next(it)
    label_ix = pick_field(header, "OUTPUT:", field, name)
    out_field = header[label_ix][len("OUTPUT:"):]
    golden = "GOLDEN:" + out_field
    gold_ix = header.index(golden) if golden in header else None
    worker_ix = require(header, WORKER, name)
    status_ix = header.index(STATUS) if STATUS in header else None
    if task_key is None:
        task_ix = [i for i, h in enumerate(header) if h.startswith("INPUT:")]
        if not task_ix:
            raise FormatError(name, 1, f"no INPUT:* column to identify tasks (name one with {option('task_key')})")
    else:
        col = task_key if task_key in header else "INPUT:" + task_key
        task_ix = [require(header, col, name)]
    task_names = [header[i][len("INPUT:"):] for i in task_ix]
    gold_seen: dict = {}
    for _, fields, line in it:
        status = fields[status_ix].strip().upper() if status_ix is not None else ""
        if status == "REJECTED" and not include_rejected:
            count(stats, "rejected")
            continue
        if status in NO_ANSWER:
            count(stats, "no_answer")
            continue
        values = [fields[i] for i in task_ix]
        if all(v == "" for v in values):
            raise FormatError(name, line, f"empty task: {', '.join(header[i] for i in task_ix)} all empty")
        task = joined_key(task_names, values)
        worker = fields[worker_ix].strip()
        if not worker:
            raise FormatError(name, line, f"empty {WORKER}")
        label = fields[label_ix].strip()
        if not label:
            raise FormatError(name, line, f"empty {header[label_ix]} on an assignment with status {status or 'unknown'}")
        if gold_ix is not None:
            g = fields[gold_ix].strip()
            if g and new_gold(gold_seen, task, g, name, line, "control answers"):
                count(stats, "gold")
                yield Gold(task, g, line)
        count(stats, "answers")
        yield Answer(task, worker, label, line)
