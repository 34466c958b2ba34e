"""Safe file output: atomic writes and a refusal to clobber what the user already has."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if tmp.is_dir() and path.exists():
            old = tmp.parent / (path.name + ".old")
            os.replace(path, old)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
