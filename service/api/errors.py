"""One JSON error shape for every error the API returns:

    {"error": {"status": 422, "code": "unprocessable_entity", "message": "...", "details": [...]}}

``details`` (optional) lists ``{"path", "message", "index"?, "field"?}`` items.
"""

from __future__ import annotations

import logging

import marshmallow as ma
from flask import jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger("crowdqc.api")


class ApiError(Exception):
    def __init__(self, status: int, message: str, details: list | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details
        self.headers = headers or {}


class ErrorBodySchema(ma.Schema):
    status = ma.fields.Integer(required=True)
    code = ma.fields.String(required=True)
    message = ma.fields.String(required=True)
    details = ma.fields.List(ma.fields.Dict(), metadata={"description": "{path, message, index?, field?} per problem"})


class ErrorSchema(ma.Schema):
    """Documentation of the error body."""

    error = ma.fields.Nested(ErrorBodySchema, required=True)


_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    500: "internal_error",
    503: "service_unavailable",
}


def error_response(status: int, message: str, details=None, headers=None):
    body = {"status": status, "code": _CODES.get(status, "error"), "message": message}
    if details:
        body["details"] = details
    resp = jsonify({"error": body})
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def flatten_messages(messages, path: str = "") -> list[dict]:
    """webargs/marshmallow nested messages -> [{"path", "message"}] with list indices in
    brackets, e.g. ``aggregation.method`` or ``labels[3]``."""
    out = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "_schema":
                sub = path
            elif isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                sub = f"{path}[{key}]"
            else:
                sub = f"{path}.{key}" if path else str(key)
            out += flatten_messages(value, sub)
    elif isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            for m in messages:
                out.append({"path": path, "message": f"{path}: {m}" if path else m})
        else:
            for i, m in enumerate(messages):
                out += flatten_messages(m, f"{path}[{i}]")
    else:
        out.append({"path": path, "message": f"{path}: {messages}" if path else str(messages)})
    return out


def handle_http_exception(exc: HTTPException):
    data = getattr(exc, "data", None) or {}
    status = exc.code or 500
    if "messages" in data:
        # webargs: strip the location level ("json", "query") from the paths
        messages = data["messages"]
        if isinstance(messages, dict) and len(messages) == 1:
            messages = next(iter(messages.values()))
        details = flatten_messages(messages)
        message = "; ".join(d["message"] for d in details[:5]) or "invalid request"
        return error_response(status, message, details, data.get("headers"))
    if status == 405:
        message = "method not allowed; allowed: " + ", ".join(sorted(exc.valid_methods or []))
    elif status == 404:
        message = "no such resource"
    elif status == 413:
        message = "request body too large"
    else:
        message = data.get("message") or exc.description or exc.name
    headers = dict(exc.get_headers()) if status == 405 else {}
    headers.pop("Content-Type", None)
    return error_response(status, message, headers=headers)


def handle_api_error(exc: ApiError):
    return error_response(exc.status, exc.message, exc.details, exc.headers)


def handle_unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    original = getattr(exc, "original_exception", None) or exc
    if isinstance(original, RecursionError):
        # a body that passed the early JSON check by a few levels and overflowed in a
        # deeper parse (webargs, marshmallow): still the client's document, not our bug
        return error_response(400, "the body is nested too deeply to be processed")
    if _is_redis_down(original):
        log.error("redis unavailable: %s", original)
        return error_response(503, "the data store (Redis) is unavailable; try again shortly", headers={"Retry-After": "5"})
    refusal = _redis_refuses_writes(original)
    if refusal:
        # Not the client's fault and not a bug: an operator must act (docs/operations.md).
        log.error("redis refuses writes: %s", original)
        return error_response(503, f"the data store (Redis) cannot take this request: {refusal}; try again later", headers={"Retry-After": "30"})
    log.exception("unhandled error", exc_info=original)
    return error_response(500, "internal error")


def _is_redis_down(exc) -> bool:
    try:
        import redis
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError))


def _redis_refuses_writes(exc) -> str | None:
    """Why Redis refused a write it would normally take, or None.  The client can only wait:
    an operator has to free memory or disk, or point crowdqc at the primary."""
    try:
        import redis
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return "it is out of memory (maxmemory reached) and refuses writes and transactions"
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return "it is a read-only replica"
    if isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("MISCONF"):
        return "it cannot persist to disk and refuses writes (MISCONF)"
    return None


def register(app) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(InternalServerError, handle_unexpected)
    app.register_error_handler(Exception, handle_unexpected)
