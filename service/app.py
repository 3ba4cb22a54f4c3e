"""The Flask application factory.  Nothing connects to Redis until a request needs it."""

from __future__ import annotations

import json
import os
import threading
import time

import redis
from flask import Flask, request
from flask_smorest import Api

from .api import errors
from .config import Settings
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


# After Redis failed to answer, requests fail at once for this long instead of each waiting
# out its own timeout; then one request tries Redis again (the others still fail fast).
BREAKER_OPEN_SECONDS = 1.0


class RedisUnavailable(redis.exceptions.ConnectionError):
    """Raised without touching the network while the breaker is open (a ConnectionError, so
    the API's error handler answers it like any other unreachable Redis: 503)."""


class RedisBreaker:
    """What this process knows about Redis, shared by all its threads and connections: once
    Redis did not answer (refused, or silent past the timeout), the next requests fail fast.
    Without it a stalled Redis held every gunicorn thread for a full timeout per request, and
    /healthz, queued behind them, took tens of seconds."""

    def __init__(self, open_seconds: float = BREAKER_OPEN_SECONDS, probe_seconds: float = 5.0):
        self.open_seconds = open_seconds
        # Longest one try of Redis can take (connect + reply timeouts): while it runs, no
        # other thread tries, so a stalled Redis holds one thread per process, not more.
        self.probe_seconds = probe_seconds
        self._lock = threading.Lock()
        self._open_until = 0.0  # time.monotonic(); 0.0 while Redis answers

    @property
    def is_open(self) -> bool:
        return bool(self._open_until) and time.monotonic() < self._open_until

    def admit(self) -> None:
        if not self._open_until:
            return
        now = time.monotonic()
        with self._lock:
            if now < self._open_until:
                raise RedisUnavailable(
                    f"Redis did not answer less than {self.open_seconds:g} s ago; not trying again before then")
            if self._open_until:
                # This caller tries Redis; the others keep failing fast until it knows.  If
                # it never reports (an error of another kind), the next one tries after this.
                self._open_until = now + self.probe_seconds

    def failed(self) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self.open_seconds

    def answered(self) -> None:
        if self._open_until:
            with self._lock:
                self._open_until = 0.0


class _GuardedConnection:
    """Mixed in front of the pool's connection class: tells the breaker how Redis did."""

    breaker: RedisBreaker

    def connect_check_health(self, *args, **kwargs):
        # Every way of (re)connecting goes through here, the client's retries included.
        try:
            return super().connect_check_health(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            self.breaker.failed()
            raise

    def send_packed_command(self, *args, **kwargs):
        try:
            return super().send_packed_command(*args, **kwargs)
        except redis.exceptions.TimeoutError:
            self.breaker.failed()
            raise

    def read_response(self, *args, **kwargs):
        try:
            response = super().read_response(*args, **kwargs)
        except redis.exceptions.TimeoutError:
            self.breaker.failed()
            raise
        except (redis.exceptions.ConnectionError, OSError):
            # A pooled socket closed under us (Redis restarted): the client reconnects, and
            # a failing reconnect is what opens the breaker.
            raise
        except redis.exceptions.RedisError:
            self.breaker.answered()  # an error reply is an answer
            raise
        self.breaker.answered()
        return response


class _GuardedPool(redis.ConnectionPool):
    def __init__(self, *args, breaker: RedisBreaker, **kwargs):
        super().__init__(*args, **kwargs)
        self.breaker = breaker

    def get_connection(self, *args, **kwargs):
        self.breaker.admit()  # before any socket work, outside the client's retries
        return super().get_connection(*args, **kwargs)


def redis_client(settings: Settings) -> redis.Redis:
    """The API's client: it fails fast.  A stalled Redis costs one request one socket
    timeout; after that the breaker answers for it (see RedisBreaker).  A timed-out command
    is not retried (a silent Redis stays silent, and a retry doubles the wait); a refused or
    dropped connection is retried once, which is what a pooled socket needs after a Redis
    restart."""
    from redis.backoff import ExponentialBackoff
    from redis.connection import parse_url
    from redis.retry import Retry

    breaker = RedisBreaker(probe_seconds=settings.redis_timeout_seconds + settings.redis_connect_timeout_seconds + 0.5)
    base = parse_url(settings.redis_url).get("connection_class", redis.Connection)
    connection_class = type(f"Guarded{base.__name__}", (_GuardedConnection, base), {"breaker": breaker})
    pool = _GuardedPool.from_url(
        settings.redis_url,
        breaker=breaker,
        connection_class=connection_class,
        health_check_interval=30,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    )
    client = redis.Redis(connection_pool=pool)
    client.breaker = breaker
    return client


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
