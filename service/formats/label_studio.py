"""Label Studio JSON export ("JSON", not "JSON_MIN": only the full export keeps
annotations and who made them).

The file is a JSON array of tasks (one task object per line, JSON Lines, is accepted too).
Each task has ``id``, ``data`` and ``annotations``; each annotation ``id``,
``completed_by``, ``result``, ``was_cancelled`` and ``ground_truth``.

* task: the task's ``id`` (as a decimal string); ``task_key="data.<key>"`` uses a data
  field instead (an external id imported with the tasks).
* worker: ``completed_by``.  Exports write the user's integer id; older exports and some
  webhooks write a user object - then its ``id`` is used, and ``email`` only when there
  is no id.  The id is the stable choice: users can change their email, and the integer
  id is what the other shape carries.
* label: the single value of the ``choices`` result whose ``from_name`` is ``field``.
  Without ``field`` the file must use exactly one ``choices`` tag; a second name is an
  error listing both.  An annotation without a result for that tag is not an answer
  (counted as ``no_choice``); a multi-choice result with several values is an error.
* ``was_cancelled`` (skipped) annotations are not answers.
* ``ground_truth: true`` annotations become the task's gold label *instead of* an
  answer: they are the reference crowd answers are judged against, and counting them as
  a vote too would inflate that worker's measured accuracy.  Two ground-truth
  annotations of one task with different labels are an error naming the line.
"""

from __future__ import annotations

import codecs
import json

from . import Answer, FormatError, Gold, binary_stream, option
from ._tabular import count, new_gold

CHUNK = 1 << 16
# One task larger than this is not a task: stop instead of buffering the whole file.
MAX_RECORD = 64 * 1024 * 1024
# A decode error this close to the buffer's end may be a value cut by the read ("fals",
# "1e", half of a \uXXXX\uXXXX pair), so it reads on; anywhere else it is bad JSON.
CUT_SLACK = 16


class ChoicePicker:
    """Finds the label of one annotation; remembers the tag in use across the file."""

    def __init__(self, field: str | None = None):
        self.field = field
        self.implicit = field is None
        self.to_name: str | None = None
        self.seen: list[str] = []

    def label(self, result, where, name, line):
        if not isinstance(result, list):
            raise FormatError(name, line, f"{where}: 'result' must be a list")
        found = None
        for item in result:
            if not isinstance(item, dict) or item.get("type") != "choices":
                continue
            tag = item.get("from_name")
            if tag not in self.seen:
                self.seen.append(tag)
                if self.implicit and len(self.seen) > 1:
                    names = ", ".join(repr(s) for s in self.seen)
                    raise FormatError(
                        name, line, f"{where}: several choices tags ({names}); choose one with {option('field')}, the tag's from_name"
                    )
            if self.field is None:
                self.field = tag
            if tag == self.field:
                found = item
        if found is None:
            return None
        self.to_name = self.to_name or found.get("to_name")
        value = found.get("value")
        choices = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(choices, list):
            raise FormatError(name, line, f"{where}: the {self.field!r} result has no 'value.choices' list")
        if len(choices) != 1:
            raise FormatError(
                name, line,
                f"{where}: {len(choices)} choices selected in {self.field!r}; one label per answer is needed "
                "(multi-choice tags are not supported)",
            )
        choice = choices[0]
        if isinstance(choice, bool) or not isinstance(choice, (str, int)) or not str(choice).strip():
            raise FormatError(name, line, f"{where}: the choice must be a non-empty string, got {json.dumps(choice)[:40]}")
        return str(choice).strip()

    def check_used(self, name: str, n_items: int, source: str = "the file") -> None:
        """After the file (or one webhook event, ``source``): an explicit ``field`` that
        matched nothing is a typo, not an empty project."""
        if not self.implicit and n_items == 0 and self.seen and self.field not in self.seen:
            names = ", ".join(repr(s) for s in self.seen)
            raise FormatError(name, None, f"no choices result with from_name {self.field!r}; {source} has {names}")


def make_picker(field: str | None) -> ChoicePicker:
    return ChoicePicker(field)


def is_id(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.strip() != "")


def worker_id(completed_by, where: str, name: str, line: int) -> str:
    value = completed_by
    if isinstance(value, dict):
        value = value.get("id") if value.get("id") is not None else value.get("email")
    if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
        raise FormatError(name, line, f"{where}: 'completed_by' must be a user id or a user object with an id, got {json.dumps(completed_by)[:60]}")
    return str(value).strip()


def task_id(task: dict, task_key: str | None, where: str, name: str, line: int) -> str:
    if task_key in (None, "id"):
        value = task.get("id")
        what = "'id'"
    else:
        key = task_key.removeprefix("data.")
        data = task.get("data")
        value = data.get(key) if isinstance(data, dict) else None
        what = f"'data.{key}'"
    if isinstance(value, bool) or not isinstance(value, (int, str)) or str(value).strip() == "":
        raise FormatError(name, line, f"{where}: task {what} must be a non-empty string or integer, got {json.dumps(value)[:60]}")
    return str(value).strip()


def annotation_items(task: str, ann, picker: ChoicePicker, where: str, name: str, line: int, stats=None,
                     tool_task: str | None = None):
    """The Answer or Gold of one annotation (None when it is no answer); ``tool_task`` is
    Label Studio's id of the task when ``task`` is a data field."""
    if not isinstance(ann, dict):
        raise FormatError(name, line, f"{where}: an annotation must be an object")
    if ann.get("was_cancelled"):
        count(stats, "cancelled")
        return None
    ref = str(ann["id"]) if isinstance(ann.get("id"), (int, str)) and not isinstance(ann.get("id"), bool) else None
    where = f"{where}, annotation {ref}" if ref else where
    label = picker.label(ann.get("result", []), where, name, line)
    if label is None:
        count(stats, "no_choice")
        return None
    if ann.get("ground_truth"):
        count(stats, "gold")
        return Gold(task, label, line, ref, tool_task)
    worker = worker_id(ann.get("completed_by"), where, name, line)
    count(stats, "answers")
    return Answer(task, worker, label, line, ref, tool_task)


def parse(stream, name: str = "<input>", *, field=None, task_key=None, include_rejected=False, stats=None, picker=None):
    """``include_rejected`` is accepted for a uniform signature (Label Studio has no
    rejection); pass a ``picker`` to learn the tag names read (``picker.field``/``to_name``)."""
    picker = picker or make_picker(field)
    n_items = 0
    gold_seen: dict = {}
    by_data = task_key not in (None, "id")
    for n, (line, task) in enumerate(iter_json_values(binary_stream(stream), name), start=1):
        where = f"task #{n}"
        if not isinstance(task, dict):
            raise FormatError(name, line, f"{where}: expected a task object, got {type(task).__name__}")
        tid = task_id(task, task_key, where, name, line)
        ls_id = task.get("id") if by_data else None
        ls_id = str(ls_id).strip() if is_id(ls_id) else None
        where = f"task {tid}"
        anns = task.get("annotations")
        if anns is None:
            raise FormatError(
                name, line,
                f"{where}: no 'annotations' (use Label Studio's full JSON export; JSON_MIN drops who annotated)",
            )
        if not isinstance(anns, list):
            raise FormatError(name, line, f"{where}: 'annotations' must be a list")
        count(stats, "tasks")
        for ann in anns:
            item = annotation_items(tid, ann, picker, where, name, line, stats, ls_id)
            if isinstance(item, Gold):
                # Every ground-truth annotation is yielded (each has its own id to delete
                # later), but they must agree.
                new_gold(gold_seen, tid, item.label, name, line)
            if item is not None:
                n_items += 1
                yield item
    picker.check_used(name, n_items)


def iter_json_values(raw, name: str):
    """``(line, value)`` for each element of a top-level JSON array, or for each of a
    sequence of top-level values (JSON Lines), read in chunks.

    ``json`` has no incremental parser: decode one value at a time from a buffer, and
    when a value runs past the buffer's end read more (doubling the read, so a large value
    costs O(n log n), not O(n^2)) and try again.  Only an error at the buffer's end (or an
    unterminated string) means that; any other is reported at once, with its line.
    """
    dec = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8-sig")()
    buf, pos, line, eof = "", 0, 1, False
    want = CHUNK

    def more():
        nonlocal buf, pos, eof, want
        block = raw.read(want)
        try:
            data = utf8.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            bad_line = line + buf.count("\n", pos) + block[: max(exc.start, 0)].count(b"\n")
            raise FormatError(name, bad_line, f"invalid UTF-8 ({exc.reason})") from None
        if not block:
            eof = True
        if not data:
            if eof:
                return False
            return more()
        buf = buf[pos:] + data
        pos = 0
        return True

    def skip_ws():
        nonlocal pos, line
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                if buf[pos] == "\n":
                    line += 1
                pos += 1
            if pos < len(buf) or eof or not more():
                return

    skip_ws()
    if pos >= len(buf):
        raise FormatError(name, 1, "empty file (expected a JSON array of tasks)")
    in_array = buf[pos] == "["
    if in_array:
        pos += 1
        skip_ws()
        if pos < len(buf) and buf[pos] == "]":
            pos += 1
            skip_ws()
            if pos < len(buf):
                raise FormatError(name, line, "unexpected data after the task array")
            return
    while True:
        skip_ws()
        if pos >= len(buf):
            if in_array:
                raise FormatError(name, line, "the file ends inside the task array (missing ']')")
            return
        start_line = line
        want = CHUNK
        while True:
            try:
                value, end = dec.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                cut = exc.pos >= len(buf) - CUT_SLACK or exc.msg.startswith("Unterminated string")
                if cut and not eof and more():
                    want = min(want * 2, MAX_RECORD)
                    if len(buf) > MAX_RECORD:
                        raise FormatError(name, start_line, f"a record is larger than {MAX_RECORD >> 20} MiB") from None
                    continue
                err_line = start_line + buf.count("\n", pos, exc.pos)
                raise FormatError(name, err_line, f"invalid JSON: {exc.msg}") from None
            # A value ending exactly at the buffer's end may go on (a number, say).
            if end == len(buf) and not eof and more():
                continue
            break
        line += buf.count("\n", pos, end)
        pos = end
        yield start_line, value
        if in_array:
            skip_ws()
            if pos < len(buf) and buf[pos] == ",":
                pos += 1
                continue
            if pos < len(buf) and buf[pos] == "]":
                pos += 1
                skip_ws()
                if pos < len(buf):
                    raise FormatError(name, line, "unexpected data after the task array")
                return
            if pos >= len(buf):
                raise FormatError(name, line, "the file ends inside the task array (missing ']')")
            raise FormatError(name, line, f"expected ',' or ']' between tasks, got {buf[pos]!r}")

