"""Service settings, read from environment variables by the app factory (never at import)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace


def _int(env, name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _float(env, name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _intervals(env, name: str, default: tuple) -> tuple:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return tuple(int(x) for x in raw.split(","))
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers (seconds), got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    redis_url: str = "redis://127.0.0.1:6379/0"
    # No default on purpose: an unset admin token means no admin access at all.
    admin_token: str | None = None
    # Every key crowdqc writes starts with this, so one Redis can hold several deployments
    # (and each test its own namespace).
    key_prefix: str = "crowdqc:"
    queue_name: str = "crowdqc"
    max_batch: int = 10_000
    max_body_bytes: int = 16 * 1024 * 1024
    max_id_length: int = 256
    max_answer_id_length: int = 128
    max_labels_per_project: int = 1_000
    # Answers one project may hold (each costs ~RAM in Redis: see docs/operations.md);
    # 0 means no limit.  A batch that would pass it is refused whole.
    max_answers_per_project: int = 20_000_000
    max_page: int = 1_000
    default_page: int = 100
    # Debounce of automatic aggregation: run once labels have been quiet this long, but
    # never later than max_wait after the first unaggregated batch (steady traffic would
    # otherwise postpone it forever).
    auto_quiet_seconds: float = 10.0
    auto_max_wait_seconds: float = 120.0
    job_timeout_seconds: int = 3600
    # A replaced result stays readable this long, so a client paging through it can finish.
    result_grace_seconds: int = 600
    # Keep at most this many disagreement rows per result.
    disagreement_rows: int = 1_000
    # Bulk imports (POST /v1/projects/{id}/imports) bypass max_body_bytes: they are
    # streamed into Redis, so the bound is Redis memory, not the API's.
    max_import_bytes: int = 2 * 1024**3
    # Outbound webhooks: seconds before each retry of a failed delivery, and the timeout
    # of one delivery attempt.
    webhook_retry_intervals: tuple = (10, 60, 300, 1800, 7200)
    webhook_timeout_seconds: float = 10.0
    # Redis client timeouts of the API: a Redis that is down or stalled turns into a 503
    # after this long instead of a hung request (and after the first one, at once: see
    # service.redis_conn.RedisBreaker).  Not shorter: a reply also waits for the commands queued
    # before it in Redis, and a 10,000-label ingestion script takes 0.1-0.2 s of Redis's
    # time, so eight API threads sending such batches at once wait up to ~1.5 s.  The
    # workers use a client of their own.
    redis_timeout_seconds: float = 2.0
    redis_connect_timeout_seconds: float = 0.5
    # Workers record a heartbeat of each running job this often; the API reports a job
    # as failed (worker lost) once its heartbeat is older than job_lost_seconds.
    job_heartbeat_seconds: int = 10
    job_lost_seconds: float = 90.0
    # When set, GET /metrics needs 'Authorization: Bearer <this>'; otherwise it is open
    # (restrict it at the network level).
    metrics_token: str | None = None
    # "json" (one JSON object per line) or "text".
    log_format: str = "json"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        env = os.environ if env is None else env
        d = cls()
        return cls(
            redis_url=env.get("REDIS_URL") or d.redis_url,
            admin_token=env.get("CROWDQC_ADMIN_TOKEN") or None,
            key_prefix=env.get("CROWDQC_KEY_PREFIX") or d.key_prefix,
            queue_name=env.get("CROWDQC_QUEUE") or d.queue_name,
            max_batch=_int(env, "CROWDQC_MAX_BATCH", d.max_batch),
            max_body_bytes=_int(env, "CROWDQC_MAX_BODY_BYTES", d.max_body_bytes),
            max_id_length=_int(env, "CROWDQC_MAX_ID_LENGTH", d.max_id_length),
            max_answer_id_length=_int(env, "CROWDQC_MAX_ANSWER_ID_LENGTH", d.max_answer_id_length),
            max_labels_per_project=_int(env, "CROWDQC_MAX_LABELS", d.max_labels_per_project),
            max_page=_int(env, "CROWDQC_MAX_PAGE", d.max_page),
            default_page=_int(env, "CROWDQC_DEFAULT_PAGE", d.default_page),
            auto_quiet_seconds=_float(env, "CROWDQC_AUTO_QUIET_SECONDS", d.auto_quiet_seconds),
            auto_max_wait_seconds=_float(env, "CROWDQC_AUTO_MAX_WAIT_SECONDS", d.auto_max_wait_seconds),
            job_timeout_seconds=_int(env, "CROWDQC_JOB_TIMEOUT", d.job_timeout_seconds),
            result_grace_seconds=_int(env, "CROWDQC_RESULT_GRACE_SECONDS", d.result_grace_seconds),
            disagreement_rows=_int(env, "CROWDQC_DISAGREEMENT_ROWS", d.disagreement_rows),
            max_import_bytes=_int(env, "CROWDQC_MAX_IMPORT_BYTES", d.max_import_bytes),
            webhook_retry_intervals=_intervals(env, "CROWDQC_WEBHOOK_RETRY_INTERVALS", d.webhook_retry_intervals),
            webhook_timeout_seconds=_float(env, "CROWDQC_WEBHOOK_TIMEOUT", d.webhook_timeout_seconds),
            max_answers_per_project=_int(env, "CROWDQC_MAX_ANSWERS", d.max_answers_per_project),
            redis_timeout_seconds=_float(env, "CROWDQC_REDIS_TIMEOUT", d.redis_timeout_seconds),
            redis_connect_timeout_seconds=_float(env, "CROWDQC_REDIS_CONNECT_TIMEOUT", d.redis_connect_timeout_seconds),
            job_heartbeat_seconds=_int(env, "CROWDQC_JOB_HEARTBEAT_SECONDS", d.job_heartbeat_seconds),
            job_lost_seconds=_float(env, "CROWDQC_JOB_LOST_SECONDS", d.job_lost_seconds),
            metrics_token=env.get("CROWDQC_METRICS_TOKEN") or None,
            log_format=(env.get("CROWDQC_LOG_FORMAT") or d.log_format).lower(),
            log_level=(env.get("CROWDQC_LOG_LEVEL") or d.log_level).upper(),
        )

    def updated(self, overrides: dict | None) -> "Settings":
        """A copy with ``overrides`` applied (keys are field names, case-insensitive)."""
        if not overrides:
            return self
        names = {f.name for f in fields(self)}
        changes = {}
        for key, value in overrides.items():
            name = key.lower()
            if name in names:
                changes[name] = value
        return replace(self, **changes)
