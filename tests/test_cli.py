"""`crowdqc aggregate` as a user runs it: the installed console script in a subprocess, on
the shared data sets and on small files written here, checked against figures this test
computes itself from the input and output files (not from the engine's objects).

Every invocation starts a fresh interpreter (0.6-0.8 s here, nearly all imports), so the
runs are made once by module fixtures and the tests only read their results.  Bad input
is checked on every case through ``service.cli.main`` in this process (the same code path
as the script, minus the interpreter start) and on a few cases through the real script,
where only a real process shows an abort at exit or a traceback printed by Python."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from itertools import combinations
from pathlib import Path

import pytest

from cases import DATASETS

CROWDQC = Path(sys.executable).parent / "crowdqc"
METHODS = ("majority_vote", "wawa", "dawid_skene", "one_coin_dawid_skene")
BLUEBIRDS = DATASETS / "bluebirds"
WEATHER = DATASETS / "weather_sentiment"
# datasets/README.md; bluebirds has 39 answers per task, so majority vote has no ties and
# its figure is exact, and no duplicates, so the default policy counts every row
BLUEBIRDS_MV, BLUEBIRDS_DS, WEATHER_DS = 0.7593, 0.8981, 0.8400


def run_all(jobs: dict) -> dict:
    """``{key: (args, cwd)}`` -> ``{key: CompletedProcess}``, two processes at a time."""

    def one(item):
        key, (args, cwd) = item
        proc = subprocess.run(
            [str(CROWDQC), "aggregate", *map(str, args)],
            cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        return key, proc

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, jobs.items()))


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        return list(reader)


def accuracy(consensus: list[dict], gold_path: Path, column: str = "label") -> tuple[float, int]:
    """Share of gold tasks whose consensus ``column`` equals the gold label, as strings."""
    gold = dict((t, y) for t, y in read_rows(gold_path))
    hits = [row[column] == gold[row["task"]] for row in consensus if row["task"] in gold]
    return sum(hits) / len(hits), len(hits)


def percent_agreement(rows) -> float:
    """Mean over tasks with two or more answers of the share of agreeing answer pairs."""
    by_task = defaultdict(list)
    for task, _, label in rows:
        by_task[task].append(label)
    shares = [
        sum(a == b for a, b in combinations(labels, 2)) / math.comb(len(labels), 2)
        for labels in by_task.values() if len(labels) > 1
    ]
    return sum(shares) / len(shares)


# ---------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every successful invocation of this module, run once."""
    tmp = tmp_path_factory.mktemp("cli")
    answers = read_rows(BLUEBIRDS / "answers.csv")
    gold = read_rows(BLUEBIRDS / "gold.csv")

    # the same answers as TSV with other column names and an extra column (gold with the
    # same names), and as JSON Lines with integer labels and an extra key
    with open(tmp / "bluebirds.tsv", "w", encoding="utf-8", newline="") as f:
        f.write("annotator\tnote\titem\tanswer\n")
        f.writelines(f"{w}\tfree, text {i}\t{t}\t{y}\n" for i, (t, w, y) in enumerate(answers))
    with open(tmp / "gold.tsv", "w", encoding="utf-8", newline="") as f:
        f.write("answer\titem\n")
        f.writelines(f"{y}\t{t}\n" for t, y in gold)
    with open(tmp / "bluebirds.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"worker": w, "label": int(y), "task": t, "seen": i}) + "\n" for i, (t, w, y) in enumerate(answers))

    # t1: w1 says a, later b; first keeps a (a 2:1), latest keeps b (b 2:1), all counts
    # both (a 2:2 b, a tie that goes to a, the most frequent class overall: a 4, b 2)
    (tmp / "dup.csv").write_text("task,worker,label\nt1,w1,a\nt1,w2,b\nt1,w1,b\nt1,w3,a\nt2,w1,a\nt2,w2,a\n")

    jobs = {}
    for method in METHODS:
        jobs[method] = ([BLUEBIRDS / "answers.csv", "--gold", BLUEBIRDS / "gold.csv", "--method", method,
                         "--out", tmp / method], tmp)
    jobs["clamp"] = ([BLUEBIRDS / "answers.csv", "--gold", BLUEBIRDS / "gold.csv", "--gold-mode", "clamp",
                      "--out", tmp / "clamp"], tmp)
    jobs["weather"] = ([WEATHER / "answers.csv", "--gold", WEATHER / "gold.csv", "--out", tmp / "weather"], tmp)
    for policy in ("first", "latest", "all"):
        jobs[f"dup-{policy}"] = (["dup.csv", "--method", "majority_vote", "--duplicates", policy,
                                  "--out", f"dup-{policy}", "-q"], tmp)
    jobs["iter"] = ([BLUEBIRDS / "answers.csv", "--max-iter", 7, "--tol", 0, "--out", tmp / "iter", "-q"], tmp)
    # the gold file's columns default to --task-column/--label-column
    jobs["tsv"] = (["bluebirds.tsv", "--gold", "gold.tsv", "--task-column", "item", "--worker-column", "annotator",
                    "--label-column", "answer", "--out", "tsv", "-q"], tmp)
    jobs["jsonl"] = (["bluebirds.jsonl", "--out", "jsonl", "-q"], tmp)
    procs = run_all(jobs)
    out = {key: tmp / Path(args[args.index("--out") + 1]) for key, (args, _) in jobs.items()}
    return {key: (procs[key], out[key]) for key in jobs}


def ok(runs, key) -> Path:
    proc, out = runs[key]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr
    return out


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------- real data sets


@pytest.mark.parametrize("method", METHODS)
def test_every_method_on_bluebirds_with_gold(runs, method):
    out = ok(runs, method)
    assert sorted(p.name for p in out.iterdir()) == ["consensus.csv", "disagreements.csv", "summary.json", "workers.csv"]
    answers = read_rows(BLUEBIRDS / "answers.csv")
    tasks = {t for t, _, _ in answers}
    workers = {w for _, w, _ in answers}

    header, consensus = read_csv(out / "consensus.csv")
    assert header[:3] == ["task", "label", "confidence"]
    assert sorted(r["task"] for r in consensus) == sorted(tasks)  # one row per task, no more
    p_columns = [h for h in header if h.startswith("p:")]
    assert sorted(c[2:] for c in p_columns) == ["0", "1"]
    for row in consensus:
        p = {c[2:]: float(row[c]) for c in p_columns}
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in p.values())
        assert sum(p.values()) == pytest.approx(1, abs=1e-9)
        assert float(row["confidence"]) == pytest.approx(p[row["label"]], abs=1e-12)
        assert p[row["label"]] == max(p.values())

    w_header, worker_rows = read_csv(out / "workers.csv")
    assert w_header[0] == "worker"
    assert sorted(r["worker"] for r in worker_rows) == sorted(workers)
    _, disagreements = read_csv(out / "disagreements.csv")
    assert sorted(r["task"] for r in disagreements) == sorted(tasks)

    s = summary_of(out)
    assert s["method"] == method
    assert isinstance(s["params"], dict)
    em = method in ("dawid_skene", "one_coin_dawid_skene")
    if em:
        assert s["params"]["max_iter"] == 100 and s["params"]["tol"] == 1e-7
        # bluebirds settles well within the default 100 iterations
        assert isinstance(s["iterations"], int) and 1 < s["iterations"] < 100 and s["converged"] is True
    else:
        assert s["iterations"] is None and s["converged"] is None
    counts = s["counts"]
    assert (counts["answers"], counts["rows"], counts["tasks"], counts["workers"], counts["classes"]) == (
        len(answers), len(answers), len(tasks), len(workers), 2)
    assert counts["tied_tasks"] == sum(r["tie"] == "true" for r in consensus)
    assert counts["tasks_where_model_overrules_majority_vote"] == sum(r["label"] != r["mv_label"] for r in consensus)

    agreement = s["agreement"]
    assert set(agreement) == {"krippendorff_alpha", "fleiss_kappa", "cohen_kappa", "percent_agreement"}
    assert all(a["status"] == "ok" and math.isfinite(a["value"]) for a in agreement.values())
    assert agreement["percent_agreement"]["value"] == pytest.approx(percent_agreement(answers), abs=1e-12)

    acc, n = accuracy(consensus, BLUEBIRDS / "gold.csv")
    mv_acc, _ = accuracy(consensus, BLUEBIRDS / "gold.csv", "mv_label")
    assert s["accuracy"]["gold_tasks_used"] == n == len(tasks)
    assert s["accuracy"]["method"] == pytest.approx(acc, abs=1e-12)
    assert s["accuracy"]["majority_vote"] == pytest.approx(mv_acc, abs=1e-12)
    assert mv_acc == pytest.approx(BLUEBIRDS_MV, abs=1e-4)
    if method == "dawid_skene":
        assert abs(acc - BLUEBIRDS_DS) <= 0.005, acc
    if method == "majority_vote":
        assert acc == mv_acc

    timings = s["timings"]
    assert all(isinstance(timings[k], (int, float)) and timings[k] >= 0 for k in ("read", "fit", "write"))
    proc, _ = runs[method]
    assert "accuracy" in proc.stdout and str(out) in proc.stdout  # the human summary


def test_clamped_gold_is_not_reported_as_accuracy(runs):
    out = ok(runs, "clamp")
    acc = summary_of(out)["accuracy"]
    assert (acc["gold_tasks_used"], acc["method"]) == (108, None) and "clamped" in acc["method_note"]
    consensus = read_csv(out / "consensus.csv")[1]
    # majority vote never sees gold, so its figure is the README's
    assert acc["majority_vote"] == pytest.approx(BLUEBIRDS_MV, abs=5e-5)
    assert accuracy(consensus, BLUEBIRDS / "gold.csv", "mv_label")[0] == pytest.approx(BLUEBIRDS_MV, abs=5e-5)
    line = next(x for x in runs["clamp"][0].stdout.splitlines() if "accuracy vs gold" in x)
    assert line.strip() == ("accuracy vs gold (108 tasks): majority vote 0.7593; dawid_skene not measured "
                            "(gold clamped; use --gold-mode evaluate to measure it)")


def test_gold_labels_nobody_gave_count_as_misses(tmp_path, capsys):
    from service.cli import main

    (tmp_path / "a.csv").write_text("task,worker,label\nt1,w1,a\nt1,w2,a\nt2,w1,b\nt2,w2,b\nt3,w1,a\nt3,w2,b\n")
    # t2's truth is c, which no worker gave; t9 has no answers (its label is not checked)
    (tmp_path / "gold.csv").write_text("task,label\nt1,a\nt2,c\nt9,zzz\n")
    args = ["aggregate", str(tmp_path / "a.csv"), "--gold", str(tmp_path / "gold.csv"), "--method", "majority_vote", "-q"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    s = summary_of(tmp_path / "o")
    assert s["classes"] == ["a", "b", "c"]
    acc = s["accuracy"]
    assert (acc["gold_tasks_given"], acc["gold_tasks_used"], acc["gold_tasks_not_answered"]) == (3, 2, 1)
    assert acc["majority_vote"] == acc["method"] == 0.5  # t1 right, t2 wrong
    assert "gold labels that no worker gave were added as classes: 'c'" in s["warnings"]
    # a declared class set is closed: the same gold is an error naming the line
    assert main([*args, "--classes", "a,b", "--out", str(tmp_path / "o2")]) == 2
    assert "gold.csv, line 3: gold label 'c' is not one of the answers' classes (a, b)" in capsys.readouterr().err


def test_header_only_gold_file_says_so(tmp_path, capsys):
    from service.cli import main

    (tmp_path / "a.csv").write_text("task,worker,label\nt1,w1,a\n")
    (tmp_path / "gold.csv").write_text("task,label\n")
    assert main(["aggregate", str(tmp_path / "a.csv"), "--gold", str(tmp_path / "gold.csv"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "gold.csv, line 2: no gold rows after the header" in capsys.readouterr().err


def test_majority_vote_ties_are_reported_whatever_the_method(runs):
    """weather_sentiment with Dawid-Skene: the tasks whose (deduplicated, last answer kept)
    votes split evenly at the top, counted here from the raw file, are exactly the
    mv_tie rows of consensus.csv and disagreements.csv, and the summary's count."""
    last = {}
    for task, worker, label in read_rows(WEATHER / "answers.csv"):
        last[(task, worker)] = label
    votes = defaultdict(lambda: defaultdict(int))
    for (task, _), label in last.items():
        votes[task][label] += 1
    tied = {t for t, v in votes.items() if sorted(v.values())[-2:].count(max(v.values())) == 2}
    assert tied  # the data set has some
    out = ok(runs, "weather")
    assert summary_of(out)["counts"]["majority_vote_tied_tasks"] == len(tied)
    consensus = read_csv(out / "consensus.csv")[1]
    assert {r["task"] for r in consensus if r["mv_tie"] == "true"} == tied
    assert {r["task"] for r in read_csv(out / "disagreements.csv")[1] if r["mv_tie"] == "true"} == tied
    assert f"majority vote tied on {len(tied)} tasks (dawid_skene: " in runs["weather"][0].stdout


def test_duplicates_in_a_real_data_set(runs):
    rows = read_rows(WEATHER / "answers.csv")
    repeats = len(rows) - len({(t, w) for t, w, _ in rows})
    assert repeats == 5  # datasets/README.md
    out = ok(runs, "weather")
    s = summary_of(out)
    c = s["counts"]
    # the default policy keeps one answer per (task, worker)
    assert (c["rows"], c["answers"], c["duplicate_rows_collapsed"], c["duplicate_policy"]) == (
        len(rows), len(rows) - repeats, repeats, "latest")
    assert any("5 duplicate" in w for w in s["warnings"])
    assert "5 duplicate" in runs["weather"][0].stdout  # and the user is told
    _, consensus = read_csv(out / "consensus.csv")
    assert len(consensus) == len({t for t, _, _ in rows}) == c["tasks"] == 300
    assert sum(int(r["n_labels"]) for r in consensus) == len(rows) - repeats
    for row in consensus:
        assert sum(float(row[f"p:{k}"]) for k in "01234") == pytest.approx(1, abs=1e-9)
    acc, n = accuracy(consensus, WEATHER / "gold.csv")
    assert s["accuracy"]["method"] == pytest.approx(acc, abs=1e-12) and n == s["accuracy"]["gold_tasks_used"] == 300


# ------------------------------------------------------------------------ options


@pytest.mark.parametrize(
    "policy, answers, collapsed, t1",
    [
        # (label, tie, n_labels, p:a) of t1; see the file in the fixture
        ("first", 5, 1, ("a", "false", 3, 2 / 3)),
        ("latest", 5, 1, ("b", "false", 3, 1 / 3)),
        ("all", 6, 0, ("a", "true", 4, 1 / 2)),
    ],
)
def test_duplicate_policies_change_the_votes(runs, policy, answers, collapsed, t1):
    out = ok(runs, f"dup-{policy}")
    assert runs[f"dup-{policy}"][0].stdout == ""  # -q
    s = summary_of(out)
    c = s["counts"]
    assert (c["rows"], c["answers"], c["duplicate_rows_collapsed"], c["tasks"], c["workers"]) == (6, answers, collapsed, 2, 3)
    assert c["conflicting_pairs"] == 1  # (t1, w1) said a then b
    rows = {r["task"]: r for r in read_csv(out / "consensus.csv")[1]}
    got = rows["t1"]
    assert (got["label"], got["tie"], int(got["n_labels"])) == t1[:3]
    assert float(got["p:a"]) == pytest.approx(t1[3], abs=1e-12)
    assert float(got["p:b"]) == pytest.approx(1 - t1[3], abs=1e-12)
    assert (rows["t2"]["label"], rows["t2"]["n_labels"]) == ("a", "2")


def test_tol_zero_runs_exactly_max_iter(runs):
    s = summary_of(ok(runs, "iter"))
    assert s["method"] == "dawid_skene"
    assert s["iterations"] == 7 and s["converged"] is False
    assert s["params"]["max_iter"] == 7 and s["params"]["tol"] == 0
    # without --tol 0 the same data converges after more than 7 iterations (bluebirds
    # run above), so it is the cap that stopped this run, not convergence
    assert summary_of(ok(runs, "dawid_skene"))["iterations"] > 7


def consensus_by_task(out: Path) -> dict:
    return {r["task"]: r for r in read_csv(out / "consensus.csv")[1]}


@pytest.mark.parametrize("key", ["tsv", "jsonl"])
def test_other_formats_and_column_names_give_the_same_consensus(runs, key):
    want = consensus_by_task(ok(runs, "dawid_skene"))
    out = ok(runs, key)
    got = consensus_by_task(out)
    assert got.keys() == want.keys()
    for task, row in got.items():
        assert row["label"] == want[task]["label"]
        for column in ("confidence", "p:0", "p:1"):
            assert float(row[column]) == pytest.approx(float(want[task][column]), abs=1e-12)
    s = summary_of(out)
    assert s["counts"]["answers"] == s["counts"]["rows"] == 4212  # extra columns/keys did not add rows
    assert s["counts"]["workers"] == 39  # the worker column was found by its own name
    if key == "tsv":
        acc, _ = accuracy(list(got.values()), BLUEBIRDS / "gold.csv")
        assert s["accuracy"]["method"] == pytest.approx(acc, abs=1e-12)
        assert abs(acc - BLUEBIRDS_DS) <= 0.005
    if key == "jsonl":  # integer labels read as their decimal strings, and said so
        assert s["classes"] == ["0", "1"]
        assert any("integer" in w for w in s["warnings"])


# ---------------------------------------------------------------------- bad input

# name -> (file name, file bytes or None for "no such file", extra arguments,
#          the file the message must name, its line or None, words of the problem)
GOOD = b"task,worker,label\nt1,w1,a\nt1,w2,b\nt2,w1,a\n"
BAD = {
    "missing column": ("a.csv", b"task,worker,labl\nt1,w1,a\n", [], "a.csv", 1, ["missing column", "'label'"]),
    "empty file": ("a.csv", b"", [], "a.csv", 1, ["empty"]),
    "header only": ("a.csv", b"task,worker,label\n", [], "a.csv", 2, ["no", "row"]),
    "too few fields": ("a.csv", b"task,worker,label\nt1,w1,a\nt2,w1\nt3,w2,b\n", [], "a.csv", 3, ["expected 3 fields, got 2"]),
    "too many fields": ("a.csv", b"task,worker,label\nt1,w1,a\nt2,w1,b,c\n", [], "a.csv", 3, ["expected 3 fields, got 4"]),
    "TSV fields": ("a.tsv", b"task\tworker\tlabel\nt1\tw1\ta\nt2\tw1\n", [], "a.tsv", 3, ["expected 3 fields, got 2"]),
    "bad JSON line": ("a.jsonl", b'{"task": "t1", "worker": "w1", "label": "a"}\n{"task": "t2", "worker": \n',
                      [], "a.jsonl", 2, ["JSON"]),
    "JSON float label": ("a.jsonl", b'{"task": "t1", "worker": "w1", "label": 1.5}\n', [], "a.jsonl", 1, ["'label'", "float"]),
    "JSON key missing": ("a.jsonl", b'{"task": "t1", "worker": "w1", "label": "a"}\n{"task": "t2", "label": "b"}\n',
                         [], "a.jsonl", 2, ["'worker'"]),
    "non-UTF-8 label": ("a.csv", b"task,worker,label\nt1,w1,a\nt2,w1,caf\xe9\n", [], "a.csv", 3, ["UTF-8"]),
    "non-UTF-8 extra column": ("a.csv", b"task,worker,label,note\nt1,w1,a,ok\nt2,w1,b,caf\xe9\n", [], "a.csv", 3, ["UTF-8"]),
    "missing file": ("absent.csv", None, [], "absent.csv", None, ["no such file"]),
    "gold with unknown column": ("a.csv", GOOD, ["--gold", "gold.csv"], "gold.csv", 1, ["missing column", "'task'"]),
    "gold label outside the declared classes": ("a.csv", GOOD, ["--gold", "gold2.csv", "--classes", "a,b"], "gold2.csv", 3,
                                                ["'z'"]),
    "tab inside a quoted label": ("a.csv", b'task,worker,label\nt1,w1,a\nt2,w1,"b\tx"\n', [], "a.csv", 3,
                                  ["control character U+0009 in the 'label' value"]),
    "control character in a worker id": ("a.csv", b"task,worker,label\nt1,w1,a\nt2,w\x01,b\n", [], "a.csv", 3,
                                         ["control character U+0001 in the 'worker' value"]),
    "escaped NUL in JSON": ("a.jsonl", b'{"task": "t1", "worker": "w", "label": "a\\u0000"}\n', [], "a.jsonl", 1,
                            ["control character U+0000 in the 'label' value"]),
    "lone surrogate escaped in JSON": ("a.jsonl", b'{"task": "t1", "worker": "w", "label": "a\\ud800"}\n', [], "a.jsonl", 1,
                                       ["lone surrogate U+D800 in the 'label' value"]),
    "C1 control in a task id": ("a.csv", "task,worker,label\nt\x85,w1,a\n".encode(), [], "a.csv", 2,
                                ["control character U+0085 in the 'task' value"]),
    "missing gold file": ("a.csv", GOOD, ["--gold", "nogold.csv"], "nogold.csv", None, ["no such file"]),
}
# through the real script too: the ones that hit pyarrow, the Python reader, a missing file
SCRIPT_CASES = ("header only", "too few fields", "non-UTF-8 extra column", "missing file")
CLASSES_FILE = "task,worker,label\nt1,w1,a\nt1,w2,c\nt2,w1,d\nt2,w2,c\nt3,w1,b\n"


def write_bad_case(directory: Path, name: str) -> list[str]:
    file, data, extra, *_ = BAD[name]
    if data is not None:
        (directory / file).write_bytes(data)
    (directory / "gold.csv").write_text("item,label\nt1,a\n")
    (directory / "gold2.csv").write_text("task,label\nt1,a\nt2,z\n")
    return [file, *extra, "--out", "out"]


@pytest.fixture(scope="module")
def script_runs(tmp_path_factory):
    jobs = {}
    for name in SCRIPT_CASES:
        d = tmp_path_factory.mktemp("bad")
        jobs[name] = (write_bad_case(d, name), d)
    d = tmp_path_factory.mktemp("bad")
    (d / "a.csv").write_text(CLASSES_FILE)
    jobs["classes"] = (["a.csv", "--classes", "a,b", "--out", "out"], d)
    procs = run_all(jobs)
    return {name: (procs[name], cwd) for name, (_, cwd) in jobs.items()}


def in_process(args, cwd, monkeypatch, capsys):
    from service.cli import main

    monkeypatch.chdir(cwd)
    code = main(["aggregate", *args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def assert_one_error_line(proc, cwd):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("crowdqc: error: ")
    assert proc.stdout == ""
    assert not (cwd / "out" / "consensus.csv").exists()  # nothing half-written
    return lines[0]


def assert_names_file_line_and_problem(message, name):
    _, _, _, names, line, words = BAD[name]
    assert names in message
    if line is not None:
        assert f"{names}, line {line}:" in message
    else:
        assert ", line " not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_exits_2_with_one_line_naming_file_line_and_problem(name, tmp_path, monkeypatch, capsys):
    proc = in_process(write_bad_case(tmp_path, name), tmp_path, monkeypatch, capsys)
    assert_names_file_line_and_problem(assert_one_error_line(proc, tmp_path), name)


@pytest.mark.parametrize("name", SCRIPT_CASES)
def test_bad_input_through_the_script(script_runs, name):
    proc, cwd = script_runs[name]
    assert_names_file_line_and_problem(assert_one_error_line(proc, cwd), name)


def test_bad_option_value_is_one_line_too(tmp_path, monkeypatch, capsys):
    (tmp_path / "a.csv").write_bytes(GOOD)
    message = assert_one_error_line(in_process(["a.csv", "--max-iter", "0", "--out", "out"], tmp_path, monkeypatch, capsys), tmp_path)
    assert "max_iter" in message and ">= 1" in message


@pytest.mark.parametrize("option", [["--max-iter", "7"], ["--tol", "0"]])
def test_iteration_options_on_a_method_without_iterations(option, tmp_path, monkeypatch, capsys):
    (tmp_path / "a.csv").write_bytes(GOOD)
    args = ["a.csv", "--method", "majority_vote", *option, "--out", "out"]
    message = assert_one_error_line(in_process(args, tmp_path, monkeypatch, capsys), tmp_path)
    # the option as typed, and where it does apply
    assert option[0] in message and "majority_vote" in message and "dawid_skene" in message


def test_labels_outside_classes_are_all_listed(script_runs):
    proc, cwd = script_runs["classes"]
    message = assert_one_error_line(proc, cwd)
    assert "a.csv, line 3:" in message  # the first undeclared label
    assert "'c'" in message and "'d'" in message
    assert "'a'" not in message and "'b'" not in message  # declared labels are not offenders


@pytest.mark.parametrize("method, cells_limit, message", [
    ("dawid_skene", None, "3000 classes and 50 workers need 450,000,000 cells"),
    ("one_coin_dawid_skene", 1_000_000, "3,000 tasks x 3,000 classes = 9,000,000 posterior cells"),
])
def test_inputs_too_big_for_the_model_are_refused_before_any_fit(tmp_path, monkeypatch, capsys, method, cells_limit, message):
    """The many-classes case (one label per task): refused up front, not after a majority
    vote over a dense tasks x classes table."""
    import service.analysis as analysis
    from cases import load_case
    from service.cli import main

    case = load_case("many-classes-dense-confusion")
    with open(tmp_path / "a.csv", "w", newline="") as f:
        csv.writer(f).writerows([("task", "worker", "label"), *case["answers"]])

    def no_fit(*args, **kwargs):
        raise AssertionError("a model was fitted")

    monkeypatch.setattr(analysis.MajorityVote, "fit", no_fit)
    if cells_limit:
        monkeypatch.setattr(analysis, "MAX_POSTERIOR_CELLS", cells_limit)
    assert main(["aggregate", str(tmp_path / "a.csv"), "--method", method, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_a_slow_stage_is_announced_while_it_runs():
    """Progress lines start once the run is slow, from a timer: a stage begun while the
    run was quick is announced during the stage, and nothing is printed after close()."""
    import io
    import time

    from service.cli import Progress

    out = io.StringIO()
    progress = Progress(stream=out, after=0.2, every=0.05)
    progress({"stage": "read"})
    time.sleep(0.4)  # a read that turns slow
    assert out.getvalue().endswith("] read...\n") and out.getvalue().count("\n") == 1
    progress({"stage": "majority_vote"})  # the run is slow now: announced at once
    assert out.getvalue().endswith("] majority vote...\n")
    progress({"stage": "fit", "iteration": 1, "max_iter": 9, "log_likelihood": -13.0})  # throttled: too soon
    assert out.getvalue().count("\n") == 2
    time.sleep(0.06)
    progress({"stage": "fit", "iteration": 1, "max_iter": 9, "log_likelihood": -12.5})
    assert out.getvalue().endswith("] fit: EM iteration 1/9, log-likelihood -12.5\n")

    quiet = io.StringIO()
    progress = Progress(stream=quiet, after=0.2)
    progress({"stage": "read"})
    progress.close()
    time.sleep(0.3)
    assert quiet.getvalue() == ""


def test_control_characters_in_ignored_columns_are_no_error(tmp_path):
    from service.cli import main

    (tmp_path / "a.csv").write_bytes(b"task,worker,label,note\nt1,w1,a,bell\x07here\nt1,w2,a,\n")
    assert main(["aggregate", str(tmp_path / "a.csv"), "--out", str(tmp_path / "o"), "-q"]) == 0
    assert summary_of(tmp_path / "o")["counts"]["answers"] == 2


def test_flag_thresholds_are_options_and_recorded(tmp_path):
    """Spammer flags recomputed from each worker's confusion matrix in workers.csv: for a
    binary worker the Raykar-Yu score is (sensitivity + specificity - 1)^2."""
    from service.cli import main

    out = tmp_path / "o"
    assert main(["aggregate", str(BLUEBIRDS / "answers.csv"), "--spammer-threshold", "0.2", "--min-answers", "5",
                 "--agreement-threshold", "0.7", "--out", str(out), "-q"]) == 0
    params = summary_of(out)["params"]
    assert (params["spammer_threshold"], params["min_answers"], params["agreement_threshold"],
            params["gold_accuracy_threshold"]) == (0.2, 5, 0.7, 0.6)
    n_spammers = 0
    for row in read_csv(out / "workers.csv")[1]:
        conf = json.loads(row["confusion"])
        score = (conf["0"]["0"] + conf["1"]["1"] - 1) ** 2
        assert float(row["spammer_score"]) == pytest.approx(score, abs=1e-9)
        flagged = score < 0.2 and int(row["n_answers"]) >= 5
        assert ("suspected_spammer" in row["flags"]) == flagged
        assert ("low_agreement" in row["flags"]) == (float(row["agreement"]) < 0.7 and int(row["n_answers"]) >= 5)
        n_spammers += flagged
    assert summary_of(out)["counts"]["flagged_workers"]["suspected_spammer"] == n_spammers > 0


@pytest.mark.parametrize("option, value, message", [
    ("--spammer-threshold", "1.5", "--spammer-threshold: parameter spammer_threshold must be between 0 and 1, got 1.5"),
    ("--min-answers", "-1", "--min-answers: parameter min_answers must be an integer >= 0, got -1"),
    ("--max-iter", "0", "--method dawid_skene: parameter max_iter must be an integer >= 1, got 0"),
])
def test_out_of_range_options_are_refused_before_reading(tmp_path, capsys, option, value, message):
    from service.cli import main

    assert main(["aggregate", str(tmp_path / "absent.csv"), option, value, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == f"crowdqc: error: {message}"
