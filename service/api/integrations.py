"""Label Studio integration: the webhook secret, and the webhook receiver itself."""

from __future__ import annotations

import marshmallow as ma
from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from ..auth import guard, project_reader, project_writer, require_project
from ..label_studio_events import EnvelopeError, check_envelope
from ..label_studio_inbox import SECRET_HEADER, Inbox
from ..openapi_doc import errors
from ..response_schemas import (
    LabelStudioIgnoredEnvelopeSchema,
    LabelStudioQueuedEnvelopeSchema,
    LabelStudioSecretEnvelopeSchema,
    LabelStudioStatusEnvelopeSchema,
)
from ..text_rules import BAD_CHARS
from .errors import ApiError

blp = Blueprint("integrations", __name__, url_prefix="/v1/projects", description="Label Studio webhook receiver")


def _no_control(value: str) -> None:
    if BAD_CHARS.search(value):
        raise ma.ValidationError("must not contain control characters")


class LabelStudioSetupSchema(ma.Schema):
    field = fields.String(
        validate=[validate.Length(min=1, max=200), _no_control],
        metadata={"description": "from_name of the choices tag holding the label (default: the tag remembered "
                                 "from the first import or event, else the only choices tag)"},
    )
    task_key = fields.String(
        validate=[validate.Regexp(r"^(id|data\.\S{1,200})$", error="must be 'id' or 'data.<key>'"), _no_control],
        metadata={"description": "what names a task: 'id' (Label Studio's task id, default) or 'data.<key>'; "
                                 "use the same as for imports"},
    )


class LabelStudioEventSchema(ma.Schema):
    """A Label Studio webhook event; other keys are accepted and ignored."""

    class Meta:
        unknown = ma.INCLUDE

    action = fields.String(required=True, metadata={"description": "e.g. ANNOTATION_CREATED, ANNOTATIONS_DELETED"})
    annotation = fields.Raw(metadata={"description": "ANNOTATION_CREATED/UPDATED: one annotation; ANNOTATIONS_CREATED: a list"})
    annotations = fields.List(fields.Dict(), metadata={"description": "ANNOTATIONS_DELETED: [{id}]"})
    tasks = fields.List(fields.Dict(), metadata={"description": "TASKS_DELETED: [{id}]"})
    task = fields.Raw(metadata={"description": "the annotated task (object, or a list for bulk events)"})


def _inbox(project_id: str) -> Inbox:
    return Inbox(current_app.extensions["crowdqc_store"], project_id)


def _webhook_path(project_id: str) -> str:
    return f"/v1/projects/{project_id}/integrations/label-studio/webhook"


@blp.route("/<project_id>/integrations/label-studio")
class LabelStudio(MethodView):
    @guard(project_writer)
    @blp.arguments(LabelStudioSetupSchema)
    @blp.response(201, LabelStudioSecretEnvelopeSchema)
    @errors(blp, (403, "the key is read-only"), 404)
    def post(self, data, project_id):
        """Create or rotate the webhook secret (writer); the secret is shown in this
        response only, and the previous one stops working at once.

        Configure Label Studio's webhook with the returned ``url`` and a header
        ``X-Crowdqc-Webhook-Secret: <secret>`` (see docs/integrations.md).
        """
        require_project(project_id, write=True)
        view = _inbox(project_id).configure(data)
        resp = jsonify({"label_studio": {**view, "url": _webhook_path(project_id), "header": SECRET_HEADER}})
        resp.status_code = 201
        return resp

    @guard(project_reader)
    @blp.response(200, LabelStudioStatusEnvelopeSchema)
    @errors(blp, 404)
    def get(self, project_id):
        """The integration's settings (never the secret), event counts and the outcome of
        recent events, with the reason of each failure."""
        require_project(project_id)
        view = _inbox(project_id).view()
        return jsonify({"label_studio": {**view, "url": _webhook_path(project_id), "header": SECRET_HEADER}})

    @guard(project_writer)
    @blp.response(204)
    @errors(blp, (403, "the key is read-only"), (404, "no such project, or it has no Label Studio webhook secret"))
    def delete(self, project_id):
        """Remove the webhook secret (writer): Label Studio's calls are then refused."""
        require_project(project_id, write=True)
        if not _inbox(project_id).disable():
            raise ApiError(404, f"project {project_id!r} has no Label Studio webhook secret")
        return "", 204


@blp.route("/<project_id>/integrations/label-studio/webhook")
class LabelStudioWebhook(MethodView):
    @blp.doc(
        requestBody={"required": True, "content": {"application/json": {"schema": LabelStudioEventSchema}}},
        parameters=[{"in": "header", "name": SECRET_HEADER, "required": False, "schema": {"type": "string"},
                     "description": "the project's webhook secret (or 'Authorization: Token <secret>', or a writer "
                                    "key as 'Authorization: Bearer <key>')"}],
    )
    @blp.response(202, LabelStudioQueuedEnvelopeSchema, description="Queued: the event will be applied in arrival order")
    @blp.alt_response(200, schema=LabelStudioIgnoredEnvelopeSchema,
                      description="Ignored: an action that does not change answers, or an event without payload", success=True)
    @errors(blp, (403, "the key is read-only"), 404,
            (422, "not a Label Studio event (no action, or a payload of the wrong shape)"))
    def post(self, project_id):
        """Receive a Label Studio webhook event (authenticated by the webhook secret).

        Answers at once: the event is queued and applied by a job, events of one project
        in the order they arrived.  Annotation events store, replace or remove the
        annotator's answer (ground-truth annotations set the task's gold label; skipped
        ones are no answer); ANNOTATIONS_DELETED and TASKS_DELETED remove answers and gold.
        Events sent without a payload, and other actions, are acknowledged and ignored.
        Outcomes, with the reason of any failure: ``GET .../integrations/label-studio``.
        """
        _authorize(project_id)
        body = request.get_json(silent=True)
        try:
            action, ignored = check_envelope(body)
        except EnvelopeError as exc:
            detail = {"path": exc.path, "message": str(exc)}
            if exc.path:
                detail["field"] = exc.path.split("[")[0].split(".")[0]
            raise ApiError(422, str(exc), [detail]) from None
        inbox = _inbox(project_id)
        if ignored:
            return jsonify({"event": inbox.ignore(action, ignored)}), 200
        event = inbox.push(current_app.extensions["crowdqc_jobs"], body)
        return jsonify({"event": event}), 202


def _authorize(project_id: str) -> None:
    """The webhook secret (header, or an Authorization 'Token'/'Bearer' credential), or a
    writer key of the project.  Label Studio cannot hold our bearer keys' rotation rules,
    hence its own secret; the global bearer check skips this endpoint."""
    inbox = _inbox(project_id)
    secret = request.headers.get(SECRET_HEADER)
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    if secret is None and scheme.lower() == "token" and credential:
        secret = credential
    if secret is not None:
        if not inbox.secret_matches(secret.strip()):
            raise ApiError(401, "invalid Label Studio webhook secret (create or rotate it with "
                           "POST /v1/projects/{id}/integrations/label-studio)",
                           headers={"WWW-Authenticate": 'Token realm="crowdqc-webhook"'})
        return
    if scheme.lower() == "bearer" and credential and inbox.secret_matches(credential):
        return
    if not scheme:
        raise ApiError(401, f"missing credentials: send the project's webhook secret in the {SECRET_HEADER} header",
                       headers={"WWW-Authenticate": 'Token realm="crowdqc-webhook"'})
    require_project(project_id, write=True)
