"""Ingestion of labels (answers) and gold labels."""

from __future__ import annotations

from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint

from ..auth import guard, project_writer, require_project
from ..openapi_doc import errors
from ..response_schemas import GoldResultSchema, LabelBatchResultSchema
from ..schemas import BatchError, GoldBatchSchema, LabelBatchSchema, validate_gold, validate_labels
from ..store import ProjectFull
from .errors import ApiError

blp = Blueprint("labels", __name__, url_prefix="/v1/projects", description="Labels and gold labels")


def _label_index(meta: dict) -> dict:
    return {name: i for i, name in enumerate(meta["labels_normalized"])}


def _body():
    return request.get_json(silent=True) if request.get_data(cache=True) else None


def _batch_error(exc: BatchError):
    return ApiError(exc.status, exc.message, exc.details)


@blp.route("/<project_id>/labels")
class Labels(MethodView):
    @guard(project_writer)
    @blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": LabelBatchSchema}}})
    @blp.response(200, LabelBatchResultSchema)
    @errors(blp, (403, "the key is read-only"), 404, (409, "the project is full (CROWDQC_MAX_ANSWERS); nothing was stored"),
            (413, "more items than CROWDQC_MAX_BATCH, or a body larger than CROWDQC_MAX_BODY_BYTES"),
            (422, "invalid items, each named by index and field; nothing was stored"))
    def post(self, project_id):
        """Add up to 10,000 answers, atomically.

        Items are ``{"task", "worker", "label", "id"?}`` objects or ``[task, worker, label]``
        arrays; ids and labels may be strings or integers (integers become decimal strings,
        labels are compared after Unicode NFC + trimming white space).  Any invalid item
        rejects the whole batch (422, each bad item named by index and field).  A repeated
        answer (same ``id``, or same task, worker and label) is counted as a duplicate; a
        worker answering a task again replaces their earlier answer.
        """
        meta = require_project(project_id, write=True)
        settings = current_app.config["CROWDQC"]
        try:
            tasks, workers, labels, ids = validate_labels(_body(), _label_index(meta), settings)
        except BatchError as exc:
            raise _batch_error(exc) from None
        store = current_app.extensions["crowdqc_store"]
        try:
            out = store.ingest(project_id, tasks, workers, labels, ids, limit=settings.max_answers_per_project)
        except ProjectFull as exc:
            raise _full(exc, "labels") from None
        out = {"received": len(tasks), **out}
        agg = meta.get("aggregation") or {}
        if agg.get("auto") and out["accepted"] + out["replaced"] > 0:
            jobs = current_app.extensions["crowdqc_jobs"]
            job_id = jobs.schedule_auto(project_id, agg.get("method", "dawid_skene"), agg.get("params") or {})
            out["auto_aggregation"] = {"job": job_id, "location": f"/v1/jobs/{job_id}"}
        return jsonify(out)


@blp.route("/<project_id>/gold")
class Gold(MethodView):
    @guard(project_writer)
    @blp.doc(requestBody={"required": True, "content": {"application/json": {"schema": GoldBatchSchema}}})
    @blp.response(200, GoldResultSchema)
    @errors(blp, (403, "the key is read-only"), 404, (409, "the project is full (CROWDQC_MAX_ANSWERS); nothing was stored"),
            (413, "more items than CROWDQC_MAX_BATCH, or a body larger than CROWDQC_MAX_BODY_BYTES"),
            (422, "invalid items, each named by index and field; nothing was stored"))
    def post(self, project_id):
        """Add or replace known (gold) labels: ``{"gold": [{"task", "label"}, ...]}``."""
        meta = require_project(project_id, write=True)
        settings = current_app.config["CROWDQC"]
        try:
            tasks, labels = validate_gold(_body(), _label_index(meta), settings)
        except BatchError as exc:
            raise _batch_error(exc) from None
        try:
            out = current_app.extensions["crowdqc_store"].set_gold(project_id, tasks, labels,
                                                                   limit=settings.max_answers_per_project)
        except ProjectFull as exc:
            raise _full(exc, "gold") from None
        return jsonify(out)


def _full(exc: ProjectFull, field: str) -> ApiError:
    return ApiError(
        409,
        f"{exc}; nothing was stored",
        [{"path": field, "field": field, "message": f"limit of {exc.limit} {exc.what} per project reached"}],
    )
