"""Header + rows of a delimited text file, streamed, with the line each row starts on."""

from __future__ import annotations

import csv
import json

from aggregation.encoding import normalize_label

from . import FormatError, decoded_lines
from . import option as option_hint

# A single field above this size is a broken file (an unclosed quote swallowing the rest),
# not data: fail with the line instead of reading gigabytes into one value.
FIELD_LIMIT = 16 * 1024 * 1024


def rows(stream, name: str, delimiter: str):
    """Yield ``(header, None, 1)`` once, then ``(header, fields, line)`` per non-blank row.

    Every row must have as many fields as the header.
    """
    csv.field_size_limit(FIELD_LIMIT)
    reader = csv.reader(decoded_lines(stream, name), delimiter=delimiter, strict=True)
    header = None
    prev = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise FormatError(name, prev + 1, f"malformed row ({exc})") from None
        line, prev = prev + 1, reader.line_num
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        if header is None:
            header = [h.strip() for h in fields]
            yield header, None, line
            continue
        if len(fields) != len(header):
            raise FormatError(name, line, f"expected {len(header)} fields like the header, got {len(fields)}")
        yield header, fields, line
    if header is None:
        raise FormatError(name, 1, "empty file (expected a header line)")


def require(header: list[str], column: str, name: str) -> int:
    if column not in header:
        shown = ", ".join(repr(h) for h in header[:30])
        raise FormatError(name, 1, f"missing column {column!r} (the header has {shown})")
    return header.index(column)


def pick_field(header: list[str], prefix: str, field: str | None, name: str, option: str = "field") -> int:
    """Column index of ``<prefix><field>``; without ``field`` the only ``<prefix>*`` column."""
    candidates = [h for h in header if h.startswith(prefix)]
    if field is not None:
        col = field if field.startswith(prefix) else prefix + field
        if col not in header:
            shown = ", ".join(repr(c[len(prefix):]) for c in candidates) or "none"
            raise FormatError(name, 1, f"no column {col!r}; the {prefix}* fields are: {shown}")
        return header.index(col)
    if len(candidates) == 1:
        return header.index(candidates[0])
    if not candidates:
        raise FormatError(name, 1, f"no {prefix}* column in the header")
    shown = ", ".join(repr(c[len(prefix):]) for c in candidates)
    raise FormatError(name, 1, f"several {prefix}* columns ({shown}); choose one with {option_hint(option)}")


def joined_key(names: list[str], values: list[str]) -> str:
    """Several input columns as one task id: one column is its value; several are a
    compact JSON object with sorted keys (canonical, so the same inputs in another column
    order give the same id, and unambiguous, unlike joining with a separator)."""
    if len(values) == 1:
        return values[0]
    return json.dumps(dict(sorted(zip(names, values))), ensure_ascii=False, separators=(",", ":"))


def count(stats: dict | None, key: str, n: int = 1) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + n


def new_gold(seen: dict, task: str, label: str, name: str, line: int, what: str = "gold labels") -> bool:
    """True the first time ``task`` has a gold label, False when it is the same label again.
    Two different ones are an error naming the line: keeping either would be a guess about
    the task's true answer, so the file must say which."""
    key = normalize_label(label)
    before = seen.get(task)
    if before is None:
        seen[task] = (key, label)
        return True
    if before[0] != key:
        raise FormatError(name, line, f"task {task!r} has two {what}: {before[1]!r} and {label!r}")
    return False
