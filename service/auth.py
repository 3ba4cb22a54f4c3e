"""Bearer-token authentication: one admin token from the environment, and project keys
(role ``writer`` or ``reader``) stored as sha256 digests."""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass

from flask import current_app, g, request

from .api.errors import ApiError


@dataclass(frozen=True)
class Principal:
    role: str  # admin | writer | reader
    project: str | None = None  # None for the admin
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _unauthorized(message: str, error: str | None = None):
    challenge = 'Bearer realm="crowdqc"' + (f', error="{error}"' if error else "")
    return ApiError(401, message, headers={"WWW-Authenticate": challenge})


def authenticate() -> Principal:
    if "principal" in g:
        return g.principal
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header:
        raise _unauthorized("missing 'Authorization: Bearer <token>' header")
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("the Authorization header must be 'Bearer <token>'", "invalid_request")
    admin = current_app.config["CROWDQC"].admin_token
    if admin and hmac.compare_digest(token.encode("utf-8"), admin.encode("utf-8")):
        g.principal = Principal("admin")
        return g.principal
    record = current_app.extensions["crowdqc_store"].lookup_key(token)
    if record is None:
        raise _unauthorized("invalid or revoked token", "invalid_token")
    g.principal = Principal(record["role"], record["project"], record["id"])
    return g.principal


def require_admin() -> Principal:
    p = authenticate()
    if not p.is_admin:
        raise ApiError(403, "this operation needs the admin token")
    return p


def require_project(project_id: str, write: bool = False, admin: bool = False) -> dict:
    """The project's metadata if the caller may use it; a key of another project gets
    the same 404 as a project that does not exist."""
    p = authenticate()
    if not p.is_admin and p.project != project_id:
        raise not_found_project(project_id)
    meta = current_app.extensions["crowdqc_store"].get_project(project_id)
    if meta is None:
        raise not_found_project(project_id)
    if admin and not p.is_admin:
        raise ApiError(403, "this operation needs the admin token")
    if write and p.role not in ("admin", "writer"):
        raise ApiError(403, "this key is read-only (role 'reader')")
    return meta


def not_found_project(project_id: str) -> ApiError:
    return ApiError(404, f"project {project_id!r} not found")


def guard(check):
    """Run ``check(**view_kwargs)`` before the view *and* before flask-smorest parses the
    body, so that an unauthorised caller gets 401/403/404 rather than validation details.
    (functools.wraps keeps flask-smorest's documentation attributes.)"""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            check(**kwargs)
            return fn(*args, **kwargs)

        return wrapper

    return deco


def admin_only(**_):
    require_admin()


def project_admin(project_id, **_):
    require_project(project_id, admin=True)


def project_writer(project_id, **_):
    require_project(project_id, write=True)


def project_reader(project_id, **_):
    require_project(project_id)


# /metrics checks its own token (CROWDQC_METRICS_TOKEN) when one is set: a scraper never
# holds project keys.
PUBLIC_PREFIXES = ("health.", "api-docs.", "metrics")
# Endpoints that check their own credentials: Label Studio's webhook sends a per-project
# secret, not a bearer key (service/api/integrations.py).
SELF_AUTHENTICATING = ("integrations.LabelStudioWebhook",)


def authenticate_request():
    """before_request hook: every endpoint but health checks and the API docs needs a token."""
    endpoint = request.endpoint
    if endpoint is None or endpoint.startswith(PUBLIC_PREFIXES) or endpoint == "static" or endpoint in SELF_AUTHENTICATING:
        return None
    authenticate()
    return None
