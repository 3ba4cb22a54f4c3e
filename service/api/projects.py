"""Projects and their keys (creating either needs the admin token)."""

from __future__ import annotations

import time

from flask import current_app, jsonify, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from aggregation.encoding import normalize_label

from ..auth import admin_only, authenticate, guard, not_found_project, project_admin, require_project
from ..jobs import check_params, known_methods
from ..openapi_doc import errors
from ..response_schemas import LOCATION, KeyCreatedSchema, KeyListSchema, ProjectListSchema, ProjectSchema
from ..schemas import KeyCreateSchema, ProjectCreateSchema, ProjectPatchSchema
from .errors import ApiError

blp = Blueprint("projects", __name__, url_prefix="/v1/projects", description="Projects and project keys")


def store():
    return current_app.extensions["crowdqc_store"]


def check_method(method: str, params: dict | None = None, path: str = "aggregation") -> dict:
    """Validated params of ``method`` (422 naming the method or parameter otherwise)."""
    methods = known_methods()
    prefix = f"{path}." if path else ""
    if method not in methods:
        raise ApiError(
            422,
            f"unknown aggregation method {method!r}; one of {', '.join(methods)}",
            [{"path": f"{prefix}method", "field": "method", "message": f"{prefix}method: must be one of {', '.join(methods)}"}],
        )
    try:
        return check_params(method, params)
    except ValueError as exc:
        raise ApiError(422, str(exc), [{"path": f"{prefix}params", "field": "params", "message": f"{prefix}params: {exc}"}]) from None


def project_view(meta: dict) -> dict:
    s = store()
    counts = s.counts(meta["id"])
    latest = s.current_result(meta["id"])
    if latest is not None:
        latest = dict(latest)
        latest["stale"] = counts["revision"] > latest.get("snapshot_revision", 0)
    return {
        "id": meta["id"],
        "name": meta["name"],
        "labels": meta["labels"],
        "aggregation": meta["aggregation"],
        "created_at": meta.get("created_at"),
        "counts": counts,
        "latest_aggregation": latest,
    }


@blp.route("")
class Projects(MethodView):
    @guard(admin_only)
    @blp.arguments(ProjectCreateSchema)
    @blp.response(201, ProjectSchema, headers=LOCATION)
    @errors(blp, (403, "needs the admin token"), (409, "a project with this id exists"),
            (422, "invalid fields, too many labels, or an unknown aggregation method or parameter"))
    def post(self, data):
        """Create a project (admin)."""
        settings = current_app.config["CROWDQC"]
        if len(data["labels"]) > settings.max_labels_per_project:
            raise ApiError(422, f"at most {settings.max_labels_per_project} labels per project")
        check_method(data["aggregation"]["method"], data["aggregation"]["params"])
        meta = {
            "id": data["id"],
            "name": data.get("name") or data["id"],
            "labels": data["labels"],
            "labels_normalized": [normalize_label(v) for v in data["labels"]],
            "label_type": "integer" if isinstance(data["labels"][0], int) else "string",
            "aggregation": data["aggregation"],
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if not store().create_project(meta):
            raise ApiError(409, f"project {data['id']!r} already exists")
        resp = jsonify(project_view(meta))
        resp.status_code = 201
        resp.headers["Location"] = url_for("projects.Project", project_id=meta["id"])
        return resp

    @blp.response(200, ProjectListSchema)
    def get(self):
        """Projects visible to the caller."""
        p = authenticate()
        ids = store().list_projects() if p.is_admin else [p.project]
        metas = [m for m in (store().get_project(i) for i in ids) if m]
        return jsonify({"items": [project_view(m) for m in metas]})


@blp.route("/<project_id>")
class Project(MethodView):
    @blp.response(200, ProjectSchema)
    @errors(blp, 404)
    def get(self, project_id):
        """A project with its counts and latest aggregation."""
        return jsonify(project_view(require_project(project_id)))

    @guard(project_admin)
    @blp.arguments(ProjectPatchSchema)
    @blp.response(200, ProjectSchema)
    @errors(blp, (403, "needs the admin token"), 404,
            (422, "invalid fields, or an unknown aggregation method or parameter"))
    def patch(self, data, project_id):
        """Rename a project or change its aggregation settings (admin)."""
        meta = require_project(project_id, admin=True)
        if "name" in data:
            meta["name"] = data["name"]
        if "aggregation" in data:
            check_method(data["aggregation"]["method"], data["aggregation"]["params"])
            meta["aggregation"] = data["aggregation"]
        store().update_project(meta)
        return jsonify(project_view(meta))

    @blp.response(204)
    @errors(blp, (403, "needs the admin token"), 404)
    def delete(self, project_id):
        """Delete a project with all its data and keys (admin)."""
        require_project(project_id, admin=True)
        store().delete_project(project_id)
        return "", 204


@blp.route("/<project_id>/keys")
class Keys(MethodView):
    @guard(project_admin)
    @blp.arguments(KeyCreateSchema)
    @blp.response(201, KeyCreatedSchema)
    @errors(blp, (403, "needs the admin token"), 404)
    def post(self, data, project_id):
        """Create a project key; the key is shown in this response only (admin)."""
        require_project(project_id, admin=True)
        record = store().create_key(project_id, data["role"])
        resp = jsonify({"id": record["id"], "project": project_id, "role": record["role"], "key": record["key"]})
        resp.status_code = 201
        return resp

    @blp.response(200, KeyListSchema)
    @errors(blp, (403, "needs the admin token"), 404)
    def get(self, project_id):
        """The project's keys, without their secrets (admin)."""
        require_project(project_id, admin=True)
        keys = [{"id": k["id"], "role": k["role"], "created": k["created"]} for k in store().list_keys(project_id)]
        return jsonify({"items": keys})


@blp.route("/<project_id>/keys/<key_id>")
class Key(MethodView):
    @blp.response(204)
    @errors(blp, (403, "needs the admin token"), (404, "no such project or key"))
    def delete(self, project_id, key_id):
        """Revoke a key (admin)."""
        require_project(project_id, admin=True)
        if not store().revoke_key(project_id, key_id):
            raise ApiError(404, f"key {key_id!r} not found")
        return "", 204


__all__ = ["blp", "not_found_project"]
