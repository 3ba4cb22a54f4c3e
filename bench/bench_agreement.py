"""Time of the agreement statistics on 100,000 answers (20,000 tasks x 5, 400 workers, 4 classes).

    .venv/bin/python bench/bench_agreement.py
"""

import time

import numpy as np

from aggregation import agreement_statistics, encode


def main() -> None:
    rng = np.random.default_rng(0)
    n_tasks, per_task = 20_000, 5
    task = np.repeat(np.arange(n_tasks), per_task)
    worker = (task * 7 + np.tile(np.arange(per_task), n_tasks) * 13 + rng.integers(0, 3, task.size) * 97) % 400
    label = rng.integers(0, 4, task.size)
    answers = encode(task, worker, label, duplicates="all")
    agreement_statistics(answers)  # warm up
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        agreement_statistics(answers)
        runs.append(time.perf_counter() - start)
    print(f"agreement statistics, {answers.n_answers:,} answers: best {min(runs) * 1000:.0f} ms, median {sorted(runs)[2] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
