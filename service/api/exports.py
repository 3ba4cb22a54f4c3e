"""Exports of the current consensus (CSV, JSON Lines, Label Studio predictions), streamed."""

from __future__ import annotations

import itertools

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from .. import exports
from ..auth import guard, project_reader
from ..openapi_doc import errors
from ..response_schemas import EXPORT_JSON
from ..schemas import ExportArgsSchema
from .errors import ApiError
from .results import current_version

blp = Blueprint("exports", __name__, url_prefix="/v1/projects", description="Exports of the consensus")

_BODY = {"description": "The export, streamed", "content": {
    "text/csv": {"schema": {"type": "string"}},
    "application/x-ndjson": {"schema": {"type": "string"}},
    "application/json": {"schema": EXPORT_JSON},
}, "headers": {"X-Crowdqc-Result-Version": {"description": "the result version exported", "required": True,
                                            "schema": {"type": "string", "pattern": "^[0-9]+$"}}}}


@blp.route("/<project_id>/exports/consensus")
class ConsensusExport(MethodView):
    @guard(project_reader)
    @blp.arguments(ExportArgsSchema, location="query")
    @blp.doc(responses={"200": _BODY})
    @errors(blp, (404, "no such project, or no aggregation result yet"),
            (410, "the result was replaced while the export started; try again"),
            (422, "invalid query, or a Label Studio tag name that is unknown"))
    def get(self, args, project_id):
        """The current consensus as a file, one row per task, all of one result version.

        ``csv`` and ``jsonl``: task, label, confidence, probabilities, n_labels, tie, method,
        version.  ``label_studio`` (or ``label_studio_predictions``, the same body): the body
        of Label Studio's ``POST /api/projects/{id}/import/predictions``, a JSON array of
        ``{"task", "result", "score", "model_version"}``, the consensus as a ``choices``
        prediction with its confidence as ``score``.  Tasks imported from Label Studio are
        named by their Label Studio id and come back as that integer.
        """
        store = current_app.extensions["crowdqc_store"]
        cur = current_version(project_id)
        fmt, version, method = args["format"], int(cur["version"]), cur.get("method")
        tags = None
        if fmt.startswith("label_studio"):
            try:
                tags = exports.label_studio_tags(store, project_id, args.get("from_name"), args.get("to_name"))
            except exports.UnknownTag as exc:
                raise ApiError(422, str(exc), [{"path": exc.field, "field": exc.field, "message": f"{exc.field}: unknown"}]) from None
        chunks = exports.read_chunks(store, project_id, version, store.consensus_count(project_id, version))
        try:
            # The first read happens now: a failure is still an HTTP error, not a cut file.
            first = list(itertools.islice(chunks, 1))
        except exports.ExportInterrupted:
            raise ApiError(410, "the result was replaced while the export started; try again") from None
        body = exports.render(fmt, itertools.chain(first, chunks), method, version, tags)
        resp = current_app.response_class(body, mimetype=exports.MEDIA_TYPES[fmt])
        filename = f"{project_id}-consensus-v{version}.{exports.EXTENSIONS[fmt]}"
        resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        resp.headers["X-Crowdqc-Result-Version"] = str(version)
        resp.headers["Cache-Control"] = "private, no-cache"
        return resp
