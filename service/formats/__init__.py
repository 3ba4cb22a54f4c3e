"""Native export formats of labeling tools, read as plain answers.

Every parser is a generator over a *binary* stream: it reads the file incrementally (a
multi-million-row export is never held whole) and yields :class:`Answer` and
:class:`Gold` items.  The first bad record stops it with a :class:`FormatError` naming
the file, the line and the problem.  Options shared by the presets:

``field``
    which label to read when the tool stores several: Label Studio's ``from_name`` of a
    ``choices`` tag, Toloka's ``OUTPUT:<field>``, MTurk's ``Answer.<field>``.  Omitted,
    the file must have exactly one candidate.
``task_key``
    what identifies a task (see each module; the default is the tool's own task id).
``include_rejected``
    Toloka/MTurk: keep answers of rejected assignments (left out by default: the
    requester already judged them wrong).

``stats`` (a dict, optional) receives counts of what was read and what was left out.
"""

from __future__ import annotations

import gzip
import io
from typing import NamedTuple


class FormatError(ValueError):
    """Bad input; ``str()`` is one line: ``<name>, line N: <problem>``."""

    def __init__(self, name: str, line: int | None, problem: str):
        self.name, self.line, self.problem = name, line, problem
        where = f"{name}, line {line}" if line is not None else name
        super().__init__(f"{where}: {problem}")


class Answer(NamedTuple):
    task: str
    worker: str
    label: str
    line: int
    # The tool's id of this answer (Label Studio annotation id), when it has one.
    ref: str | None = None
    # The tool's own id of the task when ``task`` is something else (Label Studio with
    # task_key=data.<key>): later events from the tool name the task by this id.
    tool_task: str | None = None


class Gold(NamedTuple):
    task: str
    label: str
    line: int
    ref: str | None = None
    tool_task: str | None = None


def binary_stream(stream):
    """A buffered binary stream over ``stream``, decompressing gzip."""
    if not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream) if isinstance(stream, io.RawIOBase) else io.BufferedReader(_Peekable(stream))
    if stream.peek(2)[:2] == b"\x1f\x8b":
        stream = io.BufferedReader(gzip.GzipFile(fileobj=stream, mode="rb"))
    return stream


def decoded_lines(stream, name: str):
    """Text lines of a binary stream, decoded one line at a time so that invalid UTF-8
    is reported on its own line (a text wrapper decodes whole blocks)."""
    for line_no, raw in enumerate(binary_stream(stream), start=1):
        if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(name, line_no, f"invalid UTF-8 ({exc.reason})") from None


class _Peekable(io.RawIOBase):
    """Minimal buffered wrapper for file-likes that only offer read()."""

    def __init__(self, raw):
        self.raw = raw
        self.buf = b""

    def readable(self):
        return True

    def peek(self, n=1):
        if len(self.buf) < n:
            self.buf += self.raw.read(max(n, 1 << 16)) or b""
        return self.buf

    def readinto(self, b):
        if not self.buf:
            self.buf = self.raw.read(len(b)) or b""
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


def option(name: str) -> str:
    """How to give a preset option, in a message shared by the command line and the API."""
    return f"the {name} option (--{name.replace('_', '-')} for crowdqc aggregate, {name}= for an import)"


def decode_error(name: str, line: int, exc: UnicodeDecodeError) -> FormatError:
    return FormatError(name, line, f"invalid UTF-8 ({exc.reason})")


def parse(preset: str, stream, name: str = "<input>", **options):
    """Iterate the answers and gold of ``stream`` read with ``preset``."""
    try:
        fn = PRESETS[preset]
    except KeyError:
        raise FormatError(name, None, f"unknown preset {preset!r} (one of {', '.join(PRESETS)})") from None
    return fn(stream, name, **options)


def _label_studio(stream, name, **kw):
    from . import label_studio

    return label_studio.parse(stream, name, **kw)


def _toloka(stream, name, **kw):
    from . import toloka

    return toloka.parse(stream, name, **kw)


def _mturk(stream, name, **kw):
    from . import mturk

    return mturk.parse(stream, name, **kw)


PRESETS = {"label_studio": _label_studio, "toloka": _toloka, "mturk": _mturk}
PRESET_HELP = {
    "label_studio": "Label Studio JSON export (tasks with annotations; --field is the choices tag's from_name)",
    "toloka": "Toloka results TSV (INPUT:* task, OUTPUT:<field> label, ASSIGNMENT:worker_id, GOLDEN:<field> gold)",
    "mturk": "Mechanical Turk batch results CSV (HITId task, WorkerId, Answer.<field> label)",
}

__all__ = ["Answer", "FormatError", "Gold", "PRESETS", "PRESET_HELP", "binary_stream", "decoded_lines", "option", "parse"]
