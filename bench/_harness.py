"""Run one measurement in a fresh interpreter and collect its JSON report.

Each library gets its own process so that its peak RSS (``ru_maxrss``, a high-water
mark that never goes down) is not polluted by the other library's allocations, and so
that crowd-kit (pandas, scikit-learn, ...) runs from its own venv and never enters the
main one.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
DATA = os.path.join(BENCH, "data")
RESULTS = os.path.join(BENCH, "results")
PYTHON = {
    "crowdqc": os.path.join(ROOT, ".venv", "bin", "python"),
    "crowdkit": os.path.join(BENCH, ".venv", "bin", "python"),
}
RUNNER = os.path.join(BENCH, "_runner.py")


def run_child(lib: str, *args: str, timeout: float = 3600) -> dict:
    """Run ``_runner.py`` under ``lib``'s venv; its last stdout line is a JSON report."""
    python = PYTHON[lib]
    if not os.path.exists(python):
        raise SystemExit(f"{python} missing; see bench/README.md for the venv setup")
    cmd = [python, RUNNER, lib, *args]
    env = dict(os.environ)
    # one BLAS thread: the code paths measured here do not use BLAS, and thread pools
    # only add noise on a 2-core machine
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"{' '.join(cmd)} failed with code {proc.returncode}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["process_wall_s"] = wall
    return report


def machine() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    mem_gb = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gb": mem_gb,
        "python": platform.python_version(),
        "loadavg_at_save": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def save(name: str, payload: dict) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, name)
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=1, default=str)
    return path


def mb(kb: float) -> str:
    return f"{kb / 1024:.0f} MB"


_WRAP = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "dt = time.perf_counter() - t\n"
    "sys.stderr.write(p.stderr[-4000:])\n"
    "print(json.dumps({'rc': p.returncode, 'wall_s': dt, 'stdout_tail': p.stdout[-2000:],\n"
    "    'peak_rss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n"
)


def measure_command(cmd: list[str], timeout: float = 3600) -> dict:
    """Wall time and peak RSS of one external command (e.g. the ``crowdqc`` CLI).

    A throw-away Python wrapper runs it as its only child, so ``RUSAGE_CHILDREN`` is that
    command's own high-water mark, not the maximum over everything this process started.
    """
    proc = subprocess.run([sys.executable, "-c", _WRAP, *cmd], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["stderr_tail"] = proc.stderr[-2000:]
    return report
