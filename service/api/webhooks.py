"""Outbound webhook subscriptions of a project (writers and the admin manage them)."""

from __future__ import annotations

from flask import current_app, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from .. import webhooks
from ..auth import guard, project_writer
from ..openapi_doc import errors
from ..response_schemas import LOCATION, WebhookCreatedEnvelopeSchema, WebhookEnvelopeSchema, WebhookListSchema
from ..schemas import WebhookCreateSchema
from .errors import ApiError

blp = Blueprint("webhooks", __name__, url_prefix="/v1/projects", description="Outbound webhooks (signed event deliveries)")


def store():
    return current_app.extensions["crowdqc_store"]


@blp.route("/<project_id>/webhooks")
class Webhooks(MethodView):
    @guard(project_writer)
    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, WebhookCreatedEnvelopeSchema, headers=LOCATION)
    @errors(blp, (403, "the key is read-only"), 404, (409, "the project has as many webhooks as it may"))
    def post(self, data, project_id):
        """Subscribe a URL to events; the signing secret is in this response only.

        Events: ``aggregation.finished``, ``task.consensus_changed``,
        ``task.confidence_reached`` (needs ``confidence_target``), ``worker.flagged``.
        Deliveries are POSTs signed with ``X-Crowdqc-Signature: sha256=<HMAC-SHA256 of
        "<X-Crowdqc-Timestamp>.<body>" with the secret>`` (see docs/webhooks.md).
        """
        try:
            record = webhooks.create(store(), project_id, data["url"], data["events"], data.get("confidence_target"))
        except webhooks.LimitReached as exc:
            raise ApiError(409, str(exc)) from None
        location = url_for("webhooks.Webhook", project_id=project_id, webhook_id=record["id"])
        return {"webhook": {**record, "last_delivery": None}}, 201, {"Location": location}

    @guard(project_writer)
    @blp.response(200, WebhookListSchema)
    @errors(blp, (403, "the key is read-only"), 404)
    def get(self, project_id):
        """The project's subscriptions with their latest delivery (never their secrets)."""
        return {"items": webhooks.list_public(store(), project_id)}


@blp.route("/<project_id>/webhooks/<webhook_id>")
class Webhook(MethodView):
    @guard(project_writer)
    @blp.response(200, WebhookEnvelopeSchema)
    @errors(blp, (403, "the key is read-only"), (404, "no such project or webhook"))
    def get(self, project_id, webhook_id):
        """One subscription with its latest delivery."""
        record = webhooks.get_public(store(), project_id, webhook_id)
        if record is None:
            raise ApiError(404, f"webhook {webhook_id!r} not found")
        return {"webhook": record}

    @guard(project_writer)
    @blp.response(204)
    @errors(blp, (403, "the key is read-only"), (404, "no such project or webhook"))
    def delete(self, project_id, webhook_id):
        """Unsubscribe; deliveries still queued for it are dropped."""
        if not webhooks.delete(store(), project_id, webhook_id):
            raise ApiError(404, f"webhook {webhook_id!r} not found")
        return "", 204
