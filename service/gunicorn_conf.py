"""gunicorn settings of the crowdqc API, shared by ``crowdqc serve`` and deploy/gunicorn.conf.py.

Every value can be changed through the environment (see deploy/crowdqc.env.example)."""

import json
import multiprocessing
import os
import selectors
import shutil
import socket
import tempfile
import time
from concurrent import futures
from functools import partial

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

bind = os.environ.get("CROWDQC_BIND", "0.0.0.0:8000")
# The API is I/O bound on Redis; threads per process keep memory low while hiding Redis
# round trips.  Aggregation never runs here: it runs in RQ workers.
workers = int(os.environ.get("CROWDQC_API_PROCESSES", max(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("CROWDQC_API_THREADS", 4))
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


# -- the API's gunicorn worker ---------------------------------------------------------------

# Request lines answered by the health lane (liveness only: /readyz needs Redis).
_HEALTH_REQUESTS = (b"GET /healthz ", b"GET /healthz?", b"HEAD /healthz ", b"HEAD /healthz?")
_PEEK = max(len(r) for r in _HEALTH_REQUESTS)


def _peek(sock) -> bytes | None:
    """The first bytes a client sent, left in the socket for the parser; None when nothing
    has arrived yet."""
    try:
        return sock.recv(_PEEK, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError:
        return b""  # the parser meets the same error and closes the connection


def write_json_error(sock, status_int, reason, mesg):
    """gunicorn's own error responses (request line or a header too long, a malformed
    request) in the API's one error shape, instead of gunicorn's HTML page: clients parse
    every error the same way."""
    from service.api.errors import _CODES

    code = _CODES.get(status_int) or "_".join(reason.lower().replace("-", " ").split())
    body = json.dumps({"error": {"status": status_int, "code": code, "message": mesg or reason.lower()}}).encode()
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    util.write_nonblock(sock, head + body)


class ApiWorker(ThreadWorker):
    """gthread with a lane of its own for /healthz, and gunicorn's errors as JSON
    (write_json_error).

    gthread hands each connection to one pool of ``threads`` threads in arrival order: with
    Redis stalled, every thread waited on Redis and a liveness probe queued behind them (45 s
    in an audit), so an orchestrator would restart healthy processes.  New connections
    asking for /healthz go to a separate thread; new connections whose request has not
    arrived yet wait in gthread's poller (not in a pool thread) until it has, so that it can
    be told apart.
    """

    HEALTH_THREADS = 2

    def init_process(self):
        # Every error gunicorn answers by itself is written by this one function (in the
        # worker processes only: the master writes no responses).
        util.write_error = write_json_error
        super().init_process()

    def get_thread_pool(self):
        self.health_pool = futures.ThreadPoolExecutor(max_workers=self.HEALTH_THREADS, thread_name_prefix="healthz")
        return super().get_thread_pool()

    def enqueue_req(self, conn):
        # Kept-alive connections may hold their next request in the parser's buffer, not in
        # the socket: only new ones are looked at.  TLS bytes cannot be read this way.
        if conn.initialized or self.cfg.is_ssl:
            return super().enqueue_req(conn)
        head = _peek(conn.sock)
        if head is None:
            self._wait_for_request(conn)
        elif head.startswith(_HEALTH_REQUESTS):
            fs = self.health_pool.submit(self.handle, conn)
            fs.add_done_callback(lambda fut: self.method_queue.defer(self.finish_request, conn, fut))
        else:
            super().enqueue_req(conn)

    def _wait_for_request(self, conn):
        # gthread's own waiting room for connections without data (see finish_request);
        # it closes them after the keep-alive timeout.
        conn.sock.setblocking(False)
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))

    def run(self):
        try:
            super().run()
        finally:
            self.health_pool.shutdown(wait=False)


worker_class = ApiWorker
