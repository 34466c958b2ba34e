"""The exceptions diffaug raises for problems a user can cause (bad data, bad files, bad options)."""


class DiffaugError(ValueError):
    """A problem with the user's input, stated in one clear sentence; the CLI prints it without a traceback."""


class DataError(DiffaugError):
    """The images or labels are not usable as they are (shape, range, empty class, ...)."""


class GeneratorFileError(DiffaugError):
    """A file is not a readable diffaug generator (wrong format, truncated, not ours)."""


class MismatchError(DiffaugError):
    """A generator, bank and data disagree (image size, channels, classes, fingerprint)."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type when it has none): what a one-line error quotes."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else type(error).__name__


def require_extra(module: str, extra: str):
    """Import an optional dependency, or say which extra installs it."""
    import importlib
    import os

    if module == "albumentations":   # it asks pypi.org for a newer version on import: diffaug makes no network
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")   # calls (an explicit user setting still wins)

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{module} is needed for this feature: pip install \"diffaug[{extra}]\"") from e
