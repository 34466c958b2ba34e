"""The one place diffaug's version is written: the package, pyproject.toml and every file diffaug writes read it."""

__version__ = "0.6.0"


def source_digest(root=None) -> str:
    """sha256 (16 hex digits) of the package's Python source: identifies the code that made a cached result,
    where the version string alone does not change between commits. In a git checkout, the files git tracks (a
    scratch file beside them changes nothing; a fresh clone of the same commit gives the same digest); elsewhere
    (an installed wheel) every .py file of the package."""
    global _SOURCE
    if root is not None:
        return _digest(root)
    if _SOURCE is None:
        from pathlib import Path

        _SOURCE = _digest(Path(__file__).parent)
    return _SOURCE


def _digest(root) -> str:
    import hashlib
    import subprocess
    from pathlib import Path

    root = Path(root)
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--", "*.py"], cwd=root, capture_output=True, timeout=10)
        tracked = [root / name for name in listed.stdout.decode().split("\0") if name] if listed.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        tracked = []
    paths = sorted(p for p in tracked if p.exists()) or sorted(root.rglob("*.py"))
    h = hashlib.sha256()
    for path in paths:
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


_SOURCE = None
