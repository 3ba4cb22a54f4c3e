"""``crowdqc worker``: an RQ worker for aggregation jobs (run as many as you like, on any
machine that reaches the same Redis)."""

from __future__ import annotations

import argparse
import sys

import redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from .config import Settings


def redis_problem(url: str) -> str | None:
    """One line saying why Redis at ``url`` does not answer (None when it does)."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.ping()
        client.close()
    except redis.exceptions.RedisError as exc:
        return (
            f"crowdqc: cannot reach Redis at {url} ({exc.__class__.__name__}: {exc}); "
            "start one with `redis-server --daemonize yes` (or `docker run -d -p 6379:6379 redis:7`) or set REDIS_URL"
        )
    except ValueError as exc:
        return f"crowdqc: invalid REDIS_URL {url!r}: {exc}"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="crowdqc worker", description="Run an RQ worker for crowdqc aggregation jobs.")
    parser.add_argument("--burst", action="store_true", help="process queued jobs, then exit")
    parser.add_argument("--no-scheduler", action="store_true", help="do not run the scheduler of debounced jobs in this worker")
    parser.add_argument("--log-level", default="INFO")
    if argv is None:
        # `crowdqc worker` calls main() with sys.argv still holding the sub-command.
        argv = sys.argv[1:]
        if argv[:1] == ["worker"]:
            argv = argv[1:]
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    problem = redis_problem(settings.redis_url)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from .observability import configure_logging

    # JSON lines on the root logger (rq sees a handler and adds none of its own).
    configure_logging(settings.updated({"log_level": args.log_level.upper()}), logger_name="")
    connection = redis.Redis.from_url(settings.redis_url)
    queue = Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)
    # Worker forks a work horse per job: a crash or memory blow-up in one aggregation
    # never takes the worker down.
    # job_monitoring_interval: how often the running job's heartbeat is written; the API
    # reports the job as failed once it is older than CROWDQC_JOB_LOST_SECONDS.
    worker = Worker(
        [queue], connection=connection, serializer=JSONSerializer, job_monitoring_interval=max(1, settings.job_heartbeat_seconds)
    )
    worker.work(burst=args.burst, with_scheduler=not args.no_scheduler, logging_level=args.log_level.upper())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
