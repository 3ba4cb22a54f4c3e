"""The parts of the OpenAPI document that no single view can declare.

Views document their own responses: ``@blp.response`` with a schema from
:mod:`service.response_schemas`, and :func:`errors` for the error statuses they raise
themselves.  :func:`document_success`, run by the app factory once the blueprints are
registered, adds what comes from around the views:

- the statuses of the request hooks (service/app.py, service/auth.py,
  service/api/errors.py): 401 for a missing or bad token; 400, 413 and 415 for a JSON body
  that is empty or malformed, too large, or sent as another Content-Type; 503 when Redis is
  unavailable or refuses a write;
- the ``If-None-Match`` header on every operation that can answer 304;
- ``GET /metrics``, a plain Flask route;

and it drops flask-smorest's ``default`` error response: with it every status code counts
as documented, so a status-code conformance check could never fail.
"""

from __future__ import annotations

from http import HTTPStatus

from werkzeug.routing import Map, Rule

from .api.errors import ErrorSchema
from .response_schemas import CACHE_HEADERS, required_header

_BODY_METHODS = ("post", "put", "patch")


def _error(description: str, headers: dict | None = None) -> dict:
    doc = {"description": description, "content": {"application/json": {"schema": ErrorSchema}}}
    if headers:
        doc["headers"] = headers
    return doc


_NOT_MODIFIED = {"description": "Not Modified: the If-None-Match tag is current (no body)", "headers": CACHE_HEADERS}


def errors(blp, *statuses, cached: bool = False):
    """Decorator: the error statuses a view raises itself, each with the one error body.
    A status is a code, or ``(code, description)`` where the code alone says too little.
    ``cached``: the view honours If-None-Match, so it may also answer 304 (documented here
    rather than by another decorator: each adds a pass-through call to every request)."""
    responses = {"304": _NOT_MODIFIED} if cached else {}
    for status in statuses:
        code, description = status if isinstance(status, tuple) else (status, HTTPStatus(status).phrase)
        responses[str(code)] = _error(description)
    return blp.doc(responses=responses)


# Response components, referenced by the operations the hooks apply to.
_HOOK_RESPONSES = {
    "Unauthenticated": _error(
        "missing, malformed, invalid or revoked token",
        {"WWW-Authenticate": required_header("the authentication scheme expected")},
    ),
    "StoreUnavailable": _error(
        "Redis is unavailable, or refuses writes (out of memory, read-only replica, cannot persist)",
        {"Retry-After": required_header("seconds to wait before trying again", "^[0-9]+$")},
    ),
    "BodyNotJson": _error("the body is empty, not valid JSON, or nested too deeply"),
    "BodyTooLarge": _error("the body is larger than CROWDQC_MAX_BODY_BYTES"),
    "BodyMediaType": _error("the Content-Type is not application/json"),
}
_JSON_BODY = {"400": "BodyNotJson", "413": "BodyTooLarge", "415": "BodyMediaType"}

_METRICS = {
    "get": {
        "tags": ["metrics"],
        "summary": "Prometheus metrics",
        "description": "Request metrics of the API processes; answers stored, job outcomes, durations and queue "
                       "depth from Redis. Needs 'Authorization: Bearer <CROWDQC_METRICS_TOKEN>', or the admin token "
                       "when no metrics token is set.",
        "security": [{"bearerAuth": []}],
        "responses": {
            "200": {"description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string", "minLength": 1}}}},
        },
    }
}


def _takes_json(op: dict) -> bool:
    # A file upload documented as binary JSON (imports) is streamed by its view, never
    # parsed by the app's body check (service/app.py RAW_BODY_ENDPOINTS).
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    return schema is not None and schema.get("format") != "binary"


def document_success(spec) -> None:
    """Complete the document (see the module docstring).  The name is the one the app
    factory calls."""
    for name, response in _HOOK_RESPONSES.items():
        spec.components.response(name, response)
    # flask-smorest's path plugin reads the path from a (bound) URL rule.
    spec.path(rule=next(Map([Rule("/metrics")]).iter_rules()), operations=_METRICS)
    default_security = spec.options.get("security")
    if_none_match = spec.components.get_ref("parameter", "IF_NONE_MATCH")
    for path, operations in spec._paths.items():  # apispec keeps the registered paths here
        for method, op in operations.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            responses.pop("default", None)
            hooks = {}
            if op.get("security", default_security) not in ([], [{}]):
                hooks["401"] = "Unauthenticated"
            if method in _BODY_METHODS and _takes_json(op):
                hooks.update(_JSON_BODY)
            if path.startswith("/v1/"):
                hooks["503"] = "StoreUnavailable"
            for code, name in hooks.items():
                # A view's own description of the same status says more.
                responses.setdefault(code, spec.components.get_ref("response", name))
            if "304" in responses:
                op.setdefault("parameters", []).append(if_none_match)
