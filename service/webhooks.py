"""Outbound webhooks: subscriptions, the events of a newly published result, signed deliveries.

Subscriptions live in the project's ``wh`` hash (id -> JSON, the signing secret included:
it must be used, so it cannot be stored as a digest like the API keys); the outcome of the
latest delivery of each lives in ``whs`` so that a delivery never rewrites the
subscription itself.

When an aggregation job publishes a version, :meth:`Outbox.publish` compares it with the
version that was current before (kept readable for the grace period), in bulk: the old
rows are read ``COMPARE_CHUNK`` at a time and compared as arrays with the new analysis,
which is still in memory.  Events are enqueued as one RQ job per (subscription, event) on
the aggregation queue; each job signs and POSTs its event and RQ retries it with the
intervals of ``Settings.webhook_retry_intervals``.  Only the standard library speaks HTTP.

Task and worker events carry lists: at most ``TASKS_PER_EVENT`` items per delivery and
``MAX_TASKS_PER_VERSION`` per event type and version (``truncated`` then says the rest
was left out; the export endpoint has everything).  See docs/webhooks.md.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import secrets
import ssl
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

import numpy as np

from .store import Store

log = logging.getLogger("crowdqc.webhooks")

EVENT_TYPES = ("aggregation.finished", "task.consensus_changed", "task.confidence_reached", "worker.flagged")
TASKS_PER_EVENT = 500
MAX_TASKS_PER_VERSION = 25_000
# not_estimable only says a worker has too few answers yet: every new worker has it.
TRIGGER_FLAGS = ("suspected_spammer", "low_agreement", "low_gold_accuracy")
MAX_SUBSCRIPTIONS = 20
COMPARE_CHUNK = 10_000
# Bytes of a failed response's body kept for the delivery status.
ERROR_SNIPPET = 200
# Worker figures that a worker.flagged event leaves out (large, and one GET away).
_WORKER_OMIT = ("confusion",)


class LimitReached(Exception):
    pass


class DeliveryFailed(Exception):
    """A delivery attempt did not get a 2xx; raised so that RQ retries the job."""


# -- subscriptions ---------------------------------------------------------------------------


def _subs_key(store: Store, project: str) -> str:
    return store.pkey(project, "wh")


def _status_key(store: Store, project: str) -> str:
    return store.pkey(project, "whs")


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def create(store: Store, project: str, url: str, events: list[str], confidence_target: float | None) -> dict:
    """A new subscription, with its secret (the only time the secret is returned)."""
    key = _subs_key(store, project)
    if store.r.hlen(key) >= MAX_SUBSCRIPTIONS:
        raise LimitReached(f"project {project!r} already has {MAX_SUBSCRIPTIONS} webhooks; delete one first")
    record = {
        "id": secrets.token_hex(8),
        "url": url,
        "events": list(dict.fromkeys(events)),
        "confidence_target": confidence_target,
        "created_at": _now_iso(),
        "secret": "whsec_" + secrets.token_urlsafe(32),
    }
    store.r.hset(key, record["id"], json.dumps(record))
    return record


def _public(record: dict, status: bytes | None) -> dict:
    out = {k: v for k, v in record.items() if k != "secret"}
    out["last_delivery"] = json.loads(status) if status else None
    return out


def list_public(store: Store, project: str) -> list[dict]:
    p = store.r.pipeline(transaction=True)
    p.hgetall(_subs_key(store, project))
    p.hgetall(_status_key(store, project))
    subs, statuses = p.execute()
    records = [json.loads(v) for v in subs.values()]
    records.sort(key=lambda r: (r["created_at"], r["id"]))
    return [_public(r, statuses.get(r["id"].encode())) for r in records]


def get_public(store: Store, project: str, sub_id: str) -> dict | None:
    p = store.r.pipeline(transaction=True)
    p.hget(_subs_key(store, project), sub_id)
    p.hget(_status_key(store, project), sub_id)
    raw, status = p.execute()
    return _public(json.loads(raw), status) if raw else None


def delete(store: Store, project: str, sub_id: str) -> bool:
    p = store.r.pipeline(transaction=True)
    p.hdel(_subs_key(store, project), sub_id)
    p.hdel(_status_key(store, project), sub_id)
    removed, _ = p.execute()
    return bool(removed)


def _record_status(store: Store, project: str, sub_id: str, status: dict) -> None:
    # A subscription deleted while its delivery was in flight leaves no status behind.
    if store.r.hexists(_subs_key(store, project), sub_id):
        store.r.hset(_status_key(store, project), sub_id, json.dumps(status))


# -- events of a new version -----------------------------------------------------------------


def _event(event_type: str, project: str, data: dict) -> dict:
    return {"id": "evt_" + uuid.uuid4().hex, "type": event_type, "created": _now_iso(), "project": project, "data": data}


def _batches(event_type: str, project: str, base: dict, items: list[dict], total: int, key: str) -> list[dict]:
    """Events of ``event_type`` carrying ``items`` (already capped) in batches."""
    chunks = [items[i : i + TASKS_PER_EVENT] for i in range(0, len(items), TASKS_PER_EVENT)]
    return [
        _event(event_type, project, {**base, key: chunk, "total": total, "truncated": total > len(items),
                                     "batch": {"index": i, "count": len(chunks)}})
        for i, chunk in enumerate(chunks)
    ]


def _float_or_none(x: float):
    return None if np.isnan(x) else float(x)


class Comparison:
    """The new analysis against the previous version's stored consensus, as arrays."""

    def __init__(self, new_names: list[str], new_codes, new_conf, declared: list, old_names: list[str], old_codes, old_conf):
        self.new_names, self.old_names, self.declared = new_names, old_names, declared
        self.new_codes, self.new_conf = np.asarray(new_codes, dtype=np.int64), np.asarray(new_conf, dtype=np.float64)
        old_codes, old_conf = np.asarray(old_codes, dtype=np.int64), np.asarray(old_conf, dtype=np.float64)
        position = {name: i for i, name in enumerate(old_names)}
        idx = np.fromiter((position.get(n, -1) for n in new_names), dtype=np.int64, count=len(new_names))
        seen = idx >= 0
        self.prev_codes = np.full(len(new_names), -1, dtype=np.int64)
        self.prev_conf = np.full(len(new_names), np.nan)
        self.prev_codes[seen] = old_codes[idx[seen]]
        self.prev_conf[seen] = old_conf[idx[seen]]
        matched = np.zeros(len(old_names), dtype=bool)
        matched[idx[seen]] = True
        self.removed = np.flatnonzero(~matched)
        self.old_codes, self.old_conf = old_codes, old_conf

    def _label(self, code: int):
        return self.declared[code] if code >= 0 else None

    def changed(self) -> tuple[list[dict], int]:
        """Tasks whose label differs, new tasks (old label null) and tasks no longer in
        the consensus (new label null), in task order; (capped items, total)."""
        changed = np.flatnonzero(self.prev_codes != self.new_codes)
        total = int(changed.size + self.removed.size)
        items = [
            {"task": self.new_names[i], "old_label": self._label(int(self.prev_codes[i])),
             "new_label": self._label(int(self.new_codes[i])), "confidence": float(self.new_conf[i]),
             "old_confidence": _float_or_none(self.prev_conf[i])}
            for i in changed[:MAX_TASKS_PER_VERSION].tolist()
        ]
        room = MAX_TASKS_PER_VERSION - len(items)
        items += [
            {"task": self.old_names[i], "old_label": self._label(int(self.old_codes[i])), "new_label": None,
             "confidence": None, "old_confidence": _float_or_none(self.old_conf[i])}
            for i in self.removed[: max(room, 0)].tolist()
        ]
        return items, total

    def reached(self, target: float) -> tuple[list[dict], int]:
        """Tasks at or above ``target`` that were below it (or absent) before."""
        # NaN (no previous value) compares False, so absent tasks count as below.
        hits = np.flatnonzero((self.new_conf >= target) & ~(self.prev_conf >= target))
        items = [
            {"task": self.new_names[i], "label": self._label(int(self.new_codes[i])), "confidence": float(self.new_conf[i]),
             "old_confidence": _float_or_none(self.prev_conf[i])}
            for i in hits[:MAX_TASKS_PER_VERSION].tolist()
        ]
        return items, int(hits.size)


class Outbox:
    """The subscriptions of one project, while a job publishes a version."""

    def __init__(self, store: Store, project: str, subscriptions: list[dict], queue, options: dict | None):
        self.store, self.project, self.subs, self.queue = store, project, subscriptions, queue
        from .config import Settings

        options = options or {}
        self.intervals = [int(x) for x in options.get("retry_intervals", Settings.webhook_retry_intervals)]
        self.timeout = float(options.get("timeout", Settings.webhook_timeout_seconds))

    @classmethod
    def open(cls, store: Store, project: str, job, options: dict | None) -> "Outbox | None":
        """None when the project has no subscription (or outside a job): nothing to do."""
        if job is None:
            return None
        raw = store.r.hvals(_subs_key(store, project))
        if not raw:
            return None
        from rq import Queue
        from rq.serializers import JSONSerializer

        queue = Queue(job.origin, connection=store.r, serializer=JSONSerializer)
        return cls(store, project, [json.loads(v) for v in raw], queue, options)

    def publish(self, meta: dict, analysis, previous: dict | None, info: dict) -> int:
        """Enqueue the deliveries for a newly published version; returns how many.  Never
        raises: the result is published whatever happens to its notifications."""
        try:
            return self._publish(meta, analysis, previous, info)
        except Exception:  # noqa: BLE001
            log.exception("webhook events of project %s version %s were not sent", self.project, info.get("version"))
            return 0

    def _publish(self, meta, analysis, previous, info) -> int:
        version = int(info["version"])
        prev_version = int(previous["version"]) if previous else None
        base = {"version": version, "previous_version": prev_version}
        by_type: dict[str, list[dict]] = {}
        reached: dict[float, list[dict]] = {}
        changes = None
        # Without a previous version every task is new; an expired one (a job that took
        # longer than the grace period to get here) cannot be compared at all.
        if prev_version is None or self.store.version_exists(self.project, prev_version):
            cmp = self._compare(meta, analysis, prev_version)
            changed, n_changed = cmp.changed()
            flagged, n_flagged = self._newly_flagged(analysis, version, prev_version)
            changes = {"tasks_changed": n_changed, "workers_newly_flagged": n_flagged}
            by_type["task.consensus_changed"] = _batches("task.consensus_changed", self.project, base, changed, n_changed, "tasks")
            by_type["worker.flagged"] = _batches("worker.flagged", self.project, base, flagged, n_flagged, "workers")
            for target in {s["confidence_target"] for s in self.subs if "task.confidence_reached" in s["events"]}:
                items, total = cmp.reached(target)
                reached[target] = _batches("task.confidence_reached", self.project, {**base, "confidence_target": target},
                                           items, total, "tasks")
        else:
            log.warning("project %s: version %s expired before version %s was compared with it; no task events",
                        self.project, prev_version, version)
        by_type["aggregation.finished"] = [_event("aggregation.finished", self.project, {
            **base,
            "method": info.get("method"),
            "params": info.get("params") or {},
            "snapshot_revision": info.get("snapshot_revision"),
            "finished_at": info.get("finished_at"),
            "seconds": info.get("seconds"),
            "summary": info.get("summary"),
            "changes": changes,
        })]
        jobs = []
        for sub in self.subs:
            for event_type in sub["events"]:
                if event_type == "task.confidence_reached":
                    chosen = reached.get(sub["confidence_target"], [])
                else:
                    chosen = by_type.get(event_type, [])
                jobs += [self._job(sub["id"], e) for e in chosen]
        if jobs:
            self.queue.enqueue_many(jobs)
        return len(jobs)

    def _compare(self, meta, analysis, prev_version: int | None) -> Comparison:
        from .jobs import label_converter

        a = analysis.answers
        conv = label_converter(meta)
        declared = [conv(str(c)) for c in a.classes.tolist()]
        code_of = {label: i for i, label in enumerate(declared)}
        old_names, old_codes, old_conf = [], [], []
        if prev_version is not None:
            total = self.store.consensus_count(self.project, prev_version)
            for start in range(0, total, COMPARE_CHUNK):
                rows = self.store.consensus_rows(self.project, prev_version, start, start + COMPARE_CHUNK)
                old_names += [r["task"] for r in rows]
                # -2: a label the project no longer declares; it differs from every new one.
                old_codes += [code_of.get(r["label"], -2) for r in rows]
                old_conf += [r["confidence"] for r in rows]
        return Comparison(a.task_names.tolist(), analysis.labels, analysis.confidence, declared, old_names, old_codes, old_conf)

    def _newly_flagged(self, analysis, version: int, prev_version: int | None) -> tuple[list[dict], int]:
        flags = analysis.reliability.flags_
        flagged = np.zeros(analysis.answers.n_workers, dtype=bool)
        for name in TRIGGER_FLAGS:
            flagged |= np.asarray(flags[name], dtype=bool)
        names = analysis.answers.worker_names[flagged].tolist()
        out, total = [], 0
        for i in range(0, len(names), COMPARE_CHUNK):
            chunk = [str(n) for n in names[i : i + COMPARE_CHUNK]]
            new_rows = self.store.worker_rows(self.project, version, chunk)
            old_rows = self.store.worker_rows(self.project, prev_version, chunk) if prev_version is not None else [None] * len(chunk)
            for new, old in zip(new_rows, old_rows):
                if new is None:
                    continue
                before = set(old["flags"]) if old else set()
                fresh = [f for f in TRIGGER_FLAGS if f in new["flags"] and f not in before]
                if fresh:
                    total += 1
                    if len(out) < MAX_TASKS_PER_VERSION:
                        out.append({**{k: v for k, v in new.items() if k not in _WORKER_OMIT}, "new_flags": fresh})
        return out, total

    def _job(self, sub_id: str, event: dict):
        retry = None
        if self.intervals:
            from rq import Retry

            retry = Retry(max=len(self.intervals), interval=self.intervals)
        return self.queue.prepare_data(
            deliver,
            kwargs={"prefix": self.store.prefix, "project": self.project, "subscription": sub_id, "event": event,
                    "timeout": self.timeout, "attempts": len(self.intervals) + 1},
            # connect, send and each read may each take the whole timeout
            timeout=int(self.timeout * 3) + 30,
            result_ttl=3600,
            failure_ttl=7 * 86400,
            description=f"webhook {event['type']} of {self.project} to {sub_id}",
            meta={"project": self.project, "webhook": sub_id, "event": event["id"]},
            retry=retry,
        )


# -- delivery --------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Crowdqc-Signature value: HMAC-SHA256 over "<timestamp>.<body>"."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def origin(url: str) -> str:
    """scheme://host[:port] only: query strings often carry tokens and must not be logged."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def post(url: str, body: bytes, headers: dict, timeout: float) -> tuple[int | None, str | None]:
    """(HTTP status or None, error or None).  Redirects are never followed: a 3xx is a
    failed delivery, so a receiver cannot send signed events to another host."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", target, body=body, headers=headers)
        resp = conn.getresponse()
        status, location = resp.status, resp.getheader("Location")
        snippet = resp.read(ERROR_SNIPPET)
    except TimeoutError:
        return None, f"timed out after {timeout:g} s"
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]
    finally:
        conn.close()
    if 200 <= status < 300:
        return status, None
    if 300 <= status < 400:
        return status, f"HTTP {status}: redirect to {location!r} not followed (register the final URL)"
    return status, f"HTTP {status}: {snippet.decode('utf-8', 'replace')}"


def deliver(prefix, project, subscription, event, timeout=10.0, attempts=1):
    """RQ entry point: POST one signed event to one subscription (raises for a retry)."""
    from rq import get_current_job

    job = get_current_job()
    store = Store(job.connection, prefix)
    raw = store.r.hget(_subs_key(store, project), subscription)
    if raw is None:
        return {"skipped": "the subscription was deleted"}
    sub = json.loads(raw)
    retries_left = job.retries_left if job.retries_left is not None else 0
    attempt = attempts - retries_left
    # The event is the job's argument: every attempt sends the very same bytes.
    body = json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
    ts = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "crowdqc-webhooks/1",
        "X-Crowdqc-Event": event["type"],
        "X-Crowdqc-Delivery": event["id"],
        "X-Crowdqc-Timestamp": ts,
        "X-Crowdqc-Signature": sign(sub["secret"], ts, body),
        "X-Crowdqc-Attempt": str(attempt),
    }
    status, error = post(sub["url"], body, headers, timeout)
    ok = error is None
    outcome = "delivered" if ok else ("retrying" if retries_left > 0 else "failed")
    _record_status(store, project, subscription, {
        "event": event["id"], "type": event["type"], "status": outcome, "http_status": status, "attempt": attempt,
        "error": error, "at": _now_iso(),
    })
    if not ok:
        raise DeliveryFailed(f"webhook {subscription} ({origin(sub['url'])}), attempt {attempt}: {error}")
    return {"status": status, "attempt": attempt}
