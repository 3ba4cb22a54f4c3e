"""Amazon Mechanical Turk batch results CSV (the requester's "Download CSV").

Columns: ``HITId``, ``AssignmentId``, ``WorkerId``, ``AssignmentStatus`` and the HIT's
``Input.<name>`` and ``Answer.<field>`` columns (others are ignored).

* task: ``HITId`` by default; ``task_key`` may name another column (``Input.image_url``),
  or ``Input.*`` for every input column together (canonical JSON when several), which
  merges re-published HITs of the same item.
* label: ``Answer.<field>`` (``field`` may include dots, e.g. ``category.label`` for
  ``crowd-classifier``).  Crowd HTML forms that put everything into one
  ``Answer.taskAnswers`` JSON column are read too: ``field`` names the key inside it; a
  value ``{"label": x}`` is ``x`` and a radio group ``{"cat": true, "dog": false}`` is the
  one key that is true.
* worker: ``WorkerId``.  ``Rejected`` assignments are left out unless
  ``include_rejected``.  The format has no gold.
"""

from __future__ import annotations

import json

from . import Answer, FormatError, option
from ._tabular import count, joined_key, pick_field, require, rows

TASK_ANSWERS = "Answer.taskAnswers"


def parse(stream, name: str = "<input>", *, field=None, task_key=None, include_rejected=False, stats=None):
    it = rows(stream, name, ",")
    header, _, _ = next(it)
    worker_ix = require(header, "WorkerId", name)
    status_ix = header.index("AssignmentStatus") if "AssignmentStatus" in header else None
    json_field = None
    direct = [h for h in header if h.startswith("Answer.") and h != TASK_ANSWERS]
    if TASK_ANSWERS in header and (
        (field is not None and "Answer." + field.removeprefix("Answer.") not in header) or (field is None and not direct)
    ):
        if field is None:
            raise FormatError(name, 1, f"{TASK_ANSWERS} holds every answer as JSON: name the answer's key with {option('field')}")
        label_ix, json_field = header.index(TASK_ANSWERS), field.removeprefix("Answer.")
    else:
        hdr = [h if h != TASK_ANSWERS else "" for h in header]
        label_ix = pick_field(hdr, "Answer.", field, name)
    if task_key in (None, "HITId"):
        task_ix = [require(header, "HITId", name)]
    elif task_key in ("Input.*", "Input", "input"):
        task_ix = [i for i, h in enumerate(header) if h.startswith("Input.")]
        if not task_ix:
            raise FormatError(name, 1, "no Input.* column in the header")
    else:
        task_ix = [require(header, task_key if task_key in header else "Input." + task_key, name)]
    task_names = [header[i].removeprefix("Input.") for i in task_ix]
    for _, fields, line in it:
        status = fields[status_ix].strip() if status_ix is not None else ""
        if status.lower() == "rejected" and not include_rejected:
            count(stats, "rejected")
            continue
        values = [fields[i] for i in task_ix]
        if all(v == "" for v in values):
            raise FormatError(name, line, f"empty task id ({', '.join(header[i] for i in task_ix)})")
        task = joined_key(task_names, values)
        worker = fields[worker_ix].strip()
        if not worker:
            raise FormatError(name, line, "empty WorkerId")
        raw = fields[label_ix]
        label = _from_task_answers(raw, json_field, name, line) if json_field else raw.strip()
        if not label:
            raise FormatError(name, line, f"empty {header[label_ix]}" + (f" / {json_field!r}" if json_field else ""))
        count(stats, "answers")
        yield Answer(task, worker, label, line)


def _from_task_answers(raw: str, key: str, name: str, line: int) -> str:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FormatError(name, line, f"{TASK_ANSWERS} is not valid JSON ({exc.msg})") from None
    if isinstance(data, list):
        if len(data) != 1:
            raise FormatError(name, line, f"{TASK_ANSWERS} holds {len(data)} answer objects; expected one per assignment")
        data = data[0]
    if not isinstance(data, dict) or key not in data:
        keys = ", ".join(repr(k) for k in data) if isinstance(data, dict) else "none"
        raise FormatError(name, line, f"{TASK_ANSWERS} has no key {key!r} (it has {keys})")
    value = data[key]
    if isinstance(value, dict) and "label" in value:
        value = value["label"]
    elif isinstance(value, dict):
        on = [k for k, v in value.items() if v is True]
        if len(on) != 1:
            raise FormatError(name, line, f"{TASK_ANSWERS}.{key}: expected exactly one option set to true, got {len(on)}")
        value = on[0]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise FormatError(name, line, f"{TASK_ANSWERS}.{key}: expected a string, got {json.dumps(value)[:40]}")
    return str(value).strip()
