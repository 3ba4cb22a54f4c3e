"""Bulk import of answer files (the body is the file, or a multipart upload)."""

from __future__ import annotations

import marshmallow as ma
from flask import current_app, jsonify, request
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields, validate

from ..auth import guard, project_writer, require_project
from ..imports import PLAIN_FORMATS, PRESET_NAMES, ImportTooLarge, check_options, enqueue_import, new_import_id, stage, stage_key
from ..openapi_doc import errors
from ..response_schemas import LOCATION, ImportAcceptedEnvelopeSchema
from .errors import ApiError

blp = Blueprint("imports", __name__, url_prefix="/v1/projects", description="Bulk imports of answer files")

# Content types that say what a raw body is, when neither preset nor format is given.
_BY_MIMETYPE = {
    "text/csv": "csv",
    "text/tab-separated-values": "tsv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
}
_BY_EXTENSION = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class ImportArgsSchema(ma.Schema):
    preset = fields.String(validate=validate.OneOf(PRESET_NAMES), metadata={"description": "a labeling tool's native export"})
    format = fields.String(validate=validate.OneOf(PLAIN_FORMATS), metadata={"description": "crowdqc's own format (one answer per row)"})
    field = fields.String(metadata={"description": "preset: the label field (Label Studio from_name, Toloka OUTPUT:<field>, MTurk Answer.<field>)"})
    task_key = fields.String(metadata={"description": "preset: what identifies a task (Label Studio data.<key>, Toloka INPUT column, MTurk Input.<name>)"})
    include_rejected = fields.Boolean(metadata={"description": "preset: keep answers of rejected assignments (Toloka, MTurk)"})
    task_column = fields.String(metadata={"description": "format: task id column (default task)"})
    worker_column = fields.String(metadata={"description": "format: worker id column (default worker)"})
    label_column = fields.String(metadata={"description": "format: label column (default label)"})
    gold_column = fields.String(metadata={"description": "format: optional gold label column"})
    name = fields.String(validate=validate.Length(max=200), metadata={"description": "file name used in error messages"})


@blp.route("/<project_id>/imports")
class Imports(MethodView):
    @guard(project_writer)
    @blp.arguments(ImportArgsSchema, location="query")
    @blp.doc(
        requestBody={
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                "text/tab-separated-values": {"schema": {"type": "string", "format": "binary"}},
                "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}, "required": ["file"]}
                },
            },
        }
    )
    @blp.response(202, ImportAcceptedEnvelopeSchema, headers=LOCATION)
    @errors(blp, (400, "empty body, or a multipart form without a 'file' part"), (403, "the key is read-only"), 404,
            (413, "the file is larger than CROWDQC_MAX_IMPORT_BYTES"), (422, "invalid or conflicting options"))
    def post(self, args, project_id):
        """Import a file of answers (202 + Location of the import job).

        The body is the file itself (any Content-Type) or a multipart form with a
        ``file`` part (options may then also be form fields).  Say what it is with
        ``format`` (csv, tsv, jsonl; inferred from a text/csv, text/tab-separated-values
        or application/x-ndjson Content-Type or the uploaded file's extension) or
        ``preset`` (label_studio, toloka, mturk).  The file is validated whole before
        anything is stored: a bad row fails the job with its line number and nothing is
        imported.  Follow the job at ``GET /v1/jobs/{id}`` (progress while it runs;
        counts of stored answers, gold and left-out rows when it has finished).
        """
        require_project(project_id, write=True)
        settings = current_app.config["CROWDQC"]
        request.max_content_length = settings.max_import_bytes
        options = dict(args)
        upload, filename = None, None
        if request.mimetype == "multipart/form-data":
            upload = request.files.get("file")
            if upload is None:
                raise ApiError(400, "the multipart form has no 'file' part")
            filename = upload.filename
            form = {k: v for k, v in request.form.items() if k in ImportArgsSchema().fields}
            try:
                options.update(ImportArgsSchema().load(form))
            except ma.ValidationError as exc:
                raise ApiError(422, f"invalid form fields: {exc.messages}") from None
            read = upload.stream.read
        else:
            read = request.stream.read
        if not options.get("preset") and not options.get("format"):
            guessed = _BY_MIMETYPE.get(request.mimetype)
            if guessed is None and filename:
                guessed = next((f for ext, f in _BY_EXTENSION.items() if filename.lower().endswith(ext)), None)
            if guessed:
                options["format"] = guessed
        options.setdefault("name", filename or "upload")
        try:
            options = check_options(options)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        store = current_app.extensions["crowdqc_store"]
        import_id = new_import_id()
        key = stage_key(store.prefix, import_id)
        try:
            n_bytes = stage(store.r, key, read, settings.max_import_bytes)
        except ImportTooLarge as exc:
            raise ApiError(413, str(exc)) from None
        if n_bytes == 0:
            store.r.delete(key)
            raise ApiError(400, "the request body is empty; send the file as the body or as a multipart 'file' part")
        jobs = current_app.extensions["crowdqc_jobs"]
        try:
            enqueue_import(jobs, store, project_id, import_id, options, n_bytes)
        except Exception:
            store.r.delete(key)
            raise
        resp = jsonify({"job": {"id": import_id, "status": "queued", "kind": "import", "bytes": n_bytes, "options": options}})
        resp.status_code = 202
        resp.headers["Location"] = f"/v1/jobs/{import_id}"
        return resp
