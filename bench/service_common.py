"""Shared helpers of the service benchmarks: a throwaway namespace in a dedicated Redis
database, gunicorn started with ``deploy/gunicorn.conf.py`` on a free loopback port,
keep-alive HTTP clients in several processes, CPU accounting from /proc, percentiles.

Everything a benchmark writes to Redis lives under its own key prefix and RQ queue in
database 14 (``CROWDQC_BENCH_REDIS_URL`` to change it) and is deleted afterwards.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
sys.path[:0] = [p for p in (ROOT, BENCH) if p not in sys.path]

from _harness import machine, save  # noqa: E402  (bench/ is not a package)

REDIS_URL = os.environ.get("CROWDQC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
GUNICORN = os.path.join(ROOT, ".venv", "bin", "gunicorn")
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")

__all__ = ["machine", "save"]


# -- Redis namespace ---------------------------------------------------------------------------


def redis_client():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    return client


def namespace(tag: str) -> dict:
    uid = uuid.uuid4().hex[:10]
    return {"key_prefix": f"cqbench:{tag}:{uid}:", "queue_name": f"cqbench-{tag}-{uid}"}


def cleanup(r, ns: dict) -> int:
    """Delete every key of the namespace: ours, and RQ's for its queue and jobs."""
    prefix, queue = ns["key_prefix"], ns["queue_name"]
    job_ids = [k.decode().rsplit(":", 1)[1] for k in r.scan_iter(match=f"{prefix}job:*", count=1000)]
    r.srem("rq:queues", f"rq:queue:{queue}")
    n = 0
    for pattern in [f"{prefix}*", f"rq:*{queue}*"] + [f"rq:*{j}*" for j in job_ids]:
        keys = list(r.scan_iter(match=pattern, count=5000))
        for i in range(0, len(keys), 1000):
            n += r.delete(*keys[i : i + 1000])
    return n


def memory_usage(r, pattern: str) -> tuple[int, int]:
    """(bytes, keys) by ``MEMORY USAGE key SAMPLES 0`` (exact) over the matching keys."""
    total, n = 0, 0
    keys = list(r.scan_iter(match=pattern, count=5000))
    for i in range(0, len(keys), 1000):
        p = r.pipeline(transaction=False)
        for k in keys[i : i + 1000]:
            p.memory_usage(k, samples=0)
        total += sum(int(x or 0) for x in p.execute())
    n = len(keys)
    return total, n


def redis_pid(r) -> int:
    return int(r.info("server")["process_id"])


# -- CPU accounting ----------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                out.append(int(entry))
        except (OSError, IndexError):
            pass
    return out


def process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(_children(p))
    return tree


def cpu_seconds(pids) -> float:
    """user + system CPU seconds of the processes (those still alive)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / _TICK


# -- gunicorn ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn -c deploy/gunicorn.conf.py 'service.app:create_app()' in a namespace."""

    def __init__(self, ns: dict, processes: int | None = None, threads: int | None = None, admin_token: str | None = None):
        self.ns = ns
        self.port = free_port()
        self.admin = admin_token or "bench-admin-" + uuid.uuid4().hex
        self.env = dict(os.environ)
        self.env.update(
            CROWDQC_BIND=f"127.0.0.1:{self.port}",
            REDIS_URL=REDIS_URL,
            CROWDQC_ADMIN_TOKEN=self.admin,
            CROWDQC_KEY_PREFIX=ns["key_prefix"],
            CROWDQC_QUEUE=ns["queue_name"],
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            # the config empties this directory at start: never share it with another server
            PROMETHEUS_MULTIPROC_DIR=tempfile.mkdtemp(prefix="crowdqc-bench-prom-"),
        )
        if processes:
            self.env["CROWDQC_API_PROCESSES"] = str(processes)
        if threads:
            self.env["CROWDQC_API_THREADS"] = str(threads)
        self.proc = None
        self.log = tempfile.NamedTemporaryFile(prefix="crowdqc-bench-gunicorn-", suffix=".log", delete=False)

    def _config_path(self) -> str:
        """deploy/gunicorn.conf.py, or a shim around it when its ``logconfig_dict`` cannot
        be applied (gunicorn merges it into its defaults, whose root logger needs a handler
        named "console"); the shim only adds a root logger, every other setting is the
        deploy file's."""
        conf = os.path.join(ROOT, "deploy", "gunicorn.conf.py")
        probe = (
            "import copy, logging.config, runpy\n"
            "from gunicorn.glogging import CONFIG_DEFAULTS\n"
            f"c = runpy.run_path({conf!r})\n"
            "d = copy.deepcopy(CONFIG_DEFAULTS); d.update(c.get('logconfig_dict') or {})\n"
            "logging.config.dictConfig(d)\n"
        )
        if subprocess.run([PYTHON, "-c", probe], cwd=ROOT, env=self.env, capture_output=True).returncode == 0:
            self.config_note = None
            return conf
        shim = os.path.join(tempfile.gettempdir(), f"crowdqc-bench-gunicorn-{self.port}.conf.py")
        with open(shim, "w") as fh:
            fh.write(
                f"exec(compile(open({conf!r}).read(), {conf!r}, 'exec'))\n"
                "_h = next(iter(logconfig_dict.get('handlers') or {}), None)\n"
                "if _h: logconfig_dict['root'] = {'level': loglevel.upper(), 'handlers': [_h]}\n"
            )
        self.config_note = "deploy/gunicorn.conf.py's logconfig_dict fails in gunicorn (root logger wants handler 'console'); ran it through a shim adding a root logger"
        return shim

    def __enter__(self) -> "Server":
        self._gconf = self._read_config()
        cmd = [GUNICORN, "-c", self._config_path(), "service.app:create_app()"]
        # Logging stays as deployed (one JSON line per request at the default level); it goes to a file.
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; log: {self.log.name}")
            try:
                status, _, _ = Http("127.0.0.1", self.port).request("GET", "/readyz")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"gunicorn did not become ready; log: {self.log.name}")

    def __exit__(self, *exc):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.env["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)

    @property
    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def config(self) -> dict:
        """The worker/thread counts gunicorn uses (read from its config before the start:
        reading it runs it, and it empties the metrics directory)."""
        return {**self._gconf, "config_note": self.config_note}

    def _read_config(self) -> dict:
        out = subprocess.run(
            [PYTHON, "-c", "import runpy, json; c = runpy.run_path('deploy/gunicorn.conf.py'); "
             "print(json.dumps({k: c[k] for k in ('workers', 'threads', 'worker_class', 'keepalive')}, "
             "default=lambda v: getattr(v, '__name__', str(v))))"],
            cwd=ROOT, env=self.env, capture_output=True, text=True, check=True,
        )
        return json.loads(out.stdout)


# -- HTTP --------------------------------------------------------------------------------------


class Http:
    """One keep-alive connection (reconnects if the server closed it)."""

    def __init__(self, host: str, port: int, timeout: float = 60):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
                return resp.status, dict(resp.getheaders()), data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # gunicorn closes idle keep-alive connections after `keepalive` seconds
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, payload=None, token: str | None = None):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = json.dumps(payload).encode() if payload is not None else None
        status, _, data = self.request(method, path, body, headers)
        return status, (json.loads(data) if data else None)


def create_project(http: Http, admin: str, pid: str, labels, method: str = "dawid_skene", params=None) -> dict:
    """Create a project and a writer and a reader key; returns their tokens."""
    body = {"id": pid, "labels": list(labels), "aggregation": {"method": method, "params": params or {}, "auto": False}}
    status, out = http.json("POST", "/v1/projects", body, admin)
    if status != 201:
        raise RuntimeError(f"project creation failed: {status} {out}")
    keys = {}
    for role in ("writer", "reader"):
        status, out = http.json("POST", f"/v1/projects/{pid}/keys", {"role": role}, admin)
        if status != 201:
            raise RuntimeError(f"key creation failed: {status} {out}")
        keys[role] = out["key"]
    return keys


# -- load generation ---------------------------------------------------------------------------


def _client_proc(port, jobs, start_at, out_q):
    """Send ``jobs`` (method, path, body, headers) in order over one connection;
    report (start offset, latency, status, response bytes) per request."""
    http = Http("127.0.0.1", port)
    rows = []
    while time.time() < start_at:
        time.sleep(0.001)
    for method, path, body, headers in jobs:
        t0 = time.perf_counter()
        status, _, data = http.request(method, path, body, headers)
        t1 = time.perf_counter()
        rows.append((time.time(), t1 - t0, status, len(data)))
    out_q.put(rows)


def run_clients(port: int, job_lists: list[list[tuple]]) -> dict:
    """One process per job list, all starting together; wall time, latencies, statuses."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_at = time.time() + 1.0
    procs = [ctx.Process(target=_client_proc, args=(port, jobs, start_at, q)) for jobs in job_lists]
    for p in procs:
        p.start()
    rows = [r for _ in procs for r in q.get()]
    for p in procs:
        p.join()
    finish = max(r[0] for r in rows)
    lat = np.array([r[1] for r in rows])
    statuses: dict[int, int] = {}
    for r in rows:
        statuses[r[2]] = statuses.get(r[2], 0) + 1
    return {
        "wall_s": finish - start_at,
        "requests": len(rows),
        "latency": latency_stats(lat),
        "statuses": statuses,
        "bytes": int(sum(r[3] for r in rows)),
    }


def latency_stats(seconds) -> dict:
    a = np.asarray(seconds, dtype=float) * 1000.0
    if a.size == 0:
        return {}
    return {
        "n": int(a.size),
        "mean_ms": float(a.mean()),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
    }


# -- output ------------------------------------------------------------------------------------


def table(headers, rows) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        if v >= 1000:
            return f"{v:,.0f}"
        if v >= 100:
            return f"{v:.0f}"
        if v >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# -- paced clients (a dashboard refreshes on a timer, it does not hammer) -------------------------


def _paced_proc(port, path, headers, n_threads, interval, duration, start_at, seed, out_q):
    import random
    import threading

    rows, lock = [], threading.Lock()

    def client(i):
        rng = random.Random(seed * 1000 + i)
        http = Http("127.0.0.1", port)
        # Random phase, so that 50 clients do not fire in lock step.
        due = start_at + rng.random() * interval
        mine = []
        while due < start_at + duration:
            now = time.time()
            if due > now:
                time.sleep(due - now)
            t0 = time.perf_counter()
            sent = time.time()
            status, _, data = http.request("GET", path, None, headers)
            lat = time.perf_counter() - t0
            # Latency from the moment the poll was due: a slow server delays the next
            # polls too, and that delay must not be hidden (coordinated omission).
            mine.append((sent, lat, time.time() - due, status, len(data)))
            due += interval
        with lock:
            rows.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out_q.put(rows)


def run_paced(port: int, path: str, headers: dict, clients: int, interval: float, duration: float, processes: int = 5) -> dict:
    """``clients`` keep-alive clients, each polling ``path`` every ``interval`` seconds."""
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    start_at = time.time() + 1.0
    per = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    procs = [ctx.Process(target=_paced_proc, args=(port, path, headers, n, interval, duration, start_at, i, q))
             for i, n in enumerate(per) if n]
    for p in procs:
        p.start()
    rows = [r for _ in procs for r in q.get()]
    for p in procs:
        p.join()
    statuses: dict[int, int] = {}
    for r in rows:
        statuses[r[3]] = statuses.get(r[3], 0) + 1
    wall = max(r[0] + r[1] for r in rows) - start_at
    return {
        "requests": len(rows),
        "wall_s": wall,
        "requests_per_s": len(rows) / wall,
        "mb_per_s": sum(r[4] for r in rows) / wall / 1e6,
        "latency": latency_stats([r[1] for r in rows]),
        "latency_from_due": latency_stats([r[2] for r in rows]),
        "statuses": statuses,
    }
