"""Removing answers (Label Studio deletions): tombstones that snapshots skip, atomic and
idempotent, with the ingestion index kept consistent."""

from __future__ import annotations

import numpy as np
import pytest

from service.store import BUCKET_TASKS, Store


@pytest.fixture
def store(redis_client, namespace):
    return Store(redis_client, namespace["key_prefix"])


def triples(snap):
    return sorted((snap.task_names[t], snap.worker_names[w], int(lab)) for t, w, lab in zip(snap.task, snap.worker, snap.label))


def test_remove_pairs_then_answer_again(store):
    store.ingest("p", ["t1", "t1", "t2", "t3"], ["w1", "w2", "w1", "w2"], [0, 1, 1, 0], [""] * 4)
    out = store.remove_answers("p", ["t1", "t9", "t2"], ["w2", "w1", "w3"])
    # (t1, w2) exists; t9 is unknown; t2 exists but w3 never answered it.
    assert out == {"removed": 1, "missing": 2, "gold_removed": 0, "revision": 2}
    assert triples(store.snapshot("p")) == [("t1", "w1", 0), ("t2", "w1", 1), ("t3", "w2", 0)]
    assert store.counts("p")["answers"] == 3
    assert store.task_answers("p", "t1") == [("w1", 0)]
    # Removing again is a no-op and does not bump the revision.
    assert store.remove_answers("p", ["t1"], ["w2"]) == {"removed": 0, "missing": 1, "gold_removed": 0, "revision": 2}
    # The worker answers again: a new answer, not a replacement of the tombstone.
    out = store.ingest("p", ["t1"], ["w2"], [0], [""])
    assert (out["accepted"], out["replaced"]) == (1, 0)
    assert triples(store.snapshot("p")) == [("t1", "w1", 0), ("t1", "w2", 0), ("t2", "w1", 1), ("t3", "w2", 0)]
    assert store.counts("p")["answers"] == 4


def test_remove_tasks_with_gold_across_buckets(store):
    # Tasks t0..t19 span three ingestion buckets; each has answers by w0 and w1.
    tasks = [f"t{i}" for i in range(20) for _ in range(2)]
    workers = [f"w{j}" for _ in range(20) for j in range(2)]
    store.ingest("p", tasks, workers, [i % 2 for i in range(40)], [""] * 40)
    store.set_gold("p", ["t3", "t17"], [1, 0])
    out = store.remove_tasks("p", ["t3", f"t{BUCKET_TASKS}", "nope"])
    assert (out["removed"], out["missing"], out["gold_removed"]) == (4, 1, 1)
    snap = store.snapshot("p")
    left = {snap.task_names[t] for t in np.unique(snap.task)}
    assert left == {f"t{i}" for i in range(20)} - {"t3", f"t{BUCKET_TASKS}"}
    assert snap.n_answers == 36 and snap.gold == {"t17": 0}
    assert store.counts("p")["answers"] == 36
    assert store.task_answers("p", "t3") == []
