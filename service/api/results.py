"""Read endpoints over the latest published result: consensus, workers, disagreements,
agreement.  Pages are cursor-based and pinned to one result version, so a client paging
while a new result is published neither skips nor repeats items; every response carries
an ``ETag`` and honours ``If-None-Match``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint

from ..auth import require_project
from ..openapi_doc import errors
from ..response_schemas import (
    CACHE_HEADERS,
    TASK_VIEW,
    AgreementViewSchema,
    ConsensusPageSchema,
    DisagreementListSchema,
    WorkerPageSchema,
    WorkerViewSchema,
)
from ..schemas import ConsensusArgsSchema, LimitArgsSchema, WorkerArgsSchema
from .errors import ApiError

blp = Blueprint("results", __name__, url_prefix="/v1/projects", description="Consensus, workers, disagreements, agreement")

SCAN_LIMIT = 10_000  # rows examined per filtered page at most

_NO_RESULT = (404, "no such project, or no aggregation result yet")
_BAD_CURSOR = (400, "the cursor is not one of a previous page's next_cursor (with the same sort)")
_EXPIRED = (410, "the cursor's result version has been replaced and expired; start again without a cursor")


def store():
    return current_app.extensions["crowdqc_store"]


def settings():
    return current_app.config["CROWDQC"]


def encode_cursor(version: int, offset: int, extra: str = "") -> str:
    raw = json.dumps({"v": version, "o": offset, "x": extra}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, extra: str = "") -> tuple[int, int]:
    try:
        pad = "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(cursor + pad))
        version, offset = int(data["v"]), int(data["o"])
        if offset < 0 or data.get("x", "") != extra:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ApiError(400, "invalid cursor (use the next_cursor of a previous page, with the same sort)",
                       [{"path": "cursor", "field": "cursor", "message": "cursor: invalid"}]) from None
    return version, offset


def current_version(project_id: str) -> dict:
    cur = store().current_result(project_id)
    if cur is None:
        raise ApiError(404, f"project {project_id!r} has no aggregation result yet; POST /v1/projects/{project_id}/aggregations")
    return cur


def pinned_version(project_id: str, cursor: str | None, extra: str = "") -> tuple[int, int]:
    """(version, offset) for a page: the cursor's version while it is still kept."""
    if not cursor:
        return int(current_version(project_id)["version"]), 0
    version, offset = decode_cursor(cursor, extra)
    if not store().version_exists(project_id, version):
        raise ApiError(410, "this cursor belongs to a result that has since been replaced and expired; start again without a cursor")
    return version, offset


def page_limit(args) -> int:
    s = settings()
    return min(int(args.get("limit") or s.default_page), s.max_page)


def etag_of(version: int, key: str) -> str:
    """A weak ETag of (result version, query): a published version never changes."""
    tag = hashlib.sha256(f"{version}|{key}".encode()).hexdigest()[:20]
    return f'W/"{version}-{tag}"'


def not_modified(etag: str):
    """The 304 response when the client already holds ``etag``, else None: checked before
    any row is read, so polling an unchanged result costs next to nothing.  Callers have
    found the current result already, so ``*`` (any current representation, RFC 9110
    13.1.2) matches too."""
    tags = _if_none_match()
    if etag not in tags and "*" not in tags:
        return None
    return _cache_headers(current_app.response_class(status=304), etag)


def etag_response(payload: dict, version: int, key: str):
    """JSON response with a weak ETag of (version, query); 304 when it matches."""
    etag = etag_of(version, key)
    return not_modified(etag) or _cache_headers(jsonify(payload), etag)


def _cache_headers(resp, etag: str):
    resp.headers["ETag"] = etag
    resp.headers["Cache-Control"] = "private, no-cache"
    resp.headers["Vary"] = "Authorization"
    return resp


def _if_none_match() -> set[str]:
    raw = request.headers.get("If-None-Match", "")
    tags = {t.strip() for t in raw.split(",") if t.strip()}
    # Weak comparison (RFC 9110): W/"x" and "x" match.
    return tags | {f"W/{t}" for t in tags if not t.startswith("W/")}


def _query_key(args: dict) -> str:
    return json.dumps(sorted((k, str(v)) for k, v in args.items()))


@blp.route("/<project_id>/consensus")
class Consensus(MethodView):
    @blp.arguments(ConsensusArgsSchema, location="query")
    @blp.response(200, ConsensusPageSchema, headers=CACHE_HEADERS)
    @errors(blp, _BAD_CURSOR, _NO_RESULT, _EXPIRED, cached=True)
    def get(self, args, project_id):
        """Consensus labels, cursor-paginated (``next_cursor`` is null on the last page)."""
        require_project(project_id)
        limit = page_limit(args)
        lo, hi = args.get("min_confidence"), args.get("max_confidence")
        filtered = lo is not None or hi is not None
        version, offset = pinned_version(project_id, args.get("cursor"))
        etag = etag_of(version, _query_key({**args, "limit": limit}))
        cached = not_modified(etag)
        if cached is not None:
            return cached
        s = store()
        total = s.consensus_count(project_id, version)
        items, pos = [], offset
        scan_end = min(total, offset + (SCAN_LIMIT if filtered else limit))
        while pos < scan_end and len(items) < limit:
            chunk = s.consensus_raw(project_id, version, pos, min(scan_end, pos + max(limit, 500)))
            if not filtered:
                items += chunk
                pos += len(chunk)
                continue
            for raw in chunk:
                pos += 1
                c = json.loads(raw).get("confidence")
                if (lo is None or (c is not None and c >= lo)) and (hi is None or (c is not None and c <= hi)):
                    items.append(raw)
                    if len(items) == limit:
                        break
            if not chunk:
                break
        next_cursor = encode_cursor(version, pos) if pos < total else None
        # The stored rows are already compact JSON: splice them instead of decoding and
        # encoding every one again (most of a page's cost).
        tail = json.dumps({"next_cursor": next_cursor, "version": version, "total_tasks": total}, separators=(",", ":"))
        body = b'{"items":[' + b",".join(items) + b"]," + tail[1:].encode() + b"\n"
        resp = current_app.response_class(body, mimetype="application/json")
        return _cache_headers(resp, etag)


@blp.route("/<project_id>/consensus/<path:task>")
class ConsensusTask(MethodView):
    @blp.response(200, TASK_VIEW, headers=CACHE_HEADERS)
    @errors(blp, (404, "no such project or task, or no aggregation result yet"), cached=True)
    def get(self, project_id, task):
        """One task's consensus with its current answers."""
        meta = require_project(project_id)
        version = int(current_version(project_id)["version"])
        row = store().consensus_row(project_id, version, task)
        answers = store().task_answers(project_id, task)
        if row is None and not answers:
            raise ApiError(404, f"task {task!r} not found")
        labels = meta["labels"]
        out = dict(row) if row else {"task": task, "label": None, "note": "answered after the latest aggregation"}
        out["answers"] = [{"worker": w, "label": labels[i]} for w, i in (answers or [])]
        return etag_response({"item": out, "version": version}, version, "task|" + json.dumps([task, out["answers"]]))


@blp.route("/<project_id>/workers")
class Workers(MethodView):
    @blp.arguments(WorkerArgsSchema, location="query")
    @blp.response(200, WorkerPageSchema, headers=CACHE_HEADERS)
    @errors(blp, _BAD_CURSOR, _NO_RESULT, _EXPIRED, (422, "invalid query, or a sort field that does not exist"),
            cached=True)
    def get(self, args, project_id):
        """Worker reliability, sortable (``sort=-accuracy``, ``sort=n_answers``, ...), paginated."""
        require_project(project_id)
        limit = page_limit(args)
        sort = args.get("sort") or "worker"
        version, offset = pinned_version(project_id, args.get("cursor"), sort)
        index = store().result_part(project_id, version, "wl") or {"fields": [], "rows": []}
        field = sort.lstrip("-+")
        if field != "worker" and field not in index["fields"]:
            allowed = ", ".join(["worker", *index["fields"]])
            raise ApiError(422, f"cannot sort by {field!r}; one of {allowed} (prefix '-' for descending)",
                           [{"path": "sort", "field": "sort", "message": f"sort: one of {allowed}"}])
        rows = index["rows"]  # [worker, [sortable values...]]
        if field == "worker":
            ordered = sorted(rows, key=lambda r: r[0], reverse=sort.startswith("-"))
        else:
            i = index["fields"].index(field)
            desc = sort.startswith("-")
            # Unknown values (null) always last; ties by worker id for a stable order.
            known = [r for r in rows if r[1][i] is not None]
            unknown = sorted((r for r in rows if r[1][i] is None), key=lambda r: r[0])
            known.sort(key=lambda r: r[0])
            known.sort(key=lambda r: r[1][i], reverse=desc)
            ordered = known + unknown
        page = ordered[offset : offset + limit]
        items = store().worker_rows(project_id, version, [r[0] for r in page])
        end = offset + len(page)
        next_cursor = encode_cursor(version, end, sort) if end < len(ordered) else None
        payload = {"items": [x for x in items if x is not None], "next_cursor": next_cursor, "version": version, "total_workers": len(ordered)}
        return etag_response(payload, version, _query_key({**args, "limit": limit}))


@blp.route("/<project_id>/workers/<path:worker>")
class Worker(MethodView):
    @blp.response(200, WorkerViewSchema, headers=CACHE_HEADERS)
    @errors(blp, (404, "no such project, no aggregation result yet, or no such worker in it"), cached=True)
    def get(self, project_id, worker):
        """One worker's reliability, confusion matrix and flags."""
        require_project(project_id)
        version = int(current_version(project_id)["version"])
        row = store().worker_rows(project_id, version, [worker])[0]
        if row is None:
            raise ApiError(404, f"worker {worker!r} not found in the latest aggregation")
        return etag_response({"item": row, "version": version}, version, f"worker|{worker}")


@blp.route("/<project_id>/disagreements")
class Disagreements(MethodView):
    @blp.arguments(LimitArgsSchema, location="query")
    @blp.response(200, DisagreementListSchema, headers=CACHE_HEADERS)
    @errors(blp, _NO_RESULT, cached=True)
    def get(self, args, project_id):
        """Tasks whose workers disagree most, worst first."""
        require_project(project_id)
        limit = page_limit(args)
        version = int(current_version(project_id)["version"])
        rows = store().result_part(project_id, version, "d") or []
        return etag_response({"items": rows[:limit], "version": version}, version, f"d|{limit}")


@blp.route("/<project_id>/agreement")
class Agreement(MethodView):
    @blp.response(200, AgreementViewSchema, headers=CACHE_HEADERS)
    @errors(blp, _NO_RESULT, cached=True)
    def get(self, project_id):
        """Inter-annotator agreement of the data behind the latest result (undefined
        statistics are null with a reason, never NaN)."""
        require_project(project_id)
        version = int(current_version(project_id)["version"])
        summary = store().result_part(project_id, version, "s") or {}
        return etag_response({"agreement": summary.get("agreement"), "version": version}, version, "agreement")
