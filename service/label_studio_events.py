"""Label Studio webhook events, applied to a project's answers.

Two halves:

* :func:`check_envelope` runs in the request: the shape of the event (action, payload
  keys, ids), nothing that needs the project's data, so the receiver answers at once;
* :func:`apply_event` runs in the job: it reads every annotation with the export parser
  (``service.formats.label_studio``), checks every label against the project and only
  then writes.  A bad annotation rejects the whole event (:class:`EventRejected`) with
  nothing stored.

Annotation ids are resolved through hashes written at ingestion, by events and file
imports alike (:func:`record_annotations`): ``lsa`` annotation id -> ``task\\0worker``
of its answer, ``lsg`` annotation id -> ``task\\0label index`` of the gold label it set,
and, when tasks are keyed by a data field, ``lst`` Label Studio task id -> task name.
Writes are not one transaction, but each is idempotent (same-pair replacement, removal of
what is gone, HSET): an event interrupted by a crash is applied again from the start and
converges.
"""

from __future__ import annotations

import json

from .formats import Answer, FormatError, Gold
from .formats import label_studio as ls
from .imports import Checker, remember_label_studio_tags
from .store import ProjectFull, Store

# action -> the payload key that carries its objects (Label Studio's webhook action table).
PAYLOAD_KEYS = {
    "ANNOTATION_CREATED": "annotation",
    "ANNOTATIONS_CREATED": "annotation",
    "ANNOTATION_UPDATED": "annotation",
    "ANNOTATIONS_DELETED": "annotations",
    "TASKS_DELETED": "tasks",
}
NO_PAYLOAD = "sent without a payload: turn on 'Send payload' in the Label Studio webhook so crowdqc can apply it"
MAX_ACTION = 64


class EnvelopeError(ValueError):
    """A malformed event; ``path`` names the offending field."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


class EventRejected(ValueError):
    """The event's content cannot be applied to this project; nothing was written."""


def check_envelope(body) -> tuple[str, str | None]:
    """``(action, reason)``: reason is None when the event should be applied, otherwise why
    it is ignored (an action crowdqc does not use, or no payload)."""
    if not isinstance(body, dict):
        raise EnvelopeError("", "the body must be a JSON object with an 'action'")
    action = body.get("action")
    if not isinstance(action, str) or not action.strip():
        raise EnvelopeError("action", "must be a non-empty string (Label Studio's event name)")
    if len(action) > MAX_ACTION:
        raise EnvelopeError("action", f"is longer than {MAX_ACTION} characters")
    if action not in PAYLOAD_KEYS:
        return action, f"action {action!r} does not change answers"
    key, objects = _payload(body, action)
    if objects is None:
        return action, NO_PAYLOAD
    many = isinstance(body[key], list)
    for i, obj in enumerate(objects):
        path = f"{key}[{i}]" if many else key
        if not isinstance(obj, dict):
            raise EnvelopeError(path, "must be an object")
        if not ls.is_id(obj.get("id")):
            raise EnvelopeError(f"{path}.id", "must be a non-empty string or an integer")
    task = body.get("task")
    if task is not None and not isinstance(task, (dict, list)):
        raise EnvelopeError("task", "must be an object or a list of objects")
    return action, None


def _payload(body: dict, action: str) -> tuple[str, list | None]:
    """``(key, objects)``: the event's objects as a list (bulk actions send a list, the
    others one object); None when the event came without them."""
    key = PAYLOAD_KEYS[action]
    if body.get(key) is None and action == "ANNOTATIONS_CREATED" and body.get("annotations") is not None:
        key = "annotations"
    value = body.get(key)
    if value is None:
        return key, None
    if isinstance(value, list):
        return key, value
    if isinstance(value, dict) and key == "annotation":
        return key, [value]
    raise EnvelopeError(key, "must be an object or a list of objects" if key == "annotation" else "must be a list of objects")


# -- applying ---------------------------------------------------------------------------------


class _Project:
    """What applying an event needs to know about the project."""

    def __init__(self, store: Store, pid: str, meta: dict, options: dict, conf):
        self.store, self.pid, self.meta, self.conf = store, pid, meta, conf
        remembered = store.r.hget(store.pkey(pid, "ls"), "from_name")
        self.field = options.get("field") or (remembered.decode("utf-8") if remembered else None)
        self.task_key = options.get("task_key") or None
        self.keyed_by_data = self.task_key not in (None, "id")

    def key(self, part: str) -> str:
        return self.store.pkey(self.pid, part)


def apply_event(store: Store, pid: str, event: dict, options: dict, conf) -> dict:
    """Apply one received event (``{"id", "action", "body"}``); returns what changed.
    Raises :class:`EventRejected` when the content is not valid for the project."""
    meta = store.get_project(pid)
    if meta is None:
        raise EventRejected(f"project {pid!r} no longer exists")
    body = event["body"]
    action = body["action"]
    proj = _Project(store, pid, meta, options, conf)
    name = f"{action} event {event['id'][:8]}"
    try:
        if action == "ANNOTATIONS_DELETED":
            return _delete_annotations(proj, [str(a["id"]) for a in _payload(body, action)[1]])
        if action == "TASKS_DELETED":
            return _delete_tasks(proj, [str(t["id"]) for t in _payload(body, action)[1]])
        return _upsert_annotations(proj, action, body, name)
    except FormatError as exc:
        raise EventRejected(f"{exc}; nothing was applied") from None


def _upsert_annotations(proj: _Project, action: str, body: dict, name: str) -> dict:
    anns = _payload(body, action)[1]
    tasks = _tasks_by_id(body.get("task"))
    picker = ls.make_picker(proj.field)
    check = Checker(proj.meta, name, proj.conf.max_id_length)
    stats: dict = {}
    answers: dict[str, tuple] = {}  # annotation id -> (task, worker, label index)
    gold: dict[str, tuple] = {}  # annotation id -> (task, label index)
    payload_pair: dict[str, tuple] = {}  # annotation id -> (task, worker) as the payload says
    ls_tasks: dict[str, str] = {}  # Label Studio task id -> task name (data-keyed tasks)
    # Validate everything before the first write.
    for ann in anns:
        aid = str(ann["id"])
        ls_task, task = _task_of(proj, ann, tasks, name)
        ls_tasks[ls_task] = task
        item = ls.annotation_items(task, ann, picker, f"task {ls_task}", name, None, stats)
        if item is not None:
            try:
                row = check(item)
            except FormatError as exc:
                raise FormatError(name, None, f"task {ls_task}, annotation {aid}: {exc.problem}") from None
        if isinstance(item, Answer):
            answers[aid] = row[1:4]
            gold.pop(aid, None)
        elif isinstance(item, Gold):
            gold[aid] = row[1:3]
            answers.pop(aid, None)
        else:
            answers.pop(aid, None)
            gold.pop(aid, None)
        worker = _worker_or_none(ann)
        if worker is not None:
            payload_pair[aid] = (task, worker)
    picker.check_used(name, len(answers) + len(gold), "the event")

    aids = list({str(a["id"]): None for a in anns})
    old_pairs = _split_all(proj.store.r.hmget(proj.key("lsa"), aids))
    old_gold = _split_all(proj.store.r.hmget(proj.key("lsg"), aids))
    kept_pairs = {(t, w) for t, w, _ in answers.values()}
    removals = []
    for aid, old in zip(aids, old_pairs):
        if old is None and action == "ANNOTATION_UPDATED" and aid not in answers:
            # Updated into a non-answer (cancelled, choice cleared) but ingested before
            # ids were kept: the payload still says whose answer it was.
            old = payload_pair.get(aid)
        if old is not None and old not in kept_pairs:
            removals.append(old)
    gold_drops = [g for aid, g in zip(aids, old_gold) if g is not None and gold.get(aid) != (g[0], int(g[1]))]

    out = {"annotations": len(anns), "answers": len(answers), "gold": len(gold), "accepted": 0, "replaced": 0,
           "duplicates": 0, "removed": 0, "gold_removed": 0}
    if answers:
        t, w, lab = zip(*answers.values())
        try:
            res = proj.store.ingest(proj.pid, list(t), list(w), list(lab), [""] * len(t),
                                    limit=proj.conf.max_answers_per_project)
        except ProjectFull as exc:
            raise EventRejected(f"{exc}; nothing was applied") from None
        out.update({k: res[k] for k in ("accepted", "replaced", "duplicates")})
    if removals:
        res = proj.store.remove_answers(proj.pid, [p[0] for p in removals], [p[1] for p in removals])
        out["removed"] = res["removed"]
    if gold:
        try:
            proj.store.set_gold(proj.pid, [g[0] for g in gold.values()], [g[1] for g in gold.values()],
                                limit=proj.conf.max_answers_per_project)
        except ProjectFull as exc:
            raise EventRejected(f"{exc}; the event's answers were applied, its gold labels were not") from None
    if gold_drops:
        out["gold_removed"] = drop_gold(proj.store, proj.pid, gold_drops)

    record_annotations(proj.store, proj.pid, {aid: a[:2] for aid, a in answers.items()}, gold,
                       ls_tasks if proj.keyed_by_data else {},
                       [aid for aid in aids if aid not in answers and aid not in gold])
    if picker.field and not proj.field:
        # The first event fixes the tag, as the first import does: later events with
        # another tag are then errors, not a silent change of question.
        remember_label_studio_tags(proj.store, proj.pid, picker.field, picker.to_name)
    left_out = {k: v for k, v in stats.items() if k in ("cancelled", "no_choice")}
    if left_out:
        out["left_out"] = left_out
    return out


def record_annotations(store: Store, pid: str, answers: dict, gold: dict, ls_tasks: dict, forget=()) -> None:
    """Remember what annotations stored, for the events that later name them only by id:
    ``answers`` annotation id -> (task, worker), ``gold`` annotation id -> (task, label
    index), ``ls_tasks`` Label Studio task id -> task name (only when tasks are named by a
    data field); ids in ``forget`` now store nothing.  Events and file imports both write
    through here, so an imported annotation is found exactly as one received by webhook."""
    lsa, lsg = store.pkey(pid, "lsa"), store.pkey(pid, "lsg")
    p = store.r.pipeline(transaction=True)
    if answers:
        p.hset(lsa, mapping={aid: f"{t}\0{w}" for aid, (t, w) in answers.items()})
    if gold:
        p.hset(lsg, mapping={aid: f"{t}\0{code}" for aid, (t, code) in gold.items()})
    # An annotation is an answer or a gold label or nothing, never two of them.
    not_answers = [*gold, *forget]
    not_gold = [*answers, *forget]
    if not_answers:
        p.hdel(lsa, *not_answers)
    if not_gold:
        p.hdel(lsg, *not_gold)
    if ls_tasks:
        p.hset(store.pkey(pid, "lst"), mapping=ls_tasks)
    p.execute()


def _delete_annotations(proj: _Project, aids: list[str]) -> dict:
    aids = list(dict.fromkeys(aids))
    r = proj.store.r
    pairs = _split_all(r.hmget(proj.key("lsa"), aids))
    golds = _split_all(r.hmget(proj.key("lsg"), aids))
    found = [p for p in pairs if p is not None]
    out = {"annotations": len(aids), "removed": 0, "gold_removed": 0,
           "unknown": sum(1 for p, g in zip(pairs, golds) if p is None and g is None)}
    if found:
        out["removed"] = proj.store.remove_answers(proj.pid, [p[0] for p in found], [p[1] for p in found])["removed"]
    drops = [g for g in golds if g is not None]
    if drops:
        out["gold_removed"] = drop_gold(proj.store, proj.pid, drops)
    p = r.pipeline(transaction=True)
    p.hdel(proj.key("lsa"), *aids)
    p.hdel(proj.key("lsg"), *aids)
    p.execute()
    return out


def _delete_tasks(proj: _Project, ls_ids: list[str]) -> dict:
    ls_ids = list(dict.fromkeys(ls_ids))
    if proj.keyed_by_data:
        raw = proj.store.r.hmget(proj.key("lst"), ls_ids)
        names = [v.decode("utf-8") for v in raw if v is not None]
        unknown = len(ls_ids) - len(names)
    else:
        names, unknown = ls_ids, 0
    out = {"tasks": len(ls_ids), "removed": 0, "gold_removed": 0, "unknown": unknown}
    if names:
        res = proj.store.remove_tasks(proj.pid, names)
        out.update(removed=res["removed"], gold_removed=res["gold_removed"], unknown=unknown + res["missing"])
    if proj.keyed_by_data:
        proj.store.r.hdel(proj.key("lst"), *ls_ids)
    return out


# Removes a gold label only while it is still the one the annotation set: a later gold
# label for the task (another ground-truth annotation, a POST /gold) must survive.
_DROP_GOLD = r"""
-- KEYS: gold rev ; ARGV: task, label index, task, label index, ...
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
if n > 0 then redis.call('INCR', KEYS[2]) end
return n
"""


def drop_gold(store: Store, pid: str, items) -> int:
    args = [v for task, code in items for v in (task, str(code))]
    script = store.r.register_script(_DROP_GOLD)
    return int(script(keys=[store.pkey(pid, "gold"), store.pkey(pid, "rev")], args=args))


def _split_all(values) -> list[tuple[str, str] | None]:
    out = []
    for v in values:
        if v is None:
            out.append(None)
        else:
            a, _, b = v.decode("utf-8").partition("\0")
            out.append((a, b))
    return out


def _tasks_by_id(task) -> dict[str, dict]:
    items = task if isinstance(task, list) else [task] if isinstance(task, dict) else []
    return {str(t["id"]): t for t in items if isinstance(t, dict) and ls.is_id(t.get("id"))}


def _task_of(proj: _Project, ann: dict, tasks: dict, name: str) -> tuple[str, str]:
    """(Label Studio task id, crowdqc task name) of an annotation."""
    ref = ann.get("task")
    if isinstance(ref, dict):
        ref = ref.get("id")
    if not ls.is_id(ref):
        if len(tasks) != 1:
            raise FormatError(name, None, f"annotation {ann['id']}: no 'task' id")
        ref = next(iter(tasks))
    ls_task = str(ref).strip()
    if not proj.keyed_by_data:
        return ls_task, ls_task
    task = tasks.get(ls_task)
    if task is None:
        raise FormatError(name, None, f"annotation {ann['id']}: the payload has no task {ls_task} with the data "
                          f"field {proj.task_key!r} (the integration identifies tasks by it)")
    return ls_task, ls.task_id(task, proj.task_key, f"task {ls_task}", name, None)


def _worker_or_none(ann: dict) -> str | None:
    try:
        return ls.worker_id(ann.get("completed_by"), "", "", None)
    except FormatError:
        return None


def event_json(event: dict) -> str:
    return json.dumps(event, separators=(",", ":"))
