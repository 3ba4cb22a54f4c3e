"""gunicorn settings of the crowdqc API, shared by ``crowdqc serve`` and deploy/gunicorn.conf.py.

Every value can be changed through the environment (see deploy/crowdqc.env.example)."""

import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("CROWDQC_BIND", "0.0.0.0:8000")
# The API is I/O bound on Redis; threads per process keep memory low while hiding Redis
# round trips.  Aggregation never runs here: it runs in RQ workers.
workers = int(os.environ.get("CROWDQC_API_PROCESSES", max(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("CROWDQC_API_THREADS", 4))
worker_class = "gthread"
# A 10,000-label batch is parsed and validated in well under a second; anything slower
# is a stuck request.
timeout = int(os.environ.get("CROWDQC_API_TIMEOUT", 30))
graceful_timeout = 30
keepalive = 5
# Requests bigger than this are refused by the app (413) before being read whole.
limit_request_line = 8190
# The app writes one JSON line per request (with its request id, route and duration);
# gunicorn's own access log would only repeat it in another format.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("CROWDQC_LOG_LEVEL", "info").lower()
# gunicorn's own messages as JSON lines too, like the app's.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "service.observability.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    # gunicorn merges this over its defaults one level deep: root must be given too.  No
    # handler on it: the app's loggers have their own (service.observability).
    "root": {"level": "WARNING", "handlers": []},
    "loggers": {"gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"], "propagate": False}},
}

# Prometheus: each API process writes its metrics to files in this directory and a scrape
# of /metrics (answered by any process) adds them up.  Must be set before the app (and
# prometheus_client) is imported, hence here.  Emptied at start: files of a previous run
# would be added to this one's counters.
metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), "crowdqc-prometheus"))
shutil.rmtree(metrics_dir, ignore_errors=True)
os.makedirs(metrics_dir, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# Preloading would open nothing (the app factory connects lazily) but saves memory.
preload_app = True
# gunicorn 24+ opens a control socket at one fixed path per user: several APIs on one
# machine (tests, `crowdqc serve` beside a deployment) would fight over it, and nothing
# here uses it.
control_socket_disable = True
