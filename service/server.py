"""``crowdqc serve``: the API and one job worker in one command, for a newcomer or a single
machine.  The API runs under gunicorn with the same settings as production
(service/gunicorn_conf.py); production runs the API and ``crowdqc worker`` processes
separately, on any machines that reach the same Redis (docs/operations.md)."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys

from .config import Settings
from .worker import redis_problem


def serve(host: str = "127.0.0.1", port: int = 8000) -> int:
    settings = Settings.from_env()
    problem = redis_problem(settings.redis_url)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    env = os.environ.copy()
    if not settings.admin_token:
        # Never a fixed default: a fresh random token per run, printed once.
        env["CROWDQC_ADMIN_TOKEN"] = secrets.token_urlsafe(32)
        print(f"crowdqc: CROWDQC_ADMIN_TOKEN was not set; admin token for this run: {env['CROWDQC_ADMIN_TOKEN']}",
              file=sys.stderr)
    # Two API processes unless told otherwise: the worker needs a core for aggregations.
    env.setdefault("CROWDQC_API_PROCESSES", "2")
    from . import gunicorn_conf

    api_argv = [sys.executable, "-m", "gunicorn", "-c", gunicorn_conf.__file__, "--bind", f"{host}:{port}",
                "service.app:create_app()"]
    worker_argv = [sys.executable, "-m", "service.worker"]
    print(f"crowdqc: API on http://{host}:{port} (OpenAPI at /openapi.json, browsable at /docs) and one job worker; "
          "Ctrl-C stops both", file=sys.stderr)
    procs = [subprocess.Popen(worker_argv, env=env), subprocess.Popen(api_argv, env=env)]

    def stop(signum, frame):
        raise KeyboardInterrupt  # run the finally below: never orphan a child

    signal.signal(signal.SIGTERM, stop)
    try:
        # Whichever child ends first (a crash, or a signal to it) ends the whole service:
        # half a service that looks up is worse than none.
        os.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    failed = [p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM, None)]
    return failed[0] if failed else 0
