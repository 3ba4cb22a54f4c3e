"""The deploy/ topology without Docker: redis-server with deploy/redis.conf, the API under
gunicorn with deploy/gunicorn.conf.py and two workers, each started with the command
deploy/compose.yaml gives it; a full flow through them over HTTP."""

from __future__ import annotations

import json
import os
import re
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from procs import BIN, ROOT, free_port, proc_stat, processes, wait_until  # noqa: F401 - fixture

requests = pytest.importorskip("requests")
yaml = pytest.importorskip("yaml")


def compose() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())


def compose_commands() -> dict[str, list[str]]:
    services = compose()["services"]
    out = {}
    for name in ("api", "worker"):
        argv = list(services[name]["command"])
        # The image has the console scripts on PATH; here they are in the venv.
        argv[0] = str(BIN / argv[0])
        out[name] = argv
    return out


def interpolate(value: str, variables: dict) -> str:
    """Compose's ${NAME}, ${NAME:?message} and $$, for the values the tests use."""
    def one(m):
        name, _, rest = m.group(1).partition(":")
        if name not in variables:
            raise KeyError(f"${{{name}}} is not set ({rest})")
        return variables[name]

    return re.sub(r"\$\{([^}]*)\}", one, value).replace("$$", "$")


def compose_redis_url(password: str, port: int) -> str:
    """The api's and the workers' REDIS_URL in compose.yaml, pointed at a local port."""
    urls = {name: compose()["services"][name]["environment"]["REDIS_URL"] for name in ("api", "worker")}
    assert urls["api"] == urls["worker"]
    return interpolate(urls["api"], {"REDIS_PASSWORD": password}).replace("@redis:6379/", f"@127.0.0.1:{port}/")


def shown(value) -> str | None:
    """A default as the docs and the env example write it (None: no default)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_defaults() -> dict[str, str | None]:
    """Environment name -> default, from service/config.py (Settings and from_env's
    `field=...(env, "NAME"...` lines) and from service/gunicorn_conf.py (None where the
    default is computed, such as the number of CPUs)."""
    import ast
    from dataclasses import fields

    from service.config import Settings

    source = (ROOT / "service" / "config.py").read_text()
    out = {}
    for field in fields(Settings):
        m = re.search(rf'{field.name}=[^\n]*"((?:CROWDQC_|REDIS_URL)[A-Z_]*)"', source)
        assert m, field.name
        out[m.group(1)] = shown(getattr(Settings(), field.name))
    # gunicorn_conf.py changes the environment when imported: read its defaults instead
    # (CROWDQC_LOG_LEVEL, read by both, keeps config.py's spelling).
    tree = ast.parse((ROOT / "service" / "gunicorn_conf.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("get", "setdefault") and len(node.args) == 2:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and name.value.isupper():
                try:
                    out.setdefault(name.value, shown(ast.literal_eval(node.args[1])))
                except ValueError:
                    out.setdefault(name.value, None)
    return out


# Compose-only variables (not settings of crowdqc) and secrets: never shipped with a value.
SECRETS = {"CROWDQC_ADMIN_TOKEN", "CROWDQC_METRICS_TOKEN", "REDIS_PASSWORD"}


def test_compose_and_env_example_agree_with_settings():
    """Every setting of service/config.py and of the gunicorn configuration is in
    deploy/crowdqc.env.example, commented out, with the default the code uses; secrets are
    empty (no working token is shipped)."""
    defaults = config_defaults()
    assert "CROWDQC_REDIS_TIMEOUT" in defaults and "CROWDQC_BIND" in defaults and "CROWDQC_API_PROCESSES" in defaults
    example = (ROOT / "deploy" / "crowdqc.env.example").read_text()
    lines = {m.group(2): (m.group(1), m.group(3)) for m in re.finditer(r"^(#?)([A-Z][A-Z0-9_]+)=(.*)$", example, flags=re.M)}
    assert set(defaults) <= set(lines), f"missing from crowdqc.env.example: {sorted(set(defaults) - set(lines))}"
    for name, (comment, value) in lines.items():
        if name in SECRETS:
            assert value == "", f"{name} must be empty in the example, got {value!r}"
            continue
        assert name in defaults, f"{name} is no setting of crowdqc"
        # A commented line shows the default; where the default is computed, no value.
        assert comment == "#", f"{name} is set in the example: it must show its default, commented out"
        assert value == (defaults[name] or ""), (name, value, defaults[name])
    cmds = compose_commands()
    assert cmds["api"][1:] == ["-c", "deploy/gunicorn.conf.py", "service.app:create_app()"]
    assert cmds["worker"][1:] == ["worker"]


def test_compose_builds_its_image_and_needs_its_secrets():
    services = compose()["services"]
    # The worker uses the image the api builds: same build, so compose never pulls "crowdqc".
    assert services["worker"]["build"] == services["api"]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert services["worker"]["image"] == services["api"]["image"]
    # compose refuses to start without an admin token and a Redis password.
    assert re.fullmatch(r"\$\{CROWDQC_ADMIN_TOKEN:\?[^}]+\}", services["api"]["environment"]["CROWDQC_ADMIN_TOKEN"])
    with pytest.raises(KeyError):
        interpolate(services["api"]["environment"]["REDIS_URL"], {})
    assert compose_redis_url("pw", 1234) == "redis://:pw@127.0.0.1:1234/0"
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--requirepass" in redis_cmd and "/usr/local/etc/redis/redis.conf" in redis_cmd
    assert re.fullmatch(r"\$\{REDIS_PASSWORD:\?[^}]+\}", services["redis"]["environment"]["REDIS_PASSWORD"])
    assert "REDISCLI_AUTH" in " ".join(services["redis"]["healthcheck"]["test"])


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern matching
    the path or one of its parent directories decides; ``!`` re-includes."""
    from fnmatch import fnmatchcase

    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        globs = [pat] + ([pat[3:], "*/" + pat[3:]] if pat.startswith("**/") else [])
        if any(fnmatchcase(c, g) and (g.count("/") == c.count("/") or g.startswith("*/")) for c in candidates for g in globs):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_build_context_to_what_the_image_needs():
    build = compose()["services"]["api"]["build"]
    context = (ROOT / "deploy" / build["context"]).resolve()
    assert context == ROOT
    patterns = [line.strip() for line in (context / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    dockerfile = (context / build["dockerfile"]).read_text()
    copied = [src for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from" not in line
              for src in line.split()[1:-1]]
    assert "service" in copied and "deploy/gunicorn.conf.py" in copied
    for src in copied:
        files = [src] if (context / src).is_file() else [str(p.relative_to(context)) for p in (context / src).rglob("*") if p.is_file()]
        assert files, src
        kept = [f for f in files if not dockerignored(f, patterns)]
        assert kept == [f for f in files if "__pycache__" not in f], src
    for heavy in (".venv/bin/python", "bench/results/memory_1000000.json", ".git/HEAD", "tests/test_deploy.py",
                  "deploy/crowdqc.env", "service/__pycache__/app.cpython-311.pyc", "docs/operations.md"):
        assert dockerignored(heavy, patterns), heavy


def test_operations_doc_explains_every_setting():
    """docs/operations.md has a row for every setting of service/config.py and of the
    gunicorn configuration, with the default the code uses."""
    from dataclasses import fields

    from service.config import Settings

    source = (ROOT / "service" / "config.py").read_text()
    doc = (ROOT / "docs" / "operations.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([A-Z_]+)` \| ([^|]+) \|", doc, flags=re.M)}
    names = set(re.findall(r'"((?:CROWDQC_|REDIS_URL)[A-Z_]*)"', source))
    gunicorn = set(re.findall(r'"(CROWDQC_[A-Z_]+)"', (ROOT / "service" / "gunicorn_conf.py").read_text()))
    assert names and gunicorn
    assert not (names | gunicorn) - set(rows), f"not in docs/operations.md: {sorted((names | gunicorn) - set(rows))}"
    # Each env name maps to a field (from_env's `field=...(env, "NAME"...` lines); its
    # default must be the one documented.
    defaults = Settings()
    for field in fields(Settings):
        m = re.search(rf'{field.name}=[^\n]*"((?:CROWDQC_|REDIS_URL)[A-Z_]*)"', source)
        assert m, field.name
        value = getattr(defaults, field.name)
        if value is None:
            assert rows[m.group(1)].strip() == "none", m.group(1)
            continue
        shown = ",".join(str(v) for v in value) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) else str(value)
        assert f"`{shown}`" in rows[m.group(1)], (m.group(1), shown, rows[m.group(1)])


def outside_address() -> str | None:
    """An address of this machine that is not loopback (None if it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
            addr = s.getsockname()[0]
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def test_redis_conf_alone_does_not_open_redis_to_the_network(processes):
    """deploy/redis.conf run as it is, listening on every interface: without a password it
    answers loopback clients only (protected mode); with compose's password, a client from
    the network must authenticate."""
    import redis as redis_py

    addr = outside_address()
    if addr is None:
        pytest.skip("this machine has no address but loopback")
    bare = processes.redis(bind="0.0.0.0")
    assert bare.ping()  # loopback
    with pytest.raises(redis_py.exceptions.RedisError, match="DENIED Redis is running in protected mode"):
        redis_py.Redis(host=addr, port=bare.port, socket_timeout=5).ping()
    password = uuid.uuid4().hex
    locked = processes.redis(bind="0.0.0.0", requirepass=password)
    with pytest.raises(redis_py.exceptions.AuthenticationError):
        redis_py.Redis(host=addr, port=locked.port, socket_timeout=5).ping()
    assert redis_py.Redis(host=addr, port=locked.port, password=password, socket_timeout=5).ping()


@pytest.mark.slow
def test_full_flow_through_gunicorn_and_two_workers(processes, tmp_path):
    # deploy/redis.conf (appendonly, noeviction) with the password compose adds
    password = uuid.uuid4().hex
    redis = processes.redis(requirepass=password)
    assert redis.client().config_get("appendonly")["appendonly"] == "yes"
    redis_url = compose_redis_url(password, redis.port)
    assert redis_url == redis.url
    admin_token = "adm-" + uuid.uuid4().hex
    api_port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "CROWDQC_ADMIN_TOKEN": admin_token,
        "CROWDQC_BIND": f"127.0.0.1:{api_port}",
        "CROWDQC_API_PROCESSES": "2",
        "CROWDQC_API_THREADS": "2",
        "CROWDQC_MAX_BODY_BYTES": "200000",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
    }
    cmds = compose_commands()
    api = processes.start("api", cmds["api"], env=env)
    workers = [processes.start(f"worker{i}", cmds["worker"], env=env) for i in range(2)]
    base = f"http://127.0.0.1:{api_port}"
    s = requests.Session()
    wait_until(lambda: s.get(base + "/readyz", timeout=2).status_code == 200, 30, 0.2, "the API under gunicorn")
    assert api.alive() and all(w.alive() for w in workers)

    adm = {"Authorization": f"Bearer {admin_token}"}
    r = s.post(base + "/v1/projects", json={"id": "deploy", "labels": ["cat", "dog"]}, headers=adm, timeout=10)
    assert r.status_code == 201, r.text
    writer = s.post(base + "/v1/projects/deploy/keys", json={"role": "writer"}, headers=adm, timeout=10).json()["key"]
    reader = s.post(base + "/v1/projects/deploy/keys", json={"role": "reader"}, headers=adm, timeout=10).json()["key"]
    w_h, r_h = {"Authorization": f"Bearer {writer}"}, {"Authorization": f"Bearer {reader}"}

    # 60 tasks, 3 workers each, 2 of 3 agree: the majority is known by construction.
    truth = {f"t{i}": ("cat" if i % 3 else "dog") for i in range(60)}
    other = {"cat": "dog", "dog": "cat"}
    labels = []
    for i, (task, lab) in enumerate(truth.items()):
        odd = f"w{i % 3}"  # each worker is the odd one out on a third of the tasks
        for w in ("w0", "w1", "w2"):
            labels.append({"task": task, "worker": w, "label": other[lab] if w == odd else lab})
    r = s.post(base + "/v1/projects/deploy/labels", json={"labels": labels}, headers={**w_h, "X-Request-ID": "deploy-req-1"}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 180
    assert r.headers["X-Request-ID"] == "deploy-req-1"

    r = s.post(base + "/v1/projects/deploy/aggregations", json={"method": "majority_vote"}, headers=w_h, timeout=10)
    assert r.status_code == 202, r.text
    job_url = base + r.headers["Location"]
    job = wait_until(lambda: _finished(s.get(job_url, headers=r_h, timeout=5).json()), 60, 0.2, "the aggregation job")
    assert job["status"] == "finished", job

    got, cursor = {}, None
    while True:
        params = {"limit": 25, **({"cursor": cursor} if cursor else {})}
        page = s.get(base + "/v1/projects/deploy/consensus", params=params, headers=r_h, timeout=10).json()
        got.update({row["task"]: row["label"] for row in page["items"]})
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert got == truth

    # A body over CROWDQC_MAX_BODY_BYTES, sent chunked (no Content-Length), is refused
    # by the real server too.
    def chunks():
        for _ in range(40):
            yield b" " * 10_000

    r = s.post(base + "/v1/projects/deploy/labels", data=chunks(), headers={**w_h, "Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 413, r.text

    # Metrics add up over both gunicorn processes.  A kept-alive session always reaches the
    # same process: these requests come several at a time, each on a connection of its own,
    # until both processes have served some (their metric files say so).
    project_200 = {"method": "GET", "route": "/v1/projects/<project_id>", "status": "200"}
    api_pids = {p for p in processes.strays() if (st := proc_stat(p)) and st[1] == api.pid}
    assert len(api_pids) == 2

    def served_by_process() -> dict[int, float]:
        out = {}
        for f in (tmp_path / "prom").glob("counter_*.db"):
            for key, value, *_ in MmapedDict.read_all_values_from_file(str(f)):
                _, name, labels, _ = json.loads(key)
                if name == "crowdqc_http_requests_total" and labels == project_200:
                    pid = int(f.stem.split("_")[1])
                    out[pid] = out.get(pid, 0) + value
        return out

    def fresh_get(_):
        return requests.get(base + "/v1/projects/deploy", headers={**r_h, "Connection": "close"}, timeout=10).status_code

    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while len(served_by_process()) < 2 and sent < 400:
            assert list(pool.map(fresh_get, range(16))) == [200] * 16
            sent += 16
    by_process = served_by_process()
    assert set(by_process) == api_pids and all(n > 0 for n in by_process.values()), by_process
    assert sum(by_process.values()) == sent

    # Job metrics come from Redis.
    def scrape():
        text = s.get(base + "/metrics", headers=adm, timeout=5).text
        return text if "crowdqc_workers 2.0" in text else None

    text = wait_until(scrape, 20, 0.2, "both workers in /metrics")
    scraped = {(x.name, frozenset(x.labels.items())): x.value for m in text_string_to_metric_families(text) for x in m.samples}
    # exactly what was sent, which no single process served alone
    assert scraped[("crowdqc_http_requests_total", frozenset(project_200.items()))] == sent
    assert max(by_process.values()) < sent
    assert 'crowdqc_jobs_total{kind="aggregation",outcome="finished"} 1.0' in text
    assert 'crowdqc_answers_ingested_total{outcome="accepted"} 180.0' in text
    assert re.search(r'crowdqc_http_requests_total\{method="POST",route="/v1/projects/<project_id>/labels",status="200"\} 1\.0', text)
    assert "crowdqc_http_request_duration_seconds_bucket" in text

    # Logs: JSON lines with request ids; no token anywhere.
    processes.stop_all()
    logs = "".join(p.output() for p in processes.procs)
    assert '"request_id": "deploy-req-1"' in logs
    for secret in (admin_token, writer, reader, password):
        assert secret not in logs


def _finished(job: dict):
    job = job.get("job", job)
    return job if job.get("status") in ("finished", "failed") else None


def start_api(processes, tmp_path, redis, **env):
    """The API as compose runs it (deploy/gunicorn.conf.py), on a free loopback port."""
    port = free_port()
    full = {**os.environ, "REDIS_URL": redis.url, "CROWDQC_BIND": f"127.0.0.1:{port}",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), **env}
    api = processes.start("api", compose_commands()["api"], env=full)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(base + "/readyz", timeout=2).status_code == 200, 30, 0.2, "the API under gunicorn")
    return api, base, port


def raw_request(port: int, data: bytes) -> tuple[str, dict, bytes]:
    """Send bytes as they are (no client library fixing them up); (status line, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


@pytest.mark.slow
def test_gunicorn_own_errors_have_the_json_error_shape(processes, tmp_path):
    """Requests gunicorn refuses before the app sees them (request line or header too long,
    a malformed request line) get the API's one error shape, not gunicorn's HTML page."""
    redis = processes.redis(conf=None, save="", appendonly="no")
    _, base, port = start_api(processes, tmp_path, redis)
    cases = {
        "long URL": (414, "uri_too_long", b"GET /v1/projects?q=" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        "long header": (431, "request_header_fields_too_large",
                        b"GET /v1/projects HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 9000 + b"\r\n\r\n"),
        "bad request line": (400, "bad_request", b"NOT-HTTP\r\n\r\n"),
    }
    for name, (status, code, data) in cases.items():
        line, headers, body = raw_request(port, data)
        assert line.startswith(f"HTTP/1.1 {status} "), (name, line, body[:200])
        assert headers["content-type"] == "application/json", (name, headers)
        assert int(headers["content-length"]) == len(body)
        err = json.loads(body)
        assert set(err) == {"error"} and err["error"]["status"] == status and err["error"]["code"] == code, (name, err)
        assert isinstance(err["error"]["message"], str) and err["error"]["message"], name
        assert b"<html" not in body
    # Through a client library too, and the app's own errors are unchanged.
    r = requests.get(base + "/v1/projects", params={"q": "x" * 9000}, timeout=10)
    assert r.status_code == 414 and r.json()["error"]["code"] == "uri_too_long"
    r = requests.get(base + "/nowhere", timeout=10)
    assert r.status_code == 404 and r.json()["error"] == {"status": 404, "code": "not_found", "message": "no such resource"}
    # The liveness probe, answered by its own lane, is the app's ordinary answer.
    r = requests.get(base + "/healthz", timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"} and r.headers["X-Request-ID"]
    line, headers, body = raw_request(port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert line.startswith("HTTP/1.1 200 ") and body == b""
