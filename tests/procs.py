"""Real processes for deployment and fault tests: redis-server on its own port and
directory, gunicorn, crowdqc workers.  Each process runs in its own session (process
group) so that it and its children (gunicorn workers) can be killed as one; an RQ work horse
leaves its worker's group (RQ calls setpgrp() after forking), so :class:`Processes` also
finds, by environment, every process its test started or whose parent it started, and kills
whatever is still running when the test ends, pass or fail."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``check()`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


# Every process a Processes starts carries this variable (value unique to the test), and
# so does everything those processes fork or spawn.
MARK_VAR = "CROWDQC_TEST_PROCS"


def pids_with_env(entries) -> list[int]:
    """Live processes whose environment holds any of ``entries`` ("NAME=value")."""
    wanted = {e.encode() for e in entries}
    me, out = os.getpid(), []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = set(f.read().split(b"\0"))
        except OSError:  # gone, or not ours to read
            continue
        # A zombie's environ reads empty, so it never matches: it no longer runs.
        if env & wanted:
            out.append(int(d))
    return out


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a live process; None once it has exited (zombies included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    state, ppid, pgid = fields[0], int(fields[1]), int(fields[2])
    return None if state in ("Z", "X") else (state, ppid, pgid)


def kill_pids(pids, timeout: float = 5.0) -> list[int]:
    """SIGKILL ``pids`` and wait until they are gone; returns those that were running."""
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(proc_stat(p) for p in killed):
        time.sleep(0.02)
    return killed


class Proc:
    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None, cwd: Path = ROOT):
        self.name, self.argv, self.log_path = name, argv, log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill_group(self, sig=signal.SIGKILL) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.kill_group(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Children (work horses, gunicorn workers) may outlive a parent: kill the group.
        self.kill_group(signal.SIGKILL)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self._log.close()

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


class Processes:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[Proc] = []
        self.mark = f"{MARK_VAR}={uuid.uuid4().hex}"
        self.redis_urls: list[str] = []

    def start(self, name: str, argv: list[str], env: dict | None = None) -> Proc:
        env = dict(os.environ if env is None else env)
        env[MARK_VAR] = self.mark.split("=", 1)[1]
        p = Proc(name, argv, self.tmp / f"{name}-{len(self.procs)}.log", env=env)
        self.procs.append(p)
        return p

    def redis(self, conf: Path | None = ROOT / "deploy" / "redis.conf", port: int | None = None, data_dir: Path | None = None, **overrides) -> "RedisProc":
        """redis-server with ``conf`` (default: deploy/redis.conf) on a free loopback port
        and its own directory; ``overrides`` are extra config directives."""
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        for attempt in range(5):
            chosen = port or free_port()
            where = data_dir or (self.tmp / f"redis-{chosen}")
            where.mkdir(parents=True, exist_ok=True)
            argv = ["redis-server"] + ([str(conf)] if conf else [])
            settings = {"port": chosen, "dir": str(where), "bind": "127.0.0.1", "daemonize": "no", **overrides}
            for k, v in settings.items():
                argv += [f"--{k.replace('_', '-')}", str(v)]
            proc = self.start(f"redis-{chosen}", argv)
            r = RedisProc(proc, chosen, where, password=overrides.get("requirepass"))
            self.redis_urls.append(r.url)
            # Other test sessions start servers on free ports too: between free_port() and
            # the bind, another may take the port, and a ping would reach *its* Redis.
            wait_until(lambda: not proc.alive() or r.ping(), 15, what=f"redis-server on port {chosen}")
            if proc.alive() and r.server_pid() == proc.pid:
                return r
            proc.stop()
            if port:
                break
        raise AssertionError(f"could not start redis-server of our own (last port {chosen}):\n{proc.output()[-2000:]}")

    def strays(self) -> list[int]:
        """Running processes of this test: its mark, or the REDIS_URL of one of its
        redis-servers (a client started by other means still points there)."""
        return pids_with_env([self.mark] + [f"REDIS_URL={u}" for u in self.redis_urls])

    def stop_all(self) -> list[int]:
        """Stop every process; returns the pids of strays that had to be killed."""
        for p in reversed(self.procs):
            p.stop()
        return kill_pids(self.strays())

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ({' '.join(p.argv)})\n{p.output()[-4000:]}" for p in self.procs)


class RedisProc:
    def __init__(self, proc: Proc, port: int, data_dir: Path, password: str | None = None):
        self.proc, self.port, self.data_dir, self.password = proc, port, data_dir, password

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **kw):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=2,
                           password=self.password, **kw)

    def server_pid(self) -> int:
        c = self.client()
        try:
            return int(c.info("server")["process_id"])
        finally:
            c.close()

    def ping(self) -> bool:
        c = self.client()
        try:
            return bool(c.ping())
        finally:
            c.close()


@pytest.fixture
def processes(tmp_path):
    procs = Processes(tmp_path)
    yield procs
    killed = procs.stop_all()
    if killed:
        print(f"killed stray processes left by this test: {killed}")
    # pytest shows this only when the test failed.
    print(procs.logs())
