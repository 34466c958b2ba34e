"""Helpers shared by the benchmark scripts: machine description, result files, the tree of another commit."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from diffaug.evaluation.cache import cpu_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def write_results(name: str, payload: dict, table: str) -> None:
    """results/NAME.json (machine-readable) and results/NAME.md (the table), side by side."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"machine": machine(), **payload}
    m = payload["machine"]
    where = m["gpu"] or f"{m.get('cpu', 'CPU model not recorded')}, {m['cpu_cores']} CPU cores"
    _write(RESULTS / f"{name}.json", json.dumps(payload, indent=2) + "\n")
    _write(RESULTS / f"{name}.md", f"{table}\n\nMachine: {where}, torch {m['torch']}, {m['date']}.\n")
    print(table)


def _write(path: Path, text: str) -> None:
    """Atomically: a run killed mid-write leaves the previous file whole."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def tree_of(ref: str, where: Path) -> Path:
    """The files of commit `ref` extracted into `where` (git archive: no worktree bookkeeping left behind, so a
    killed benchmark leaves nothing in the repository to prune)."""
    where.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    return where
