"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

from flask import current_app, jsonify
from flask.views import MethodView
from flask_smorest import Blueprint

from ..openapi_doc import errors
from ..response_schemas import HealthSchema, ReadySchema
from .errors import error_response

blp = Blueprint("health", __name__, description="Health checks (no token needed)")


@blp.route("/healthz")
class Healthz(MethodView):
    @blp.doc(security=[])
    @blp.response(200, HealthSchema)
    def get(self):
        """The process is up."""
        return jsonify({"status": "ok"})


@blp.route("/readyz")
class Readyz(MethodView):
    @blp.doc(security=[])
    @blp.response(200, ReadySchema)
    @errors(blp, (503, "Redis does not answer"))
    def get(self):
        """Redis answers (503 otherwise)."""
        try:
            current_app.extensions["crowdqc_redis"].ping()
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return error_response(503, f"Redis is not reachable: {exc.__class__.__name__}", headers={"Retry-After": "5"})
        return jsonify({"status": "ready", "redis": "ok"})
