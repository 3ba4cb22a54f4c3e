"""The Flask application factory.  Nothing connects to Redis until a request needs it."""

from __future__ import annotations

import json
import os

from flask import Flask, request
from flask_smorest import Api

from .api import errors
from .config import Settings
from .redis_conn import redis_client
from .store import Store

_BODY_METHODS = ("POST", "PUT", "PATCH")
# Endpoints that stream their own (non-JSON, possibly huge) body: bulk file imports.
RAW_BODY_ENDPOINTS = {"imports.Imports"}


class CrowdqcApi(Api):
    """flask-smorest with crowdqc's single JSON error shape."""

    ERROR_SCHEMA = errors.ErrorSchema

    def _register_error_handlers(self):
        errors.register(self._app)


def settings_from(config: dict | None) -> Settings:
    """Environment first, then ``config`` overrides: either environment-style names
    (``REDIS_URL``, ``CROWDQC_ADMIN_TOKEN``) or :class:`Settings` field names."""
    config = dict(config or {})
    env = dict(os.environ)
    for k, v in config.items():
        if k == "REDIS_URL" or k.startswith("CROWDQC_"):
            env[k] = str(v)
    return Settings.from_env(env).updated({k: v for k, v in config.items() if not k.isupper()})


def create_app(config: dict | None = None) -> Flask:
    """Build the app.  ``config`` may also carry a ready ``REDIS`` client (tests)."""
    config = dict(config or {})
    settings = settings_from(config)
    from swagger_ui_bundle import swagger_ui_path

    # The browsable API page's scripts come from the installed package, not a CDN: the
    # page must work where the service has no internet access.
    app = Flask("crowdqc", static_folder=str(swagger_ui_path), static_url_path="/docs/static")
    app.config.update(
        API_TITLE="crowdqc",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="/docs/static/",
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
    )
    app.config.update({k: v for k, v in config.items() if k.isupper() and k != "REDIS"})
    app.config["CROWDQC"] = settings
    app.json.sort_keys = False

    client = config.get("REDIS") or redis_client(settings)
    store = Store(client, settings.key_prefix)
    store.set_grace(settings.result_grace_seconds)
    app.extensions["crowdqc_redis"] = client
    app.extensions["crowdqc_store"] = store

    from .jobs import Jobs

    app.extensions["crowdqc_jobs"] = Jobs(client, settings)

    api = CrowdqcApi(
        app,
        spec_kwargs={
            "info": {"description": "Consensus labels, worker reliability and disagreement reports for crowd-sourced labels."},
            "security": [{"bearerAuth": []}],
        },
    )
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})

    from .api import register_blueprints

    register_blueprints(api)
    from .openapi_doc import document_success

    document_success(api.spec)
    from .auth import authenticate_request

    app.before_request(authenticate_request)
    app.before_request(_check_body)
    from . import observability

    observability.init_app(app, settings)
    return app


def _check_body():
    """Reject bodies that are not JSON before any view reads them: a wrong Content-Type or
    malformed JSON must be a clear 4xx, never ``request.json is None`` and a 500."""
    if request.method not in _BODY_METHODS or request.endpoint in RAW_BODY_ENDPOINTS:
        return None
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body is read up to the limit only, and werkzeug raises 413 on the
        # *next* read: without this one, a longer body would be silently truncated.
        request.stream.read(1)
    if not raw:
        if request.endpoint and _needs_body(request.endpoint):
            raise errors.ApiError(400, "the request body is empty; send a JSON document with Content-Type: application/json")
        return None
    mimetype = request.mimetype or ""
    if not (mimetype == "application/json" or mimetype.endswith("+json")):
        raise errors.ApiError(415, f"Content-Type must be application/json, got {mimetype or 'none'!r}")
    try:
        # Parse here for a message with the position of the error (werkzeug's is generic);
        # strict: NaN/Infinity literals are not JSON.
        json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.ApiError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        # a few kilobytes of "[[[[..." exhaust the parser's stack: hostile, not a bug of ours
        raise errors.ApiError(400, "the body is nested too deeply to be processed") from None
    return None


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _needs_body(endpoint: str) -> bool:
    # Aggregation requests may come without a body (project defaults apply).
    return not endpoint.endswith("Aggregations")
