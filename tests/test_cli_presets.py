"""`crowdqc aggregate --preset`: the native exports of Label Studio, Toloka and MTurk,
read offline by the same parsers as the service's imports.  Expected figures are worked
out by hand from the small files in tests/data/formats (see the format tests for what
each line holds)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import main

DATA = Path(__file__).parent / "data" / "formats"
CROWDQC = Path(sys.executable).parent / "crowdqc"
IMG = "https://tlk.s3.yandex.net/dataset/cats_vs_dogs/"


def run(tmp_path, *args):
    out = tmp_path / "out"
    code = main(["aggregate", *map(str, args), "--out", str(out), "-q"])
    assert code == 0
    with open(out / "consensus.csv", newline="", encoding="utf-8") as f:
        consensus = {row["task"]: row for row in csv.DictReader(f)}
    summary = json.loads((out / "summary.json").read_text())
    return consensus, summary


def test_label_studio_export_answers_ties_and_gold_from_the_export(tmp_path):
    consensus, summary = run(tmp_path, DATA / "label_studio_export.json", "--preset", "label_studio",
                             "--method", "majority_vote")
    # 5 answers: 101 Positive x2; 102 Negative (7) vs Neutral (12); 103 Neutral (9).
    # The cancelled annotation, the textarea-only one and the ground-truth one are no votes.
    assert summary["counts"]["answers"] == 5 and summary["counts"]["workers"] == 3
    assert {t: (r["label"], r["tie"]) for t, r in consensus.items()} == {
        "101": ("Positive", "false"),
        # the tie goes to the class most frequent in the file: Neutral (2) over Negative (1)
        "102": ("Neutral", "true"),
        "103": ("Neutral", "false"),
    }
    # annotation 1006 (ground_truth) is 103's gold label: Neutral, which the vote matches
    assert consensus["103"]["gold"] == "Neutral"
    assert summary["accuracy"]["gold_tasks_used"] == 1 and summary["accuracy"]["method"] == 1.0
    assert summary["inputs"]["preset"] == "label_studio" and summary["inputs"]["gold_from_export"] is True
    assert any("left out 1 cancelled, 1 no choice" in w for w in summary["warnings"])


def test_label_studio_task_key_and_field(tmp_path):
    consensus, _ = run(tmp_path, DATA / "label_studio_export.json", "--preset", "label_studio",
                       "--task-key", "data.review_id", "--field", "sentiment", "--method", "majority_vote")
    assert sorted(consensus) == ["R-0001", "R-0002", "R-0003"]


def test_toloka_rejected_left_out_unless_asked(tmp_path):
    consensus, summary = run(tmp_path, DATA / "toloka_results.tsv", "--preset", "toloka", "--method", "majority_vote")
    # accepted/submitted assignments of two workers on three images; the REJECTED worker
    # and the SKIPPED row are not answers
    assert (summary["counts"]["answers"], summary["counts"]["workers"]) == (6, 2)
    assert consensus[IMG + "cats/0a1b.jpg"]["label"] == "cat"
    assert consensus[IMG + "cats/9c41.jpg"]["gold"] == "cat"  # GOLDEN:result of the control task
    # dogs/3f2e: dog vs cat, a tie won by cat (5 of the 6 answers)
    assert (consensus[IMG + "dogs/3f2e.jpg"]["label"], consensus[IMG + "dogs/3f2e.jpg"]["tie"]) == ("cat", "true")

    consensus, summary = run(tmp_path, DATA / "toloka_results.tsv", "--preset", "toloka", "--method", "majority_vote",
                             "--include-rejected")
    assert (summary["counts"]["answers"], summary["counts"]["workers"]) == (9, 3)
    # with the rejected worker's dog, dogs/3f2e is dog 2 - cat 1
    assert (consensus[IMG + "dogs/3f2e.jpg"]["label"], consensus[IMG + "dogs/3f2e.jpg"]["tie"]) == ("dog", "false")


def test_mturk_batch_results(tmp_path):
    consensus, summary = run(tmp_path, DATA / "mturk_batch_results.csv", "--preset", "mturk", "--method", "majority_vote")
    assert (summary["counts"]["answers"], summary["counts"]["tasks"]) == (4, 2)
    assert any("left out 1 rejected" in w for w in summary["warnings"])
    assert "accuracy" not in summary  # MTurk results carry no gold


def test_a_gold_file_replaces_the_exports_gold(tmp_path):
    gold = tmp_path / "gold.csv"
    gold.write_text("task,label\n101,Negative\n102,Neutral\n")
    _, summary = run(tmp_path, DATA / "label_studio_export.json", "--preset", "label_studio",
                     "--method", "majority_vote", "--gold", gold)
    # 101 voted Positive (wrong), 102 tied to Neutral (right); 103's export gold is unused
    assert summary["accuracy"]["gold_tasks_used"] == 2 and summary["accuracy"]["method"] == 0.5
    assert any("gold labels (1 task) are not used" in w for w in summary["warnings"])


@pytest.mark.parametrize("args, message", [
    (["--preset", "label_studio", "--task-column", "id"], "--task-column does not apply with --preset label_studio"),
    (["--preset", "toloka", "--format", "tsv"], "--format does not apply with --preset toloka"),
    (["--preset", "label_studio", "--include-rejected"], "--include-rejected applies to --preset toloka or mturk"),
    (["--field", "sentiment"], "--field applies with --preset only"),
    (["--preset", "label_studio", "--field", "mood"], "no choices result with from_name 'mood'; the file has 'sentiment'"),
    (["--preset", "label_studio", "--classes", "Positive,Negative"], "label 'Neutral' is not one of the declared classes"),
])
def test_bad_options_and_input_name_the_problem(tmp_path, capsys, args, message):
    code = main(["aggregate", str(DATA / "label_studio_export.json"), *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_a_broken_export_names_its_line_through_the_real_command(tmp_path):
    bad = tmp_path / "export.json"
    bad.write_text('[\n  {"id": 1, "annotations": [{"completed_by": 3, "result": [\n    {"type": "choices", "from_name": "x", '
                   '"value": {"choices": ["a"]}}]}]},\n  {"id": 2, "annotations": [}\n]\n')
    proc = subprocess.run([str(CROWDQC), "aggregate", str(bad), "--preset", "label_studio", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"crowdqc: error: {bad}, line 4: invalid JSON: Expecting value"
    assert "Traceback" not in proc.stderr


def test_the_service_import_and_the_command_agree(tmp_path, client, project, run_jobs):
    """The same Label Studio export, imported over HTTP and aggregated by a job, gives the
    consensus `crowdqc aggregate --preset label_studio` gives."""
    consensus, _ = run(tmp_path, DATA / "label_studio_export.json", "--preset", "label_studio")
    p = project("lsx", labels=["Positive", "Negative", "Neutral"])
    resp = client.post("/v1/projects/lsx/imports?preset=label_studio", data=(DATA / "label_studio_export.json").read_bytes(),
                       headers={**p["writer"], "Content-Type": "application/json"})
    assert resp.status_code == 202
    run_jobs()
    resp = client.post("/v1/projects/lsx/aggregations", json={"method": "dawid_skene", "params": {"gold": "evaluate"}},
                       headers=p["writer"])
    assert resp.status_code == 202
    run_jobs()
    items = client.get("/v1/projects/lsx/consensus?limit=100", headers=p["reader"]).get_json()["items"]
    assert {i["task"]: i["label"] for i in items} == {t: r["label"] for t, r in consensus.items()}
    for item in items:
        assert item["confidence"] == pytest.approx(float(consensus[item["task"]]["confidence"]), abs=1e-9)


def test_export_rules_match_the_plain_files(tmp_path, capsys):
    """Control characters are refused naming the line; a ground-truth label no worker
    gave becomes a class (the consensus misses it) unless --classes closes the set."""
    def export(ground_truth, worker=7):
        tasks = [{"id": 1, "data": {}, "annotations": [
            {"id": 11, "completed_by": worker, "result": [
                {"type": "choices", "from_name": "s", "to_name": "t", "value": {"choices": ["Yes"]}}]},
            {"id": 12, "completed_by": 8, "ground_truth": True, "result": [
                {"type": "choices", "from_name": "s", "to_name": "t", "value": {"choices": [ground_truth]}}]},
        ]}]
        path = tmp_path / "export.json"
        path.write_text(json.dumps(tasks, indent=1))
        return path

    consensus, summary = run(tmp_path, export("Maybe"), "--preset", "label_studio", "--method", "majority_vote")
    assert summary["classes"] == ["Maybe", "Yes"]
    assert (consensus["1"]["label"], consensus["1"]["gold"]) == ("Yes", "Maybe")
    assert summary["accuracy"]["method"] == 0.0
    assert "gold labels that no worker gave were added as classes: 'Maybe'" in summary["warnings"]

    code = main(["aggregate", str(export("Maybe")), "--preset", "label_studio", "--classes", "Yes,No",
                 "--out", str(tmp_path / "o2")])
    assert code == 2 and "gold label 'Maybe' of task '1' is not one of the declared classes" in capsys.readouterr().err

    code = main(["aggregate", str(export("Yes", worker="ann\x1b[31m")), "--preset", "label_studio",
                 "--out", str(tmp_path / "o3")])
    err = capsys.readouterr().err
    assert code == 2 and "export.json, line 2: the worker must not contain control characters" in err, err
