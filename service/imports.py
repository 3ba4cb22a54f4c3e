"""Bulk import of an answer file into a project.

The upload is streamed into Redis in 1 MiB chunks (a list, so API and workers need not
share a disk) and imported by an RQ job in two passes over the staged bytes:

1. validate: parse the whole file (crowdqc CSV/TSV/JSON Lines with a column mapping, or
   a tool preset) and check every answer against the project (declared labels, id
   rules).  The first bad row fails the job with ``<file>, line N: <problem>`` and
   nothing is stored;
2. store: the same stream again, in batches of ``max_batch`` answers (with the gold
   labels read so far) through the atomic ingestion script.  Label Studio annotation
   ids are recorded as the webhook receiver records them.

Both passes stream, so memory stays flat whatever the file size.  Pass 2 can only fail
on an infrastructure error (Redis gone) or when answers sent meanwhile fill the project
up to its answer limit (checked per batch; the job then says how much was stored);
running the import again then converges to the same state, because re-sending an answer
is a duplicate or a same-pair replacement.
Progress (stage, bytes, rows) is in ``GET /v1/jobs/{id}``.
"""

from __future__ import annotations

import io
import logging
import time
import uuid
from dataclasses import asdict

from rq import get_current_job

from aggregation.encoding import normalize_label

from .formats import Answer, FormatError, Gold
from .store import ProjectFull, Store
from .text_rules import BAD_CHARS

log = logging.getLogger("crowdqc.imports")

CHUNK = 1 << 20
STAGE_TTL = 2 * 86400
PROGRESS_EVERY = 0.5  # seconds
PROGRESS_ROWS = 4096  # rows validated between two looks at the clock
# Same rule as label batches over HTTP: no control characters, no lone surrogates.
PRESET_NAMES = ("label_studio", "toloka", "mturk")
PLAIN_FORMATS = ("csv", "tsv", "jsonl")


class ImportTooLarge(Exception):
    pass


class ImportStopped(Exception):
    """The storing pass could not go on; ``str()`` says how much of the file is stored."""


def stage_key(prefix: str, import_id: str) -> str:
    return f"{prefix}import:{import_id}:data"


def stage(redis, key: str, read, max_bytes: int) -> int:
    """Copy a stream into a Redis list of chunks; returns the byte count."""
    total = 0
    try:
        while True:
            chunk = read(CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise ImportTooLarge(f"the file is larger than the import limit of {max_bytes} bytes")
            redis.rpush(key, chunk)
            if total == len(chunk):
                redis.expire(key, STAGE_TTL)
    except BaseException:
        redis.delete(key)
        raise
    return total


class StagedStream(io.RawIOBase):
    """Read-only binary stream over a staged Redis list, one chunk in memory at a time."""

    def __init__(self, redis, key: str):
        self.r, self.key = redis, key
        self.index = 0
        self.buf = memoryview(b"")
        self.bytes_read = 0

    def readable(self):
        return True

    def readinto(self, b):
        if not len(self.buf):
            chunk = self.r.lindex(self.key, self.index)
            if chunk is None:
                return 0
            self.index += 1
            self.buf = memoryview(chunk)
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        self.bytes_read += n
        return n


def check_options(options: dict) -> dict:
    """Normalised options (ValueError naming the bad one)."""
    preset, fmt = options.get("preset"), options.get("format")
    if preset and fmt:
        raise ValueError("give either preset or format, not both")
    if not preset and not fmt:
        raise ValueError("say what the file is: format=csv|tsv|jsonl or preset=label_studio|toloka|mturk")
    if preset and preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; one of {', '.join(PRESET_NAMES)}")
    if fmt and fmt not in PLAIN_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(PLAIN_FORMATS)}")
    out = {k: v for k, v in options.items() if v is not None}
    if preset:
        for k in ("task_column", "worker_column", "label_column", "gold_column"):
            if k in out:
                raise ValueError(f"{k} applies to format=csv|tsv|jsonl; with a preset use field/task_key")
    else:
        for k in ("field", "task_key", "include_rejected"):
            if k in out:
                raise ValueError(f"{k} applies to presets; with format={fmt} use task_column/worker_column/label_column")
    return out


def items(stream, options: dict, stats=None, picker=None):
    name = options.get("name") or "upload"
    if options.get("preset"):
        kw = {"field": options.get("field"), "task_key": options.get("task_key"),
              "include_rejected": bool(options.get("include_rejected")), "stats": stats}
        if options["preset"] == "label_studio":
            from .formats import label_studio

            return label_studio.parse(stream, name, picker=picker, **kw)
        from .formats import parse

        return parse(options["preset"], stream, name, **kw)
    from .formats import plain

    return plain.parse(
        stream, name, fmt=options["format"],
        task_column=options.get("task_column") or "task",
        worker_column=options.get("worker_column") or "worker",
        label_column=options.get("label_column") or "label",
        gold_column=options.get("gold_column"), stats=stats,
    )


class Checker:
    """Project rules for one parsed item: FormatError naming the line on a violation."""

    def __init__(self, meta: dict, name: str, max_id: int):
        self.index = {n: i for i, n in enumerate(meta["labels_normalized"])}
        self.shown = ", ".join(repr(v) for v in meta["labels"][:20])
        self.name, self.max_id = name, max_id

    def label(self, value: str, line: int) -> int:
        code = self.index.get(normalize_label(value))
        if code is None:
            raise FormatError(self.name, line, f"label {value!r} is not one of the project's labels ({self.shown})")
        return code

    def ident(self, value: str, what: str, line: int) -> str:
        bad = BAD_CHARS.search(value)
        if bad:
            raise FormatError(self.name, line, f"{what} contains a control character (U+{ord(bad.group()):04X})")
        if len(value) > self.max_id:
            raise FormatError(self.name, line, f"{what} is longer than {self.max_id} characters ({len(value)})")
        return value

    def __call__(self, item):
        if isinstance(item, Answer):
            return ("a", self.ident(item.task, "task id", item.line), self.ident(item.worker, "worker id", item.line),
                    self.label(item.label, item.line), item.ref)
        return ("g", self.ident(item.task, "task id", item.line), self.label(item.label, item.line))


def job_settings(settings) -> dict:
    """Settings a job needs, as JSON (never the tokens)."""
    return {k: v for k, v in asdict(settings).items() if "token" not in k and k != "redis_url"}


def enqueue_import(jobs, store: Store, pid: str, import_id: str, options: dict, n_bytes: int) -> str:
    record = {"project": pid, "method": "import", "params": options, "kind": "import",
              "created": time.time(), "bytes": n_bytes}
    store.save_job(import_id, record, ttl=7 * 86400)
    jobs.queue.enqueue(
        run_import,
        job_id=import_id,
        kwargs={"prefix": store.prefix, "project": pid, "import_id": import_id, "options": options,
                "settings": job_settings(jobs.settings)},
        job_timeout=jobs.settings.job_timeout_seconds,
        result_ttl=7 * 86400,
        failure_ttl=7 * 86400,
        meta={"project": pid},
        description=f"import into {pid} ({options.get('preset') or options.get('format')})",
    )
    # after the enqueue: an aggregation requested from now on waits for this import
    store.r.sadd(store.pkey(pid, "imports"), import_id)
    return import_id


def new_import_id() -> str:
    return uuid.uuid4().hex


# -- the job -----------------------------------------------------------------------------


def run_import(prefix, project, import_id, options, settings=None):
    """RQ entry point: validate the staged file whole, then store it."""
    from .config import Settings

    job = get_current_job()
    conf = Settings().updated(settings or {})
    store = Store(job.connection, prefix)
    key = stage_key(prefix, import_id)
    try:
        total = (store.get_job(import_id) or {}).get("bytes")
        result = import_staged(store, project, key, options, conf, _progress(job, total))
    except FormatError as exc:
        store.update_job(import_id, status="failed", reason=str(exc) + "; nothing was imported")
        store.r.delete(key)
        raise
    except ImportStopped as exc:
        store.update_job(import_id, status="failed", reason=str(exc))
        store.r.delete(key)
        raise
    except Exception:
        store.update_job(import_id, status="failed", reason="internal error in the import job")
        raise
    store.r.delete(key)
    store.update_job(import_id, status="finished", result=result)
    store.r.srem(store.pkey(project, "imports"), import_id)
    _after_import(store, project, conf, result)
    return result


def import_staged(store: Store, project: str, key: str, options: dict, conf, progress=None) -> dict:
    meta = store.get_project(project)
    if meta is None:
        raise FormatError(options.get("name") or "upload", None, f"project {project!r} no longer exists")
    if not store.r.exists(key):
        raise FormatError(options.get("name") or "upload", None, "the uploaded file has expired or was already imported")
    check = Checker(meta, options.get("name") or "upload", conf.max_id_length)
    progress = progress or (lambda *a, **k: None)

    # Pass 1: the whole file must be valid before anything is stored.
    stats: dict = {}
    stream = StagedStream(store.r, key)
    n_answers = n_gold = 0
    for n, item in enumerate(items(stream, options, stats), start=1):
        if check(item)[0] == "a":
            n_answers += 1
        else:
            n_gold += 1
        if n % PROGRESS_ROWS == 0:
            progress("validating", stream.bytes_read, n)
    name = options.get("name") or "upload"
    if n_answers == 0 and n_gold == 0:
        raise FormatError(name, None, "no answers in the file" + (f" (left out: {_left_out(stats)})" if _left_out(stats) else ""))
    limit = int(getattr(conf, "max_answers_per_project", 0) or 0)
    held = store.counts(project)["answers"]
    if limit and held + n_answers > limit:
        raise FormatError(name, None, str(ProjectFull(project, held, n_answers, limit)))

    # Pass 2: store.
    from .formats import label_studio
    from .label_studio_events import record_annotations

    picker = label_studio.make_picker(options.get("field")) if options.get("preset") == "label_studio" else None
    stream = StagedStream(store.r, key)
    totals = {"accepted": 0, "duplicates": 0, "replaced": 0}
    batch: list = []
    gold: dict[str, int] = {}
    # Label Studio annotations of this batch, so that its later webhook events (which
    # carry only ids) find what the import stored.
    ann_answers: dict[str, tuple] = {}
    ann_gold: dict[str, tuple] = {}
    ls_tasks: dict[str, str] = {}
    rev = None
    stored = 0

    def flush():
        nonlocal rev, stored
        if batch:
            t, w, lab = zip(*((b[1], b[2], b[3]) for b in batch))
            try:
                # The limit again, per batch: labels posted while a long import runs count too.
                out = store.ingest(project, list(t), list(w), list(lab), [""] * len(batch), limit=limit)
            except ProjectFull as exc:
                raise ImportStopped(
                    f"{name}: {exc}; {stored} answers of this import were "
                    "stored before the project filled up (answers sent meanwhile count too), the rest were not"
                ) from None
            for k in totals:
                totals[k] += out[k]
            rev = out["revision"]
            stored += len(batch)
            batch.clear()
        if gold:
            try:
                rev = store.set_gold(project, list(gold), list(gold.values()), limit=limit)["revision"]
            except ProjectFull as exc:
                raise ImportStopped(
                    f"{name}: {exc}; {stored} answers of this import were stored, its remaining gold labels were not"
                ) from None
            gold.clear()
        if ann_answers or ann_gold or ls_tasks:
            record_annotations(store, project, ann_answers, ann_gold, ls_tasks)
            for pending in (ann_answers, ann_gold, ls_tasks):
                pending.clear()
        progress("storing", stream.bytes_read, stored)

    for item in items(stream, options, None, picker):
        row = check(item)
        if row[0] == "a":
            batch.append(row)
            if item.ref is not None:
                ann_answers[item.ref] = (row[1], row[2])
        else:
            gold[row[1]] = row[2]
            if item.ref is not None:
                ann_gold[item.ref] = (row[1], row[2])
        if item.tool_task is not None:
            ls_tasks[item.tool_task] = row[1]
        if len(batch) >= conf.max_batch or len(gold) >= conf.max_batch:
            flush()
    flush()
    # the job's last progress says it is all stored, however quick the import was
    progress("storing", stream.bytes_read, stored, final=True)
    if picker is not None and picker.field:
        remember_label_studio_tags(store, project, picker.field, picker.to_name)
    skipped = {k: v for k, v in stats.items() if k not in ("answers", "gold", "tasks")}
    return {"answers": n_answers, "gold": n_gold, **totals, "left_out": skipped,
            "revision": rev if rev is not None else store.counts(project)["revision"]}


def remember_label_studio_tags(store: Store, project: str, from_name: str, to_name: str | None) -> None:
    """Keep the tag names seen in Label Studio data for exports of predictions."""
    key = store.pkey(project, "ls")
    store.r.hsetnx(key, "from_name", from_name)
    if to_name:
        store.r.hsetnx(key, "to_name", to_name)


def _left_out(stats: dict) -> str:
    return ", ".join(f"{v} {k}" for k, v in stats.items() if k not in ("answers", "gold", "tasks") and v)


def _progress(job, total_bytes: int | None):
    last = [0.0]

    def progress(stage: str, bytes_read: int, rows: int, final: bool = False):
        now = time.time()
        if now - last[0] < PROGRESS_EVERY and not final:
            return
        last[0] = now
        event = {"stage": stage, "bytes_read": bytes_read, "rows": rows}
        if total_bytes:
            event["bytes_total"] = total_bytes
            # Two passes over the file: validation is the first half of the work.
            event["fraction"] = round((bytes_read / total_bytes + (stage == "storing")) / 2, 4)
        job.meta["progress"] = event
        try:
            job.save_meta()
        except Exception:  # noqa: BLE001 - progress is best effort
            log.warning("could not save import progress", exc_info=True)

    return progress


def _after_import(store: Store, project: str, conf, result: dict) -> None:
    meta = store.get_project(project) or {}
    agg = meta.get("aggregation") or {}
    if agg.get("auto") and result["accepted"] + result["replaced"] > 0:
        from .jobs import Jobs

        try:
            Jobs(store.r, conf).schedule_auto(project, agg.get("method", "dawid_skene"), agg.get("params") or {})
        except Exception:  # noqa: BLE001 - the import itself succeeded
            log.warning("could not schedule the automatic aggregation after an import", exc_info=True)
