"""The Label Studio webhook's per-project inbox: secret, event queue, and the job that
drains it.

Label Studio sends events one HTTP request at a time and expects a quick answer, but an
"updated" followed at once by a "deleted" must be applied in that order.  So the
receiver only appends the event to a per-project Redis list (``lsw:q``) and makes sure
one drain job exists; the job applies the events one by one from the head of the list,
and at most one drain job per project holds the lease (``lsw:drain`` = its job id):

* appending and taking the lease are one script, and the job gives the lease back in a
  script that refuses while the list is not empty, so an event is never left behind
  with nobody draining;
* the job peeks at the head, applies it, then pops it (only if it still holds the
  lease): a crash re-applies the event, which converges (see label_studio_events);
* a lease whose job is gone (finished, failed, lost) is taken over by the next event.

Each outcome (applied with counts, failed with a reason, ignored) goes to a capped log
and to counters, both shown by ``GET .../integrations/label-studio``.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
import uuid
from datetime import datetime, timezone

from rq import Callback, get_current_job

from .label_studio_events import EventRejected, apply_event
from .store import Store, digest

log = logging.getLogger("crowdqc.label_studio")

SECRET_HEADER = "X-Crowdqc-Webhook-Secret"
LOG_LENGTH = 50
# One drain job hands over to a fresh one after this long, so a steady stream of events
# never runs into the job timeout.
DRAIN_SECONDS = 60.0
# A lease whose job has not appeared in RQ yet is being enqueued, for this long at most.
ENQUEUE_GRACE = 30
WAITING = ("queued", "deferred", "scheduled", "created")

_PUSH = r"""
-- KEYS: queue, lease, counters ; ARGV: item, new job id, lease seconds
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'received', 1)
local holder = redis.call('GET', KEYS[2])
if holder then return {0, holder, redis.call('LLEN', KEYS[1])} end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
return {1, ARGV[2], redis.call('LLEN', KEYS[1])}
"""

_TAKE_OVER = r"""
-- KEYS: lease ; ARGV: old holder, new holder, lease seconds
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"""

_HEAD = r"""
-- KEYS: queue, lease ; ARGV: me, lease seconds.  {held, head item or false}
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {0, false} end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
return {1, redis.call('LINDEX', KEYS[1], 0)}
"""

_ACK = r"""
-- KEYS: queue, lease, log, counters ; ARGV: me, event id, outcome json, status, log length
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local head = redis.call('LINDEX', KEYS[1], 0)
if not head or string.sub(head, 1, #ARGV[2] + 1) ~= ARGV[2] .. '\n' then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[5]) - 1)
redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
return 1
"""

_RELEASE = r"""
-- KEYS: queue, lease ; ARGV: me.  1 released, 0 events arrived meanwhile, -1 not mine
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('LLEN', KEYS[1]) > 0 then return 0 end
redis.call('DEL', KEYS[2])
return 1
"""


class Inbox:
    def __init__(self, store: Store, pid: str):
        self.store, self.pid, self.r = store, pid, store.r

    def key(self, part: str) -> str:
        return self.store.pkey(self.pid, f"lsw{part}")

    # -- secret and options ------------------------------------------------------------------
    def configure(self, options: dict) -> dict:
        """A new secret (replacing any previous one at once) with the given options; the
        secret itself is only in the return value."""
        token = "cqwh_" + secrets.token_urlsafe(32)
        dig = digest(token)
        record = {"digest": dig, "secret_id": dig[:12], "created_at": _now_iso(),
                  "field": options.get("field") or "", "task_key": options.get("task_key") or ""}
        self.r.hset(self.key(""), mapping=record)
        return {**self.config(), "secret": token}

    def config(self) -> dict | None:
        raw = self.r.hgetall(self.key(""))
        if not raw:
            return None
        rec = {k.decode(): v.decode("utf-8") for k, v in raw.items()}
        return {"secret_id": rec["secret_id"], "created_at": rec["created_at"],
                "field": rec.get("field") or None, "task_key": rec.get("task_key") or None}

    def disable(self) -> bool:
        return bool(self.r.delete(self.key("")))

    def secret_matches(self, token: str) -> bool:
        stored = self.r.hget(self.key(""), "digest")
        # Compare even when there is no secret, so timing tells nothing either way.
        ok = hmac.compare_digest(digest(token).encode(), stored or b"0" * 64)
        return ok and stored is not None

    # -- receiving ---------------------------------------------------------------------------
    def ignore(self, action: str, reason: str) -> dict:
        outcome = {"id": uuid.uuid4().hex, "action": action, "status": "ignored", "reason": reason,
                   "received_at": _now_iso()}
        p = self.r.pipeline(transaction=True)
        p.hincrby(self.key(":n"), "received", 1)
        p.hincrby(self.key(":n"), "ignored", 1)
        p.lpush(self.key(":log"), json.dumps(outcome))
        p.ltrim(self.key(":log"), 0, LOG_LENGTH - 1)
        p.execute()
        return outcome

    def push(self, jobs, body: dict) -> dict:
        """Queue an event and make sure a drain job will apply it."""
        event_id = uuid.uuid4().hex
        event = {"id": event_id, "received_at": _now_iso(), "body": body}
        item = event_id + "\n" + json.dumps(event, separators=(",", ":"))
        lease = self._lease(jobs.settings)
        new_id = uuid.uuid4().hex
        push = self.r.register_script(_PUSH)
        took, holder, pending = push(keys=[self.key(":q"), self.key(":drain"), self.key(":n")], args=[item, new_id, lease])
        holder = holder.decode() if isinstance(holder, bytes) else holder
        if not took and not self._alive(jobs, holder, lease):
            take_over = self.r.register_script(_TAKE_OVER)
            took = take_over(keys=[self.key(":drain")], args=[holder, new_id, lease])
            if took:
                log.warning("label studio inbox of %s: drain job %s is gone; starting %s", self.pid, holder, new_id)
        if took:
            self._enqueue(jobs, new_id)
        return {"id": event_id, "action": body["action"], "status": "queued", "pending": int(pending)}

    def _enqueue(self, jobs, job_id: str) -> None:
        from .imports import job_settings

        try:
            jobs.queue.enqueue(
                drain,
                job_id=job_id,
                kwargs={"prefix": self.store.prefix, "project": self.pid, "settings": job_settings(jobs.settings)},
                job_timeout=jobs.settings.job_timeout_seconds,
                result_ttl=3600,
                failure_ttl=7 * 86400,
                meta={"project": self.pid},
                description=f"label studio events of {self.pid}",
                on_failure=Callback(drain_failed),
            )
        except Exception:
            # The event stays queued; the next one takes the lease again.
            self.store.delete_if(self.key(":drain"), job_id)
            raise

    @staticmethod
    def _lease(settings) -> int:
        # Long enough to wait behind a queue of aggregation jobs.
        return int(settings.job_timeout_seconds + 3600)

    def _alive(self, jobs, job_id: str, lease: int) -> bool:
        job = jobs.rq_job(job_id)
        if job is None:
            # Either being enqueued by a concurrent request right now, or lost.
            return self.r.ttl(self.key(":drain")) > lease - ENQUEUE_GRACE
        status = job.get_status(refresh=False)
        status = getattr(status, "value", status)
        if status in WAITING:
            return True
        if status != "started":
            return False
        beat = job.last_heartbeat or job.started_at
        if beat is None:
            return True
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=timezone.utc)
        return (datetime.now(timezone.utc) - beat).total_seconds() <= jobs.settings.job_lost_seconds

    # -- status ------------------------------------------------------------------------------
    def view(self, limit: int = LOG_LENGTH) -> dict:
        p = self.r.pipeline(transaction=True)
        p.hgetall(self.key(":n"))
        p.llen(self.key(":q"))
        p.lrange(self.key(":log"), 0, limit - 1)
        p.hgetall(self.store.pkey(self.pid, "ls"))
        counts, pending, recent, tags = p.execute()
        counts = {k.decode(): int(v) for k, v in counts.items()}
        tags = {k.decode(): v.decode("utf-8") for k, v in tags.items()}
        config = self.config()
        return {
            "configured": config is not None,
            **(config or {"secret_id": None, "created_at": None, "field": None, "task_key": None}),
            "from_name": tags.get("from_name"),
            "to_name": tags.get("to_name"),
            "events": {k: counts.get(k, 0) for k in ("received", "applied", "failed", "ignored")} | {"pending": int(pending)},
            "recent": [json.loads(x) for x in recent],
        }


# -- the drain job --------------------------------------------------------------------------------


def drain(prefix, project, settings=None):
    """RQ entry point: apply the project's queued events in order, then give the lease
    back (or hand it to a fresh job after DRAIN_SECONDS)."""
    from .config import Settings

    job = get_current_job()
    conf = Settings().updated(settings or {})
    inbox = Inbox(Store(job.connection, prefix), project)
    keys_q = [inbox.key(":q"), inbox.key(":drain")]
    lease = Inbox._lease(conf)
    head = inbox.r.register_script(_HEAD)
    ack = inbox.r.register_script(_ACK)
    release = inbox.r.register_script(_RELEASE)
    started = time.monotonic()
    done = {"applied": 0, "failed": 0, "changed": False}
    while True:
        held, item = head(keys=keys_q, args=[job.id, lease])
        if not held:
            break
        if item is None:
            if release(keys=keys_q, args=[job.id]) != 0:
                break
            continue
        if time.monotonic() - started > DRAIN_SECONDS:
            _hand_over(inbox, job.id, conf, lease)
            break
        event_id, _, raw = item.partition(b"\n")
        event = json.loads(raw)
        outcome = _apply(inbox, event, conf)
        status = outcome["status"]
        ack(keys=[*keys_q, inbox.key(":log"), inbox.key(":n")],
            args=[job.id, event_id, json.dumps(outcome), status, LOG_LENGTH])
        done[status] += 1
        done["changed"] |= status == "applied" and _changed(outcome["result"])
    if done["changed"]:
        _after_change(inbox.store, project, conf)
    return {k: done[k] for k in ("applied", "failed")}


def _apply(inbox: Inbox, event: dict, conf) -> dict:
    outcome = {"id": event["id"], "action": event["body"]["action"], "received_at": event["received_at"]}
    options = inbox.config() or {}
    try:
        result = apply_event(inbox.store, inbox.pid, event, options, conf)
    except EventRejected as exc:
        return {**outcome, "status": "failed", "reason": str(exc), "processed_at": _now_iso()}
    except Exception as exc:  # noqa: BLE001 - one broken event must not block the project
        import redis

        if isinstance(exc, redis.exceptions.RedisError):
            raise  # infrastructure: the event stays at the head and is applied again
        log.exception("label studio event %s of %s could not be applied", event["id"], inbox.pid)
        return {**outcome, "status": "failed", "reason": "internal error while applying the event", "processed_at": _now_iso()}
    return {**outcome, "status": "applied", "result": result, "processed_at": _now_iso()}


def _changed(result: dict) -> bool:
    return any(result.get(k) for k in ("accepted", "replaced", "removed", "gold", "gold_removed"))


def _hand_over(inbox: Inbox, me: str, conf, lease: int) -> None:
    from .jobs import Jobs

    new_id = uuid.uuid4().hex
    take_over = inbox.r.register_script(_TAKE_OVER)
    if take_over(keys=[inbox.key(":drain")], args=[me, new_id, lease]):
        inbox._enqueue(Jobs(inbox.r, conf), new_id)


def _after_change(store: Store, project: str, conf) -> None:
    meta = store.get_project(project) or {}
    agg = meta.get("aggregation") or {}
    if not agg.get("auto"):
        return
    from .jobs import Jobs

    try:
        Jobs(store.r, conf).schedule_auto(project, agg.get("method", "dawid_skene"), agg.get("params") or {})
    except Exception:  # noqa: BLE001 - the events themselves were applied
        log.warning("could not schedule the automatic aggregation after label studio events", exc_info=True)


def drain_failed(job, connection, exc_type=None, exc_value=None, tb=None):
    """RQ failure callback: give the lease back, so that the next event starts a new job
    (the events stay queued)."""
    prefix = (job.kwargs or {}).get("prefix", "crowdqc:")
    project = (job.kwargs or {}).get("project")
    if project:
        store = Store(connection, prefix)
        store.delete_if(Inbox(store, project).key(":drain"), job.id)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
