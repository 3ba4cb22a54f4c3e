"""Completes the OpenAPI document: every operation documents its success response.

The views return ``jsonify`` bodies, so flask-smorest documents only the error response
(``default``: the Error shape) for most of them; a validator then checks a 200 body against
the Error schema.  Found by tests/test_fuzz.py (schemathesis).  Each operation without a
2xx response gets the status the view really returns, with a JSON object body."""

from __future__ import annotations

# (method, path) -> status where it is not 200.
_STATUS = {"delete": 204}
_JSON_OBJECT = {"application/json": {"schema": {"type": "object"}}}


def document_success(spec) -> None:
    for path, operations in spec._paths.items():  # apispec keeps the registered paths here
        for method, op in operations.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            if any(str(code).startswith("2") for code in responses):
                continue
            status = _STATUS.get(method, 200)
            doc = {"description": "Success"}
            if status != 204:
                doc["content"] = _JSON_OBJECT
            responses[str(status)] = doc
