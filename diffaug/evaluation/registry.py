"""Preregistration and the count of looks at a test split.

A confirmatory evaluation writes its whole configuration (arms, primary arm, baseline selection rule, every
default, seeds, data, the code's source hash and git commit) to a file BEFORE it runs (`preregister`), commits it,
then runs with that file (`check_preregistered`): the run refuses any difference. A ledger (a JSON file, committed
beside the results) records every run that scored on a test split, so a report can say how many times that
split has been looked at."""

from __future__ import annotations

import datetime
import hashlib
import json
import subprocess
from pathlib import Path

from ..errors import DataError
from ..io import atomic_path

# What a preregistration fixes; anything else in the file (when, where, the commit) is a record, not a check.
FIXED = ("config", "baseline", "baseline_rule", "data", "train", "test", "classifier", "source")


def git_commit() -> str | None:
    """The commit of the git checkout diffaug runs from, or None outside one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def plan(config: dict, context: dict) -> dict:
    """What a run will do: `config` (the EvalConfig, resolved) and `context` (data, classifier, source, rule)."""
    return {"config": config, **context, "git_commit": git_commit(),
            "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def preregister(path, config: dict, context: dict, overwrite: bool = False) -> dict:
    """Write the plan of a run to `path` (atomically; an existing file is kept unless `overwrite`)."""
    record = plan(config, context)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def check_preregistered(path, config: dict, context: dict) -> dict:
    """The preregistration at `path`, if this run is the one it describes; otherwise a DataError naming what
    differs. Returns what the report records: the file, its sha256 and its content."""
    path = Path(path)
    try:
        text = path.read_text()
        record = json.loads(text)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the preregistration {path}: {e}") from None
    now = json.loads(json.dumps(plan(config, context)))
    differ = [key for key in FIXED if record.get(key) != now.get(key)]
    if differ:
        details = []
        for key in differ:
            if isinstance(now.get(key), dict) and isinstance(record.get(key), dict):
                inner = sorted(k for k in set(now[key]) | set(record[key]) if now[key].get(k) != record[key].get(k))
                details.append(f"{key} ({', '.join(inner)})")
            else:
                details.append(key)
        raise DataError(f"this run is not the one preregistered in {path}: it differs in {'; '.join(details)}")
    return {"file": str(path), "sha256": hashlib.sha256(text.encode()).hexdigest(), "plan": record}


def record_look(ledger, test_fingerprint: str, entry: dict) -> int:
    """Add this run to the ledger of looks at the test split `test_fingerprint`; the number of looks so far,
    this one included. The ledger is a JSON file {test fingerprint: [entries]}, written atomically."""
    ledger = Path(ledger)
    looks = json.loads(ledger.read_text()) if ledger.exists() else {}
    if not isinstance(looks, dict):
        raise DataError(f"{ledger} is not a ledger of looks (a JSON object keyed by test-split fingerprint)")
    looks.setdefault(test_fingerprint, []).append(entry)
    with atomic_path(ledger, overwrite=True) as tmp:
        tmp.write_text(json.dumps(looks, indent=1) + "\n")
    return len(looks[test_fingerprint])
