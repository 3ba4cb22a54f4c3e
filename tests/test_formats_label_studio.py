"""Label Studio JSON export parser, on a small export in the tool's real shape."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from service.formats import Answer, FormatError, Gold, label_studio, parse

DATA = Path(__file__).parent / "data" / "formats"
EXPORT = DATA / "label_studio_export.json"


def read(data: bytes | Path, **kw):
    stream = open(data, "rb") if isinstance(data, Path) else io.BytesIO(data)
    with stream:
        return list(parse("label_studio", stream, "export.json", **kw))


def test_export_answers_gold_and_skips():
    stats: dict = {}
    items = read(EXPORT, stats=stats)
    answers = [(a.task, a.worker, a.label, a.ref) for a in items if isinstance(a, Answer)]
    gold = [(g.task, g.label) for g in items if isinstance(g, Gold)]
    # By hand from the file: 1004 is cancelled, 1006 is ground truth, 1008 has only a
    # textarea result, task 104 has no annotations; 1003's completed_by is a user object
    # whose id (7) is the same user as 1001's plain 7.
    assert answers == [
        ("101", "7", "Positive", "1001"),
        ("101", "9", "Positive", "1002"),
        ("102", "7", "Negative", "1003"),
        ("102", "12", "Neutral", "1005"),
        ("103", "9", "Neutral", "1007"),
    ]
    assert gold == [("103", "Neutral")]
    assert stats == {"tasks": 4, "answers": 5, "cancelled": 1, "gold": 1, "no_choice": 1}


def test_task_key_from_data_and_explicit_field():
    items = read(EXPORT, task_key="data.review_id", field="sentiment")
    assert sorted({i.task for i in items}) == ["R-0001", "R-0002", "R-0003"]


def test_picker_reports_tag_names():
    picker = label_studio.make_picker(None)
    with open(EXPORT, "rb") as f:
        list(label_studio.parse(f, "x", picker=picker))
    assert (picker.field, picker.to_name) == ("sentiment", "text")


def test_record_lines():
    text = EXPORT.read_text()
    items = read(EXPORT)
    # Each item carries the line on which its task object starts.
    first_102 = text.splitlines().index('    "id": 102,')  # 0-based index of the id line
    assert [i.line for i in items if i.task == "102"] == [first_102, first_102]  # the "{" is one line up


def _task(tid, *anns):
    return {"id": tid, "data": {"text": "t"}, "annotations": list(anns)}


def _ann(aid, worker, *choices, tag="sentiment", **extra):
    return {
        "id": aid, "completed_by": worker, "was_cancelled": False, "ground_truth": False,
        "result": [{"from_name": tag, "to_name": "text", "type": "choices", "value": {"choices": list(choices)}}],
        **extra,
    }


def test_json_lines_form_is_accepted():
    lines = [json.dumps(_task(1, _ann(5, 2, "a"))), json.dumps(_task(2, _ann(6, 3, "b")))]
    items = read(("\n".join(lines) + "\n").encode())
    assert [(i.task, i.worker, i.label, i.line) for i in items] == [("1", "2", "a", 1), ("2", "3", "b", 2)]


def test_two_choice_tags_need_a_field():
    doc = [_task(1, _ann(5, 2, "a")), _task(2, _ann(6, 3, "x", tag="quality"))]
    raw = json.dumps(doc, indent=1).encode()
    with pytest.raises(FormatError) as exc:
        read(raw)
    assert "several choices tags ('sentiment', 'quality')" in str(exc.value)
    assert exc.value.line == raw.decode().splitlines().index(" {", 2) + 1  # second task's "{"
    items = read(raw, field="quality")
    assert [(i.task, i.label) for i in items] == [("2", "x")]


def test_unknown_field_is_an_error_listing_names():
    raw = json.dumps([_task(1, _ann(5, 2, "a"))]).encode()
    with pytest.raises(FormatError, match=r"no choices result with from_name 'sentimnet'; the file has 'sentiment'"):
        read(raw, field="sentimnet")


def test_multi_choice_is_an_error_naming_the_annotation():
    raw = json.dumps([_task(1, _ann(5, 2, "a")), _task(2, _ann(77, 3, "a", "b"))], indent=2).encode()
    with pytest.raises(FormatError) as exc:
        read(raw)
    assert "task 2, annotation 77: 2 choices selected" in str(exc.value)
    assert str(exc.value).startswith("export.json, line ")


def test_invalid_json_names_its_line():
    raw = b'[\n {"id": 1, "annotations": []},\n {"id": 2, "annotations": [}\n]\n'
    with pytest.raises(FormatError) as exc:
        read(raw)
    assert exc.value.line == 3 and "invalid JSON" in str(exc.value)


def test_truncated_array_and_min_export():
    with pytest.raises(FormatError, match="missing"):
        read(b'[{"id": 1, "annotations": []},')
    with pytest.raises(FormatError, match="JSON_MIN"):
        read(b'[{"id": 1, "text": "x", "sentiment": "a"}]')
    with pytest.raises(FormatError, match="completed_by"):
        read(json.dumps([_task(1, _ann(5, None, "a"))]).encode())
    assert read(b"[]") == []


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_chunk_boundaries_do_not_matter(monkeypatch, chunk):
    """Decoding one value at a time across tiny reads gives what json.load gives."""
    doc = [_task(i, _ann(100 + i, i % 3, "a" if i % 2 else "b"), _ann(200 + i, 10 + i, "c")) for i in range(25)]
    doc[3]["data"]["text"] = "a ] , [ \" tricky \u00e9 string"
    doc[4]["id"] = 123456789  # a number element that can end exactly at a read boundary
    raw = json.dumps(doc, indent=2, ensure_ascii=False).encode()
    monkeypatch.setattr(label_studio, "CHUNK", chunk)
    got = [(i.task, i.worker, i.label) for i in read(raw)]
    want = [
        (str(t["id"]), str(a["completed_by"]), a["result"][0]["value"]["choices"][0])
        for t in json.loads(raw) for a in t["annotations"]
    ]
    assert got == want


def test_reads_gzip(tmp_path):
    import gzip

    path = tmp_path / "export.json.gz"
    path.write_bytes(gzip.compress(EXPORT.read_bytes()))
    assert len([i for i in read(path) if isinstance(i, Answer)]) == 5


class _GeneratedExport(io.RawIOBase):
    """An export of ``n`` one-line tasks, made as it is read (never whole in memory);
    ``bad`` replaces the line of one task.  Reading more than ``budget`` bytes fails."""

    def __init__(self, n: int, bad: dict[int, bytes], budget: int):
        self.lines = self._lines(n, bad)
        self.pending = b""
        self.served = 0
        self.budget = budget

    @staticmethod
    def _lines(n, bad):
        yield b"[\n"
        for i in range(1, n + 1):
            task = {"id": i, "data": {"text": f"review {i} " + "x" * 150}, "annotations": [_ann(10 * i, i % 50, "a")]}
            yield bad.get(i, json.dumps(task).encode()) + (b",\n" if i < n else b"\n")
        yield b"]\n"

    def readable(self):
        return True

    def readinto(self, b):
        assert self.served < self.budget, f"the parser read {self.served} bytes past an error near the start"
        while len(self.pending) < len(b):
            more = next(self.lines, None)
            if more is None:
                break
            self.pending += more
        n = min(len(b), len(self.pending))
        b[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        self.served += n
        return n


def test_a_syntax_error_early_in_a_big_export_is_reported_at_once_with_its_line():
    import tracemalloc

    # 400,000 tasks of ~280 bytes: about 110 MB, more than the 64 MiB record limit.
    stream = _GeneratedExport(400_000, {2: b'{"id": 2, "annotations": [}'}, budget=8 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError) as exc:
            list(parse("label_studio", stream, "big.json"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Line 1 is "[", task 1 is line 2, the broken task 2 line 3.
    assert str(exc.value) == "big.json, line 3: invalid JSON: Expecting value"
    assert peak < 4 << 20, peak
    assert stream.served < 1 << 20


def test_values_cut_by_a_read_are_read_on():
    # A string far longer than one read, and a literal and an escape pair cut by tiny reads.
    doc = [_task(1, _ann(5, 2, "a")), _task(2, _ann(6, 3, "b"))]
    doc[0]["data"]["text"] = "long " * 60_000
    doc[1]["data"]["flag"] = False
    doc[1]["data"]["emoji"] = "\U0001f600"
    raw = json.dumps(doc).encode()  # ensure_ascii: the emoji is a \ud83d\ude00 pair
    for chunk in (1, 5, label_studio.CHUNK):
        stream = io.BufferedReader(io.BytesIO(raw), buffer_size=chunk)
        items = list(label_studio.parse(stream, "x"))
        assert [(i.task, i.label) for i in items] == [("1", "a"), ("2", "b")]


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_a_syntax_error_at_a_read_boundary_names_its_line(monkeypatch, chunk):
    monkeypatch.setattr(label_studio, "CHUNK", chunk)
    raw = b'[\n {"id": 1, "annotations": []},\n {"id": 2, "annotations": [tru]},\n {"id": 3, "annotations": []}\n]\n'
    with pytest.raises(FormatError) as exc:
        read(raw)
    assert exc.value.line == 3 and "invalid JSON: Expecting value" in str(exc.value)
