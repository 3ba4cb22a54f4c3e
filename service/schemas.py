"""Request/response schemas (marshmallow, for validation and the OpenAPI document) and the
hand-written validator of label batches (10,000 items must validate in milliseconds, with
one message per bad item naming its index and field)."""

from __future__ import annotations

import re

import marshmallow as ma
from marshmallow import fields, validate

from aggregation.encoding import normalize_label

from .text_rules import BAD_CHARS, bad_char_message

PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ROLES = ("writer", "reader")


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class StrOrInt(fields.Field):
    """A JSON string or integer (never a boolean, float or null)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) or is_int(value):
            return value
        raise ma.ValidationError(f"must be a string or an integer, got {json_type(value)}")

    def _jsonschema_type_mapping(self):  # pragma: no cover - documentation only
        return {"oneOf": [{"type": "string"}, {"type": "integer"}]}


# Labels are ids too: same bound as Settings.max_id_length's default.
MAX_LABEL_LENGTH = 256


def _no_control_chars(value: str) -> None:
    # A project name is shown in dashboards, exports and logs like any id.
    problem = bad_char_message(value)
    if problem:
        raise ma.ValidationError(problem)


_PARAMS_DOC = (
    "the method's hyperparameters (e.g. max_iter, tol, smoothing); 'gold': 'clamp' "
    "(default: gold tasks are fixed to their known label while fitting) or 'evaluate' "
    "(gold only measures accuracy); and the worker-flag thresholds spammer_threshold (0.05), "
    "agreement_threshold (0.5), gold_accuracy_threshold (0.6) and min_answers (10). Names, "
    "types and ranges are checked at the request (422 naming the parameter)"
)


class AggregationConfigSchema(ma.Schema):
    method = fields.String(load_default="dawid_skene")
    params = fields.Dict(keys=fields.String(), load_default=dict, metadata={"description": _PARAMS_DOC})
    auto = fields.Boolean(load_default=False)


class ProjectCreateSchema(ma.Schema):
    id = fields.String(
        required=True,
        validate=validate.Regexp(PROJECT_ID, error="must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"),
    )
    name = fields.String(load_default=None, validate=[validate.Length(max=200), _no_control_chars])
    labels = fields.List(StrOrInt(), required=True, validate=validate.Length(min=1))
    aggregation = fields.Nested(AggregationConfigSchema, load_default=lambda: {"method": "dawid_skene", "params": {}, "auto": False})

    @ma.validates_schema
    def _labels(self, data, **kwargs):
        labels = data.get("labels") or []
        kinds = {is_int(v) for v in labels}
        if len(kinds) > 1:
            raise ma.ValidationError("labels must be all strings or all integers", "labels")
        normed = [normalize_label(v) for v in labels]
        if any(n == "" for n in normed):
            raise ma.ValidationError("labels must not be empty strings", "labels")
        for v in labels:
            if isinstance(v, str) and (len(v) > MAX_LABEL_LENGTH or BAD_CHARS.search(v)):
                raise ma.ValidationError(
                    f"labels must be at most {MAX_LABEL_LENGTH} characters without control characters", "labels"
                )
        seen, dupes = set(), []
        for n in normed:
            if n in seen:
                dupes.append(n)
            seen.add(n)
        if dupes:
            raise ma.ValidationError(f"labels repeat after normalisation: {sorted(set(dupes))!r}", "labels")


class ProjectPatchSchema(ma.Schema):
    name = fields.String(validate=[validate.Length(max=200), _no_control_chars])
    aggregation = fields.Nested(AggregationConfigSchema)


class KeyCreateSchema(ma.Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class AggregationRequestSchema(ma.Schema):
    method = fields.String(load_default=None)
    params = fields.Dict(keys=fields.String(), load_default=None, metadata={"description": _PARAMS_DOC})


class LabelItemSchema(ma.Schema):
    """One answer: an object, or the array ``[task, worker, label]``."""

    task = StrOrInt(required=True)
    worker = StrOrInt(required=True)
    label = StrOrInt(required=True)
    id = StrOrInt(metadata={"description": "idempotency id of this answer (optional)"})


class LabelBatchSchema(ma.Schema):
    labels = fields.List(fields.Nested(LabelItemSchema), required=True)


class GoldItemSchema(ma.Schema):
    task = StrOrInt(required=True)
    label = StrOrInt(required=True)


class GoldBatchSchema(ma.Schema):
    gold = fields.List(fields.Nested(GoldItemSchema), required=True)


class PageArgsSchema(ma.Schema):
    limit = fields.Integer(validate=validate.Range(min=1))
    cursor = fields.String()


class ConsensusArgsSchema(PageArgsSchema):
    min_confidence = fields.Float(validate=validate.Range(min=0.0, max=1.0))
    max_confidence = fields.Float(validate=validate.Range(min=0.0, max=1.0))


class WorkerArgsSchema(PageArgsSchema):
    sort = fields.String(metadata={"description": "field to sort by, '-' prefix for descending"})


class LimitArgsSchema(ma.Schema):
    limit = fields.Integer(validate=validate.Range(min=1))


# -- batch validation -------------------------------------------------------------------------


class BatchError(Exception):
    def __init__(self, message: str, details: list[dict], status: int = 422):
        super().__init__(message)
        self.message = message
        self.details = details
        self.status = status


def _check_id(value, path, field, max_len, details, index):
    if value is None or not (isinstance(value, str) or is_int(value)):
        what = "a non-empty string or integer" if field != "label" else "a scalar (string/integer)"
        details.append(_err(path, index, field, f"must be {what}, got {json_type(value)}"))
        return None
    text = value if isinstance(value, str) else str(value)
    if text == "":
        details.append(_err(path, index, field, "must not be empty"))
        return None
    problem = bad_char_message(text)
    if problem:
        details.append(_err(path, index, field, problem))
        return None
    if len(text) > max_len:
        details.append(_err(path, index, field, f"is longer than {max_len} characters ({len(text)})"))
        return None
    return text


def _err(path: str, index, field, message: str) -> dict:
    loc = f"{path}[{index}]" + (f".{field}" if field else "")
    out = {"path": loc, "message": f"{loc}: {message}"}
    if index is not None:
        out["index"] = index
    if field:
        out["field"] = field
    return out


def batch_items(body, key: str, max_items: int) -> list:
    if not isinstance(body, dict):
        raise BatchError(f"the body must be a JSON object with a {key!r} list", [{"path": key, "field": key, "message": f"expected an object with {key!r}, got {json_type(body)}"}])
    if key not in body:
        raise BatchError(f"missing field {key!r}", [{"path": key, "field": key, "message": f"missing field {key!r}"}])
    items = body[key]
    if not isinstance(items, list):
        raise BatchError(f"{key!r} must be a list", [{"path": key, "field": key, "message": f"{key} must be an array, got {json_type(items)}"}])
    if not items:
        raise BatchError(
            "answers must contain at least one [task, worker, label] row ('labels' is empty)" if key == "labels" else f"{key} must not be empty",
            [{"path": key, "field": key, "message": f"{key} must contain at least one item"}],
        )
    if len(items) > max_items:
        raise BatchError(
            f"at most {max_items} {key} per request, got {len(items)}",
            [{"path": key, "field": key, "message": f"at most {max_items} items per request"}],
            status=413,
        )
    extra = sorted(set(body) - {key})
    if extra:
        raise BatchError(f"unknown field(s) {extra!r}", [{"path": e, "field": e, "message": "unknown field"} for e in extra])
    return items


def validate_labels(body, label_index: dict, settings) -> tuple[list, list, list, list]:
    """(tasks, workers, label indices, answer ids) of a label batch, or BatchError naming
    every bad item by index and field."""
    items = batch_items(body, "labels", settings.max_batch)
    tasks, workers, labels, ids = [], [], [], []
    details: list[dict] = []
    max_id, max_aid = settings.max_id_length, settings.max_answer_id_length
    n_fields = ("task", "worker", "label")
    for i, item in enumerate(items):
        if isinstance(item, dict):
            unknown = set(item) - {"task", "worker", "label", "id"}
            for f in sorted(unknown):
                details.append(_err("labels", i, f, "unknown field"))
            missing = [f for f in n_fields if f not in item]
            for f in missing:
                details.append(_err("labels", i, f, "missing field"))
            if missing or unknown:
                continue
            t, w, lab, aid = item["task"], item["worker"], item["label"], item.get("id")
            has_id = "id" in item
        elif isinstance(item, list):
            if len(item) != 3:
                details.append(_err("labels", i, None, f"expected 3 items [task, worker, label], got {len(item)}"))
                continue
            t, w, lab = item
            aid, has_id = None, False
        else:
            details.append(_err("labels", i, None, f"expected an object or an array, got {json_type(item)}"))
            continue
        n0 = len(details)
        t = _check_id(t, "labels", "task", max_id, details, i)
        w = _check_id(w, "labels", "worker", max_id, details, i)
        lab = _check_id(lab, "labels", "label", max_id, details, i)
        code = None
        if lab is not None:
            code = label_index.get(normalize_label(lab))
            if code is None:
                details.append(_err("labels", i, "label", f"{lab!r} is not one of the project's labels"))
        if has_id:
            aid = _check_id(aid, "labels", "id", max_aid, details, i)
        if len(details) > n0:
            continue
        tasks.append(t)
        workers.append(w)
        labels.append(code)
        ids.append(aid if has_id else "")
    if details:
        n_bad = len({d.get("index") for d in details})
        raise BatchError(f"{n_bad} of {len(items)} labels are invalid; nothing was stored", details[:1000])
    return tasks, workers, labels, ids


def validate_gold(body, label_index: dict, settings) -> tuple[list, list]:
    items = batch_items(body, "gold", settings.max_batch)
    tasks, labels = [], []
    details: list[dict] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            unknown = set(item) - {"task", "label"}
            for f in sorted(unknown):
                details.append(_err("gold", i, f, "unknown field"))
            missing = [f for f in ("task", "label") if f not in item]
            for f in missing:
                details.append(_err("gold", i, f, "missing field"))
            if missing or unknown:
                continue
            t, lab = item["task"], item["label"]
        elif isinstance(item, list) and len(item) == 2:
            t, lab = item
        else:
            details.append(_err("gold", i, None, f"expected an object {{task, label}}, got {json_type(item)}"))
            continue
        n0 = len(details)
        t = _check_id(t, "gold", "task", settings.max_id_length, details, i)
        lab = _check_id(lab, "gold", "label", settings.max_id_length, details, i)
        if lab is not None and normalize_label(lab) not in label_index:
            details.append(_err("gold", i, "label", f"{lab!r} is not one of the project's labels"))
        if len(details) > n0:
            continue
        tasks.append(t)
        labels.append(label_index[normalize_label(lab)])
    seen: dict = {}
    for i, (t, c) in enumerate(zip(tasks, labels)):
        if seen.setdefault(t, c) != c:
            details.append({"path": "gold", "field": "task", "message": f"gold gives more than one label for task {t!r}"})
    if details:
        raise BatchError("invalid gold labels; nothing was stored", details[:1000])
    return tasks, labels


# -- exports and outbound webhooks ------------------------------------------------------------

from .exports import FORMATS as EXPORT_FORMATS  # noqa: E402
from .webhooks import EVENT_TYPES as WEBHOOK_EVENTS  # noqa: E402


class ExportArgsSchema(ma.Schema):
    format = fields.String(
        load_default="csv",
        validate=validate.OneOf(EXPORT_FORMATS),
        metadata={"description": "csv, jsonl (JSON Lines), or label_studio (also label_studio_predictions): the "
                                 "body of Label Studio's POST /api/projects/{id}/import/predictions"},
    )
    from_name = fields.String(validate=validate.Length(min=1, max=MAX_LABEL_LENGTH),
                              metadata={"description": "Label Studio: the Choices tag (default: the one seen in imports)"})
    to_name = fields.String(validate=validate.Length(min=1, max=MAX_LABEL_LENGTH),
                            metadata={"description": "Label Studio: the object tag it labels (default: the one seen in imports)"})

    @ma.validates_schema
    def _tags(self, data, **kwargs):
        for name in ("from_name", "to_name"):
            if name in data and BAD_CHARS.search(data[name]):
                raise ma.ValidationError("must not contain control characters", name)


def _check_webhook_url(value: str) -> None:
    from urllib.parse import urlsplit

    if len(value) > 2048 or BAD_CHARS.search(value) or any(c.isspace() for c in value):
        raise ma.ValidationError("must be at most 2048 characters without spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ma.ValidationError(f"is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ma.ValidationError("must be an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ma.ValidationError("must not carry credentials; verify the X-Crowdqc-Signature header instead")


class WebhookCreateSchema(ma.Schema):
    url = fields.String(required=True, validate=_check_webhook_url)
    events = fields.List(fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)), required=True,
                         validate=validate.Length(min=1, max=len(WEBHOOK_EVENTS) * 4))
    confidence_target = fields.Float(
        load_default=None, allow_none=True, validate=validate.Range(min=0.0, max=1.0, min_inclusive=False),
        metadata={"description": "task.confidence_reached fires when a task's confidence reaches this (0 < t <= 1)"},
    )

    @ma.validates_schema
    def _target(self, data, **kwargs):
        if "task.confidence_reached" in (data.get("events") or []) and data.get("confidence_target") is None:
            raise ma.ValidationError("required with the task.confidence_reached event", "confidence_target")
