"""The ``crowdqc`` command: ``aggregate`` files offline, or ``serve`` / ``worker`` for the service.

Errors in the input or the options end the command with exit code 2 and a single line
``crowdqc: error: <file>, line N: <problem>`` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from aggregation import DUPLICATE_POLICIES, AnswersError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
PROGRESS_AFTER = 2.0  # seconds before progress lines start, so quick runs stay quiet
PROGRESS_EVERY = 1.0  # seconds between two progress lines

AGGREGATE_EPILOG = """\
input files:
  ANSWERS holds one answer per row with the columns task, worker, label (other names via
  --task-column/--worker-column/--label-column; extra columns are ignored).  Formats:
  CSV (.csv), TSV (.tsv) or JSON Lines (.jsonl/.ndjson, one object per line), chosen by
  the extension or --format; UTF-8; .gz files are decompressed.  In JSON, ids and labels
  are strings or integers (1 and "1" are the same label); floats, booleans and null are
  errors.  Labels are compared after Unicode NFC normalisation and stripping of
  surrounding white space; case is kept and "1" and "01" differ.

  GOLD (optional) has the columns task, label; it measures accuracy and worker gold
  accuracy, and is never shown to the model unless --gold-mode clamp is given.

labeling tools' exports (--preset, the same rules as the service's imports):
  label_studio  Label Studio JSON export: task 'id' (or --task-key data.<key>), worker
                'completed_by', label the 'choices' result of one tag (--field is its
                from_name; needed when the export has several); skipped annotations
                (was_cancelled) are not answers; ground_truth annotations are gold.
  toloka        Toloka results TSV: the INPUT:* columns identify the task (or
                --task-key INPUT:<name>), OUTPUT:<field> is the label, ASSIGNMENT:worker_id
                the worker, GOLDEN:<field> gold; rejected assignments are left out unless
                --include-rejected.
  mturk         Mechanical Turk batch results CSV: HITId (or --task-key Input.<name>),
                WorkerId, Answer.<field> (or a key of Answer.taskAnswers); rejected
                assignments are left out unless --include-rejected.
  Gold found in the export is used like a GOLD file; --gold replaces it.

duplicates:
  A worker answering one task several times: 'latest' (default) keeps the last row,
  'first' the first, 'all' counts every row as a separate vote (only when repeats are
  independent judgements: retried submissions would let one worker outvote the rest).

output (in --out DIR):
  consensus.csv      task,label,confidence,n_labels,tie,mv_label,mv_tie,p:<label>... (,gold)
                     (tie: the method's top probability is shared; mv_tie: the vote was tied)
  workers.csv        worker reliability figures, flags and confusion matrix (JSON)
  disagreements.csv  every task, most uncertain first
  summary.json       method, parameters, counts, agreement, accuracy, warnings, timings

exit status: 0 success, 2 bad input or options (one 'crowdqc: error:' line), 1 other failure.
"""


class UsageError(Exception):
    """Bad options: reported like argparse errors but on one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump: scripts grep for 'crowdqc: error:'
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    from .analysis import METHODS
    from .formats import PRESETS
    from .readers import FORMATS

    parser = _Parser(prog="crowdqc", description="Quality control for crowd-sourced labels.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    agg = sub.add_parser(
        "aggregate",
        help="consensus labels, worker reliability and disagreements from an answers file",
        description="Compute consensus labels, worker reliability, a disagreement ranking and "
        "agreement statistics from a file of redundant labels, and write them to a directory.",
        epilog=AGGREGATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    agg.add_argument("answers", metavar="ANSWERS",
                     help="answers file (.csv, .tsv, .jsonl, .ndjson; optionally .gz), or a tool's export with --preset")
    agg.add_argument("--gold", metavar="GOLD", help="gold labels file (task, label) to measure accuracy against")
    agg.add_argument("--method", default="dawid_skene", choices=list(METHODS),
                     help="consensus method (default: %(default)s)")
    agg.add_argument("--out", metavar="DIR", default="crowdqc-out", help="output directory (default: %(default)s)")
    agg.add_argument("--duplicates", default="latest", choices=DUPLICATE_POLICIES,
                     help="repeated answers by one worker on one task (default: %(default)s)")
    agg.add_argument("--gold-mode", choices=("evaluate", "clamp"), default="evaluate",
                     help="evaluate: GOLD only measures accuracy (default); clamp: Dawid-Skene, one-coin "
                     "and GLAD fix gold tasks to their known label while fitting")
    agg.add_argument("--max-iter", type=int, metavar="N", help="maximum EM iterations (EM methods; default 100)")
    agg.add_argument("--tol", type=float, metavar="T",
                     help="EM convergence tolerance (EM methods); 0 runs every iteration")
    agg.add_argument("--classes", metavar="A,B,C",
                     help="declared label set, comma-separated; a label outside it is an error, "
                     "and declared labels nobody gave still get a probability")
    agg.add_argument("--format", choices=FORMATS, help="format of ANSWERS (default: from the extension)")
    agg.add_argument("--gold-format", choices=FORMATS, help="format of GOLD (default: from the extension)")
    # None rather than "task" etc. so that a column option given with --preset is refused
    agg.add_argument("--task-column", metavar="NAME", help="task id column (default: task)")
    agg.add_argument("--worker-column", metavar="NAME", help="worker id column (default: worker)")
    agg.add_argument("--label-column", metavar="NAME", help="label column (default: label)")
    agg.add_argument("--gold-task-column", metavar="NAME", help="task column of GOLD (default: --task-column)")
    agg.add_argument("--gold-label-column", metavar="NAME", help="label column of GOLD (default: --label-column)")
    agg.add_argument("--preset", choices=list(PRESETS), help="ANSWERS is this labeling tool's native export (see below)")
    agg.add_argument("--field", metavar="NAME", help="with --preset: which label to read (Label Studio from_name, "
                     "Toloka OUTPUT:<field>, MTurk Answer.<field>); needed when the export has several")
    agg.add_argument("--task-key", metavar="KEY", help="with --preset: what identifies a task (Label Studio "
                     "data.<key>, Toloka INPUT:<name>, MTurk Input.<name>; default: the tool's task id)")
    agg.add_argument("--include-rejected", action="store_true",
                     help="with --preset toloka or mturk: keep answers of rejected assignments")
    flags = agg.add_argument_group("worker flags (thresholds; the values used are in summary.json)")
    flags.add_argument("--spammer-threshold", type=float, metavar="S",
                       help="suspected_spammer below this Raykar-Yu spammer score (default 0.05)")
    flags.add_argument("--agreement-threshold", type=float, metavar="A",
                       help="low_agreement below this share of answers matching the consensus (default 0.5)")
    flags.add_argument("--gold-accuracy-threshold", type=float, metavar="G",
                       help="low_gold_accuracy when the 95%% Wilson upper bound is below this (default 0.6)")
    flags.add_argument("--min-answers", type=int, metavar="N",
                       help="answers a worker needs before the spammer and agreement flags apply (default 10)")
    agg.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    agg.set_defaults(run=run_aggregate)

    srv = sub.add_parser("serve", help="run the HTTP API", description="Run the crowdqc HTTP API.")
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    srv.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    srv.set_defaults(run=run_serve)

    wrk = sub.add_parser("worker", help="run a background job worker (RQ, Redis)",
                         description="Run a worker for the service's background jobs.")
    # The same options as service.worker.main, which does the parsing: declared here too so
    # that this parser does not refuse them.
    wrk.add_argument("--burst", action="store_true", help="process queued jobs, then exit")
    wrk.add_argument("--no-scheduler", action="store_true", help="do not run the scheduler of delayed jobs in this worker")
    wrk.add_argument("--log-level", default="INFO", help="default: %(default)s")
    wrk.set_defaults(run=run_worker)
    return parser


class Progress:
    """Stage and EM-iteration lines on stderr, only once the run is slow, and throttled.

    A stage that starts while the run is still quick is announced by a timer if it is
    still going when the run turns slow: a long read shows up while it reads, not after.
    """

    def __init__(self, stream=None, enabled: bool = True, after: float = PROGRESS_AFTER, every: float = PROGRESS_EVERY):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled, self.after, self.every = enabled, after, every
        self.start = time.perf_counter()
        self.last = -float("inf")
        self.stage = None
        self.timer = None
        self.lock = threading.Lock()

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        elapsed = now - self.start
        is_iteration = "iteration" in event
        if not is_iteration:
            self._cancel()
            self.stage = event["stage"]
            if elapsed < self.after:
                self.timer = threading.Timer(self.after - elapsed, self._late_stage, (self.stage,))
                self.timer.daemon = True
                self.timer.start()
                return
        if elapsed < self.after or (is_iteration and now - self.last < self.every):
            return
        self.last = now
        if is_iteration:
            ll = event.get("log_likelihood")
            ll_text = f", log-likelihood {ll:.6g}" if ll is not None else ""
            of = f"/{event['max_iter']}" if event.get("max_iter") else ""
            text = f"fit: EM iteration {event['iteration']}{of}{ll_text}"
        else:
            text = f"{event['stage'].replace('_', ' ')}..."
        self._print(elapsed, text)

    def close(self) -> None:
        """No stage line may follow the summary."""
        self._cancel()
        self.enabled = False

    def _late_stage(self, stage) -> None:
        with self.lock:
            if self.enabled and stage == self.stage:
                self.last = time.perf_counter()
                self._print(self.last - self.start, f"{stage.replace('_', ' ')}...", locked=True)

    def _cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _print(self, elapsed: float, text: str, locked: bool = False) -> None:
        if not locked:
            with self.lock:
                return self._print(elapsed, text, locked=True)
        print(f"crowdqc: [{elapsed:6.1f}s] {text}", file=self.stream, flush=True)


def run_aggregate(args) -> int:
    from .analysis import METHODS, RELIABILITY_PARAMS, check_params, method_params

    started = time.perf_counter()
    params = {}
    for option, name in (("--max-iter", "max_iter"), ("--tol", "tol")):
        # name the option the user typed, not the engine's parameter list
        if getattr(args, name) is not None and name not in method_params(args.method):
            em = ", ".join(m for m in METHODS if name in method_params(m))
            raise UsageError(f"{option} applies to iterative methods only ({em}), not --method {args.method}")
    if args.max_iter is not None:
        params["max_iter"] = args.max_iter
    if args.tol is not None:
        params["tol"] = args.tol
    if args.gold_mode != "evaluate":
        params["gold"] = args.gold_mode
    for name in RELIABILITY_PARAMS:
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    try:
        params = check_params(args.method, params)
    except ValueError as exc:
        for name in RELIABILITY_PARAMS:  # name the option, not the parameter
            if f"parameter {name} " in str(exc) or f"parameter {name!r}" in str(exc):
                raise UsageError(f"--{name.replace('_', '-')}: {exc}") from None
        raise UsageError(f"--method {args.method}: {exc}") from None
    classes = None
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",")]
        if not all(classes):
            raise UsageError(f"--classes: empty label in {args.classes!r}")

    check_input_options(args)

    progress = Progress(enabled=not args.quiet)
    try:
        return _aggregate(args, params, classes, progress, started)
    finally:
        progress.close()


def _aggregate(args, params: dict, classes, progress: Progress, started: float) -> int:
    from .analysis import Gold, analyse
    from .preset_files import read_preset
    from .readers import Columns, read_answers, read_gold
    from .report import write_summary, write_tables

    progress({"stage": "read"})
    t0 = time.perf_counter()
    task_column = args.task_column or "task"
    export_gold = None
    if args.preset:
        answers, export_gold, warnings = read_preset(
            args.answers, args.preset, field=args.field, task_key=args.task_key,
            include_rejected=args.include_rejected, classes=classes, duplicates=args.duplicates,
        )
    else:
        columns = Columns(task_column, args.worker_column or "worker", args.label_column or "label")
        answers, warnings = read_answers(args.answers, args.format, columns, classes, args.duplicates)
    gold = None
    if args.gold:
        answers, codes, n_given, n_unanswered, gold_warnings = read_gold(
            args.gold, answers, args.gold_format,
            args.gold_task_column or task_column, args.gold_label_column or args.label_column or "label",
            closed=classes is not None,
        )
        gold = Gold(codes, n_given, n_unanswered)
        warnings += gold_warnings
        if export_gold is not None:
            warnings.append(f"{args.answers}: the export's gold labels ({_count(len(export_gold[0]), 'task')}) are not used: "
                            f"--gold {args.gold} replaces them")
    elif export_gold is not None:
        gold = Gold.from_labels(answers, export_gold)
    t_read = time.perf_counter() - t0

    analysis = analyse(answers, args.method, params, gold=gold, progress=progress)
    # reader warnings first; the encoder's are already in analysis.warnings
    analysis.warnings[:0] = [w for w in warnings if w not in analysis.warnings]

    progress({"stage": "write"})
    t0 = time.perf_counter()
    paths = write_tables(analysis, args.out)
    summary = analysis.summary()
    summary["inputs"] = {"answers": str(args.answers), "preset": args.preset,
                         "gold": None if args.gold is None else str(args.gold),
                         "gold_from_export": export_gold is not None and args.gold is None}
    timings = {"read": t_read, **analysis.timings, "write": time.perf_counter() - t0}
    timings["total"] = time.perf_counter() - started
    summary["timings"] = {k: round(float(v), 6) for k, v in timings.items()}
    write_summary(summary, paths["summary.json"])
    if not args.quiet:
        print(human_summary(summary, args.out))
    return EXIT_OK


def check_input_options(args) -> None:
    """Options that only make sense with, or without, ``--preset``."""
    if args.preset:
        plain = (("--format", args.format), ("--task-column", args.task_column),
                 ("--worker-column", args.worker_column), ("--label-column", args.label_column))
        for option, value in plain:
            if value is not None:
                raise UsageError(f"{option} does not apply with --preset {args.preset} (use --field/--task-key)")
        if args.include_rejected and args.preset == "label_studio":
            raise UsageError("--include-rejected applies to --preset toloka or mturk (Label Studio has no rejection)")
    else:
        for option, value in (("--field", args.field), ("--task-key", args.task_key),
                              ("--include-rejected", args.include_rejected or None)):
            if value is not None:
                raise UsageError(f"{option} applies with --preset only (for CSV/TSV/JSON Lines use "
                                 "--task-column/--worker-column/--label-column)")


def human_summary(summary: dict, out_dir) -> str:
    c = summary["counts"]
    preset = summary["inputs"].get("preset")
    lines = [f"crowdqc aggregate: {summary['method']} on {summary['inputs']['answers']}"
             + (f" ({preset} export)" if preset else "")]
    rows = f" from {c['rows']} rows" if c["rows"] != c["answers"] else ""
    lines.append(f"  {c['answers']} answers{rows}, {c['tasks']} tasks, {c['workers']} workers, {c['classes']} classes")
    if summary.get("iterations") is not None:
        state = "converged" if summary["converged"] else "not converged"
        ll = summary.get("log_likelihood")
        ll_text = f", log-likelihood {ll:.6g}" if ll is not None else ""
        lines.append(f"  EM: {summary['iterations']} iterations, {state}{ll_text}")
    acc = summary.get("accuracy")
    if acc is not None:
        if not acc["gold_tasks_used"]:
            lines.append(f"  accuracy vs gold: no gold task was answered ({_count(acc['gold_tasks_given'], 'gold task')})")
        elif acc["method"] is None:  # clamped: the model saw the gold labels
            lines.append(
                f"  accuracy vs gold ({_count(acc['gold_tasks_used'], 'task')}): majority vote {acc['majority_vote']:.4f}; "
                f"{summary['method']} not measured (gold clamped; use --gold-mode evaluate to measure it)"
            )
        else:
            lines.append(
                f"  accuracy vs gold ({_count(acc['gold_tasks_used'], 'task')}): {summary['method']} {acc['method']:.4f}, "
                f"majority vote {acc['majority_vote']:.4f}"
            )
    parts = []
    for name, title in (("krippendorff_alpha", "Krippendorff alpha"), ("fleiss_kappa", "Fleiss kappa"),
                        ("cohen_kappa", "Cohen kappa"), ("percent_agreement", "percent agreement")):
        result = summary["agreement"].get(name)
        if result is not None:
            parts.append(f"{title} {result['value']:.4f}" if result["value"] is not None else f"{title} undefined")
    if parts:
        lines.append("  agreement: " + ", ".join(parts))
    flagged = {k: v for k, v in c["flagged_workers"].items() if v}
    flag_text = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in flagged.items()) or "none"
    lines.append(
        f"  majority vote tied on {_count(c['majority_vote_tied_tasks'], 'task')}"
        + (f" ({summary['method']}: {c['tied_tasks']})" if summary["method"] != "majority_vote" else "")
        + "; model overrules majority vote on "
        f"{_count(c['tasks_where_model_overrules_majority_vote'], 'task')}; flagged workers: {flag_text}"
    )
    t = summary["timings"]
    lines.append(f"  time: read {t.get('read', 0):.2f}s, fit {t.get('fit', 0):.2f}s, "
                 f"write {t.get('write', 0):.2f}s, total {t.get('total', 0):.2f}s")
    lines.append(f"  wrote {out_dir}/: consensus.csv, workers.csv, disagreements.csv, summary.json")
    for warning in summary["warnings"]:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def run_serve(args) -> int:
    serve = _load("service.server", "serve", "the HTTP server")
    return serve(args.host, args.port)


def run_worker(args) -> int:
    worker_main = _load("service.worker", "main", "the job worker")
    argv = ["--log-level", args.log_level] + (["--burst"] if args.burst else []) + (["--no-scheduler"] if args.no_scheduler else [])
    result = worker_main(argv)
    return EXIT_OK if result is None else int(result)


def _load(module: str, attr: str, what: str):
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name in (module, *_parents(module)):
            raise CommandError(f"{what} is not available in this installation ({module} is missing)") from None
        raise CommandError(f"{what} needs the Python package {exc.name!r}, which is not installed") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise CommandError(f"{what} is not available ({module}.{attr} is missing)")
    return fn


def _parents(module: str):
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


class CommandError(Exception):
    """A failure that is not the user's input (exit 1)."""


def main(argv=None) -> int:
    """Entry point; returns the exit status (the console script exits with it)."""
    from .readers import ReadError

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return args.run(args)
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except (UsageError, ReadError, AnswersError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ValueError as exc:  # parameter ranges checked by the estimators
        return _fail(str(exc), EXIT_USAGE)
    except CommandError as exc:
        return _fail(str(exc), EXIT_FAILURE)
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _fail(f"{where}{exc.strerror or exc}", EXIT_FAILURE)
    except KeyboardInterrupt:
        print("crowdqc: interrupted", file=sys.stderr)
        return 130


def _fail(message: str, code: int) -> int:
    message = " ".join(str(message).split())  # exactly one line
    print(f"crowdqc: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
