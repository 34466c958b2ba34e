"""Shims for import paths that moved: the old path still imports, warns once (DeprecationWarning) and hands over
the new modules' names, for one minor version (CHANGELOG.md says which)."""

from __future__ import annotations

import importlib
import warnings


def moved(old: str, new: tuple[str, ...], since: str, until: str, namespace: dict) -> None:
    """Fill `namespace` (the old module's globals) with the public names of the `new` modules, with a warning."""
    warnings.warn(f"{old} moved to {' and '.join(new)} in diffaug {since}; the old path is removed in {until}",
                  DeprecationWarning, stacklevel=3)
    for name in new:
        module = importlib.import_module(name)
        namespace.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
