"""Safe file output: atomic writes and a refusal to clobber what the user already has."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .errors import DiffaugError


def check_writable(path, overwrite: bool = False) -> Path:
    """Fail early, before any work, if `path` exists and may not be replaced."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise DiffaugError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_path(path, overwrite: bool = True):
    """Yield a temporary path beside `path`; on success it is renamed onto `path` in one step.

    A crash at any moment leaves either the old file or the new one, never a torn file.
    Works for files and directories (a directory target is swapped in after the old one is moved aside).
    """
    path = check_writable(path, overwrite)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    except OSError as e:
        raise WriteError(path, e) from None
    try:
        yield tmp
        if tmp.is_dir() and path.exists():
            old = tmp.parent / (path.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    except OSError as e:   # a full disk, a quota, a read-only mount: the old file stays as it was
        raise WriteError(path, e) from None
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


class WriteError(DiffaugError):
    """Writing an output failed part-way (e.g. the disk is full); whatever was at the path is untouched."""

    def __init__(self, path, error: OSError):
        reason = error.strerror or str(error) or type(error).__name__
        had = "left as it was" if Path(path).exists() else "not created"
        super().__init__(f"could not write {path}: {reason}; {path} was {had}")
        self.errno = error.errno


def digest(obj) -> str:
    """sha256 of a nest of dicts, lists, tensors and plain values (a checkpoint's state), in a fixed order:
    stored beside the data it describes, it shows a flipped bit or a torn write on reading."""
    import hashlib

    import torch

    h = hashlib.sha256()

    def walk(x):
        if isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(f"<{k}>".encode())
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                walk(v)
            h.update(b"]")
        elif isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(x).encode())

    walk(obj)
    return h.hexdigest()


def json_digest(obj, length: int = 16) -> str:
    """A short sha256 of a JSON-able description (sorted keys; other values by str): names cache entries and
    generated datasets by the settings that made them."""
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


PART_NOTE = "diffaug_part.json"


def _part_settings(part: Path):
    try:
        return json.loads((part / PART_NOTE).read_text())
    except (OSError, ValueError):
        return None


def make_shard(out, settings: dict, shards: int, index: int, make_part, join, *, wait: bool,
               overwrite: bool = False) -> bool:
    """One shard of a job split over ranks or machines; True once `out` holds the joined result.

    Part `index` is written atomically to OUT.parts/part-<index>-of-<shards>/ by `make_part(folder)`, with the
    `settings` that made it; a part already made with the same settings is kept, so rerunning the same job
    remakes only the missing shards. When every part is there, `join(part_folders, tmp)` writes the whole
    result to a temporary folder that becomes `out` in one rename, and the parts are removed. Under torchrun
    rank 0 passes `wait=True` (it waits for the other shards, then joins) and the other ranks `join=None`;
    by hand, whichever shard finishes last joins.
    """
    out = Path(out)
    parts_dir = out.with_name(out.name + ".parts")
    parts = [parts_dir / f"part-{i:05d}-of-{shards:05d}" for i in range(shards)]
    if _part_settings(parts[index]) == settings:
        print(f"{parts[index]} is already made with these settings; keeping it", file=sys.stderr)
    else:
        parts_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(parts[index], overwrite=True) as tmp:
            make_part(tmp)
            (tmp / PART_NOTE).write_text(json.dumps(settings))   # last: a part with this note is complete
    if join is None:   # a rank that leaves the joining to rank 0
        return False
    while wait and not all(_part_settings(p) == settings for p in parts):
        time.sleep(1.0)   # torchrun stops every rank if one fails, so this cannot wait for a dead shard
    missing = [p.name for p in parts if _part_settings(p) != settings]
    if missing:
        print(f"wrote shard {index} of {shards} to {parts[index]}; {len(missing)} shard(s) to go before {out} is "
              f"joined ({', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''})", file=sys.stderr)
        return False
    if overwrite or not out.exists():   # (another shard's run may have joined them meanwhile)
        with atomic_path(out, overwrite=overwrite) as tmp:
            join(parts, tmp)
        shutil.rmtree(parts_dir, ignore_errors=True)
    return True
