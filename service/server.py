"""``crowdqc serve``: the API and one RQ worker in one command (development and small
installations).  In production run the API under gunicorn
(``gunicorn -w 4 'service.app:create_app()'``) and ``crowdqc worker`` processes anywhere
that reaches the same Redis."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys

from .config import Settings
from .worker import redis_problem


def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    settings = Settings.from_env()
    problem = redis_problem(settings.redis_url)
    if problem:
        print(problem, file=sys.stderr)
        raise SystemExit(2)
    if not settings.admin_token:
        # Never a fixed default: a fresh random token per run, printed once.
        token = secrets.token_urlsafe(32)
        os.environ["CROWDQC_ADMIN_TOKEN"] = token
        print(f"crowdqc: CROWDQC_ADMIN_TOKEN was not set; admin token for this run: {token}", file=sys.stderr)
    worker = subprocess.Popen(
        [sys.executable, "-c", "from service.worker import main; raise SystemExit(main(['--log-level', 'WARNING']))"],
        env=os.environ.copy(),
    )
    def stop(signum, frame):
        raise KeyboardInterrupt  # run the finally below: never orphan the worker

    signal.signal(signal.SIGTERM, stop)
    try:
        from werkzeug.serving import run_simple

        from .app import create_app

        print(f"crowdqc: API on http://{host}:{port} (docs at /docs), worker pid {worker.pid}", file=sys.stderr)
        run_simple(host, int(port), create_app(), threaded=True, use_reloader=False)
    except KeyboardInterrupt:
        pass
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
