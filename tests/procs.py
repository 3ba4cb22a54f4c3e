"""Real processes for deployment and fault tests: redis-server on its own port and
directory, gunicorn, crowdqc workers.  Each process runs in its own session (process
group) so that it and its children (gunicorn workers, RQ work horses) can be killed as one;
:class:`Processes` stops whatever is still running when the test ends, pass or fail."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
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

    def start(self, name: str, argv: list[str], env: dict | None = None) -> Proc:
        p = Proc(name, argv, self.tmp / f"{name}-{len(self.procs)}.log", env=env)
        self.procs.append(p)
        return p

    def redis(self, conf: Path | None = ROOT / "deploy" / "redis.conf", port: int | None = None, data_dir: Path | None = None, **overrides) -> "RedisProc":
        """redis-server with ``conf`` (default: deploy/redis.conf) on a free loopback port
        and its own directory; ``overrides`` are extra config directives."""
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed")
        port = port or free_port()
        data_dir = data_dir or (self.tmp / f"redis-{port}")
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server"] + ([str(conf)] if conf else [])
        settings = {"port": port, "dir": str(data_dir), "bind": "127.0.0.1", "daemonize": "no", **overrides}
        for k, v in settings.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        proc = self.start(f"redis-{port}", argv)
        r = RedisProc(proc, port, data_dir)
        wait_until(r.ping, 15, what=f"redis-server on port {port}")
        return r

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ({' '.join(p.argv)})\n{p.output()[-4000:]}" for p in self.procs)


class RedisProc:
    def __init__(self, proc: Proc, port: int, data_dir: Path):
        self.proc, self.port, self.data_dir = proc, port, data_dir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kw):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=2, **kw)

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
    procs.stop_all()
    # pytest shows this only when the test failed.
    print(procs.logs())
