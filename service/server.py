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
import time

from .config import Settings
from .worker import die_with_parent, redis_problem

# How long a part gets to stop after SIGTERM (a worker finishes its running job, gunicorn
# its requests) before its whole process group is killed.
STOP_SECONDS = 15


def bind_address(host: str, port: int) -> str:
    """``host:port`` as gunicorn and URLs want it: an IPv6 address in brackets (gunicorn
    splits an unbracketed ``::1:8000`` at its last colon and finds no port)."""
    host = host.strip()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with status {returncode}"


def exit_status(returncode: int) -> int:
    """serve's own status when a part ended by itself: the part's status, 128 + the signal
    that killed it (as a shell reports it), and never 0 (half a service is a failure)."""
    if returncode < 0:
        return 128 - returncode
    return returncode or 1


def _start(argv: list[str], env: dict) -> subprocess.Popen:
    parent = os.getpid()

    def setup():  # runs in the child between fork and exec
        # A group of its own: stopping a part reaches everything it forked (gunicorn's
        # processes, the worker's scheduler), and never serve itself.
        os.setpgid(0, 0)
        # serve killed with SIGKILL runs no cleanup: its children must notice by themselves.
        die_with_parent(parent, signal.SIGTERM)

    return subprocess.Popen(argv, env=env, preexec_fn=setup)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        # Also when the leader has exited: what it forked may still run (gunicorn's
        # processes after its master was killed, the worker's scheduler).
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _first_to_end(procs: list[subprocess.Popen]) -> subprocess.Popen:
    """Wait until one of ``procs`` ends and return it, its status kept (os.wait() would
    reap it behind Popen's back and lose the status)."""
    while True:
        info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        for proc in procs:
            if proc.pid == info.si_pid:
                proc.wait()
                return proc
        os.waitpid(info.si_pid, 0)  # not ours (cannot happen today): reap, keep waiting


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

    address = bind_address(host, port)
    api_argv = [sys.executable, "-m", "gunicorn", "-c", gunicorn_conf.__file__, "--bind", address,
                "service.app:create_app()"]
    worker_argv = [sys.executable, "-m", "service.worker"]
    print(f"crowdqc: API on http://{address} (OpenAPI at /openapi.json, browsable at /docs) and one job worker; "
          "Ctrl-C stops both", file=sys.stderr)

    def stop_requested(signum, frame):
        raise KeyboardInterrupt  # run the finally below: never orphan a child

    signal.signal(signal.SIGTERM, stop_requested)
    # pid -> (how a message names the part, how it names the part's process)
    names: dict[int, tuple[str, str]] = {}
    procs: list[subprocess.Popen] = []
    ended = None
    try:
        worker = _start(worker_argv, env)
        procs.append(worker)
        names[worker.pid] = ("the job worker", f"the job worker (pid {worker.pid})")
        api = _start(api_argv, env)
        procs.append(api)
        names[api.pid] = ("the API", f"the API (gunicorn, pid {api.pid})")
        # Whichever part ends first (a crash, a kill, gunicorn refusing its settings) ends
        # the whole service: half a service that looks up is worse than none.
        ended = _first_to_end(procs)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the stop short and leave parts running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if ended is not None:
            rest = " and ".join(names[p.pid][0] for p in procs if p is not ended) or "nothing else"
            print(f"crowdqc: {names[ended.pid][1]} {describe_exit(ended.returncode)}; stopping {rest}", file=sys.stderr)
        _stop(procs)
    return 0 if ended is None else exit_status(ended.returncode)
