"""Toloka results TSV and MTurk batch results CSV, on small files in the tools' real shape."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from service.formats import Answer, FormatError, Gold, parse

DATA = Path(__file__).parent / "data" / "formats"
IMG = "https://tlk.s3.yandex.net/dataset/cats_vs_dogs/"


def read(preset, data, **kw):
    stream = open(data, "rb") if isinstance(data, Path) else io.BytesIO(data)
    with stream:
        return list(parse(preset, stream, "results", **kw))


def rows(items):
    return [(i.task, i.worker, i.label, i.line) for i in items if isinstance(i, Answer)]


# ------------------------------------------------------------------------------ Toloka


def test_toloka_results():
    stats: dict = {}
    items = read("toloka", DATA / "toloka_results.tsv", stats=stats)
    w1, w3 = "0c3eb61c3a59a5c3f0e4a2c9d2a2c1b3", "a9b8c7d6e5f40312a1b2c3d4e5f60718"
    # Lines 5-7 are the REJECTED assignment, line 11 a SKIPPED one (no answer).
    assert rows(items) == [
        (IMG + "cats/0a1b.jpg", w1, "cat", 2),
        (IMG + "dogs/3f2e.jpg", w1, "dog", 3),
        (IMG + "cats/9c41.jpg", w1, "cat", 4),
        (IMG + "cats/0a1b.jpg", w3, "cat", 8),
        (IMG + "dogs/3f2e.jpg", w3, "cat", 9),
        (IMG + "cats/9c41.jpg", w3, "cat", 10),
    ]
    # The control task's gold once, though three rows carry it.
    assert [(g.task, g.label, g.line) for g in items if isinstance(g, Gold)] == [(IMG + "cats/9c41.jpg", "cat", 4)]
    assert stats == {"answers": 6, "gold": 1, "rejected": 3, "no_answer": 1}


def test_toloka_include_rejected():
    items = read("toloka", DATA / "toloka_results.tsv", include_rejected=True)
    assert [r[3] for r in rows(items)] == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_toloka_statuses_of_a_download_taken_while_the_pool_runs():
    # toloka-kit's assignment statuses: ACTIVE (still being done: no answer yet), SUBMITTED,
    # APPROVED, REJECTED, SKIPPED, EXPIRED; older files say ACCEPTED for APPROVED.
    head = "INPUT:image\tOUTPUT:result\tASSIGNMENT:worker_id\tASSIGNMENT:status\n"
    body = head + "".join(f"img{i}\t{out}\tw{i}\t{status}\n" for i, (out, status) in enumerate([
        ("cat", "APPROVED"), ("", "ACTIVE"), ("dog", "SUBMITTED"), ("dog", "ACCEPTED"), ("", "EXPIRED"),
        ("", "active"), ("cat", "REJECTED"), ("", "SKIPPED"),
    ]))
    stats: dict = {}
    items = read("toloka", body.encode(), stats=stats)
    assert rows(items) == [("img0", "w0", "cat", 2), ("img2", "w2", "dog", 4), ("img3", "w3", "dog", 5)]
    assert stats == {"answers": 3, "no_answer": 4, "rejected": 1}


def test_toloka_fixture_uses_the_real_status_names():
    statuses = [line.split("\t")[7] for line in (DATA / "toloka_results.tsv").read_text().splitlines()[1:]]
    assert statuses == ["APPROVED"] * 3 + ["REJECTED"] * 3 + ["SUBMITTED"] * 3 + ["SKIPPED"]


HEADER = "INPUT:text\tINPUT:lang\tOUTPUT:sentiment\tOUTPUT:toxic\tASSIGNMENT:worker_id\tASSIGNMENT:status\n"


def test_toloka_several_inputs_make_one_canonical_key_and_field_is_required():
    body = (HEADER + "hello\ten\tpos\tfalse\tw1\tACCEPTED\nhello\tfr\tneg\ttrue\tw2\tACCEPTED\n").encode()
    with pytest.raises(FormatError, match=r"several OUTPUT:\* columns \('sentiment', 'toxic'\)"):
        read("toloka", body)
    items = read("toloka", body, field="toxic")
    # Sorted keys: "lang" before "text", whatever the column order.
    assert rows(items) == [('{"lang":"en","text":"hello"}', "w1", "false", 2), ('{"lang":"fr","text":"hello"}', "w2", "true", 3)]
    items = read("toloka", body, field="OUTPUT:sentiment", task_key="text")
    assert rows(items) == [("hello", "w1", "pos", 2), ("hello", "w2", "neg", 3)]


def test_toloka_errors_name_the_line():
    body = (HEADER + "a\ten\tpos\tx\tw1\tACCEPTED\nb\ten\t\tx\tw2\tACCEPTED\n").encode()
    with pytest.raises(FormatError) as exc:
        read("toloka", body, field="sentiment")
    assert str(exc.value) == "results, line 3: empty OUTPUT:sentiment on an assignment with status ACCEPTED"
    body = (HEADER + "a\ten\tpos\tx\tw1\n").encode()
    with pytest.raises(FormatError, match="line 2: expected 6 fields like the header, got 5"):
        read("toloka", body, field="sentiment")
    with pytest.raises(FormatError, match="missing column 'ASSIGNMENT:worker_id'"):
        read("toloka", b"INPUT:x\tOUTPUT:y\nq\tz\n")
    body = (HEADER.replace("OUTPUT:toxic", "GOLDEN:sentiment") + "a\ten\tpos\tpos\tw1\tACCEPTED\na\ten\tneg\tneg\tw2\tACCEPTED\n").encode()
    with pytest.raises(FormatError, match="line 3: task .* has two control answers: 'pos' and 'neg'"):
        read("toloka", body)
    with pytest.raises(FormatError, match="line 2: invalid UTF-8"):
        read("toloka", (HEADER.encode() + b"\xff\xfe\ten\tpos\tx\tw1\tACCEPTED\n"), field="sentiment")


# ------------------------------------------------------------------------------- MTurk


def test_mturk_batch_results():
    stats: dict = {}
    items = read("mturk", DATA / "mturk_batch_results.csv", stats=stats)
    h1, h2 = "3W1K7D6QSBL7Y8VP3X0NDX2Q4B8ZBA", "3YKP7CX6G2RAPXU1XPC7BG0HPZ8B7D"
    # Line 4 is the Rejected assignment.
    assert rows(items) == [
        (h1, "A1B2C3D4E5F6G7", "Cat", 2),
        (h1, "A9Z8Y7X6W5V4U3", "Cat", 3),
        (h2, "A1B2C3D4E5F6G7", "Dog", 5),
        (h2, "A9Z8Y7X6W5V4U3", "Cat", 6),
    ]
    assert stats == {"answers": 4, "rejected": 1}
    items = read("mturk", DATA / "mturk_batch_results.csv", include_rejected=True, task_key="Input.image_url", field="category.label")
    assert [(r[0][-12:], r[2]) for r in rows(items)] == [
        ("img_0001.jpg", "Cat"), ("img_0001.jpg", "Cat"), ("img_0001.jpg", "Dog"), ("img_0002.jpg", "Dog"), ("img_0002.jpg", "Cat")
    ]


def test_mturk_task_answers_json():
    path = DATA / "mturk_task_answers.csv"
    with pytest.raises(FormatError, match="taskAnswers holds every answer as JSON"):
        read("mturk", path)
    items = read("mturk", path, field="sentiment")
    assert rows(items) == [
        ("3RSBJ6YZECXLQO1B2H2Z0A8E9QZ1OA", "A2ZXQ8NV1W3E4R", "positive", 2),
        ("3RSBJ6YZECXLQO1B2H2Z0A8E9QZ1OA", "A3KT7YV2N8P0Q1", "neutral", 3),
    ]
    with pytest.raises(FormatError, match="line 2: Answer.taskAnswers has no key 'mood'"):
        read("mturk", path, field="mood")


def test_mturk_errors():
    head = '"HITId","WorkerId","AssignmentStatus","Answer.q1","Answer.q2"\n'
    with pytest.raises(FormatError, match=r"several Answer\.\* columns \('q1', 'q2'\)"):
        read("mturk", (head + '"H1","W1","Approved","a","b"\n').encode())
    with pytest.raises(FormatError, match="line 3: empty WorkerId"):
        read("mturk", (head + '"H1","W1","Approved","a","b"\n"H1","","Approved","a","b"\n').encode(), field="q1")
    with pytest.raises(FormatError, match="line 2: malformed row"):
        read("mturk", (head + '"H1","W1","Approved","a"x,"b"\n').encode(), field="q1")
    with pytest.raises(FormatError, match="unknown preset 'prolific'"):
        read("prolific", b"")
