"""The Redis layout: atomic, idempotent ingestion; snapshots as arrays; versioned results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.store import Store


@pytest.fixture
def store(redis_client, namespace):
    return Store(redis_client, namespace["key_prefix"])


def as_triples(snap):
    """Snapshot -> sorted (task, worker, label index) triples, decoded by hand."""
    return sorted(
        (snap.task_names[t], snap.worker_names[w], int(lab))
        for t, w, lab in zip(snap.task, snap.worker, snap.label)
    )


def test_ingest_counts_duplicates_and_replacements(store):
    out = store.ingest("p", ["t1", "t1", "t2"], ["w1", "w2", "w1"], [0, 1, 1], ["", "", ""])
    assert out == {"accepted": 3, "duplicates": 0, "replaced": 0, "revision": 1}
    # (t1, w1, 0) again: duplicate; (t2, w1) now says 0: replaces; (t3, w2) new.
    out = store.ingest("p", ["t1", "t2", "t3"], ["w1", "w1", "w2"], [0, 0, 1], ["", "", ""])
    assert out == {"accepted": 1, "duplicates": 1, "replaced": 1, "revision": 2}
    # Nothing changed: revision stays.
    out = store.ingest("p", ["t1"], ["w1"], [0], [""])
    assert out == {"accepted": 0, "duplicates": 1, "replaced": 0, "revision": 2}
    snap = store.snapshot("p")
    assert as_triples(snap) == [("t1", "w1", 0), ("t1", "w2", 1), ("t2", "w1", 0), ("t3", "w2", 1)]
    assert snap.rev == 2
    assert store.counts("p") == {"answers": 4, "tasks": 3, "workers": 2, "gold": 0, "revision": 2}


def test_repeats_inside_one_batch_keep_the_last(store):
    out = store.ingest("p", ["t", "t", "t"], ["w", "w", "w"], [0, 1, 1], ["", "", ""])
    # first is new, second replaces it, third repeats the second
    assert out == {"accepted": 1, "duplicates": 1, "replaced": 1, "revision": 1}
    assert as_triples(store.snapshot("p")) == [("t", "w", 1)]


def test_answer_ids_make_retries_idempotent(store):
    store.ingest("p", ["t"], ["w"], [0], ["a1"])
    store.ingest("p", ["t"], ["w"], [1], ["a2"])  # the worker changes their mind
    # A retry of the first request must not undo the change.
    out = store.ingest("p", ["t"], ["w"], [0], ["a1"])
    assert out["duplicates"] == 1 and out["accepted"] == 0 and out["replaced"] == 0
    assert as_triples(store.snapshot("p")) == [("t", "w", 1)]


def test_snapshot_matches_a_dict_reference_on_random_batches(store):
    """Many random batches with repeats; the stored state must equal a dict keyed by
    (task, worker) updated in input order (the documented 'latest answer wins' rule)."""
    rng = np.random.default_rng(7)
    reference: dict = {}
    for _ in range(20):
        n = int(rng.integers(1, 300))
        tasks = [f"t{x}" for x in rng.integers(0, 60, n)]
        workers = [f"w{x}" for x in rng.integers(0, 15, n)]
        labels = rng.integers(0, 3, n).tolist()
        store.ingest("p", tasks, workers, labels, [""] * n)
        for t, w, lab in zip(tasks, workers, labels):
            reference[(t, w)] = lab
    snap = store.snapshot("p")
    assert as_triples(snap) == sorted((t, w, lab) for (t, w), lab in reference.items())
    assert snap.task.dtype == np.int32 and snap.label.dtype == np.int32


def test_unicode_and_integer_like_names_round_trip(store):
    names = ["café", "ca\u0301fe", "1", "01", "a b", "日本"]
    store.ingest("p", names, names, [0] * len(names), [""] * len(names))
    snap = store.snapshot("p")
    assert sorted(snap.task_names) == sorted(names)
    assert as_triples(snap) == sorted((n, n, 0) for n in names)


def test_task_answers(store):
    store.ingest("p", ["t1", "t1", "t2"], ["w1", "w2", "w1"], [0, 1, 1], ["", "", ""])
    assert store.task_answers("p", "t1") == [("w1", 0), ("w2", 1)]
    assert store.task_answers("p", "nope") is None


def test_gold(store):
    out = store.set_gold("p", ["t1", "t2"], [1, 0])
    assert out["accepted"] == 2 and out["new"] == 2
    store.set_gold("p", ["t1"], [0])
    assert store.snapshot("p").gold == {"t1": 0, "t2": 0}


def _parts(tag):
    return {
        "rows": [json.dumps({"task": "t", "label": tag})],
        "ix": {"t": 0},
        "w": {"w": json.dumps({"worker": "w"})},
        "wl": json.dumps({"fields": [], "rows": [["w", []]]}),
        "d": "[]",
        "s": json.dumps({"summary": {}, "agreement": None}),
    }


def test_results_switch_atomically_and_never_go_back(store, redis_client):
    v1, ok1 = store.write_result("p", 5, {"m": 1}, _parts("a"))
    assert ok1 and store.current_result("p")["version"] == v1
    v2, ok2 = store.write_result("p", 7, {"m": 2}, _parts("b"))
    assert ok2 and store.current_result("p")["version"] == v2
    assert store.consensus_row("p", v2, "t") == {"task": "t", "label": "b"}
    # The replaced version stays readable for the grace period (it has a TTL now).
    assert store.consensus_row("p", v1, "t") == {"task": "t", "label": "a"}
    assert 0 < redis_client.ttl(store.rkey("p", v1, "rows")) <= 600
    # A job that snapshotted older data and finishes last must not replace newer results.
    v3, ok3 = store.write_result("p", 6, {"m": 3}, _parts("c"))
    assert not ok3 and store.current_result("p")["version"] == v2
    assert redis_client.ttl(store.rkey("p", v3, "rows")) > 0


def test_keys_are_stored_hashed(store, redis_client):
    created = store.create_key("p", "writer")
    token = created["key"]
    assert store.lookup_key(token)["role"] == "writer"
    assert store.lookup_key(token + "x") is None
    # The secret itself is nowhere in Redis.
    for key in redis_client.scan_iter(match=f"{store.prefix}*"):
        if redis_client.type(key) == b"string":
            assert token.encode() not in redis_client.get(key)
    assert store.revoke_key("p", created["id"])
    assert store.lookup_key(token) is None


def test_compact_storage(store, redis_client):
    """Bytes per stored answer with short ids (measured with MEMORY USAGE): the layout
    must stay far below a naive one-hash-field-per-answer layout (~80+ bytes)."""
    rng = np.random.default_rng(0)
    n_tasks, per = 2000, 5
    tasks = [f"t{t}" for t in np.repeat(np.arange(n_tasks), per)]
    workers = [f"w{w}" for w in rng.integers(0, 100, n_tasks * per)]
    store.ingest("p", tasks, workers, rng.integers(0, 3, n_tasks * per).tolist(), [""] * len(tasks))
    n = store.counts("p")["answers"]
    total = sum(redis_client.memory_usage(k) or 0 for k in redis_client.scan_iter(match=store.pkey("p", "*")))
    assert total / n < 60, total / n


def test_packed_layout_loads_into_the_arrays_written(store, redis_client):
    """Load path only (the layout is written directly, as ingestion would leave it).
    Its speed on 1,000,000 answers is measured in bench/, not asserted here."""
    from aggregation import from_codes

    rng = np.random.default_rng(1)
    n_tasks, per, n_workers = 20_000, 5, 2_000
    task = np.repeat(np.arange(n_tasks, dtype="<u4"), per)
    # distinct workers per task: consecutive ids from a random start
    worker = ((rng.integers(0, n_workers, n_tasks).repeat(per) + np.tile(np.arange(per), n_tasks)) % n_workers).astype("<u4")
    label = rng.integers(0, 3, task.size).astype("<u2")
    pairs = np.empty((task.size, 2), dtype="<u4")
    pairs[:, 0], pairs[:, 1] = task, worker
    redis_client.set(store.pkey("p", "pairs"), pairs.tobytes())
    redis_client.set(store.pkey("p", "lab"), label.tobytes())
    redis_client.set(store.pkey("p", "tnb"), "".join(f"task-{i}\0" for i in range(n_tasks)).encode())
    redis_client.set(store.pkey("p", "wnb"), "".join(f"worker-{i}\0" for i in range(n_workers)).encode())
    snap = store.snapshot("p")
    answers = from_codes(snap.task, snap.task_names, snap.worker, snap.worker_names, snap.label, ["a", "b", "c"], classes=["a", "b", "c"])
    assert answers.n_answers == n_tasks * per and answers.n_tasks == n_tasks
    # spot check one answer against the arrays we wrote
    i = 12_347
    t = int(np.searchsorted(answers.task_names, f"task-{task[i]}"))
    w = int(np.searchsorted(answers.worker_names, f"worker-{worker[i]}"))
    row = np.flatnonzero((answers.task == t) & (answers.worker == w))
    assert row.size == 1 and answers.label[row[0]] == label[i]
