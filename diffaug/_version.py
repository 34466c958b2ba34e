"""The one place diffaug's version is written: the package, pyproject.toml and every file diffaug writes read it."""

__version__ = "0.1.0"


def source_digest() -> str:
    """sha256 (16 hex digits) of the package's Python source: identifies the code that made a cached result,
    where the version string alone does not change between commits."""
    global _SOURCE
    if _SOURCE is None:
        import hashlib
        from pathlib import Path

        h = hashlib.sha256()
        root = Path(__file__).parent
        for path in sorted(root.rglob("*.py")):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
        _SOURCE = h.hexdigest()[:16]
    return _SOURCE


_SOURCE = None
