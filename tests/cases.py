"""Access to the shared bug-report cases (../shared/cases) and data sets."""

from __future__ import annotations

import json
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
CASES = SHARED / "cases"
DATASETS = SHARED / "datasets"


def load_case(name: str) -> dict:
    return json.loads((CASES / f"{name}.json").read_text(encoding="utf-8"))


def columns(rows):
    """[task, worker, label] rows -> three lists."""
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
