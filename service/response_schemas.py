"""Response schemas: what every endpoint answers, for the OpenAPI document.

Most views build their JSON themselves (``jsonify``, or rows spliced from stored JSON text
in :mod:`service.api.results`) and return a ``Response``, which flask-smorest passes through
untouched: these schemas document those bodies and are never used to serialise them.
They are strict (every field always present is required, no undeclared field): the fuzz
test and tests/test_api_docs.py validate real responses against them, and a loose schema
would let a wrong body through.

A nested object that may be null is ``nullable(Schema)``, not ``Nested(allow_none=True)``:
for OpenAPI 3.0 apispec writes the latter as ``anyOf: [{type: object, nullable: true},
{$ref}]``, which accepts any object, so the nested schema would never be checked.
(``allow_none`` only matters when loading; dumping None gives null either way.)
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from aggregation.agreement import STATUSES as AGREEMENT_STATUSES
from aggregation.reliability import FLAGS

from .schemas import ROLES
from .webhooks import EVENT_TYPES as WEBHOOK_EVENTS

JOB_STATUSES = ("queued", "running", "finished", "failed")
_PROBABILITY = validate.Range(min=0.0, max=1.0)


def declared_label(**kwargs) -> fields.Field:
    """A label as the project declared it: a string, or an integer for integer labels."""
    metadata = {"oneOf": [{"type": "string"}, {"type": "integer"}], **kwargs.pop("metadata", {})}
    return fields.Raw(metadata=metadata, **kwargs)


def nullable(schema, **kwargs) -> fields.Nested:
    """A nested object or null (see the module docstring for why not ``allow_none``)."""
    metadata = {"nullable": True, **kwargs.pop("metadata", {})}
    return fields.Nested(schema, metadata=metadata, **kwargs)


def number_map(**kwargs) -> fields.Dict:
    return fields.Dict(keys=fields.String(), values=fields.Float(), **kwargs)


def count_map(**kwargs) -> fields.Dict:
    return fields.Dict(keys=fields.String(), values=fields.Integer(), **kwargs)


def free_object(**kwargs) -> fields.Dict:
    return fields.Dict(keys=fields.String(), **kwargs)


# -- headers -----------------------------------------------------------------------------------

def required_header(description: str, pattern: str | None = None) -> dict:
    schema = {"type": "string"} if pattern is None else {"type": "string", "pattern": pattern}
    return {"description": description, "required": True, "schema": schema}


LOCATION = {"Location": required_header("where the created resource (or the job doing the work) is", r"^/")}
# Every result read carries these, the 304 too (service/api/results.py _cache_headers).
CACHE_HEADERS = {
    "ETag": required_header("weak tag of (result version, query); send it back as If-None-Match",
                            r'^W/"[0-9]+-[0-9a-f]{20}"$'),
    "Cache-Control": required_header("private, no-cache: revalidate with If-None-Match before reuse"),
    "Vary": required_header("Authorization: what a key may see depends on the key"),
}


# -- projects and keys -------------------------------------------------------------------------

class AggregationSettingsSchema(ma.Schema):
    method = fields.String(required=True)
    params = free_object(required=True)
    auto = fields.Boolean(required=True, metadata={"description": "aggregate automatically after new labels (debounced)"})


class ProjectCountsSchema(ma.Schema):
    answers = fields.Integer(required=True)
    tasks = fields.Integer(required=True)
    workers = fields.Integer(required=True)
    gold = fields.Integer(required=True)
    revision = fields.Integer(required=True, metadata={"description": "increases with every change of answers or gold"})


FlaggedWorkersSchema = ma.Schema.from_dict({flag: fields.Integer(required=True) for flag in FLAGS}, name="FlaggedWorkersSchema")


class SummaryCountsSchema(ma.Schema):
    answers = fields.Integer(required=True)
    rows = fields.Integer(required=True)
    tasks = fields.Integer(required=True)
    workers = fields.Integer(required=True)
    classes = fields.Integer(required=True)
    duplicate_rows_collapsed = fields.Integer(required=True)
    conflicting_pairs = fields.Integer(required=True)
    duplicate_policy = fields.String(required=True)
    tied_tasks = fields.Integer(required=True, metadata={"description": "ties of the method's posteriors"})
    majority_vote_tied_tasks = fields.Integer(required=True)
    tasks_where_model_overrules_majority_vote = fields.Integer(required=True)
    flagged_workers = fields.Nested(FlaggedWorkersSchema, required=True)


class GoldAccuracySchema(ma.Schema):
    gold_tasks_given = fields.Integer(required=True)
    gold_tasks_used = fields.Integer(required=True)
    gold_tasks_not_answered = fields.Integer(required=True)
    method = fields.Float(required=True, allow_none=True, validate=_PROBABILITY,
                          metadata={"description": "null under gold 'clamp' (see method_note) or without usable gold"})
    majority_vote = fields.Float(required=True, allow_none=True, validate=_PROBABILITY)
    method_note = fields.String()


class AggregationSummarySchema(ma.Schema):
    method = fields.String(required=True)
    params = free_object(required=True, metadata={"description": "effective hyperparameters, defaults filled in"})
    gold_mode = fields.String(required=True, validate=validate.OneOf(("clamp", "evaluate")))
    iterations = fields.Integer(required=True, allow_none=True)
    converged = fields.Boolean(required=True, allow_none=True)
    log_likelihood = fields.Float(required=True, allow_none=True)
    counts = fields.Nested(SummaryCountsSchema, required=True)
    classes = fields.List(declared_label(), required=True)
    warnings = fields.List(fields.String(), required=True)
    accuracy = fields.Nested(GoldAccuracySchema, metadata={"description": "present when the project has gold labels"})


class LatestAggregationSchema(ma.Schema):
    job = fields.String(required=True, allow_none=True)
    method = fields.String(required=True)
    params = free_object(required=True)
    finished_at = fields.String(required=True)
    seconds = fields.Float(required=True)
    summary = fields.Nested(AggregationSummarySchema, required=True)
    version = fields.Integer(required=True)
    snapshot_revision = fields.Integer(required=True)
    stale = fields.Boolean(required=True, metadata={"description": "answers or gold changed since this result's snapshot"})


class ProjectSchema(ma.Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    labels = fields.List(declared_label(), required=True)
    aggregation = fields.Nested(AggregationSettingsSchema, required=True)
    created_at = fields.String(required=True, allow_none=True)
    counts = fields.Nested(ProjectCountsSchema, required=True)
    latest_aggregation = nullable(LatestAggregationSchema, required=True,
                                  metadata={"description": "the published result; null before the first aggregation"})


class ProjectListSchema(ma.Schema):
    items = fields.List(fields.Nested(ProjectSchema), required=True)


class KeyCreatedSchema(ma.Schema):
    id = fields.String(required=True)
    project = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    key = fields.String(required=True, metadata={"description": "the bearer token, shown in this response only"})


class KeySchema(ma.Schema):
    id = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    created = fields.Float(required=True, metadata={"description": "Unix time"})


class KeyListSchema(ma.Schema):
    items = fields.List(fields.Nested(KeySchema), required=True)


# -- labels and gold ---------------------------------------------------------------------------

class AutoAggregationSchema(ma.Schema):
    job = fields.String(required=True)
    location = fields.String(required=True)


class LabelBatchResultSchema(ma.Schema):
    received = fields.Integer(required=True)
    accepted = fields.Integer(required=True, metadata={"description": "new answers"})
    duplicates = fields.Integer(required=True, metadata={"description": "answers already stored (same id, or same task, worker and label)"})
    replaced = fields.Integer(required=True, metadata={"description": "a worker's earlier answer to the task, replaced"})
    revision = fields.Integer(required=True)
    auto_aggregation = fields.Nested(AutoAggregationSchema, metadata={"description": "when the project aggregates automatically"})


class GoldResultSchema(ma.Schema):
    accepted = fields.Integer(required=True)
    new = fields.Integer(required=True, metadata={"description": "tasks that had no gold label before"})
    revision = fields.Integer(required=True)


# -- jobs --------------------------------------------------------------------------------------

class AggregationAcceptedSchema(ma.Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES))
    joined = fields.Boolean(required=True, metadata={"description": "joined the same aggregation, still queued"})
    method = fields.String(required=True)
    params = free_object(required=True)


class AggregationAcceptedEnvelopeSchema(ma.Schema):
    job = fields.Nested(AggregationAcceptedSchema, required=True)


class ImportAcceptedSchema(ma.Schema):
    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.Equal("queued"))
    kind = fields.String(required=True, validate=validate.Equal("import"))
    bytes = fields.Integer(required=True)
    options = free_object(required=True)


class ImportAcceptedEnvelopeSchema(ma.Schema):
    job = fields.Nested(ImportAcceptedSchema, required=True)


class AggregationProgressSchema(ma.Schema):
    stage = fields.String(required=True)
    iteration = fields.Integer()
    max_iter = fields.Integer(allow_none=True)
    log_likelihood = fields.Float(allow_none=True)


class ImportProgressSchema(ma.Schema):
    stage = fields.String(required=True, validate=validate.OneOf(("validating", "storing")))
    bytes_read = fields.Integer(required=True)
    rows = fields.Integer(required=True)
    bytes_total = fields.Integer()
    fraction = fields.Float(validate=_PROBABILITY)


class AggregationOutcomeSchema(ma.Schema):
    version = fields.Integer(required=True)
    published = fields.Boolean(required=True, metadata={"description": "false when a newer snapshot was published first"})
    snapshot_revision = fields.Integer(required=True)
    summary = fields.Nested(AggregationSummarySchema, required=True)


class ImportOutcomeSchema(ma.Schema):
    answers = fields.Integer(required=True)
    gold = fields.Integer(required=True)
    accepted = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)
    replaced = fields.Integer(required=True)
    left_out = count_map(required=True, metadata={"description": "rows not imported, by reason"})
    revision = fields.Integer(required=True)


class _JobSchema(ma.Schema):
    id = fields.String(required=True)
    project = fields.String(required=True)
    created_at = fields.String(required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(JOB_STATUSES))
    scheduled_for = fields.String(metadata={"description": "an automatic aggregation waiting for labels to settle"})
    started_at = fields.String()
    ended_at = fields.String()
    reason = fields.String(metadata={"description": "why the job failed"})


class AggregationJobSchema(_JobSchema):
    kind = fields.String(required=True, validate=validate.OneOf(("manual", "auto")))
    method = fields.String(required=True)
    params = free_object(required=True)
    progress = fields.Nested(AggregationProgressSchema)
    waiting_for = fields.List(fields.String(), metadata={
        "description": "while queued behind imports of the project: their job ids (it runs when they end)"})
    result = fields.Nested(AggregationOutcomeSchema, metadata={"description": "when finished"})


class ImportJobSchema(_JobSchema):
    kind = fields.String(required=True, validate=validate.Equal("import"))
    method = fields.String(required=True, validate=validate.Equal("import"))
    params = free_object(required=True, metadata={"description": "the import's options"})
    progress = fields.Nested(ImportProgressSchema)
    result = fields.Nested(ImportOutcomeSchema, metadata={"description": "when finished"})


# A dict schema: the view returns a Response, and a union has no marshmallow spelling
# (flask-smorest documents a dict as it is; apispec resolves the classes to references).
JOB_VIEW = {
    "type": "object",
    "properties": {"job": {"oneOf": [AggregationJobSchema, ImportJobSchema]}},
    "required": ["job"],
    "additionalProperties": False,
}


# -- results -----------------------------------------------------------------------------------

class ConsensusSchema(ma.Schema):
    task = fields.String(required=True)
    label = declared_label(required=True)
    confidence = fields.Float(required=True, validate=_PROBABILITY)
    probabilities = number_map(required=True, metadata={
        "description": "label -> probability; every label, or those that matter when there are many"})
    n_labels = fields.Integer(required=True)
    tie = fields.Boolean(required=True)
    mv_label = declared_label(required=True, metadata={"description": "the majority vote"})
    mv_tie = fields.Boolean(required=True, metadata={"description": "the majority vote was a tie (whatever the method)"})
    gold = declared_label(allow_none=True, metadata={"description": "present when the project has gold labels"})


class ConsensusPageSchema(ma.Schema):
    items = fields.List(fields.Nested(ConsensusSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True, metadata={"description": "null on the last page"})
    version = fields.Integer(required=True)
    total_tasks = fields.Integer(required=True)


class AnswerSchema(ma.Schema):
    worker = fields.String(required=True)
    label = declared_label(required=True)


class TaskConsensusSchema(ConsensusSchema):
    answers = fields.List(fields.Nested(AnswerSchema), required=True, metadata={"description": "the answers stored now"})


class UnaggregatedTaskSchema(ma.Schema):
    task = fields.String(required=True)
    label = fields.Constant(None, required=True, metadata={"enum": [None]})
    note = fields.String(required=True)
    answers = fields.List(fields.Nested(AnswerSchema), required=True)


TASK_VIEW = {
    "type": "object",
    "properties": {
        "item": {"oneOf": [TaskConsensusSchema, UnaggregatedTaskSchema]},
        "version": {"type": "integer"},
    },
    "required": ["item", "version"],
    "additionalProperties": False,
}


class WorkerSchema(ma.Schema):
    worker = fields.String(required=True)
    n_answers = fields.Integer(required=True)
    n_tasks = fields.Integer(required=True)
    n_shared_answers = fields.Integer(required=True, metadata={"description": "answers on tasks someone else answered too"})
    estimable = fields.Boolean(required=True)
    gold_n = fields.Integer(required=True)
    gold_correct = fields.Integer(required=True)
    accuracy = fields.Float(required=True, allow_none=True)
    agreement = fields.Float(required=True, allow_none=True)
    spammer_score = fields.Float(required=True, allow_none=True)
    gold_accuracy = fields.Float(required=True, allow_none=True, validate=_PROBABILITY)
    gold_ci_low = fields.Float(required=True, allow_none=True, validate=_PROBABILITY)
    gold_ci_high = fields.Float(required=True, allow_none=True, validate=_PROBABILITY)
    flags = fields.List(fields.String(validate=validate.OneOf(FLAGS)), required=True)
    confusion = fields.Dict(keys=fields.String(), values=number_map(), required=True, allow_none=True,
                            metadata={"description": "true label -> given label -> probability; null when not estimated"})


class WorkerPageSchema(ma.Schema):
    items = fields.List(fields.Nested(WorkerSchema), required=True)
    next_cursor = fields.String(required=True, allow_none=True)
    version = fields.Integer(required=True)
    total_workers = fields.Integer(required=True)


class WorkerViewSchema(ma.Schema):
    item = fields.Nested(WorkerSchema, required=True)
    version = fields.Integer(required=True)


class DisagreementSchema(ma.Schema):
    rank = fields.Integer(required=True)
    task = fields.String(required=True)
    label = declared_label(required=True)
    confidence = fields.Float(required=True, validate=_PROBABILITY)
    entropy = fields.Float(required=True)
    margin = fields.Float(required=True)
    n_answers = fields.Integer(required=True)
    votes = count_map(required=True, metadata={"description": "label -> answers, labels with votes only"})
    tie = fields.Boolean(required=True)
    mv_label = declared_label(required=True)
    mv_tie = fields.Boolean(required=True)
    mv_disagrees = fields.Boolean(required=True)
    gold = declared_label(required=True, allow_none=True)
    contradicts_gold = fields.Boolean(required=True, allow_none=True)


class DisagreementListSchema(ma.Schema):
    items = fields.List(fields.Nested(DisagreementSchema), required=True)
    version = fields.Integer(required=True)


class AgreementStatisticSchema(ma.Schema):
    value = fields.Float(required=True, allow_none=True, metadata={"description": "null exactly when status is not ok"})
    status = fields.String(required=True, validate=validate.OneOf(AGREEMENT_STATUSES))
    reason = fields.String(required=True)
    details = free_object(required=True)


class AgreementReportSchema(ma.Schema):
    krippendorff_alpha = fields.Nested(AgreementStatisticSchema, required=True)
    fleiss_kappa = fields.Nested(AgreementStatisticSchema, required=True)
    cohen_kappa = fields.Nested(AgreementStatisticSchema, required=True)
    percent_agreement = fields.Nested(AgreementStatisticSchema, required=True)


class AgreementViewSchema(ma.Schema):
    agreement = nullable(AgreementReportSchema, required=True)
    version = fields.Integer(required=True)


# -- exports -----------------------------------------------------------------------------------

class ChoicesValueSchema(ma.Schema):
    choices = fields.List(fields.String(), required=True)


class ChoicesResultSchema(ma.Schema):
    from_name = fields.String(required=True)
    to_name = fields.String(required=True)
    type = fields.String(required=True, validate=validate.Equal("choices"))
    value = fields.Nested(ChoicesValueSchema, required=True)


class LabelStudioPredictionSchema(ma.Schema):
    model_version = fields.String(required=True)
    score = fields.Float(required=True, validate=_PROBABILITY)
    result = fields.List(fields.Nested(ChoicesResultSchema), required=True)


def _task_id(**kwargs) -> fields.Field:
    return fields.Raw(metadata={"oneOf": [{"type": "integer"}, {"type": "string"}],
                                "description": "the Label Studio task id where the task came from Label Studio"}, **kwargs)


class LabelStudioTaskSchema(ma.Schema):
    id = _task_id(required=True)
    predictions = fields.List(fields.Nested(LabelStudioPredictionSchema), required=True)


class LabelStudioTaskPredictionSchema(LabelStudioPredictionSchema):
    task = _task_id(required=True)


EXPORT_JSON = {"type": "array", "items": {"oneOf": [LabelStudioTaskSchema, LabelStudioTaskPredictionSchema]}}


# -- outbound webhooks -------------------------------------------------------------------------

class WebhookDeliverySchema(ma.Schema):
    event = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(WEBHOOK_EVENTS))
    status = fields.String(required=True, validate=validate.OneOf(("delivered", "retrying", "failed")))
    http_status = fields.Integer(required=True, allow_none=True)
    attempt = fields.Integer(required=True)
    error = fields.String(required=True, allow_none=True)
    at = fields.String(required=True)


class WebhookSchema(ma.Schema):
    id = fields.String(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)), required=True)
    confidence_target = fields.Float(required=True, allow_none=True)
    created_at = fields.String(required=True)
    last_delivery = nullable(WebhookDeliverySchema, required=True)


class WebhookCreatedSchema(WebhookSchema):
    secret = fields.String(required=True, metadata={"description": "the signing secret, shown in this response only"})


class WebhookCreatedEnvelopeSchema(ma.Schema):
    webhook = fields.Nested(WebhookCreatedSchema, required=True)


class WebhookEnvelopeSchema(ma.Schema):
    webhook = fields.Nested(WebhookSchema, required=True)


class WebhookListSchema(ma.Schema):
    items = fields.List(fields.Nested(WebhookSchema), required=True)


# -- Label Studio integration ------------------------------------------------------------------

class _LabelStudioEndpointSchema(ma.Schema):
    url = fields.String(required=True, metadata={"description": "the webhook URL to configure in Label Studio"})
    header = fields.String(required=True, metadata={"description": "the header to send the secret in"})
    field = fields.String(required=True, allow_none=True)
    task_key = fields.String(required=True, allow_none=True)


class LabelStudioSecretSchema(_LabelStudioEndpointSchema):
    secret_id = fields.String(required=True)
    created_at = fields.String(required=True)
    secret = fields.String(required=True, metadata={"description": "shown in this response only"})


class LabelStudioSecretEnvelopeSchema(ma.Schema):
    label_studio = fields.Nested(LabelStudioSecretSchema, required=True)


class LabelStudioEventCountsSchema(ma.Schema):
    received = fields.Integer(required=True)
    applied = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    ignored = fields.Integer(required=True)
    pending = fields.Integer(required=True)


class LabelStudioChangeSchema(ma.Schema):
    """What an applied event changed (which counts appear depends on the action)."""

    annotations = fields.Integer()
    tasks = fields.Integer()
    answers = fields.Integer()
    gold = fields.Integer()
    accepted = fields.Integer()
    replaced = fields.Integer()
    duplicates = fields.Integer()
    removed = fields.Integer()
    gold_removed = fields.Integer()
    unknown = fields.Integer()
    left_out = count_map()


class LabelStudioOutcomeSchema(ma.Schema):
    id = fields.String(required=True)
    action = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(("applied", "failed", "ignored")))
    received_at = fields.String(required=True)
    processed_at = fields.String()
    reason = fields.String(metadata={"description": "failed or ignored: why"})
    result = fields.Nested(LabelStudioChangeSchema, metadata={"description": "applied: what changed"})


class LabelStudioStatusSchema(_LabelStudioEndpointSchema):
    configured = fields.Boolean(required=True)
    secret_id = fields.String(required=True, allow_none=True)
    created_at = fields.String(required=True, allow_none=True)
    from_name = fields.String(required=True, allow_none=True)
    to_name = fields.String(required=True, allow_none=True)
    events = fields.Nested(LabelStudioEventCountsSchema, required=True)
    recent = fields.List(fields.Nested(LabelStudioOutcomeSchema), required=True, metadata={"description": "newest first"})


class LabelStudioStatusEnvelopeSchema(ma.Schema):
    label_studio = fields.Nested(LabelStudioStatusSchema, required=True)


class LabelStudioQueuedSchema(ma.Schema):
    id = fields.String(required=True)
    action = fields.String(required=True)
    status = fields.String(required=True, validate=validate.Equal("queued"))
    pending = fields.Integer(required=True, metadata={"description": "events of the project waiting, this one included"})


class LabelStudioQueuedEnvelopeSchema(ma.Schema):
    event = fields.Nested(LabelStudioQueuedSchema, required=True)


class LabelStudioIgnoredSchema(ma.Schema):
    id = fields.String(required=True)
    action = fields.String(required=True)
    status = fields.String(required=True, validate=validate.Equal("ignored"))
    reason = fields.String(required=True)
    received_at = fields.String(required=True)


class LabelStudioIgnoredEnvelopeSchema(ma.Schema):
    event = fields.Nested(LabelStudioIgnoredSchema, required=True)


# -- health ------------------------------------------------------------------------------------

class HealthSchema(ma.Schema):
    status = fields.String(required=True, validate=validate.Equal("ok"))


class ReadySchema(ma.Schema):
    status = fields.String(required=True, validate=validate.Equal("ready"))
    redis = fields.String(required=True, validate=validate.Equal("ok"))
