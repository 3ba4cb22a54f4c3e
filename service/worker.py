"""``crowdqc worker``: an RQ worker for aggregation jobs (run as many as you like, on any
machine that reaches the same Redis)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

import redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from .config import Settings

# Pid of the worker that forked this work horse; None outside a work horse (the API, an
# in-process SimpleWorker).
_horse_parent: int | None = None


def orphaned() -> bool:
    """Whether this process is a work horse whose worker has died.  RQ puts the horse in a
    process group of its own, so killing the worker's group (a container stop, an OOM kill,
    `kill -9 -PGID`) leaves the horse running as an orphan: it must stop, and it must never
    publish a result for a job the system already reported as lost."""
    return _horse_parent is not None and os.getppid() != _horse_parent


def die_with_parent(parent: int, sig: int) -> None:
    """In a freshly forked child of ``parent``: receive ``sig`` when the parent dies (Linux;
    elsewhere nothing).  Used for work horses, the scheduler and the children of ``crowdqc
    serve``: a process that outlives what supervises it keeps locks and burns a core for
    nobody."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            PR_SET_PDEATHSIG = 1
            libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no usable libc
            pass
    # The parent may have died between fork() and prctl(): PDEATHSIG would never fire.
    if os.getppid() != parent:
        os._exit(1)


def _bind_to_parent(parent: int) -> None:
    """In a freshly forked work horse: die with the worker that forked it."""
    global _horse_parent
    _horse_parent = parent
    # SIGKILL: the horse may be deep in numpy where no Python handler would run.
    die_with_parent(parent, signal.SIGKILL)


class CrowdqcWorker(Worker):
    """RQ's forking worker whose work horses do not outlive it (elsewhere than on Linux, no
    PDEATHSIG: the jobs themselves check :func:`orphaned` while they run and before they
    publish), and the one place that counts jobs of every kind by outcome for /metrics."""

    def __init__(self, *args, key_prefix: str = "crowdqc:", **kwargs):
        super().__init__(*args, **kwargs)
        self.key_prefix = key_prefix
        # Also called by RQ's registry cleanup for jobs abandoned by a dead worker.
        self.push_exc_handler(self._count_abandoned)

    # -- job metrics: RQ calls these in the work horse, or in the worker when the horse died
    def _count(self, job, outcome: str, run: str | None = None) -> None:
        from .observability import job_kind, record_job_outcome

        seconds = None
        if outcome != "lost" and job.started_at and job.ended_at:
            seconds = max(0.0, (job.ended_at - job.started_at).total_seconds())
        # The prefix of the API that queued the job, which is the one its /metrics reads.
        prefix = (job.kwargs or {}).get("prefix") or self.key_prefix
        record_job_outcome(self.connection, prefix, job.id, outcome, seconds, kind=job_kind(job.func_name), run=run)

    def handle_job_success(self, job, queue, started_job_registry, execution):
        super().handle_job_success(job, queue, started_job_registry, execution)
        self._count(job, "finished")

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        # Decided as RQ decides it inside, before the call changes the job.
        retried = job.should_retry and self._stopped_job_id != job.id
        run = str(job.retries_left)
        super().handle_job_failure(job, queue, started_job_registry=started_job_registry, exc_string=exc_string,
                                   execution=execution)
        self._count(job, "retried" if retried else "failed", run=run)

    def _count_abandoned(self, job, exc_type, exc_value, tb):
        from rq.exceptions import AbandonedJobError

        if exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError):
            retried = bool(job.retries_left and job.retries_left > 0)
            self._count(job, "retried" if retried else "lost", run=str(job.retries_left))
        return True  # let the next handlers run (RQ's default one moves the job to failed)

    def fork_work_horse(self, job, queue):
        self._crowdqc_parent = os.getpid()
        return super().fork_work_horse(job, queue)

    def main_work_horse(self, job, queue):
        _bind_to_parent(self._crowdqc_parent)
        return super().main_work_horse(job, queue)

    def _start_scheduler(self, *args, **kwargs):
        # RQ forks the scheduler with multiprocessing and never sets it up to die with the
        # worker: a worker killed with SIGKILL left it running, holding the scheduler lock.
        # multiprocessing runs after-fork hooks in its own children only (not in work
        # horses, which RQ forks with os.fork).  SIGTERM: the scheduler then releases its
        # lock, so another worker's scheduler takes over at once.
        import multiprocessing.util

        parent = os.getpid()
        multiprocessing.util.register_after_fork(self, lambda _worker: die_with_parent(parent, signal.SIGTERM))
        return super()._start_scheduler(*args, **kwargs)


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
    worker = CrowdqcWorker(
        [queue], connection=connection, serializer=JSONSerializer, job_monitoring_interval=max(1, settings.job_heartbeat_seconds),
        key_prefix=settings.key_prefix,
    )
    worker.work(burst=args.burst, with_scheduler=not args.no_scheduler, logging_level=args.log_level.upper())
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
