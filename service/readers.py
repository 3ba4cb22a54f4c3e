"""Answer and gold files (CSV, TSV, JSON Lines) to :class:`aggregation.Answers`.

Two readers with the same meaning:

* a fast path: pyarrow parses the file in C on all cores and dictionary-encodes the three
  columns, so ten million rows cost a few seconds and the Python heap never holds one
  string per row;
* a small pure-Python reader, which *defines* the rules and finds the first bad line.
  It only runs when the fast path fails or reports anything unusual (a null, an empty
  id, a float, a mixed-type JSON column, ...): pyarrow's errors carry no reliable line
  number, and a user deserves ``answers.csv, line 17: expected 3 fields, got 2``.

Rules (the same for every format; label normalisation itself is
``aggregation.encoding``'s):

* the file is UTF-8 (a byte-order mark is skipped); ``.gz`` files are decompressed;
* CSV/TSV: a header line names the columns; every row has as many fields as the header;
  fields may be quoted with ``"`` (``""`` inside quotes is one quote) but may not span
  lines; blank lines are skipped; extra columns are ignored;
* JSON Lines: one JSON object per non-blank line; extra keys are ignored; ``task``,
  ``worker`` and ``label`` must be strings or integers - an integer is read as its
  decimal string (``1`` and ``"1"`` are one label) and such coercions are counted and
  reported as a warning; floats, booleans, null, arrays and objects are errors;
* task and worker ids must be non-empty, labels non-empty after normalisation.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from aggregation import AnswersError, encode_gold, from_codes
from aggregation.encoding import add_classes, normalize_label

from .text_rules import BAD_CHARS

FORMATS = ("csv", "tsv", "jsonl")
# Files follow the API's rule (service.text_rules); this is its pyarrow (RE2) form, which
# needs no surrogates: a decoded UTF-8 file cannot hold one, and JSON escapes of them send
# the file to the Python reader.
_ARROW_CONTROL = r"[\x{0}-\x{1f}\x{7f}-\x{9f}]"
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_DELIMITERS = {"csv": ",", "tsv": "\t"}
_NON_BLANK = re.compile(rb"\S")
_NON_EMPTY_LINE = re.compile(rb"[^\r\n]")
# Below this size a file is one pyarrow block anyway: threads only add start-up cost and
# the shutdown hazard of apache/arrow#38676.
_THREADED_READ_BYTES = 1 << 24


class ReadError(ValueError):
    """A file that cannot be read; ``str()`` is one line naming the file, the line and the problem."""

    def __init__(self, name: str, line: int | None, problem: str):
        self.name, self.line, self.problem = name, line, problem
        where = f"{name}, line {line}" if line is not None else name
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Columns:
    """Which input columns (or JSON keys) hold the task, worker and label."""

    task: str = "task"
    worker: str = "worker"
    label: str = "label"


@dataclass
class Table:
    """Factorised columns of one file: ``codes[name]`` index ``uniques[name]``."""

    name: str
    fmt: str
    data: bytes
    codes: dict
    uniques: dict
    n_rows: int
    n_int_coerced: int = 0

    def warnings(self) -> list[str]:
        if not self.n_int_coerced:
            return []
        return [
            f"{self.name}: {self.n_int_coerced} JSON integer values read as their decimal strings "
            "(1 and \"1\" are the same id or label)"
        ]


def detect_format(path, fmt: str | None = None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ReadError(str(path), None, f"unknown format {fmt!r} (use one of {', '.join(FORMATS)})")
        return fmt
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _EXTENSIONS:
        return _EXTENSIONS[suffixes[-1]]
    raise ReadError(
        str(path), None,
        "cannot tell the format from the file name (use .csv, .tsv, .jsonl or .ndjson, or give the format explicitly)",
    )


def read_answers(path, fmt=None, columns: Columns = Columns(), classes=None, duplicates: str = "latest"):
    """Read an answers file into :class:`aggregation.Answers`; raises :class:`ReadError`.

    Returns ``(answers, warnings)``: warnings are reader notes (integer coercions) followed by
    the encoder's (duplicates collapsed).
    """
    wanted = [columns.task, columns.worker, columns.label]
    table = read_table(path, wanted, fmt)
    t, w, lab = (columns.task, columns.worker, columns.label)
    try:
        answers = from_codes(
            table.codes[t], table.uniques[t], table.codes[w], table.uniques[w],
            table.codes[lab], table.uniques[lab], classes=classes, duplicates=duplicates,
        )
    except AnswersError as exc:
        raise _locate_answers_error(table, wanted, classes, exc) from None
    return answers, table.warnings() + list(answers.warnings)


def read_gold(path, answers, fmt=None, task_column: str = "task", label_column: str = "label", closed: bool = True):
    """Read a gold file against ``answers``: returns ``(answers, codes, n_given, n_unanswered, warnings)``.

    ``codes`` is the ``(n_tasks,)`` array of class codes, -1 where unknown.  Two labels for
    one task is a :class:`ReadError`; so is, with ``closed`` (a declared class set), a gold
    label outside the classes.  Otherwise gold labels no worker gave are added to the
    classes of the returned ``answers``.  Gold of tasks nobody answered is not used.
    """
    wanted = [task_column, label_column]
    table = read_table(path, wanted, fmt, what="gold rows")
    tasks = table.uniques[task_column][table.codes[task_column]]
    labels = table.uniques[label_column][table.codes[label_column]]
    warnings = table.warnings()
    if not closed:
        answers, added = with_gold_classes(answers, tasks, labels)
        warnings += added
    try:
        codes, n_unanswered = encode_gold(answers, tasks, labels)
    except AnswersError as exc:
        raise _locate_gold_error(table, wanted, answers, exc) from None
    n_given = int(np.unique(table.codes[task_column]).size)
    return answers, codes, n_given, n_unanswered, warnings


def with_gold_classes(answers, tasks, labels):
    """``answers`` whose classes also hold the gold labels of answered tasks, and a warning
    naming the labels added (they can only ever be missed: no worker gave them)."""
    answered = answers.task_index(tasks, missing=-1) >= 0
    extended = add_classes(answers, np.asarray(labels, dtype=object)[answered])
    if extended.n_classes == answers.n_classes:
        return answers, []
    added = sorted(set(extended.classes.tolist()) - set(answers.classes.tolist()))
    return extended, [f"gold labels that no worker gave were added as classes: {', '.join(map(repr, added))}"]


def read_table(path, wanted: list[str], fmt: str | None = None, what: str = "answer rows") -> Table:
    """Read and factorise the ``wanted`` columns of one file (fast path, Python on trouble)."""
    name = str(path)
    fmt = detect_format(path, fmt)
    data = _load(path, name)
    if _NON_BLANK.search(data) is None:
        what = "a header line" if fmt != "jsonl" else "one JSON object per line"
        raise ReadError(name, 1, f"empty file (expected {what} with {_names(wanted)})")
    _check_utf8(data, name)
    if fmt == "jsonl":
        table = _arrow_jsonl(data, name, wanted)
    else:
        header, body_start, header_line = _csv_header(data, name, _DELIMITERS[fmt], wanted)
        if _NON_EMPTY_LINE.search(data, body_start) is None:
            # Never hand pyarrow a header-only file: its threaded reader can leave a task
            # behind that aborts the interpreter at exit (apache/arrow#38676).
            raise ReadError(name, header_line + 1, f"no {what} after the header (need at least one row)")
        table = _arrow_csv(data, name, fmt, header, wanted)
    if table is None:
        # Either a real error (the Python reader raises it with its line) or a valid file
        # the fast path cannot express, such as a JSON column mixing integers and strings.
        table = _python_table(data, name, fmt, wanted)
    if table.n_rows == 0:
        raise ReadError(name, 2, f"no {what} after the header (need at least one row)"
                        if fmt != "jsonl" else f"no {what}")
    return table


# ---------------------------------------------------------------------------- loading


def open_input(path, name: str):
    """``open(path, "rb")`` with the reasons it fails as one-line :class:`ReadError`."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ReadError(name, None, "no such file") from None
    except IsADirectoryError:
        raise ReadError(name, None, "is a directory, not a file") from None
    except OSError as exc:
        raise ReadError(name, None, f"cannot read: {exc.strerror or exc}") from None


def _load(path, name: str) -> bytes:
    with open_input(path, name) as f:
        try:
            data = f.read()
        except OSError as exc:
            raise ReadError(name, None, f"cannot read: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ReadError(name, None, f"broken gzip data: {exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    # A quote left open on the last line must show up as a value running past a line end,
    # exactly as it does on any other line.
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data


def _check_utf8(data: bytes, name: str) -> None:
    """Every byte of the file, not only the wanted columns pyarrow converts, must be UTF-8
    (as the line-by-line reader requires); the error names the first bad line."""
    if data.isascii():
        return
    view = memoryview(data)
    step = 1 << 24
    start = 0
    while start < len(data):
        # cut after a newline: a multi-byte UTF-8 sequence never contains that byte
        end = data.find(b"\n", min(start + step, len(data) - 1))
        end = len(data) if end < 0 else end + 1
        try:
            codecs.utf_8_decode(view[start:end], "strict", True)
        except UnicodeDecodeError as exc:
            pos = start + exc.start
            line_start = data.rfind(b"\n", 0, pos) + 1
            line_no = data.count(b"\n", 0, pos) + 1
            raise ReadError(name, line_no, f"invalid UTF-8 (byte {pos - line_start + 1} of the line)") from None
        start = end


def _names(wanted) -> str:
    return ", ".join(repr(w) for w in wanted)


# ------------------------------------------------------------------------ fast path


def _csv_header(data: bytes, name: str, delimiter: str, wanted: list[str]) -> tuple[list[str], int, int]:
    """The header's column names, the offset just past the header line and its line
    number; checks that every wanted column is there once."""
    start = 0
    line_no = 1
    while True:  # skip blank lines before the header, like the row reader does
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        raw = data[start:end]
        if raw.strip(b"\r"):
            break
        start, line_no = end + 1, line_no + 1
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReadError(name, line_no, f"invalid UTF-8 (byte {exc.start + 1} of the line)") from None
    header = next(csv.reader([text.rstrip("\r")], delimiter=delimiter))
    stripped = [h.strip() for h in header]
    for col in wanted:
        n = stripped.count(col)
        if n == 0:
            found = ", ".join(repr(h) for h in header) or "nothing"
            raise ReadError(name, line_no, f"missing column {col!r} (the header has {found})")
        if n > 1:
            raise ReadError(name, line_no, f"column {col!r} appears {n} times in the header")
    return header, end + 1, line_no


def _arrow_csv(data: bytes, name: str, fmt: str, header: list[str], wanted: list[str]) -> Table | None:
    actual = {col: header[[h.strip() for h in header].index(col)] for col in wanted}
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(use_threads=len(data) > _THREADED_READ_BYTES, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(
                delimiter=_DELIMITERS[fmt], quote_char='"', double_quote=True,
                escape_char=False, newlines_in_values=False, ignore_empty_lines=True,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={a: pa.string() for a in actual.values()},
                include_columns=list(actual.values()),
                strings_can_be_null=False, quoted_strings_can_be_null=False, null_values=[],
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowException):
        return None
    cols = {col: table.column(actual[col]) for col in wanted}
    return _factorise(name, fmt, data, cols, table.num_rows)


def _arrow_jsonl(data: bytes, name: str, wanted: list[str]) -> Table | None:
    try:
        threads = len(data) > _THREADED_READ_BYTES
        table = pajson.read_json(pa.BufferReader(data), read_options=pajson.ReadOptions(use_threads=threads, block_size=1 << 24))
    except (pa.ArrowInvalid, pa.ArrowException, UnicodeDecodeError):
        return None
    # Two objects on one line parse in pyarrow but not line by line.  Each row must start
    # a line with "{"; any other count (also merely indented lines) goes to the Python reader.
    if table.num_rows != data.count(b"\n{") + data.startswith(b"{"):
        return None
    cols = {}
    n_int = 0
    for col in wanted:
        if col not in table.column_names:
            return None
        arr = table.column(col)
        if arr.null_count:
            return None
        if pa.types.is_integer(arr.type):
            n_int += len(arr)
            arr = pc.cast(arr, pa.string())
        elif not pa.types.is_string(arr.type):
            return None
        cols[col] = arr
    return _factorise(name, "jsonl", data, cols, table.num_rows, n_int)


def _factorise(name, fmt, data, cols: dict, n_rows: int, n_int: int = 0) -> Table | None:
    codes, uniques = {}, {}
    for i, (col, arr) in enumerate(cols.items()):
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
        enc = pc.dictionary_encode(arr)
        dictionary = enc.dictionary
        # Values that break a rule are rare: checking the distinct values only is cheap,
        # and any hit hands the file to the Python reader for a line number.
        if len(dictionary) and pc.any(pc.match_substring_regex(dictionary, _ARROW_CONTROL)).as_py():
            return None
        names = dictionary.to_numpy(zero_copy_only=False).astype(object)
        if i == len(cols) - 1:  # the label: empty once normalised?
            if any(not normalize_label(v) for v in names):
                return None
        elif len(dictionary) and pc.any(pc.equal(dictionary, "")).as_py():
            return None
        # Sorted names make the encoder's canonical renumbering a no-op; sorting a million
        # ids in C beats numpy sorting Python strings.  UTF-8 byte order is code point
        # order, which is Python's str order.
        order = pc.sort_indices(dictionary).to_numpy()
        rank = np.empty(order.size, dtype=np.int32)
        rank[order] = np.arange(order.size, dtype=np.int32)
        codes[col] = rank[enc.indices.to_numpy(zero_copy_only=False)]
        uniques[col] = names[order]
    return Table(name, fmt, data, codes, uniques, n_rows, n_int)


# ------------------------------------------------------------------ reference reader


def iter_rows(data: bytes, name: str, fmt: str, wanted: list[str]):
    """Yield ``(line_number, values, n_int_coerced)`` per row; raise ReadError at the first bad line.

    This is the reference for what a valid file is; the fast path defers to it.
    """
    if fmt == "jsonl":
        yield from _iter_jsonl(data, name, wanted)
    else:
        yield from _iter_csv(data, name, _DELIMITERS[fmt], wanted)


def _decoded_lines(data: bytes, name: str):
    for line_no, raw in enumerate(io.BytesIO(data), start=1):
        try:
            yield line_no, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReadError(name, line_no, f"invalid UTF-8 (byte {exc.start + 1} of the line)") from None


def _iter_csv(data, name, delimiter, wanted):
    header = None
    index = None
    for line_no, text in _decoded_lines(data, name):
        body = text.rstrip("\r\n")
        if not body:
            continue
        try:
            # strict parsing is only used to spot a quote left open at the end of the line;
            # other quirks (a"b, "a"b) are read as pyarrow reads them.
            fields = next(csv.reader([body], delimiter=delimiter, strict=True))
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise ReadError(name, line_no, "unterminated quoted field (a quote opened on this line is not closed)") from None
            fields = next(csv.reader([body], delimiter=delimiter))
        if header is None:
            header = fields
            stripped = [h.strip() for h in header]
            missing = [c for c in wanted if c not in stripped]
            if missing:
                found = ", ".join(repr(h) for h in header)
                raise ReadError(name, line_no, f"missing column {missing[0]!r} (the header has {found})")
            index = [stripped.index(c) for c in wanted]
            continue
        if len(fields) != len(header):
            raise ReadError(name, line_no, f"expected {len(header)} fields, got {len(fields)}")
        values = [fields[i] for i in index]
        _check_values(values, wanted, name, line_no)
        yield line_no, values, 0


def _iter_jsonl(data, name, wanted):
    for line_no, text in _decoded_lines(data, name):
        if not text.strip():
            continue
        try:
            obj = json.loads(text.rstrip("\r\n"))
        except json.JSONDecodeError as exc:
            raise ReadError(name, line_no, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise ReadError(name, line_no, f"expected a JSON object, got {_json_type(obj)}")
        values = []
        n_int = 0
        for col in wanted:
            if col not in obj:
                raise ReadError(name, line_no, f"missing field {col!r}")
            v = obj[col]
            if isinstance(v, int) and not isinstance(v, bool):
                values.append(str(v))
                n_int += 1
            elif isinstance(v, str):
                values.append(v)
            else:
                got = "null" if v is None else f"{_json_type(v)} {json.dumps(v)[:40]}"
                raise ReadError(name, line_no, f"field {col!r} must be a string or an integer, got {got}")
        _check_values(values, wanted, name, line_no)
        yield line_no, values, n_int


def _check_values(values, wanted, name, line_no):
    for col, v in zip(wanted[:-1], values[:-1]):
        if v == "":
            raise ReadError(name, line_no, f"empty {col!r} value")
    label = values[-1]
    for col, v in zip(wanted, values):
        bad = BAD_CHARS.search(v)
        if bad is None:
            continue
        if bad.group() in "\r\n":
            raise ReadError(name, line_no, "line break inside a value")
        what = "lone surrogate" if "\ud800" <= bad.group() <= "\udfff" else "control character"
        raise ReadError(name, line_no, f"{what} U+{ord(bad.group()):04X} in the {col!r} value")
    if not normalize_label(label):
        raise ReadError(name, line_no, f"empty {wanted[-1]!r} value")


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, float):
        return "float"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, str):
        return "string"
    return type(v).__name__


def _python_table(data, name, fmt, wanted) -> Table:
    cols = [[] for _ in wanted]
    n_int = 0
    for _, values, k in iter_rows(data, name, fmt, wanted):
        for c, v in zip(cols, values):
            c.append(v)
        n_int += k
    codes, uniques = {}, {}
    for col, values in zip(wanted, cols):
        arr = np.asarray(values, dtype=object)
        if arr.size:
            u, inv = np.unique(arr, return_inverse=True)
        else:
            u, inv = np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64)
        codes[col] = inv.astype(np.int32).reshape(-1)
        uniques[col] = u.astype(object)
    return Table(name, fmt, data, codes, uniques, len(cols[0]), n_int)


# ------------------------------------------------------- errors found after reading


def _first_line(table: Table, wanted, predicate) -> int | None:
    for line_no, values, _ in iter_rows(table.data, table.name, table.fmt, wanted):
        if predicate(values):
            return line_no
    return None


def _locate_answers_error(table: Table, wanted, classes, exc: AnswersError) -> ReadError:
    if classes is not None:
        declared = {normalize_label(c) for c in classes}
        line = _first_line(table, wanted, lambda v: normalize_label(v[2]) not in declared)
        if line is not None:
            bad = _value_at(table, wanted, line)[2]
            shown = ", ".join(sorted(declared))
            problem = f"label {bad!r} is not one of the declared classes ({shown})"
            # the first line to fix, and every value to fix, so one run tells it all
            outside = sorted({normalize_label(v) for v in table.uniques[wanted[2]]} - declared)
            if len(outside) > 1:
                listed = ", ".join(repr(v) for v in outside[:20])
                more = f", ... ({len(outside) - 20} more)" if len(outside) > 20 else ""
                problem += f"; {len(outside)} undeclared labels in the file: {listed}{more}"
            return ReadError(table.name, line, problem)
    return ReadError(table.name, None, str(exc))


def _locate_gold_error(table: Table, wanted, answers, exc: AnswersError) -> ReadError:
    known = set(answers.classes.tolist())
    line = _first_line(table, wanted, lambda v: normalize_label(v[1]) not in known)
    if line is not None:
        bad = _value_at(table, wanted, line)[1]
        shown = ", ".join(answers.classes.tolist()[:20])
        return ReadError(table.name, line, f"gold label {bad!r} is not one of the answers' classes ({shown})")
    seen: dict = {}

    def clash(v):
        label = normalize_label(v[1])
        return seen.setdefault(v[0], label) != label

    line = _first_line(table, wanted, clash)
    if line is not None:
        task = _value_at(table, wanted, line)[0]
        return ReadError(table.name, line, f"task {task!r} already has a different gold label")
    return ReadError(table.name, None, str(exc))


def _value_at(table: Table, wanted, line: int):
    for line_no, values, _ in iter_rows(table.data, table.name, table.fmt, wanted):
        if line_no == line:
            return values
    raise AssertionError("line vanished")

