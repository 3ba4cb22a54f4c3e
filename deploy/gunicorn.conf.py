"""gunicorn settings for the crowdqc API (``gunicorn -c deploy/gunicorn.conf.py 'service.app:create_app()'``)."""

import multiprocessing
import os

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
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("CROWDQC_LOG_LEVEL", "info")
# Preloading would open nothing (the app factory connects lazily) but saves memory.
preload_app = True
