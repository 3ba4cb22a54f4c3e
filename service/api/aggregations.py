"""Aggregation requests and job status."""

from __future__ import annotations

from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint

from ..auth import authenticate, guard, project_writer, require_project
from ..openapi_doc import errors
from ..response_schemas import JOB_VIEW, LOCATION, AggregationAcceptedEnvelopeSchema
from ..schemas import AggregationRequestSchema
from .errors import ApiError, flatten_messages
from .projects import check_method

blp = Blueprint("aggregations", __name__, description="Aggregation jobs")


@blp.route("/v1/projects/<project_id>/aggregations")
class Aggregations(MethodView):
    @guard(project_writer)
    @blp.doc(requestBody={"required": False, "content": {"application/json": {"schema": AggregationRequestSchema}}})
    @blp.response(202, AggregationAcceptedEnvelopeSchema, headers=LOCATION)
    @errors(blp, (403, "the key is read-only"), 404,
            (422, "unknown method or parameter, or the project has no labels yet"))
    def post(self, project_id):
        """Start an aggregation (202 + Location of the job).

        Without a body the project's configured method and params are used.  While an
        aggregation with the same method and params is still queued, the request joins it.
        """
        meta = require_project(project_id, write=True)
        raw = request.get_json(silent=True) if request.get_data(cache=True) else {}
        errors = AggregationRequestSchema().validate(raw if isinstance(raw, dict) else {})
        if not isinstance(raw, dict):
            raise ApiError(422, "the body must be a JSON object {method, params}")
        if errors:
            details = flatten_messages(errors)
            raise ApiError(422, "; ".join(d["message"] for d in details), details)
        data = AggregationRequestSchema().load(raw)
        configured = meta.get("aggregation") or {}
        method = data.get("method") or configured.get("method") or "dawid_skene"
        params = data.get("params")
        if params is None:
            params = (configured.get("params") or {}) if method == configured.get("method") else {}
        check_method(method, params, path="")
        store = current_app.extensions["crowdqc_store"]
        if store.counts(project_id)["answers"] == 0:
            raise ApiError(422, "answers must contain at least one [task, worker, label] row: the project has no labels yet")
        jobs = current_app.extensions["crowdqc_jobs"]
        job_id, joined = jobs.request(project_id, method, params)
        status = jobs.status(job_id) or {"id": job_id, "status": "queued"}
        resp = jsonify({"job": {"id": job_id, "status": status["status"], "joined": joined, "method": method, "params": params}})
        resp.status_code = 202
        resp.headers["Location"] = f"/v1/jobs/{job_id}"
        return resp


@blp.route("/v1/jobs/<job_id>")
class JobStatus(MethodView):
    @blp.response(200, JOB_VIEW)
    @errors(blp, (404, "no such job, or a job of another project"))
    def get(self, job_id):
        """Status of a job: queued, running (with progress), finished (with the result
        summary) or failed (with the reason)."""
        principal = authenticate()
        jobs = current_app.extensions["crowdqc_jobs"]
        view = jobs.status(job_id) if len(job_id) <= 64 else None
        # A key never learns about another project's jobs.
        if view is None or (not principal.is_admin and view["project"] != principal.project):
            raise ApiError(404, f"job {job_id!r} not found")
        return jsonify({"job": view})
