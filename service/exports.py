"""Exports of a published consensus: CSV, JSON Lines and Label Studio predictions.

``label_studio`` (and its other name ``label_studio_predictions``) is the body of Label
Studio's ``POST /api/projects/{id}/import/predictions``: predictions for tasks that
already exist there.  There is no task-shaped export: crowdqc does not keep a task's
``data``, and a task without it would be imported by ``POST /api/projects/{id}/import`` as
a new, empty task.

An export is a generator of text chunks, so a project with millions of tasks is never held
in memory: rows are read from Redis ``CHUNK`` at a time, formatted and handed to the WSGI
server.  Every export reads one result version, chosen when it starts; that version stays
readable while it is current and for ``result_grace_seconds`` after it is replaced, so an
export that outlives its version's grace period stops with :class:`ExportInterrupted`
(the client sees a broken transfer, never a file that looks complete).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator

from .store import Store

# Rows per Redis read: ~200 bytes each, so a few hundred kB per round trip.
CHUNK = 2000
# label_studio_predictions is another name for label_studio (the same body), kept for clients.
FORMATS = ("csv", "jsonl", "label_studio", "label_studio_predictions")
MEDIA_TYPES = {
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "label_studio": "application/json",
    "label_studio_predictions": "application/json",
}
EXTENSIONS = {"csv": "csv", "jsonl": "jsonl", "label_studio": "json", "label_studio_predictions": "json"}
COLUMNS = ("task", "label", "confidence", "probabilities", "n_labels", "tie", "method", "version")
# Label Studio names tasks by integer ids; str(id) is how imports name them (see
# formats/label_studio.task_id), so only that canonical form maps back to an integer.
_LS_ID = re.compile(r"(?:0|[1-9][0-9]{0,17})")


class ExportInterrupted(RuntimeError):
    """The pinned result version disappeared while it was being exported."""


class UnknownTag(ValueError):
    """A Label Studio tag name that is neither remembered nor given."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def read_chunks(store: Store, project: str, version: int, total: int) -> Iterator[list[dict]]:
    for start in range(0, total, CHUNK):
        stop = min(total, start + CHUNK)
        rows = store.consensus_rows(project, version, start, stop)
        if len(rows) != stop - start:
            raise ExportInterrupted(
                f"result version {version} of project {project!r} expired during the export "
                f"(after {start + len(rows)} of {total} rows); start the export again"
            )
        yield rows


def label_studio_tags(store: Store, project: str, from_name: str | None, to_name: str | None) -> tuple[str, str]:
    """(from_name, to_name): the given ones, else those remembered from Label Studio imports."""
    if from_name is None or to_name is None:
        saved = store.r.hmget(store.pkey(project, "ls"), ["from_name", "to_name"])
        saved = [v.decode("utf-8") if v is not None else None for v in saved]
        from_name = from_name if from_name is not None else saved[0]
        to_name = to_name if to_name is not None else saved[1]
    for field, value in (("from_name", from_name), ("to_name", to_name)):
        if value is None:
            raise UnknownTag(
                field,
                f"{field} is unknown for project {project!r} (no Label Studio import recorded it); pass "
                "?from_name=<the Choices tag name>&to_name=<the object tag it labels>",
            )
    return from_name, to_name


def _compact(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _flat(row: dict, method: str, version: int) -> dict:
    return {
        "task": row["task"],
        "label": row["label"],
        "confidence": row["confidence"],
        "probabilities": row["probabilities"],
        "n_labels": row["n_labels"],
        "tie": row.get("tie", False),
        "method": method,
        "version": version,
    }


def csv_lines(chunks: Iterable[list[dict]], method: str, version: int) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for rows in chunks:
        # str(float) is the shortest text that parses back to the same float.
        writer.writerows(
            (r["task"], r["label"], r["confidence"], _compact(r["probabilities"]), r["n_labels"],
             "true" if r.get("tie") else "false", method, version)
            for r in rows
        )
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    if buf.tell():  # no rows: the header alone
        yield buf.getvalue()


def jsonl_lines(chunks: Iterable[list[dict]], method: str, version: int) -> Iterator[str]:
    for rows in chunks:
        yield "".join(_compact(_flat(r, method, version)) + "\n" for r in rows)


def _ls_task(name: str):
    return int(name) if _LS_ID.fullmatch(name) else name


def _ls_prediction(row: dict, tags: tuple[str, str], model_version: str) -> dict:
    return {
        "model_version": model_version,
        "score": row["confidence"],
        "result": [{"from_name": tags[0], "to_name": tags[1], "type": "choices", "value": {"choices": [str(row["label"])]}}],
    }


def label_studio_json(chunks: Iterable[list[dict]], method: str, version: int, tags: tuple[str, str]) -> Iterator[str]:
    """Label Studio's ``POST /api/projects/{id}/import/predictions`` body, a JSON array of
    ``{"task", "model_version", "score", "result"}``, one chunk of items at a time."""
    model_version = f"crowdqc-{method}-v{version}"
    sep = "[\n"
    for rows in chunks:
        if rows:
            yield sep + ",\n".join(_compact({"task": _ls_task(r["task"]), **_ls_prediction(r, tags, model_version)})
                                   for r in rows)
            sep = ",\n"
    yield "[]\n" if sep == "[\n" else "\n]\n"


def render(fmt: str, chunks: Iterable[list[dict]], method: str, version: int, tags: tuple[str, str] | None = None) -> Iterator[str]:
    if fmt == "csv":
        return csv_lines(chunks, method, version)
    if fmt == "jsonl":
        return jsonl_lines(chunks, method, version)
    return label_studio_json(chunks, method, version, tags)
