"""Aggregation jobs on RQ (JSON serializer, no pickles).

The job function is thin: take a consistent snapshot of the project's answers, call
``service.analysis.analyse``, publish the result as a new version.  Enqueueing side:
requests for the same (method, params) join a job that is still queued, and automatic
aggregation is debounced (one scheduled job per project, pushed back while labels keep
arriving, but never beyond ``auto_max_wait_seconds``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from datetime import datetime, timedelta, timezone

from rq import Callback, Queue, get_current_job
from rq.job import Dependency
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from .store import Store

log = logging.getLogger("crowdqc.jobs")

WAITING = ("queued", "deferred", "scheduled", "created")
# A job record whose RQ job never appeared (the enqueuing process died) stops blocking
# joins after this long.
ORPHAN_SECONDS = 30


class JobFailure(Exception):
    """A failure whose message is safe and useful to show to the client."""


class WorkerLost(JobFailure):
    """The work horse found its worker dead (see service.worker.orphaned)."""


def check_not_orphaned() -> None:
    from .worker import orphaned

    if orphaned():
        raise WorkerLost("the worker running this job stopped (killed or crashed); the previous result is still served")


def known_methods() -> tuple[str, ...]:
    from . import analysis

    return tuple(analysis.METHODS)


def check_params(method: str, params: dict | None) -> dict:
    """Validated parameters (ValueError naming the bad one)."""
    from . import analysis

    return analysis.check_params(method, params)


def signature(method: str, params: dict | None) -> str:
    canon = json.dumps({"m": method, "p": params or {}}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]


class Jobs:
    def __init__(self, redis, settings):
        self.r = redis
        self.settings = settings
        self.store = Store(redis, settings.key_prefix)
        self.queue = Queue(settings.queue_name, connection=redis, serializer=JSONSerializer)

    # -- enqueueing --------------------------------------------------------------------
    def _enqueue(self, job_id, pid, method, params, marker, delay=None):
        kwargs = {
            "prefix": self.settings.key_prefix,
            "project": pid,
            "method": method,
            "params": params or {},
            "marker": marker,
            "grace": self.settings.result_grace_seconds,
            "disagreement_rows": self.settings.disagreement_rows,
            "webhook_options": {
                "retry_intervals": list(self.settings.webhook_retry_intervals),
                "timeout": self.settings.webhook_timeout_seconds,
            },
        }
        opts = dict(
            job_id=job_id,
            kwargs=kwargs,
            job_timeout=self.settings.job_timeout_seconds,
            result_ttl=7 * 86400,
            failure_ttl=7 * 86400,
            meta={"project": pid},
            description=f"aggregate {pid} ({method})",
            # Also runs when RQ's registry cleanup finds the job abandoned (worker killed).
            on_failure=Callback(job_failed),
        )
        if delay is None:
            imports = self.running_imports(pid)
            if imports:
                # A snapshot taken while an import stores its batches would hold part of the
                # file: wait for it (and run even if it fails: its answers are then whole or none
                # of a failed batch, and the rest of the project still deserves a result).
                opts["depends_on"] = Dependency(jobs=imports, allow_failure=True)
                opts["meta"]["waiting_for"] = imports
            return self.queue.enqueue(run_aggregation, **opts)
        return self.queue.enqueue_in(timedelta(seconds=delay), run_aggregation, **opts)

    def running_imports(self, pid: str) -> list[str]:
        """Imports of ``pid`` not ended yet (queued or running); ended ones are forgotten."""
        key = self.store.pkey(pid, "imports")
        active, ended = [], []
        for raw in sorted(self.r.smembers(key)):
            import_id = raw.decode()
            status = self.rq_status(import_id)
            (active if status in (*WAITING, "started") else ended).append(import_id)
        if ended:
            self.r.srem(key, *ended)
        return active

    def _new_record(self, pid, method, params, kind) -> str:
        job_id = uuid.uuid4().hex
        record = {"project": pid, "method": method, "params": params or {}, "kind": kind, "created": time.time()}
        self.store.save_job(job_id, record, ttl=7 * 86400)
        return job_id

    def _waiting(self, job_id: str) -> bool:
        """Whether the job has not started yet (so its snapshot will include new data)."""
        status = self.rq_status(job_id)
        if status is None:
            record = self.store.get_job(job_id)
            return bool(record) and time.time() - record["created"] < ORPHAN_SECONDS
        return status in WAITING

    def request(self, pid: str, method: str, params: dict | None) -> tuple[str, bool]:
        """Enqueue an aggregation, or join the same one still waiting; (job id, joined)."""
        marker = self.store.pkey(pid, f"q:{signature(method, params)}")
        for _ in range(10):
            current = self.r.get(marker)
            if current is not None:
                job_id = current.decode()
                if self._waiting(job_id):
                    return job_id, True
                self.store.delete_if(marker, job_id)
                continue
            job_id = self._new_record(pid, method, params, "manual")
            if self.r.set(marker, job_id, nx=True, ex=self.settings.job_timeout_seconds + 3600):
                try:
                    self._enqueue(job_id, pid, method, params, marker)
                except Exception:
                    self.store.delete_if(marker, job_id)
                    raise
                return job_id, False
            self.r.delete(self.store.job_key(job_id))
        raise RuntimeError("could not enqueue the aggregation (contention)")

    def schedule_auto(self, pid: str, method: str, params: dict | None) -> str:
        """Debounced automatic aggregation after new labels; returns the job id."""
        marker = self.store.pkey(pid, "auto")
        quiet = max(self.settings.auto_quiet_seconds, 0.0)
        for _ in range(10):
            current = self.r.get(marker)
            now = time.time()
            if current is not None:
                job_id = current.decode()
                status = self.rq_status(job_id)
                if status == "scheduled":
                    record = self.store.get_job(job_id) or {}
                    first = record.get("created", now)
                    when = min(now + quiet, first + self.settings.auto_max_wait_seconds)
                    # XX: only move it while it is still scheduled; if the scheduler has
                    # just enqueued it, it will run now and see these labels anyway.
                    registry = ScheduledJobRegistry(queue=self.queue)
                    self.r.zadd(registry.key, {job_id: math.ceil(when)}, xx=True)
                    return job_id
                if self._waiting(job_id):
                    return job_id
                self.store.delete_if(marker, job_id)
                continue
            job_id = self._new_record(pid, method, params, "auto")
            if self.r.set(marker, job_id, nx=True, ex=int(self.settings.auto_max_wait_seconds + self.settings.job_timeout_seconds + 3600)):
                try:
                    self._enqueue(job_id, pid, method, params, marker, delay=quiet)
                except Exception:
                    self.store.delete_if(marker, job_id)
                    raise
                return job_id
            self.r.delete(self.store.job_key(job_id))
        raise RuntimeError("could not schedule the aggregation (contention)")

    # -- status ------------------------------------------------------------------------
    def rq_job(self, job_id: str) -> Job | None:
        try:
            return Job.fetch(job_id, connection=self.r, serializer=JSONSerializer)
        except NoSuchJobError:
            return None

    def rq_status(self, job_id: str) -> str | None:
        job = self.rq_job(job_id)
        if job is None:
            return None
        status = job.get_status(refresh=False)
        return getattr(status, "value", status)

    def _lost(self, job_id: str, job: Job) -> str | None:
        """A reason if the job is 'started' but its worker stopped sending heartbeats
        (SIGKILL, machine lost).  RQ itself notices only after ~a minute and at its next
        maintenance pass (minutes); clients should not wait that long to hear it."""
        beat = job.last_heartbeat or job.started_at
        if beat is None:
            return None
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=timezone.utc)
        silent = (datetime.now(timezone.utc) - beat).total_seconds()
        if silent <= self.settings.job_lost_seconds:
            return None
        reason = f"the worker running this job stopped responding (no heartbeat for {silent:.0f} s: killed or crashed); the previous result is still served"
        self.store.update_job(job_id, status="failed", reason=reason)
        started = job.started_at.replace(tzinfo=timezone.utc) if job.started_at and job.started_at.tzinfo is None else job.started_at
        from .observability import record_job_outcome

        record_job_outcome(self.r, self.settings.key_prefix, job_id, "lost", (beat - started).total_seconds() if started else None)
        log.warning("job %s marked failed: worker lost (no heartbeat for %.0f s)", job_id, silent)
        return reason

    def status(self, job_id: str) -> dict | None:
        """The public view of a job (None if unknown)."""
        record = self.store.get_job(job_id)
        if record is None:
            return None
        out = {
            "id": job_id,
            "project": record["project"],
            "method": record["method"],
            "params": record.get("params") or {},
            "kind": record.get("kind", "manual"),
            "created_at": _iso(record.get("created")),
        }
        job = self.rq_job(job_id)
        rq_status = None
        if job is not None:
            rq_status = job.get_status(refresh=False)
            rq_status = getattr(rq_status, "value", rq_status)
        if record.get("status") in ("finished", "failed"):
            status = record["status"]
        elif rq_status is None:
            status = "queued" if time.time() - record["created"] < ORPHAN_SECONDS else "failed"
            if status == "failed":
                record.setdefault("reason", "the job was lost before it ran (worker or Redis restart)")
        elif rq_status in WAITING:
            status = "queued"
        elif rq_status == "started":
            status = "running"
            reason = self._lost(job_id, job)
            if reason:
                status = "failed"
                record["reason"] = reason
        elif rq_status == "finished":
            status = "finished"
        else:
            status = "failed"
        out["status"] = status
        if job is not None:
            waiting = [i for i in (job.meta or {}).get("waiting_for", []) if rq_status == "deferred"]
            if waiting:
                out["waiting_for"] = waiting
            if rq_status == "scheduled":
                try:
                    when = ScheduledJobRegistry(queue=self.queue).get_scheduled_time(job)
                    out["scheduled_for"] = when.replace(tzinfo=timezone.utc).isoformat() if when.tzinfo is None else when.isoformat()
                except Exception:  # noqa: BLE001 - a job that just left the registry
                    pass
            progress = (job.meta or {}).get("progress")
            if progress:
                out["progress"] = progress
            if job.started_at:
                out["started_at"] = _iso_dt(job.started_at)
            if job.ended_at:
                out["ended_at"] = _iso_dt(job.ended_at)
        if status == "finished" and record.get("result") is not None:
            out["result"] = record["result"]
        if status == "failed":
            out["reason"] = record.get("reason") or (
                "the job was stopped or timed out" if rq_status in ("stopped", "canceled") else "internal error in the aggregation job"
            )
        return out


def _iso(ts) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).isoformat()


def _iso_dt(dt) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.isoformat()


# -- the job function ------------------------------------------------------------------------


def run_aggregation(prefix, project, method, params, marker=None, grace=600, disagreement_rows=1000, webhook_options=None):
    """RQ entry point (arguments are JSON values)."""
    job = get_current_job()
    store = Store(job.connection, prefix)
    store.set_grace(grace)
    if marker:
        # Before the snapshot: any request that still joins us stored its labels first.
        store.delete_if(marker, job.id)
    from .observability import record_job_outcome

    started = time.time()
    try:
        result = aggregate_project(store, project, method, params, job=job, disagreement_rows=disagreement_rows,
                                   webhook_options=webhook_options)
    except JobFailure as exc:
        store.update_job(job.id, status="failed", reason=str(exc))
        lost = isinstance(exc, WorkerLost)
        record_job_outcome(job.connection, prefix, job.id, "lost" if lost else "failed", None if lost else time.time() - started)
        raise
    except Exception as exc:
        from aggregation import AnswersError

        reason = str(exc) if isinstance(exc, (AnswersError, ValueError, TypeError)) else "internal error in the aggregation job"
        store.update_job(job.id, status="failed", reason=reason)
        record_job_outcome(job.connection, prefix, job.id, "failed", time.time() - started)
        raise
    store.update_job(job.id, status="finished", result=result)
    record_job_outcome(job.connection, prefix, job.id, "finished", time.time() - started)
    return result


def job_failed(job, connection, exc_type=None, exc_value=None, tb=None):
    """RQ failure callback: also called for failures the job could not report itself
    (work horse killed, job timeout, abandoned job found by RQ's registry cleanup)."""
    from rq.exceptions import AbandonedJobError

    from .observability import record_job_outcome

    prefix = (job.kwargs or {}).get("prefix", "crowdqc:")
    store = Store(connection, prefix)
    record = store.get_job(job.id) or {}
    lost = exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError)
    if record.get("status") not in ("finished", "failed"):
        reason = (
            "the worker running this job stopped (killed or crashed); the previous result is still served"
            if lost
            else "the aggregation job was stopped or timed out"
        )
        store.update_job(job.id, status="failed", reason=reason)
    started = job.started_at
    seconds = None
    if started is not None:
        if started.tzinfo is None:
            started = started.replace(tzinfo=timezone.utc)
        seconds = (datetime.now(timezone.utc) - started).total_seconds()
    record_job_outcome(connection, prefix, job.id, "lost" if lost else "failed", None if lost else seconds)


def aggregate_project(store: Store, project: str, method: str, params: dict | None, job=None, disagreement_rows=1000,
                      webhook_options=None) -> dict:
    meta = store.get_project(project)
    if meta is None:
        raise JobFailure(f"project {project!r} no longer exists")
    snap = store.snapshot(project)
    if snap.n_answers == 0:
        raise JobFailure("answers must contain at least one [task, worker, label] row")
    progress = _progress_saver(job)
    started = time.time()
    analysis = run_analysis(meta, snap, method, params, progress)
    parts, summary = build_parts(meta, snap, analysis, disagreement_rows)
    # The full agreement report is served by /agreement; keep the pointer record small.
    summary = {k: v for k, v in summary.items() if k not in ("agreement", "timings")}
    info = {
        "job": job.id if job is not None else None,
        "method": method,
        "params": params or {},
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "seconds": round(time.time() - started, 3),
        "summary": summary,
    }
    # An orphaned horse publishing now would replace a result that clients were told is
    # still current, for a job already reported as lost.
    check_not_orphaned()
    from .webhooks import Outbox

    outbox = Outbox.open(store, project, job, webhook_options)
    # Webhook events compare with the version this one replaces (None: the first).
    previous = store.current_result(project) if outbox else None
    version, published = store.write_result(project, snap.rev, info, parts)
    if outbox and published:
        outbox.publish(meta, analysis, previous, {**info, "version": version, "snapshot_revision": snap.rev})
    return {"version": version, "published": published, "snapshot_revision": snap.rev, "summary": summary}


def run_analysis(meta: dict, snap, method: str, params: dict | None, progress=None):
    """``analyse`` on a snapshot; classes are the project's declared labels (in order)."""
    from aggregation import from_codes

    from . import analysis

    classes = meta["labels_normalized"]
    answers = from_codes(snap.task, snap.task_names, snap.worker, snap.worker_names, snap.label, classes, classes=classes)
    gold = None
    if snap.gold:
        gold = (list(snap.gold), [classes[i] for i in snap.gold.values()])
    # The service clamps known answers unless asked to only evaluate against them (the
    # command line does the opposite: there gold is usually a held-out check).
    params = {"gold": "clamp", **(params or {})}
    return analysis.analyse(answers, method=method, params=params, gold=gold, progress=progress)


def label_converter(meta: dict):
    """Normalised label -> the label as the project declared it (integers stay integers)."""
    table = dict(zip(meta["labels_normalized"], meta["labels"]))
    return lambda v: table.get(v, v) if v is not None else None


_LABEL_KEYS = ("label", "mv_label", "gold")
# Worker fields clients may sort by (numbers; null sorts last).
WORKER_SORT_FIELDS = ("n_answers", "n_tasks", "n_shared_answers", "accuracy", "agreement", "spammer_score", "gold_accuracy", "gold_n")


def _dumps(obj) -> str:
    # allow_nan=False: a NaN reaching this point is a bug, and must fail loudly rather
    # than be served as invalid JSON.
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))


def build_parts(meta: dict, snap, analysis, disagreement_rows: int = 1000) -> tuple[dict, dict]:
    """The stored form of an analysis (see Store.write_result) and its summary."""
    conv = label_converter(meta)

    def relabel(row):
        for key in _LABEL_KEYS:
            if key in row:
                row[key] = conv(row[key])
        return row

    from .result_json import consensus_json_rows

    rows = consensus_json_rows(analysis, [conv(str(c)) for c in analysis.answers.classes])
    ix = dict(zip(analysis.answers.task_names.tolist(), range(len(rows))))
    workers, sort_rows = {}, []
    for row in analysis.worker_rows():
        workers[row["worker"]] = _dumps(row)
        sort_rows.append([row["worker"], [row.get(f) for f in WORKER_SORT_FIELDS]])
    disagreements = [relabel(r) for r in analysis.disagreement_rows(limit=disagreement_rows)]
    summary = analysis.summary()
    summary["classes"] = [conv(c) for c in summary.get("classes", [])]
    parts = {
        "rows": rows,
        "ix": ix,
        "w": workers,
        "wl": _dumps({"fields": list(WORKER_SORT_FIELDS), "rows": sort_rows}),
        "d": _dumps(disagreements),
        "s": _dumps({"summary": summary, "agreement": summary.get("agreement")}),
    }
    return parts, summary


def _progress_saver(job, every: float = 0.5):
    """analyse's progress events -> job.meta["progress"], at most every ``every`` seconds
    during EM (stage changes always)."""
    if job is None:
        return None
    last = [0.0]

    def progress(event):
        # Every EM iteration passes here: the cheapest place to notice a dead worker.
        check_not_orphaned()
        now = time.time()
        if "iteration" in event and now - last[0] < every:
            return
        last[0] = now
        event = dict(event)
        ll = event.get("log_likelihood")
        if ll is not None and not math.isfinite(float(ll)):
            event["log_likelihood"] = None
        job.meta["progress"] = event
        try:
            job.save_meta()
        except Exception:  # noqa: BLE001 - progress is best effort
            log.warning("could not save job progress", exc_info=True)

    return progress
