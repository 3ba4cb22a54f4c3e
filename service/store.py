"""Redis layout of crowdqc: projects, keys, answers, gold, result versions and job records.

Answers are stored compactly and load as arrays:

* task and worker names are interned per project: ``tn``/``wn`` hash name -> id,
  ``tl``/``wl`` list id -> name (random access) and ``tnb``/``wnb`` the names in id
  order as one NUL-separated string (bulk loading: one GET, not one reply per name);
* ``pairs`` is one string of packed ``<u4 task id, <u4 worker id>`` records (8 bytes per
  answer) and ``lab`` one string of packed ``<u2`` label indices (2 bytes per answer),
  both indexed by the answer's slot; a worker answering a task again overwrites the
  label in place, so the arrays never hold two answers for one (task, worker) pair;
* ``ix:<bucket>`` hashes map a packed pair to its slot, for ingestion only; buckets of
  a few tasks stay small enough for Redis's compact (listpack) hash encoding.

Loading is four GETs in one MULTI (a consistent snapshot) and
``numpy.frombuffer``; no per-answer Python objects.  A batch of labels is written by one
Lua script, so it is atomic and idempotent.

Results are versioned: a job writes every key of a new version, then one script points
``cur`` at it; the version it replaces expires after a grace period.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

import numpy as np

# Tasks per ingestion-index bucket.  With the usual 3-10 answers per task a bucket holds
# well under Redis's default 128-entry listpack limit.
BUCKET_TASKS = 8
RESULT_PARTS = ("rows", "ix", "w", "wl", "d", "s")
# Label index of a removed answer's slot (projects have far fewer labels).
REMOVED = 0xFFFF

_INGEST = r"""
-- KEYS: tn tl wn wl pairs lab ids rev tnb wnb, and the service-wide answer counts (metrics)
-- ARGV: ix-prefix, bucket size, tasks, workers, answer ids (each a string of
-- NUL-terminated items), packed <u2 label indices, the project's answer limit (0: none).  Arguments are packed into a few
-- strings because encoding 40,000 separate arguments costs more than the whole script.
local ixp = ARGV[1]
local bucket = tonumber(ARGV[2])
local next_task = string.gmatch(ARGV[3], '([^%z]*)%z')
local next_worker = string.gmatch(ARGV[4], '([^%z]*)%z')
local next_id = string.gmatch(ARGV[5], '([^%z]*)%z')
local labs = ARGV[6]
local limit = tonumber(ARGV[7] or '0')
local n0 = redis.call('STRLEN', KEYS[6]) / 2
if limit > 0 and n0 + #labs / 2 > limit then
  -- Near the limit: count what this batch would add without writing anything, so that
  -- a refused batch leaves no trace (same rules as the loop below).
  local ct = string.gmatch(ARGV[3], '([^%z]*)%z')
  local cw = string.gmatch(ARGV[4], '([^%z]*)%z')
  local ci = string.gmatch(ARGV[5], '([^%z]*)%z')
  local seen_ids, seen_pairs, new = {}, {}, 0
  for j = 1, #labs / 2 do
    local tname, wname, aid = ct(), cw(), ci()
    local known_id = false
    if aid ~= '' then
      known_id = seen_ids[aid] or redis.call('HEXISTS', KEYS[7], aid) == 1
      seen_ids[aid] = true
    end
    local pk = tname .. '\0' .. wname
    if not known_id and not seen_pairs[pk] then
      seen_pairs[pk] = true
      local t = redis.call('HGET', KEYS[1], tname)
      local w = t and redis.call('HGET', KEYS[3], wname)
      if not (w and redis.call('HEXISTS', ixp .. math.floor(tonumber(t) / bucket), struct.pack('<I4I4', tonumber(t), tonumber(w))) == 1) then
        new = new + 1
      end
    end
  end
  if n0 + new > limit then return {-1, n0, new, limit} end
end
local tcache, wcache = {}, {}
local function intern(hk, lk, bk, cache, name)
  local id = cache[name]
  if id then return id end
  id = redis.call('HGET', hk, name)
  if id then
    id = tonumber(id)
  else
    id = redis.call('RPUSH', lk, name) - 1
    redis.call('HSET', hk, name, id)
    redis.call('APPEND', bk, name .. '\0')
  end
  cache[name] = id
  return id
end
local newpairs, newlabs, pending = {}, {}, {}
local accepted, dup, replaced = 0, 0, 0
for j = 1, #labs / 2 do
  local tname, wname, aid = next_task(), next_worker(), next_id()
  if aid ~= '' and redis.call('HSETNX', KEYS[7], aid, '') == 0 then
    dup = dup + 1
  else
    local t = intern(KEYS[1], KEYS[2], KEYS[9], tcache, tname)
    local w = intern(KEYS[3], KEYS[4], KEYS[10], wcache, wname)
    local lab = string.sub(labs, 2 * j - 1, 2 * j)
    local field = struct.pack('<I4I4', t, w)
    local k = pending[field]
    if k then
      if newlabs[k] == lab then dup = dup + 1 else newlabs[k] = lab; replaced = replaced + 1 end
    else
      local bkey = ixp .. math.floor(t / bucket)
      local slot = redis.call('HGET', bkey, field)
      if slot then
        slot = tonumber(slot)
        if redis.call('GETRANGE', KEYS[6], slot * 2, slot * 2 + 1) == lab then
          dup = dup + 1
        else
          redis.call('SETRANGE', KEYS[6], slot * 2, lab)
          replaced = replaced + 1
        end
      else
        k = #newpairs + 1
        newpairs[k] = field
        newlabs[k] = lab
        pending[field] = k
        redis.call('HSET', bkey, field, n0 + k - 1)
        accepted = accepted + 1
      end
    end
  end
end
if #newpairs > 0 then
  redis.call('APPEND', KEYS[5], table.concat(newpairs))
  redis.call('APPEND', KEYS[6], table.concat(newlabs))
end
local rev = tonumber(redis.call('GET', KEYS[8]) or '0')
if accepted + replaced > 0 then rev = redis.call('INCR', KEYS[8]) end
-- counted here, where they are stored, whoever stores them (label batches, import jobs,
-- Label Studio events) and whichever process or machine runs them
if accepted > 0 then redis.call('HINCRBY', KEYS[11], 'accepted', accepted) end
if dup > 0 then redis.call('HINCRBY', KEYS[11], 'duplicate', dup) end
if replaced > 0 then redis.call('HINCRBY', KEYS[11], 'replaced', replaced) end
return {accepted, dup, replaced, rev}
"""

_SWITCH = r"""
-- KEYS: cur ; ARGV: version, snapshot rev, meta json, grace seconds, result key prefix,
-- then the result part names.  Refuses a result computed from an older snapshot than
-- the one already published (jobs may finish out of order).
local old_v = redis.call('HGET', KEYS[1], 'version')
local old_rev = tonumber(redis.call('HGET', KEYS[1], 'snapshot_rev') or '-1')
local function expire_version(v)
  for i = 6, #ARGV do
    redis.call('EXPIRE', ARGV[5] .. v .. ':' .. ARGV[i], tonumber(ARGV[4]))
  end
end
if tonumber(ARGV[2]) < old_rev then
  expire_version(ARGV[1])
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'snapshot_rev', ARGV[2], 'meta', ARGV[3])
if old_v then expire_version(old_v) end
return 1
"""

# Removing an answer leaves a tombstone label (REMOVED) in its slot and drops its
# ingestion-index entry: rewriting the packed strings to close the gap would copy the whole
# project per deletion.  Snapshots skip tombstones; a later answer by the same worker to
# the same task takes a new slot.
_REMOVE = r"""
-- KEYS: tn wn lab rev ndel gold
-- ARGV: ix-prefix, bucket size, mode ('pairs' or 'tasks'), tasks, workers (NUL-terminated)
local ixp = ARGV[1]
local bucket = tonumber(ARGV[2])
local next_task = string.gmatch(ARGV[4], '([^%z]*)%z')
local removed, missing, gold_removed = 0, 0, 0
local function drop(bkey, field, slot)
  redis.call('HDEL', bkey, field)
  redis.call('SETRANGE', KEYS[3], tonumber(slot) * 2, '\255\255')
  removed = removed + 1
end
if ARGV[3] == 'pairs' then
  local next_worker = string.gmatch(ARGV[5], '([^%z]*)%z')
  for tname in next_task do
    local wname = next_worker()
    local t = redis.call('HGET', KEYS[1], tname)
    local w = t and redis.call('HGET', KEYS[2], wname)
    local slot, bkey, field = nil, nil, nil
    if w then
      t, w = tonumber(t), tonumber(w)
      bkey, field = ixp .. math.floor(t / bucket), struct.pack('<I4I4', t, w)
      slot = redis.call('HGET', bkey, field)
    end
    if slot then drop(bkey, field, slot) else missing = missing + 1 end
  end
else
  for tname in next_task do
    local t = redis.call('HGET', KEYS[1], tname)
    local found = false
    if t then
      t = tonumber(t)
      local bkey = ixp .. math.floor(t / bucket)
      local mine = struct.pack('<I4', t)
      local all = redis.call('HGETALL', bkey)
      for i = 1, #all, 2 do
        if string.sub(all[i], 1, 4) == mine then
          drop(bkey, all[i], all[i + 1])
          found = true
        end
      end
    end
    if redis.call('HDEL', KEYS[6], tname) == 1 then
      gold_removed = gold_removed + 1
      found = true
    end
    if not found then missing = missing + 1 end
  end
end
if removed > 0 then redis.call('INCRBY', KEYS[5], removed) end
local rev = tonumber(redis.call('GET', KEYS[4]) or '0')
if removed + gold_removed > 0 then rev = redis.call('INCR', KEYS[4]) end
return {removed, missing, gold_removed, rev}
"""

# Gold labels: add or replace in one step, refused whole when the new tasks would take
# the project past its limit.  KEYS: gold hash, revision.  ARGV: limit (0: none), then
# task, label pairs (distinct tasks).
_SET_GOLD = r"""
local limit = tonumber(ARGV[1])
if limit > 0 then
  local held = redis.call('HLEN', KEYS[1])
  if held + (#ARGV - 1) / 2 > limit then
    local new = 0
    for i = 2, #ARGV, 2 do
      if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then new = new + 1 end
    end
    if held + new > limit then return {-1, held, new, limit} end
  end
end
local added = 0
for i = 2, #ARGV, 2 do added = added + redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return {added, redis.call('INCR', KEYS[2])}
"""

_DEL_IF = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _nul_joined(values) -> bytes:
    """Items as one string, each followed by NUL (ids never contain NUL: validated)."""
    if not values:
        return b""
    return ("\0".join(values) + "\0").encode("utf-8")


def _nul_split(blob: bytes | None) -> list[str]:
    if not blob:
        return []
    return blob.decode("utf-8").split("\0")[:-1]


def _s(value) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


class ProjectFull(Exception):
    """A batch would take a project past its limit (nothing was written).  ``str()`` is the
    one wording of it, for the labels and gold endpoints, imports and webhook events."""

    def __init__(self, project: str, held: int, new: int, limit: int, what: str = "answers"):
        super().__init__(f"project {project!r} is full: it holds {held} {what} and this batch would add {new}, "
                         f"over the limit of {limit} {what} per project (CROWDQC_MAX_ANSWERS)")
        self.held, self.new, self.limit, self.what = held, new, limit, what


@dataclass
class Snapshot:
    """Every stored answer of a project at one instant, as integer codes."""

    task: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    task_names: list[str]
    worker_names: list[str]
    rev: int
    gold: dict[str, int]

    @property
    def n_answers(self) -> int:
        return int(self.task.size)


class Store:
    def __init__(self, redis, prefix: str = "crowdqc:"):
        self.r = redis
        self.prefix = prefix
        self._ingest = redis.register_script(_INGEST)
        self._switch = redis.register_script(_SWITCH)
        self._del_if = redis.register_script(_DEL_IF)
        self._remove = redis.register_script(_REMOVE)
        self._set_gold = redis.register_script(_SET_GOLD)

    # -- key names ---------------------------------------------------------------------
    def answers_metric_key(self) -> str:
        """Answers stored by outcome (accepted, duplicate, replaced), over all projects."""
        return f"{self.prefix}metrics:answers"

    def pkey(self, project: str, part: str) -> str:
        return f"{self.prefix}p:{project}:{part}"

    def result_prefix(self, project: str) -> str:
        return self.pkey(project, "r:")

    def rkey(self, project: str, version: int, part: str) -> str:
        return f"{self.result_prefix(project)}{version}:{part}"

    def _key_key(self, token_digest: str) -> str:
        return f"{self.prefix}key:{token_digest}"

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    # -- projects ----------------------------------------------------------------------
    def create_project(self, meta: dict) -> bool:
        pid = meta["id"]
        if not self.r.set(self.pkey(pid, "meta"), json.dumps(meta), nx=True):
            return False
        self.r.sadd(f"{self.prefix}projects", pid)
        return True

    def get_project(self, pid: str) -> dict | None:
        raw = self.r.get(self.pkey(pid, "meta"))
        return json.loads(raw) if raw else None

    def update_project(self, meta: dict) -> None:
        self.r.set(self.pkey(meta["id"], "meta"), json.dumps(meta), xx=True)

    def list_projects(self) -> list[str]:
        return sorted(_s(p) for p in self.r.smembers(f"{self.prefix}projects"))

    def delete_project(self, pid: str) -> None:
        for _key_id, dig in self.r.hgetall(self.pkey(pid, "keys")).items():
            self.r.delete(self._key_key(_s(dig)))
        keys = list(self.r.scan_iter(match=self.pkey(pid, "*"), count=1000))
        # UNLINK: a project's big hashes are freed in the background, not while Redis
        # blocks every other client (1.1 s for a 2M-field hash here)
        for i in range(0, len(keys), 500):
            self.r.unlink(*keys[i : i + 500])
        self.r.srem(f"{self.prefix}projects", pid)

    def counts(self, pid: str) -> dict:
        p = self.r.pipeline(transaction=True)
        p.strlen(self.pkey(pid, "lab"))
        p.llen(self.pkey(pid, "tl"))
        p.llen(self.pkey(pid, "wl"))
        p.hlen(self.pkey(pid, "gold"))
        p.get(self.pkey(pid, "rev"))
        p.get(self.pkey(pid, "ndel"))
        n_lab, n_tasks, n_workers, n_gold, rev, n_removed = p.execute()
        return {
            "answers": int(n_lab) // 2 - int(n_removed or 0),
            "tasks": int(n_tasks),
            "workers": int(n_workers),
            "gold": int(n_gold),
            "revision": int(rev or 0),
        }

    # -- keys --------------------------------------------------------------------------
    def create_key(self, pid: str, role: str) -> dict:
        # 32 random bytes: the sha256 of such a token is as safe to store as a slow hash.
        token = "cq_" + secrets.token_urlsafe(32)
        dig = digest(token)
        key_id = dig[:12]
        record = {"project": pid, "role": role, "id": key_id, "created": time.time()}
        p = self.r.pipeline(transaction=True)
        p.set(self._key_key(dig), json.dumps(record))
        p.hset(self.pkey(pid, "keys"), key_id, dig)
        p.execute()
        return {**record, "key": token}

    def lookup_key(self, token: str) -> dict | None:
        dig = digest(token)
        raw = self.r.get(self._key_key(dig))
        if raw is None:
            return None
        record = json.loads(raw)
        # The lookup is by digest already; compare again in constant time so a future
        # change of layout cannot turn this into a prefix oracle.
        stored = _s(self.r.hget(self.pkey(record["project"], "keys"), record["id"]) or b"")
        if not hmac.compare_digest(stored, dig):
            return None
        return record

    def list_keys(self, pid: str) -> list[dict]:
        out = []
        for dig in self.r.hvals(self.pkey(pid, "keys")):
            raw = self.r.get(self._key_key(_s(dig)))
            if raw:
                out.append(json.loads(raw))
        return sorted(out, key=lambda k: k["created"])

    def revoke_key(self, pid: str, key_id: str) -> bool:
        dig = self.r.hget(self.pkey(pid, "keys"), key_id)
        if dig is None:
            return False
        p = self.r.pipeline(transaction=True)
        p.delete(self._key_key(_s(dig)))
        p.hdel(self.pkey(pid, "keys"), key_id)
        p.execute()
        return True

    # -- answers -----------------------------------------------------------------------
    def ingest(self, pid: str, tasks, workers, label_idx, answer_ids, limit: int = 0) -> dict:
        """Store a validated batch atomically.  ``label_idx`` are indices into the
        project's declared labels; ``answer_ids`` holds ``''`` where none was given.
        With ``limit`` > 0, a batch that would take the project past ``limit`` stored
        answers raises :class:`ProjectFull` and writes nothing."""
        if not len(tasks) == len(workers) == len(label_idx) == len(answer_ids):
            raise ValueError("tasks, workers, labels and answer ids differ in length")
        argv = [
            self.pkey(pid, "ix:"),
            BUCKET_TASKS,
            _nul_joined(tasks),
            _nul_joined(workers),
            _nul_joined(answer_ids),
            np.asarray(label_idx, dtype="<u2").tobytes(),
            int(limit or 0),
        ]
        keys = [self.pkey(pid, k) for k in ("tn", "tl", "wn", "wl", "pairs", "lab", "ids", "rev", "tnb", "wnb")]
        keys.append(self.answers_metric_key())
        accepted, dup, replaced, rev = self._ingest(keys=keys, args=argv)
        if int(accepted) < 0:
            raise ProjectFull(pid, held=int(dup), new=int(replaced), limit=int(rev))
        return {"accepted": int(accepted), "duplicates": int(dup), "replaced": int(replaced), "revision": int(rev)}

    def snapshot(self, pid: str) -> Snapshot:
        p = self.r.pipeline(transaction=True)
        p.get(self.pkey(pid, "pairs"))
        p.get(self.pkey(pid, "lab"))
        p.get(self.pkey(pid, "tnb"))
        p.get(self.pkey(pid, "wnb"))
        p.get(self.pkey(pid, "rev"))
        p.hgetall(self.pkey(pid, "gold"))
        pairs, labs, tl, wl, rev, gold = p.execute()
        pairs = np.frombuffer(pairs or b"", dtype="<u4").reshape(-1, 2)
        labels = np.frombuffer(labs or b"", dtype="<u2")
        kept = labels != REMOVED
        if not kept.all():  # removed answers (see _REMOVE)
            pairs, labels = pairs[kept], labels[kept]
        return Snapshot(
            task=pairs[:, 0].astype(np.int32),
            worker=pairs[:, 1].astype(np.int32),
            label=labels.astype(np.int32),
            task_names=_nul_split(tl),
            worker_names=_nul_split(wl),
            rev=int(rev or 0),
            gold={k.decode("utf-8"): int(v) for k, v in gold.items()},
        )

    def remove_answers(self, pid: str, tasks, workers) -> dict:
        """Remove the answers of (task, worker) pairs, atomically; unknown pairs are
        counted as ``missing``."""
        if len(tasks) != len(workers):
            raise ValueError("tasks and workers differ in length")
        return self._removal(pid, "pairs", tasks, workers)

    def remove_tasks(self, pid: str, tasks) -> dict:
        """Remove every answer to ``tasks`` and their gold labels, atomically."""
        return self._removal(pid, "tasks", tasks, [])

    def _removal(self, pid, mode, tasks, workers) -> dict:
        keys = [self.pkey(pid, k) for k in ("tn", "wn", "lab", "rev", "ndel", "gold")]
        args = [self.pkey(pid, "ix:"), BUCKET_TASKS, mode, _nul_joined(list(tasks)), _nul_joined(list(workers))]
        removed, missing, gold, rev = self._remove(keys=keys, args=args)
        return {"removed": int(removed), "missing": int(missing), "gold_removed": int(gold), "revision": int(rev)}

    def task_answers(self, pid: str, task: str) -> list[tuple[str, int]] | None:
        """(worker, label index) of every stored answer to one task; None if unknown."""
        tid = self.r.hget(self.pkey(pid, "tn"), task)
        if tid is None:
            return None
        tid = int(tid)
        fields = self.r.hgetall(self.pkey(pid, f"ix:{tid // BUCKET_TASKS}"))
        mine = []
        for field, slot in fields.items():
            t, w = np.frombuffer(field, dtype="<u4")
            if t == tid:
                mine.append((int(w), int(slot)))
        if not mine:
            return []
        p = self.r.pipeline(transaction=False)
        for w, slot in mine:
            p.lindex(self.pkey(pid, "wl"), w)
            p.getrange(self.pkey(pid, "lab"), 2 * slot, 2 * slot + 1)
        out = p.execute()
        rows = [
            (out[2 * i].decode("utf-8"), int(np.frombuffer(out[2 * i + 1], dtype="<u2")[0]))
            for i in range(len(mine))
        ]
        return sorted(rows)

    # -- gold --------------------------------------------------------------------------
    def set_gold(self, pid: str, tasks, label_idx, limit: int = 0) -> dict:
        """Add or replace gold labels; with ``limit`` > 0 a batch that would take the
        project past ``limit`` gold tasks raises :class:`ProjectFull` and writes nothing."""
        mapping = dict(zip(tasks, (int(i) for i in label_idx)))
        args = [int(limit or 0)]
        for task, label in mapping.items():
            args += [task, label]
        out = self._set_gold(keys=[self.pkey(pid, "gold"), self.pkey(pid, "rev")], args=args)
        if int(out[0]) < 0:
            raise ProjectFull(pid, held=int(out[1]), new=int(out[2]), limit=int(out[3]), what="gold labels")
        return {"accepted": len(mapping), "new": int(out[0]), "revision": int(out[1])}

    # -- results -----------------------------------------------------------------------
    def write_result(self, pid: str, snapshot_rev: int, meta: dict, parts: dict) -> tuple[int, bool]:
        """Publish a new result version; returns (version, published).

        ``parts``: ``rows`` (list of JSON strings, in task order), ``ix`` (task -> row
        index), ``w`` (worker -> JSON), ``wl``, ``d``, ``s`` (JSON strings).
        """
        version = int(self.r.incr(self.pkey(pid, "rver")))
        p = self.r.pipeline(transaction=False)
        rows = parts["rows"]
        for i in range(0, len(rows), 5000):
            p.rpush(self.rkey(pid, version, "rows"), *rows[i : i + 5000])
        items = list(parts["ix"].items())
        for i in range(0, len(items), 5000):
            p.hset(self.rkey(pid, version, "ix"), mapping=dict(items[i : i + 5000]))
        items = list(parts["w"].items())
        for i in range(0, len(items), 5000):
            p.hset(self.rkey(pid, version, "w"), mapping=dict(items[i : i + 5000]))
        for part in ("wl", "d", "s"):
            p.set(self.rkey(pid, version, part), parts[part])
        p.execute()
        meta = {**meta, "version": version, "snapshot_revision": snapshot_rev}
        ok = self._switch(
            keys=[self.pkey(pid, "cur")],
            args=[version, snapshot_rev, json.dumps(meta), self._grace, self.result_prefix(pid), *RESULT_PARTS],
        )
        return version, bool(ok)

    _grace = 600

    def set_grace(self, seconds: int) -> None:
        self._grace = int(seconds)

    def current_result(self, pid: str) -> dict | None:
        raw = self.r.hget(self.pkey(pid, "cur"), "meta")
        return json.loads(raw) if raw else None

    def version_exists(self, pid: str, version: int) -> bool:
        return bool(self.r.exists(self.rkey(pid, version, "s")))

    def result_part(self, pid: str, version: int, part: str):
        raw = self.r.get(self.rkey(pid, version, part))
        return json.loads(raw) if raw is not None else None

    def consensus_rows(self, pid: str, version: int, start: int, stop: int) -> list[dict]:
        raw = self.r.lrange(self.rkey(pid, version, "rows"), start, stop - 1)
        return [json.loads(x) for x in raw]

    def consensus_raw(self, pid: str, version: int, start: int, stop: int) -> list[bytes]:
        """The stored JSON text of rows ``start:stop`` (pages are spliced, not re-encoded)."""
        return self.r.lrange(self.rkey(pid, version, "rows"), start, stop - 1)

    def consensus_count(self, pid: str, version: int) -> int:
        return int(self.r.llen(self.rkey(pid, version, "rows")))

    def consensus_row(self, pid: str, version: int, task: str) -> dict | None:
        idx = self.r.hget(self.rkey(pid, version, "ix"), task)
        if idx is None:
            return None
        raw = self.r.lindex(self.rkey(pid, version, "rows"), int(idx))
        return json.loads(raw) if raw is not None else None

    def worker_rows(self, pid: str, version: int, workers: list[str]) -> list[dict | None]:
        if not workers:
            return []
        raw = self.r.hmget(self.rkey(pid, version, "w"), workers)
        return [json.loads(x) if x is not None else None for x in raw]

    # -- jobs --------------------------------------------------------------------------
    def save_job(self, job_id: str, record: dict, ttl: int) -> None:
        self.r.set(self.job_key(job_id), json.dumps(record), ex=ttl)

    def get_job(self, job_id: str) -> dict | None:
        raw = self.r.get(self.job_key(job_id))
        return json.loads(raw) if raw else None

    def update_job(self, job_id: str, **changes) -> None:
        record = self.get_job(job_id)
        if record is None:
            return
        record.update(changes)
        ttl = self.r.ttl(self.job_key(job_id))
        self.r.set(self.job_key(job_id), json.dumps(record), ex=ttl if ttl and ttl > 0 else 86400)

    def delete_if(self, key: str, value: str) -> bool:
        return bool(self._del_if(keys=[key], args=[value]))
