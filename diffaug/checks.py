"""Argument checks every entry point shares: numbers, whole numbers, seeds, strengths, output sizes.

Each raises a `DataError` naming the argument, before any work is done. They sit below every layer that
uses them (data, training, generation, adapters, evaluation), so none of those imports another for a check.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from .errors import DataError

SEED_RANGE = (-(2 ** 63), 2 ** 64 - 1)   # what torch.Generator.manual_seed takes


def is_number(x) -> bool:
    """A real number (Python or numpy), not a bool."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def whole_number(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int within [low, high], or a DataError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        raise DataError(f"{name} must lie in {low if low is not None else '-inf'}.."
                        f"{high if high is not None else 'inf'}, got {value}")
    return value


def finite_number(value, name: str, low: float, high: float, closed: bool = True) -> float:
    """`value` as a float with low <= value < high (low < value when not `closed`), or a DataError naming `name`."""
    if not is_number(value) or not math.isfinite(value) or not (low <= value if closed else low < value) \
            or not value < high:
        raise DataError(f"{name} must be a finite number in {'[' if closed else '('}{low:g}, {high:g}), "
                        f"got {value!r}")
    return float(value)


def check_seed(seed, name: str = "seed") -> int:
    """A seed torch.Generator takes: a whole number in -2**63..2**64-1."""
    return whole_number(seed, name, *SEED_RANGE)


def check_strength(strength, name: str = "strength", allow_range: bool = True) -> tuple[float, float]:
    """A perturbation strength, or (`allow_range`) a (low, high) range of them, within (0, 1]: as (low, high)."""
    if not allow_range and not (is_number(strength) and 0.0 < strength <= 1.0):
        raise DataError(f"{name} must lie in (0, 1], got {strength!r}")
    pair = (strength, strength) if is_number(strength) else strength
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(map(is_number, pair)) \
            or not 0.0 < pair[0] <= pair[1] <= 1.0:
        raise DataError(f"{name} must be a number or a (low, high) range within (0, 1], got {strength!r}")
    return float(pair[0]), float(pair[1])


def check_probability(value, name: str) -> float:
    """A share or probability in [0, 1]."""
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise DataError(f"{name} must lie in [0, 1], got {value!r}")
    return float(value)


def check_output_size(n: int, channels: int, size: tuple[int, int]) -> None:
    """Refuse, before any work, `n` uint8 images that cannot fit in this machine's memory."""
    h, w = size
    need = n * channels * h * w
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):   # not a POSIX system: no check
        return
    if need > have:
        raise DataError(f"{n:,} images of {channels}x{h}x{w} need {need / 2**30:,.1f} GiB, more than this machine's "
                        f"{have / 2**30:,.1f} GiB of memory; generate in parts (e.g. expand_dataset's num_shards)")


def call_spec(text: str, convert, what: str) -> tuple[str, dict] | None:
    """'name' or 'name(key=value,...)' as (name, {key: convert(value)}), or None when `text` has no such shape;
    a value `convert` refuses is a DataError naming the part and `what` the value must be (e.g. "number")."""
    match = re.fullmatch(r"(\w+)(?:\(([^)]*)\))?", str(text).strip())
    if not match:
        return None
    values = {}
    for part in filter(None, (match[2] or "").split(",")):
        key, _, value = part.partition("=")
        try:
            values[key.strip()] = convert(value)
        except ValueError:
            raise DataError(f"{text!r}: {part!r} is not key={what}") from None
    return match[1], values
