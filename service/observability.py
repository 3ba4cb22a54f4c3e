"""Metrics (Prometheus) and structured logs (JSON lines with a request id).

Request metrics live in this process (prometheus_client; under gunicorn, set
``PROMETHEUS_MULTIPROC_DIR`` and every API process writes to files that one scrape adds
up).  Job metrics cannot: a job runs in a short-lived work horse forked by an RQ worker,
possibly on another machine, so job outcomes and durations are counted in Redis, by kind, by
the worker (service.worker.CrowdqcWorker, through :func:`record_job_outcome`, exactly once
per job) and read back at scrape time, together with the queue depth.  Answers are counted
in Redis too, by the script that stores them (service.store), so label batches, imports and
Label Studio events all count wherever they run.
"""

from __future__ import annotations

import contextvars
import hmac
import json
import logging
import os
import re
import sys
import time
import uuid

from flask import Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

log = logging.getLogger("crowdqc.access")

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is kept only if it is short and plain: it ends up in log lines and
# response headers, so nothing that could forge a log field or split a header.
_SANE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

HTTP_REQUESTS = Counter(
    "crowdqc_http_requests_total", "HTTP requests by method, route template and status", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "crowdqc_http_request_duration_seconds",
    "HTTP request latency by method and route template",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

ANSWER_OUTCOMES = ("accepted", "duplicate", "replaced")
# Job durations: Redis-side histogram buckets (seconds).
JOB_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
# lost: the worker died; retried: a run failed and the job was queued again (a job is
# counted once as finished, failed or lost, and once per retried run).
JOB_OUTCOMES = ("finished", "failed", "lost", "retried")
# The kind of a job, by the function RQ runs.
JOB_KINDS = {
    "service.jobs.run_aggregation": "aggregation",
    "service.imports.run_import": "import",
    "service.webhooks.deliver": "webhook_delivery",
    "service.label_studio_inbox.drain": "label_studio_drain",
}

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("crowdqc_request_id", default=None)


# -- logging ---------------------------------------------------------------------------------

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "request_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (test runners swap it)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def make_handler(fmt: str = "json") -> logging.Handler:
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler._crowdqc = True  # type: ignore[attr-defined]
    return handler


def configure_logging(settings, logger_name: str = "crowdqc") -> None:
    """Attach crowdqc's handler to ``logger_name`` once per process (idempotent)."""
    logger = logging.getLogger(logger_name or None)
    if not any(getattr(h, "_crowdqc", False) for h in logger.handlers):
        logger.addHandler(make_handler(settings.log_format))
    logger.setLevel(settings.log_level)


# -- request hooks ---------------------------------------------------------------------------


def init_app(app, settings) -> None:
    configure_logging(settings)
    # First before_request hook: the request id and clock start before authentication,
    # so refused requests are logged and measured too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.teardown_request(_teardown)
    app.add_url_rule("/metrics", "metrics", metrics_view)


def _start():
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    rid = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
    g.request_id = rid
    g.request_started = time.perf_counter()
    g.request_id_token = request_id_var.set(rid)


def _route() -> str:
    rule = request.url_rule
    # Unmatched paths share one label: a scanner must not create a series per URL.
    return rule.rule if rule is not None else "<unmatched>"


def _finish(response):
    rid = g.get("request_id")
    if rid:
        response.headers[REQUEST_ID_HEADER] = rid
    started = g.get("request_started")
    elapsed = time.perf_counter() - started if started is not None else 0.0
    route = _route()
    HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    HTTP_LATENCY.labels(request.method, route).observe(elapsed)
    log.info(
        "%s %s %s",
        request.method,
        route,
        response.status_code,
        extra={
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 2),
            "remote": request.remote_addr,
        },
    )
    return response


def _teardown(_exc):
    token = g.pop("request_id_token", None)
    if token is not None:
        try:
            request_id_var.reset(token)
        except ValueError:  # a different context (streamed response): nothing to undo
            pass


# -- /metrics --------------------------------------------------------------------------------


def metrics_view():
    settings = current_app.config["CROWDQC"]
    # A scraper gets a token of its own (CROWDQC_METRICS_TOKEN) that opens nothing else;
    # without one, /metrics is the admin's: counts and route names are not for everyone.
    expected, name = (settings.metrics_token, "CROWDQC_METRICS_TOKEN") if settings.metrics_token else \
        (settings.admin_token, "CROWDQC_ADMIN_TOKEN")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        from .api.errors import error_response

        return error_response(401, f"GET /metrics needs 'Authorization: Bearer <{name}>'",
                              headers={"WWW-Authenticate": 'Bearer realm="crowdqc-metrics"'})
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    shared = CollectorRegistry()
    shared.register(RedisCollector(current_app.extensions["crowdqc_redis"], settings, current_app.extensions["crowdqc_jobs"].queue))
    body = generate_latest(registry) + generate_latest(shared)
    return Response(body, mimetype=CONTENT_TYPE_LATEST.split(";")[0], headers={"Content-Type": CONTENT_TYPE_LATEST})


def _jobs_key(prefix: str) -> str:
    return f"{prefix}metrics:jobs"


def _durations_key(prefix: str) -> str:
    return f"{prefix}metrics:job_seconds"


class RedisCollector:
    """Job outcomes, durations and queue depth, read from Redis at scrape time (the same
    figures whichever API process is scraped)."""

    def __init__(self, client, settings, queue):
        self.r = client
        self.settings = settings
        self.queue = queue

    def collect(self):
        up = GaugeMetricFamily("crowdqc_redis_up", "Whether Redis answered this scrape")
        try:
            from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

            prefix = self.settings.key_prefix
            p = self.r.pipeline(transaction=False)
            p.hgetall(_jobs_key(prefix))
            p.hgetall(_durations_key(prefix))
            p.hgetall(f"{prefix}metrics:answers")  # Store.answers_metric_key
            p.llen(self.queue.key)
            # ZCARD, not registry.count(): count() runs RQ's cleanup as a side effect.
            for cls in (ScheduledJobRegistry, StartedJobRegistry, FailedJobRegistry):
                p.zcard(cls(queue=self.queue).key)
            p.scard(f"rq:workers:{self.queue.name}")
            p.info("memory")
            outcomes, durations, answers, queued, scheduled, started, failed, workers, mem = p.execute()
        except Exception:  # noqa: BLE001 - a scrape must answer even when Redis does not
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        stored = CounterMetricFamily("crowdqc_answers_ingested", "Answers stored (label batches, imports, Label Studio "
                                     "events), by what became of them", labels=["outcome"])
        for outcome in ANSWER_OUTCOMES:
            stored.add_metric([outcome], int(answers.get(outcome.encode(), 0)))
        yield stored
        jobs = CounterMetricFamily("crowdqc_jobs", "Jobs by kind (aggregation, import, webhook_delivery, label_studio_drain) "
                                   "and outcome (lost: the worker died; retried: a run failed, the job was queued again)",
                                   labels=["kind", "outcome"])
        counts = _by_kind(outcomes)
        for kind in _kinds(counts):
            for outcome in JOB_OUTCOMES:
                jobs.add_metric([kind, outcome], int(counts.get(kind, {}).get(outcome, 0)))
        yield jobs
        hist = HistogramMetricFamily("crowdqc_job_duration_seconds", "Duration of job runs that ended (finished, failed or "
                                     "retried), by kind", labels=["kind"])
        durations = _by_kind(durations)
        for kind in _kinds(durations):
            seen = durations.get(kind, {})
            buckets, cum = [], 0.0
            for b in JOB_BUCKETS:
                cum += float(seen.get(f"b:{b:g}", 0.0))
                buckets.append((f"{b:g}", cum))
            cum += float(seen.get("b:+Inf", 0.0))
            buckets.append(("+Inf", cum))
            hist.add_metric([kind], buckets, sum_value=float(seen.get("sum", 0.0)))
        yield hist
        depth = GaugeMetricFamily("crowdqc_queue_jobs", "Jobs of every kind (aggregations, imports, webhook deliveries, "
                                  "Label Studio drains) in the queue's registries, by state", labels=["state"])
        for state, n in (("queued", queued), ("scheduled", scheduled), ("started", started), ("failed", failed)):
            depth.add_metric([state], int(n))
        yield depth
        yield GaugeMetricFamily("crowdqc_workers", "RQ workers registered on the queue", value=int(workers))
        yield GaugeMetricFamily("crowdqc_redis_used_memory_bytes", "Redis used_memory", value=int(mem.get("used_memory", 0)))


def _by_kind(fields: dict) -> dict[str, dict[str, str]]:
    """Redis hash fields ``kind/name`` -> {kind: {name: value}}.  Fields without a kind were
    written before jobs had kinds, when only aggregations were counted."""
    out: dict[str, dict[str, str]] = {}
    for key, value in fields.items():
        kind, _, name = key.decode().rpartition("/")
        out.setdefault(kind or "aggregation", {})[name] = value
    return out


def _kinds(seen: dict) -> list[str]:
    return list(dict.fromkeys([*JOB_KINDS.values(), *sorted(seen)]))


def job_kind(func_name: str | None) -> str:
    return JOB_KINDS.get(func_name or "", "other")


def _recorded_kind(client, prefix: str, job_id: str) -> str:
    # Callers that do not say (service/jobs.py) report aggregations, or lost imports, which
    # share the job records (their record says kind "import").
    from .store import Store

    try:
        record = Store(client, prefix).get_job(job_id) or {}
    except Exception:  # noqa: BLE001
        record = {}
    return "import" if record.get("kind") == "import" else "aggregation"


def record_job_outcome(client, prefix: str, job_id: str, outcome: str, seconds: float | None, kind: str | None = None,
                       run: str | None = None) -> bool:
    """Count one job's outcome in Redis under its kind: exactly once per job for finished,
    failed and lost, whoever reports it first (the worker, the job itself, RQ's failure
    callback or registry cleanup, or the API noticing a lost worker); once per ``run`` for
    retried.  Best effort: metrics never fail a job."""
    try:
        once = f"{prefix}jobcount:{job_id}" + (f":{run}" if outcome == "retried" else "")
        if not client.set(once, outcome, nx=True, ex=7 * 86400):
            return False
        kind = kind or _recorded_kind(client, prefix, job_id)
        p = client.pipeline(transaction=True)
        p.hincrby(_jobs_key(prefix), f"{kind}/{outcome}", 1)
        if seconds is not None:
            bucket = next((f"{b:g}" for b in JOB_BUCKETS if seconds <= b), "+Inf")
            p.hincrby(_durations_key(prefix), f"{kind}/b:{bucket}", 1)
            p.hincrbyfloat(_durations_key(prefix), f"{kind}/sum", float(seconds))
        p.execute()
        return True
    except Exception:  # noqa: BLE001
        logging.getLogger("crowdqc.jobs").warning("could not record the outcome of job %s", job_id, exc_info=True)
        return False
